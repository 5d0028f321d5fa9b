#!/usr/bin/env bash
# Fuzzes every target of benches/fuzz with libFuzzer (cargo fuzz) for a
# while each: `benches/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]`
# (default 600 s, every target; JOBS=2 targets at a time).
#
# Each target starts from its committed seeds (benches/fuzz/seeds/T) and
# keeps what it learns in benches/fuzz/corpus/T (not committed). A crash
# lands in benches/fuzz/artifacts/T/: copy it to benches/fuzz/regressions/T/,
# fix it, and the replay test (.ci/run) keeps it fixed.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The stable toolchain is
# enough: cargo fuzz's -Z flags are let through with RUSTC_BOOTSTRAP=1,
# and no sanitizer is used (the code under test is safe Rust; panics,
# arithmetic overflow, hangs over 10 s and 2 GiB of memory are findings).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
command -v cargo-fuzz >/dev/null || { echo "missing: cargo-fuzz (cargo install cargo-fuzz)" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1
dir=(--fuzz-dir benches/fuzz)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list "${dir[@]}")
cargo fuzz build "${dir[@]}" -s none -O
logs=benches/fuzz/logs
mkdir -p "$logs"

run() {
  local t=$1
  mkdir -p "benches/fuzz/corpus/$t" "benches/fuzz/artifacts/$t"
  if cargo fuzz run "${dir[@]}" -s none -O "$t" "benches/fuzz/corpus/$t" "benches/fuzz/seeds/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 >"$logs/$t.log" 2>&1; then
    echo "$t: no crash in ${seconds} s ($(grep -o 'stat::number_of_executed_units: [0-9]*' "$logs/$t.log" | awk '{print $2}') runs)"
  else
    echo "$t: FOUND a crash: $(ls "benches/fuzz/artifacts/$t" | head -1) (log: $logs/$t.log)"
    return 1
  fi
}

status=0
jobs=${JOBS:-2}
pids=()
for t in "${targets[@]}"; do
  run "$t" & pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
