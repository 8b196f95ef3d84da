#!/usr/bin/env bash
# Runs every load-test scenario and writes load-tests/results/<timestamp>/report.md,
# the raw JSON and the SVG charts. Takes ~10-15 minutes on a 2-core machine.
#
#   load-tests/run.sh            # everything
#   QUICK=1 load-tests/run.sh    # short runs (smoke test, ~3 minutes)
#
# Needs: cargo, taskset, redis-server; installs Debian's nginx, wrk, postgresql and
# nats-server if missing (never starts or touches the system's services: ours run in the
# foreground from scratch dirs on free loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$root/load-tests/results/$stamp"
scratch=$(mktemp -d /tmp/tidemark-load.XXXXXX)
mkdir -p "$out"
echo "results: $out (scratch $scratch)"

for tool in nginx wrk; do
  if ! command -v "$tool" >/dev/null; then
    apt-get install -y "$tool" >/dev/null
  fi
done
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  apt-get install -y postgresql >/dev/null
fi
if ! command -v nats-server >/dev/null && [[ ! -x /usr/sbin/nats-server ]]; then
  apt-get install -y nats-server >/dev/null
fi
# As many file descriptors as allowed (held reads and lagging pairs use thousands).
ulimit -n "$(ulimit -Hn)" || true

if [[ -n "${QUICK:-}" ]]; then
  dur=1; reps=1; pairs=2000; counts=2000,10000; src_s=4
else
  dur=4; reps=3; pairs=10000; counts=10000,50000; src_s=15
fi

# The production profile (fat LTO): what a deployment runs.
cargo build --profile production --workspace
bin="$root/target/production/tidemark"
load="$root/target/production/tidemark-load"

"$load" machine --out "$out/machine.json"

# 1 + 5: proxies on core 1; the origin, the generators (this tool, then wrk) and redis on core 0.
taskset -c 0 "$load" fresh --gateway-bin "$bin" --proxy-core 1 --duration-s "$dur" \
  --repeats "$reps" --redis --out "$out/fresh.json" --scratch "$scratch/fresh"
# 2: the generator on core 0; the gateway and the backend it fronts (projector, pushes,
# read services: one runtime thread) on core 1.
taskset -c 0 "$load" ryw --gateway-bin "$bin" --gateway-core 1 --backend-core 1 --pairs "$pairs" \
  --out "$out/ryw.json" --scratch "$scratch/ryw"
# 3
"$load" held --gateway-bin "$bin" --counts "$counts" --out "$out/held.json" --scratch "$scratch/held"
# 3 over HTTP/1.1: one connection per held read (10,000: under the 20,000 descriptor limit).
"$load" held --http1 --gateway-bin "$bin" --counts "${counts%%,*}" --out "$out/held-http1.json" \
  --scratch "$scratch/held-http1"
# 6: positions from PostgreSQL (primary + hot standby) and NATS JetStream, real servers
# started by the tool on free loopback ports (~2 minutes; not pinned: the servers are
# the tool's children). Numbered 6 in the report; run here, before the benches.
"$load" sources --gateway-bin "$bin" --load-s "$src_s" --write-s "$src_s" \
  --out "$out/sources.json" --scratch "$scratch/sources"
# 4: criterion benches; their median estimates are copied next to the JSON.
cargo bench --bench waiters -- --warm-up-time 1 --measurement-time 3 2>&1 | tee "$out/bench-waiters.txt"
cargo bench --bench token -- --warm-up-time 1 --measurement-time 3 token/verify_hs256 2>&1 | tee "$out/bench-token.txt"
crit="$root/target/criterion"
cp "$crit/waiters/advance_releasing_1000_of_100k/new/estimates.json" "$out/criterion-waiters-advance.json" || true
cp "$crit/waiters/wait_for_then_drop_among_100k/new/estimates.json" "$out/criterion-waiters-drop.json" || true
cp "$crit/token_verify_hs256_3_logs/new/estimates.json" "$out/criterion-token-verify.json" || true

"$load" machine --out "$out/machine-after.json"
"$load" report --dir "$out"
rm -rf "$scratch"
echo "report: $out/report.md"
