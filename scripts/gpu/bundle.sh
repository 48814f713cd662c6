#!/usr/bin/env bash
# Here (no GPU needed): build what a lent GPU machine runs, since it has no Rust toolchain, and pack
# it with FER2013 so that one device call carries everything a first call needs (see
# scripts/gpu/README.md):
#   .device-pack/fer.xz              the fer binary (x86-64, portable: no -march=native)
#   .device-pack/fer2013.cache.xz    FER2013 as `fer preprocess` writes it, xz with a delta filter
#                                    (each byte minus the one 48 bytes back, the pixel above it):
#                                    ~55 MB against 94 MB for the gzip'd CSV
#   .device-pack/SHA256SUMS          of the unpacked files, checked there by scripts/gpu/unpack.sh
#   .device-kernels/kernels.xz       the criterion kernel benches, for a later call (no room left)
# A call carries 64 MiB at most, the tracked tree included: the script checks the sum.
#   FER_GPU_FEATURES  backends to compile (default: cuda,vulkan; empty: the CPU ones only)
#   FER2013_CSV       FER2013 to pack (default: ../shared/data/fer2013.csv.gz)
set -euo pipefail
cd "$(dirname "$0")/../.."
export FER_PORTABLE=1
. scripts/setup.sh
fer_setup
features=${FER_GPU_FEATURES-cuda,vulkan}
# cudarc binds the CUDA version nvcc reports, and without nvcc (as here) the newest it knows (13.4).
# The lent H200 machines run driver 580 with CUDA 13.0 (the device tool's KINDS.md): bind that.
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
data=${FER2013_CSV:-../shared/data/fer2013.csv.gz}
[ -f "$data" ] || { echo "bundle: no FER2013 at $data (set FER2013_CSV)" >&2; exit 1; }
cargo build --release --locked -p fer --features "$features"
bench=$(cargo bench --locked --bench kernels --features "$features" --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "kernels" and m.get("executable"):
        print(m["executable"])')
# Both folders are in .gitignore: they travel only where a call names them in `carry`.
rm -rf .device-pack .device-kernels
mkdir -p .device-pack .device-kernels
strip -o .device-pack/fer target/release/fer
strip -o .device-kernels/kernels "$bench"
target/release/fer preprocess --data "$data" --out .device-pack/fer2013.cache
(cd .device-pack && sha256sum fer fer2013.cache > SHA256SUMS)
xz -T0 -6 -f .device-pack/fer .device-kernels/kernels
# The delta filter and a dictionary larger than the file: 48-pixel rows, whole-file matches.
xz -T1 --delta=dist=48 --lzma2=preset=9e,dict=96MiB -f .device-pack/fer2013.cache
ls -la .device-pack .device-kernels
tree=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
pack=$(du -cb .device-pack/* | tail -n 1 | cut -f1)
limit=$((64 * 1024 * 1024))
echo "a call carrying .device-pack: $((pack + tree)) bytes with the tracked tree (limit $limit)"
if [ $((pack + tree)) -gt "$limit" ]; then
  echo "bundle: over the limit; carry FER2013 in two calls instead (../shared/device/README.md)" >&2
  exit 1
fi
