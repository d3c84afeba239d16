#!/usr/bin/env bash
# Runs every fuzz target of tests/fuzz for SECONDS each (default 60), one after the other,
# niced, then prints one summary line per target. Not part of CI.
#
#   tests/fuzz/run.sh            # 60 s per target
#   tests/fuzz/run.sh 1800       # 30 min per target
#   tests/fuzz/run.sh 120 path   # only the named targets
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Builds go to
# $CARGO_TARGET_DIR (default /work/fuzz-target, outside the checkout). libFuzzer writes what it
# learns to $FUZZ_WORK/corpus/<target> (default $CARGO_TARGET_DIR/fuzz-work), reading the
# committed seeds of tests/fuzz/corpus/<target> too; crashes land in
# tests/fuzz/artifacts/<target>/ (ignored by git) and fail the run. Per-target logs:
# $FUZZ_WORK/<target>.log.
set -uo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
shift || true
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/fuzz-target}
work=${FUZZ_WORK:-$CARGO_TARGET_DIR/fuzz-work}
mkdir -p "$work"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir tests/fuzz)
fi

# `-s none`: the code under test forbids `unsafe`, so AddressSanitizer would mostly halve the
# execution rate; `-a`: debug assertions and overflow checks on, as in the test suite.
flags=(--fuzz-dir tests/fuzz -s none -a)
nice -n 10 cargo +nightly fuzz build "${flags[@]}" || exit 1

failed=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "tests/fuzz/artifacts/$t"
  before=$(find "tests/fuzz/artifacts/$t" -type f | wc -l)
  log="$work/$t.log"
  echo "== $t: ${seconds}s"
  start=$SECONDS
  nice -n 10 cargo +nightly fuzz run "${flags[@]}" "$t" "$work/corpus/$t" "tests/fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    > "$log" 2>&1
  rc=$?
  # Seconds fuzzed: libFuzzer's own count when it ran to the end, else (a crash stops it) the
  # wall clock.
  ran=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  ran=${ran:-$((SECONDS - start))}
  crashes=$(( $(find "tests/fuzz/artifacts/$t" -type f | wc -l) - before ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<< "$last")
  line=$(printf '%-17s %6ss  execs %10s  exec/s %7s  cov %5s  ft %6s  corp %-10s crashes %s' \
    "$t" "$ran" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes")
  if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    failed=1
    line="$line  FAILED (exit $rc, see $log)"
  fi
  echo "$line"
  summary+=("$line")
done

echo
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
exit $failed
