#!/usr/bin/env bash
# Here (no GPU needed): build what a lent GPU machine runs, since it has no Rust toolchain, and pack
# it with FER2013 for the calls of scripts/gpu/README.md. All folders are in .gitignore: they
# travel only where a call names them in `carry` (64 MiB a call, the tracked tree included).
#   .device-bin/     fer.xz (CUDA backend and flex; no ndarray, no dlib: x86-64, portable, no
#                    -march=native, loading only the C runtime), 8.0 MB at 0ddbe15. The bundle
#                    fails, naming it, if a binary loads any other library: the GPU machine's
#                    image has no dlib, OpenBLAS, …, so a build with the `dlib` feature could not
#                    start there
#   .device-pack/    fer2013.cache.xz: FER2013 as `fer preprocess` writes it, xz with a delta
#                    filter (each byte minus the one 48 bytes back, the pixel above it): 54.6 MB
#                    against 94 MB for the gzip'd CSV; .device-bin and .device-pack fit one call
#   .device-kernels/ kernels.xz: the criterion kernel benches (CUDA)
#   .device-vulkan/  fer-vulkan.xz (wgpu/Vulkan backend: with both GPU backends fer is 2.7 MB
#                    larger) and Debian's Vulkan loader and GL libraries (*.deb)
# Each folder's SHA256SUMS lists its files unpacked; scripts/gpu/unpack.sh checks them there.
# Not built here: .device-tune/cubecl-cache.tar.gz, Burn's kernel caches that a call brought back
# (scripts/gpu/call.sh), copied in by hand; the size check below counts it with call 1's folders.
#   FER_GPU_FEATURES  GPU backends of fer and the benches, after a comma (default: ,cuda; empty:
#                     flex only, for a dry run here)
#   FER_GPU_VULKAN=0  skip the Vulkan binary
#   FER2013_CSV       FER2013 to pack (default: ../shared/data/fer2013.csv.gz)
# Each feature set keeps its own compiled crates in target/, so later runs rebuild only fer.
set -euo pipefail
cd "$(dirname "$0")/../.."
export FER_PORTABLE=1
. scripts/setup.sh
fer_setup
features=flex${FER_GPU_FEATURES-,cuda}
data=${FER2013_CSV:-../shared/data/fer2013.csv.gz}
[ -f "$data" ] || { echo "bundle: no FER2013 at $data (set FER2013_CSV)" >&2; exit 1; }
# cudarc binds the CUDA version nvcc reports, and without nvcc (as here) the newest it knows (13.4).
# The lent H200 machines run driver 580 with CUDA 13.0 (the device tool's KINDS.md): bind that.
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
# Executables shrink by a further ~4 % with xz's x86 branch filter.
xz_binary() { xz -T1 --x86 --lzma2=preset=9e -f "$@"; }

rm -rf .device-bin .device-pack .device-kernels .device-vulkan
mkdir -p .device-bin .device-pack .device-kernels

# No default features: no ndarray, and no dlib (landmarks and face detection, which the GPU checks do
# not use), so the binaries load only the C runtime and fit one call with the data. The benches with
# `-p fer-rs`: else every default member is resolved, and fer-train's dev-dependencies add dlib.
cargo build --release --locked -p fer --no-default-features --features "$features"
strip -o .device-bin/fer target/release/fer
bench=$(cargo bench --locked -p fer-rs --bench kernels --no-default-features --features "$features" --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "kernels" and m.get("executable"):
        print(m["executable"])')
strip -o .device-kernels/kernels "$bench"
# The binaries must load nothing beyond the C runtime (ldd's list): the GPU machine has no more.
extra=$(for exe in .device-bin/fer .device-kernels/kernels; do
  ldd "$exe" | awk -v exe="$exe" '$2 == "=>" {print exe ": " $1}'
done | { grep -Ev ': (libc|libm|libgcc_s)\.so' || true; })
if [ -n "$extra" ]; then
  echo "bundle: the binaries load libraries the GPU machine lacks (build them without dlib):" >&2
  echo "$extra" >&2
  exit 1
fi
.device-bin/fer preprocess --data "$data" --out .device-pack/fer2013.cache
(cd .device-bin && sha256sum fer > SHA256SUMS)
(cd .device-pack && sha256sum fer2013.cache > SHA256SUMS)
(cd .device-kernels && sha256sum kernels > SHA256SUMS)
xz_binary .device-bin/fer .device-kernels/kernels
# The delta filter and a dictionary larger than the file: 48-pixel rows, whole-file matches. Four
# literal context bits and no position bits (lc=4, pb=0): 54.57 MB against 55.47 with xz's lc=3,
# pb=2, the smallest of the settings tried on 2026-12-07 (lc 0 or 1 with pb 0, lc 4 with pb 2, and
# a second delta of distance 1 came out larger); xz and Python's lzma read them from the stream.
xz -T1 --delta=dist=48 --lzma2=preset=9e,dict=96MiB,lc=4,lp=0,pb=0 -f .device-pack/fer2013.cache

if [ "${FER_GPU_VULKAN:-1}" != 0 ]; then
  mkdir -p .device-vulkan
  cargo build --release --locked -p fer --no-default-features --features flex,vulkan
  strip -o .device-vulkan/fer-vulkan target/release/fer
  (cd .device-vulkan && sha256sum fer-vulkan > SHA256SUMS)
  xz_binary .device-vulkan/fer-vulkan
  # The loader, and the GL vendor-neutral libraries NVIDIA's Vulkan driver (libGLX_nvidia) links
  # against: the device tool's README names these packages.
  (cd .device-vulkan && apt-get download libvulkan1 libglvnd0 libgl1 libglx0 libegl1 libopengl0 libgles2 >/dev/null)
fi

ls -la .device-bin .device-pack .device-kernels .device-vulkan 2>/dev/null || true
tree=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
limit=$((64 * 1024 * 1024))
status=0
for folder in .device-bin .device-pack .device-kernels .device-vulkan; do
  [ -d "$folder" ] || continue
  size=$(($(du -cb "$folder" | tail -n 1 | cut -f1) + tree))
  echo "a call carrying $folder: $size bytes with the tracked tree (limit $limit)"
  [ "$size" -le "$limit" ] || { echo "bundle: $folder is over the limit" >&2; status=1; }
done
# The plan's first call carries the binary and the data together.
size=$(($(du -cb .device-bin .device-pack | tail -n 1 | cut -f1) + tree))
echo "a call carrying .device-bin and .device-pack: $size bytes with the tracked tree (limit $limit)"
if [ "$size" -le "$limit" ]; then
  echo "headroom: $((limit - size)) bytes (the tracked tree grows with docs/RESULTS.md)"
else
  echo "bundle: .device-bin and .device-pack do not fit one call: stage the binary first (scripts/gpu/README.md, call 0)" >&2
fi
# With Burn's kernel caches of an earlier session (.device-tune, from a call's
# cubecl-cache.tar.gz): carried with them only if the three fit.
if [ -d .device-tune ]; then
  size=$(($(du -cb .device-bin .device-pack .device-tune | tail -n 1 | cut -f1) + tree))
  echo "a call carrying .device-bin, .device-pack and .device-tune: $size bytes with the tracked tree (limit $limit)"
  [ "$size" -le "$limit" ] || echo "bundle: .device-tune does not fit call 1 beside .device-bin and .device-pack: carry only .device-tune/cubecl-cache.tar.gz's autotune/ (tar xzf, then tar czf card.txt autotune)" >&2
fi
exit "$status"
