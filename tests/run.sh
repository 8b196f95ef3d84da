#!/usr/bin/env bash
# The test suite in one command, on a fresh Debian/Ubuntu machine or an equipped one:
#   tests/run.sh [ARGS...]      (ARGS go to `cargo test --locked`, e.g. `--test config`)
# Installs, only when missing, what the tests start as child processes or drive:
# redis-server, chromium, PostgreSQL (initdb/pg_ctl under /usr/lib/postgresql/*/bin),
# nats-server, wrk (apt-get update at most once, quietly; needs root or sudo), and the
# Kafka-protocol broker tansu (`cargo install`, about 10 minutes, once per machine),
# then runs `cargo test --locked --no-fail-fast` (every suite, so the totals are whole)
# and closes with "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have redis-server && have redis-cli || missing+=(redis-server)
have chromium || have chromium-browser || missing+=(chromium)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
have nats-server || missing+=(nats-server)
have wrk || missing+=(wrk)

if ((${#missing[@]})); then
  echo "installing (Debian packages): ${missing[*]}"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    have sudo || { echo "tests/run.sh: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# tests/kafka.rs starts tansu (a Kafka-protocol broker) from PATH or ~/.cargo/bin.
if ! have tansu && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; then
  echo "installing tansu (cargo install; the Kafka tests' broker)"
  cargo install tansu --locked --features dynostore
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# Close with the totals of every suite (cargo's own last line is the doc-test run's).
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
