#!/usr/bin/env bash
# Here (no GPU needed): build what a lent GPU machine runs, since it has no Rust toolchain.
# Writes .device-bin/fer.xz and .device-bin/kernels.xz (x86-64, portable: no -march=native),
# about 11 MB each, to be carried with `run` (carry: [".device-bin"]). See scripts/gpu/README.md.
#   FER_GPU_FEATURES  backends to compile (default: cuda,vulkan)
set -euo pipefail
cd "$(dirname "$0")/../.."
export FER_PORTABLE=1
. scripts/setup.sh
fer_setup
features=${FER_GPU_FEATURES:-cuda,vulkan}
cargo build --release --locked -p fer --features "$features"
bench=$(cargo bench --locked --bench kernels --features "$features" --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "kernels" and m.get("executable"):
        print(m["executable"])')
mkdir -p .device-bin
for pair in "target/release/fer:fer" "$bench:kernels"; do
  src=${pair%%:*} name=${pair##*:}
  strip -o ".device-bin/$name" "$src"
  xz -T0 -6 -f ".device-bin/$name"
done
grep -qxF '.device-bin/' .git/info/exclude 2>/dev/null || echo '.device-bin/' >> .git/info/exclude
ls -la .device-bin
