#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each) and stops at the first
# crash. Needs cargo-fuzz (`cargo install cargo-fuzz`). The machine's toolchain is
# stable, so nightly-only flags are unlocked with RUSTC_BOOTSTRAP=1; the address
# sanitizer is on unless FUZZ_SANITIZER=none.
#
#   fuzz/run.sh            # every target, 60 s each
#   fuzz/run.sh 10 token   # one target, 10 s
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(position token headers config)
fi
command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2; exit 2; }
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${seconds}s"
  mkdir -p "corpus/$t"
  cargo fuzz run --sanitizer "${FUZZ_SANITIZER:-address}" "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==|SUMMARY|panicked|Done)' || true
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "crash found in $t: see fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "all targets ran ${seconds}s without a crash"
