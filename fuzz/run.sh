#!/bin/sh
# Runs every fuzz target for SECONDS each (default 60) and prints the
# executions per target (FUZZ_TARGETS="a b" runs only those). Exits non-zero at the first crash, leaving the
# input that crashed it in fuzz/artifacts/<target>/ (turn it into a test).
#
# Needs cargo-fuzz (cargo install cargo-fuzz --locked) and a C++ compiler.
# libfuzzer-sys wants nightly features (-Zsanitizer, the sanitizer-coverage
# flags); RUSTC_BOOTSTRAP=1 unlocks them on the stable toolchain, so no
# nightly is needed.
set -eu
cd "$(dirname "$0")"
seconds=${1:-60}
case $seconds in
'' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2 ;;
esac
command -v cargo-fuzz >/dev/null 2>&1 || {
    echo "fuzz/run.sh: cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2
    exit 1
}
export RUSTC_BOOTSTRAP=1
# FUZZ_TARGETS picks some (e.g. FUZZ_TARGETS="latch wav"); default all.
targets=${FUZZ_TARGETS:-command rtp latch recording wav framing http rtcp handover}
# -a: debug assertions and overflow checks, so arithmetic that wraps in a
# release build is a crash here.
build_log=$(mktemp "${TMPDIR:-/tmp}/rtpp-fuzz-build.XXXXXX")
if ! cargo fuzz build -O -a >"$build_log" 2>&1; then
    cat "$build_log" >&2
    rm -f "$build_log"
    exit 1
fi
rm -f "$build_log"

# New inputs libFuzzer finds go to a scratch corpus; the seeds in corpus/
# stay as committed.
work=$(mktemp -d "${TMPDIR:-/tmp}/rtpp-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
total=0
for t in $targets; do
    mkdir -p "$work/$t"
    log="$work/$t.log"
    # -timeout: one input running 10 s is a hang; -rss_limit_mb: a leak.
    if ! cargo fuzz run -O -a "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz: $t: CRASH (input saved under fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    runs=${runs:-0}
    cov=$(sed -n 's/^#.*DONE *cov: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
    echo "fuzz: $t: $runs executions in ${seconds}s, coverage ${cov:-?} edges, 0 crashes"
    total=$((total + runs))
done
echo "fuzz: every target: $total executions, 0 crashes"
