#!/usr/bin/env bash
# Here (no GPU needed): build what a lent GPU machine runs, since it has no Rust toolchain, and pack
# it with FER2013 so that one device call carries everything a first call needs (see
# scripts/gpu/README.md):
#   .device-pack/fer.xz              the fer binary with the CUDA backend (x86-64, portable: no
#                                    -march=native)
#   .device-pack/fer2013.cache.xz    FER2013 as `fer preprocess` writes it, xz with a delta filter
#                                    (each byte minus the one 48 bytes back, the pixel above it):
#                                    ~55 MB against 94 MB for the gzip'd CSV
#   .device-pack/SHA256SUMS          of the unpacked files, checked there by scripts/gpu/unpack.sh
#   .device-kernels/kernels.xz       the criterion kernel benches, for a later call (no room left)
#   .device-vulkan/fer-vulkan.xz     fer with the wgpu/Vulkan backend, with Debian's Vulkan loader
#                                    and GL libraries (*.deb), for a later call: a binary with both
#                                    backends is 2.7 MB larger and the pack would not fit
# A call carries 64 MiB at most, the tracked tree included: the script checks the sum.
#   FER_GPU_FEATURES  backends of the packed fer and the benches (default: cuda; empty: the CPU
#                     ones only, for a dry run here)
#   FER_GPU_VULKAN=0  skip the Vulkan binary
#   FER2013_CSV       FER2013 to pack (default: ../shared/data/fer2013.csv.gz)
# Each feature set keeps its own compiled crates in target/, so later runs rebuild only fer.
set -euo pipefail
cd "$(dirname "$0")/../.."
export FER_PORTABLE=1
. scripts/setup.sh
fer_setup
features=${FER_GPU_FEATURES-cuda}
data=${FER2013_CSV:-../shared/data/fer2013.csv.gz}
[ -f "$data" ] || { echo "bundle: no FER2013 at $data (set FER2013_CSV)" >&2; exit 1; }
# cudarc binds the CUDA version nvcc reports, and without nvcc (as here) the newest it knows (13.4).
# The lent H200 machines run driver 580 with CUDA 13.0 (the device tool's KINDS.md): bind that.
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
# Executables shrink by a further ~4 % with xz's x86 branch filter.
xz_binary() { xz -T1 --x86 --lzma2=preset=9e -f "$@"; }

# Both folders are in .gitignore: they travel only where a call names them in `carry`.
rm -rf .device-pack .device-kernels .device-vulkan
mkdir -p .device-pack .device-kernels

cargo build --release --locked -p fer --features "$features"
strip -o .device-pack/fer target/release/fer
bench=$(cargo bench --locked --bench kernels --features "$features" --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "kernels" and m.get("executable"):
        print(m["executable"])')
strip -o .device-kernels/kernels "$bench"
.device-pack/fer preprocess --data "$data" --out .device-pack/fer2013.cache
(cd .device-pack && sha256sum fer fer2013.cache > SHA256SUMS)
xz_binary .device-pack/fer .device-kernels/kernels
# The delta filter and a dictionary larger than the file: 48-pixel rows, whole-file matches.
xz -T1 --delta=dist=48 --lzma2=preset=9e,dict=96MiB -f .device-pack/fer2013.cache

if [ "${FER_GPU_VULKAN:-1}" != 0 ]; then
  mkdir -p .device-vulkan
  cargo build --release --locked -p fer --features vulkan
  strip -o .device-vulkan/fer-vulkan target/release/fer
  xz_binary .device-vulkan/fer-vulkan
  # The loader, and the GL vendor-neutral libraries NVIDIA's Vulkan driver (libGLX_nvidia) links
  # against: the device tool's README names these packages.
  (cd .device-vulkan && apt-get download libvulkan1 libglvnd0 libgl1 libglx0 libegl1 libopengl0 libgles2 >/dev/null)
fi

ls -la .device-pack .device-kernels .device-vulkan 2>/dev/null || true
tree=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
pack=$(du -cb .device-pack/* | tail -n 1 | cut -f1)
limit=$((64 * 1024 * 1024))
echo "a call carrying .device-pack: $((pack + tree)) bytes with the tracked tree (limit $limit)"
if [ $((pack + tree)) -gt "$limit" ]; then
  echo "bundle: over the limit; carry FER2013 in two calls instead (../shared/device/README.md)" >&2
  exit 1
fi
