#!/usr/bin/env bash
# Runs the whole test suite, installing first what the tests need that a
# fresh machine (Rust toolchain and Debian packages only) does not have.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
# Benchmarks run once each as a smoke test (they must keep working)...
cargo test --benches --locked
# ...a short fuzzing run of every target (fuzz/run.sh; longer runs locally)...
fuzz/run.sh "${CERBERUS_FUZZ_SECONDS:-15}"
# ...the packages, built, installed, checked and purged as an operator
# would (it installs the .deb: root, or through sudo)...
if [ "$(id -u)" -eq 0 ]; then packaging/test.sh; else sudo packaging/test.sh; fi
# ...then the unit and integration tests (one binary, tests/suite/), every
# test even when one fails, whose summary ends the output.
cargo test --lib --bins --tests --locked --no-fail-fast "$@"
