#!/usr/bin/env bash
# CI smoke run of every fuzz target: build them all, then fuzz each for a
# bounded time starting from the committed seeds; any crash fails the run.
#
#   fuzz/smoke.sh                 # 60 s per target
#   FUZZ_SECONDS=10 fuzz/smoke.sh # shorter
#   FUZZ_MIRI=1 fuzz/smoke.sh     # also run fuzz/miri.sh afterwards
#
# New inputs found during the run go to a temporary directory, not into
# fuzz/corpus/ (the committed seeds stay as they are). A crash leaves its
# input in fuzz/artifacts/<target>/ and the script prints how to replay it.
# stream_copy runs on the selected ISA only, so it is fuzzed once per ISA the
# CPU has (SIMDNORM_ISA), splitting its time between them.
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
# Targets whose ISA comes from SIMDNORM_ISA instead of an `.isa()` option.
PER_ISA_TARGETS=" stream_copy "

if ! command -v rustup >/dev/null; then
    echo "smoke.sh: rustup is required (for the nightly toolchain)" >&2
    exit 2
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# The ISAs this CPU can run, by SIMDNORM_ISA name.
isas="portable"
case "$(uname -m)" in
x86_64)
    flags="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)"
    if [[ " $flags " == *" avx2 "* && " $flags " == *" fma "* ]]; then isas+=" avx2"; fi
    if [[ " $flags " == *" avx512f "* ]]; then isas+=" avx512"; fi
    ;;
aarch64 | arm64) isas+=" neon" ;;
esac

cargo +nightly fuzz build
targets="$(cargo +nightly fuzz list)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

run_one() { # target, seconds, label
    local target="$1" secs="$2" label="$3" log="$work/$3.log"
    mkdir -p "$work/corpus-$target" "fuzz/corpus/$target"
    echo "== $label: ${secs}s"
    if ! cargo +nightly fuzz run "$target" "$work/corpus-$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -timeout=60 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "smoke.sh: $label FAILED; replay the input above with" >&2
        echo "  cargo +nightly fuzz run $target fuzz/artifacts/$target/<crash-file>" >&2
        return 1
    fi
    # The last status line (coverage, corpus size) and the run totals.
    grep -E '^#[0-9]+' "$log" | tail -n 1 || true
    grep -E 'stat::number_of_executed_units' "$log" || true
}

status=0
for target in $targets; do
    if [[ "$PER_ISA_TARGETS" == *" $target "* ]]; then
        n=$(wc -w <<<"$isas")
        secs=$(((SECONDS_PER_TARGET + n - 1) / n))
        for isa in $isas; do
            SIMDNORM_ISA="$isa" run_one "$target" "$secs" "$target-$isa" || status=1
        done
    else
        run_one "$target" "$SECONDS_PER_TARGET" "$target" || status=1
    fi
done

if [[ "${FUZZ_MIRI:-0}" != 0 ]]; then
    fuzz/miri.sh || status=1
fi
exit "$status"
