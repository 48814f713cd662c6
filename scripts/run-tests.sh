#!/usr/bin/env bash
# All checks and tests of fer-rs: formatting, clippy, then every unit, integration and doc test, and
# the API docs.
# Real-data tests run when FER2013_CSV names fer2013.csv(.gz); otherwise they print a notice and skip.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
fer_setup

cargo fmt --all -- --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo test --release --locked --workspace
# The API docs build without warnings (broken or private intra-doc links, bad code blocks).
RUSTDOCFLAGS="-D warnings" cargo doc --release --locked --workspace --no-deps
# The build without dlib (`--no-default-features`, as scripts/gpu/bundle.sh makes the GPU binary):
# everything compiles, HOG and crops pass their tests, and detection is refused by name.
cargo clippy --release --locked -p fer --no-default-features --features flex,ndarray --all-targets -- -D warnings
cargo test --release --locked -p fer-features --no-default-features
cargo test --release --locked -p fer-models --no-default-features --lib predict::
