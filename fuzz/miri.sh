#!/usr/bin/env bash
# Miri over the portable path: tests/miri.rs (small shapes under cfg(miri),
# Isa::Portable, rayon off) and tests/fuzz_regressions.rs (the fuzzers'
# findings). Miri reports only compile-time CPU features, so the AVX2/AVX-512
# kernels are not reachable here; Portable runs on `wide`'s SSE2 code, whose
# intrinsics Miri emulates.
#
#   fuzz/miri.sh
set -euo pipefail

cd "$(dirname "$0")/.."
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
rustup +nightly component add miri rust-src
cargo +nightly miri setup

# -Zmiri-strict-provenance: the kernels turn pointers into integers only for
# alignment checks and never back. rayon's internals (crossbeam's tagged
# pointers) do cast integers to pointers, so the tests run with
# `.parallel(false)`, which never touches the thread pool.
MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-strict-provenance" \
    cargo +nightly miri test --test miri --test fuzz_regressions
