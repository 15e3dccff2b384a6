#!/usr/bin/env bash
# Runs the whole test suite, installing first what the tests need that a
# fresh machine (Rust toolchain and Debian packages only) does not have.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
# Benchmarks run once each as a smoke test (they must keep working)...
cargo test --benches --locked
# ...then the unit and integration tests, whose summary ends the output.
cargo test --lib --bins --tests --locked "$@"
