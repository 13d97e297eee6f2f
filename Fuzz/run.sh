#!/usr/bin/env bash
# Runs libFuzzer harnesses built by `make fuzz-build` for a bounded time each.
#   Fuzz/run.sh SECONDS HARNESS...     (e.g. Fuzz/run.sh 60 xattrmap command-line)
# Each harness starts from its committed seeds (Fuzz/Seeds/NAME) plus the corpus
# earlier runs grew (.build-fuzz/corpus/NAME, not committed), with its dictionary
# (Fuzz/Dictionaries/NAME.dict). A crash, leak, timeout or out-of-memory input is
# written to .build-fuzz/artifacts/NAME/ and fails the run; replay one with
#   .build/debug/fuzz-NAME .build-fuzz/artifacts/NAME/crash-...   (or the fuzz build).
# FUZZ_RUNS=N also stops each harness after N inputs (SECONDS 0: no time limit).
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=$1; shift
bin=${FUZZ_BIN:-.build-fuzz/release}
status=0
# Swift's own crash backtracer reads memory in ways AddressSanitizer reports; libFuzzer
# and ASan print the stack instead.
export SWIFT_BACKTRACE=enable=no
# Absolute paths: the passthrough backend may move the calling thread's working
# directory (its private directory for path-based xattr calls), and libFuzzer
# writes new inputs while the harness runs.
top=$PWD
for name in "$@"; do
    corpus=$top/.build-fuzz/corpus/$name
    artifacts=$top/.build-fuzz/artifacts/$name
    mkdir -p "$corpus" "$artifacts"
    log=$top/.build-fuzz/$name.log
    limits=()
    [ "$seconds" -gt 0 ] && limits+=(-max_total_time="$seconds")
    [ -n "${FUZZ_RUNS:-}" ] && limits+=(-runs="$FUZZ_RUNS")
    dict=()
    [ -f "Fuzz/Dictionaries/$name.dict" ] && dict=(-dict="$top/Fuzz/Dictionaries/$name.dict")
    # -timeout: an input that takes 10 s hangs something (a blocking open or lock).
    # -rss_limit_mb: growth the harness does not give back is a finding too.
    "$bin/fuzz-$name" "${limits[@]}" "${dict[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" "$top/Fuzz/Seeds/$name" >"$log" 2>&1
    rc=$?
    summary=$(grep -E '^#[0-9]+' "$log" | tail -1)
    execs=$(grep -E 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    if [ $rc -ne 0 ]; then
        echo "fuzz-$name: FAILED (exit $rc); log $log, inputs in $artifacts/"
        grep -E 'ERROR|fuzz invariant|Fatal error|SUMMARY|Test unit written' "$log" | head -5
        status=1
    else
        echo "fuzz-$name: ok, ${execs:-?} inputs; ${summary}"
    fi
done
exit $status
