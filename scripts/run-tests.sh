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
# The GPU scripts' choice of kernel cache for a lent card (no GPU needed: a fake nvidia-smi).
bash scripts/gpu/test-unpack.sh
# A run's state in pieces between GPU leases, and back (with FER2013_CSV: a real run resumed across).
bash scripts/gpu/test-state.sh
# Each pipeline's example, run end to end on the real data at its small defaults (2 min 16 s here; the
# same binaries `cargo test` built): train, evaluate, attack, landmarks + HOG, photo predictions.
if [ -n "${FER2013_CSV:-}" ]; then
  examples=$(mktemp -d)
  trap 'rm -rf "$examples"' EXIT
  cargo run -q --release --locked --example vgg19_pipeline -- --out "$examples/vgg19"
  cargo run -q --release --locked --example adversarial_pipeline -- --out "$examples/adversarial"
  cargo run -q --release --locked --example landmarks_hog_pipeline -- --features "$examples/features.cache" --out "$examples/landmarks-hog"
  cargo run -q --release --locked --example predict -- --checkpoint "$examples/vgg19/best.fer" --annotate "$examples/predict.png" > "$examples/predict.json"
  for f in vgg19/report.json vgg19/curves.png adversarial/fgsm-at/report.json predict.json landmarks-hog/curves.png predict.png; do
    [ -s "$examples/$f" ] || { echo "run-tests: the examples wrote no $f" >&2; exit 1; }
  done
else
  echo "note: FER2013_CSV is not set: the examples are not run"
fi
# The API docs build without warnings (broken or private intra-doc links, bad code blocks).
RUSTDOCFLAGS="-D warnings" cargo doc --release --locked --workspace --no-deps
# The build without dlib (`--no-default-features`, as scripts/gpu/bundle.sh makes the GPU binary):
# everything compiles, HOG and crops pass their tests, and detection is refused by name.
cargo clippy --release --locked -p fer --no-default-features --features flex,ndarray --all-targets -- -D warnings
cargo test --release --locked -p fer-features --no-default-features
cargo test --release --locked -p fer-models --no-default-features --lib predict::
