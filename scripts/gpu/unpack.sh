#!/usr/bin/env bash
# There (on the lent GPU machine), first in every call: unpack what the call carried from
# scripts/gpu/bundle.sh (.device-pack: fer + FER2013; .device-kernels: the kernel benches;
# .device-vulkan: fer with the Vulkan backend and the Vulkan loader) into
# $STAGE (default $HOME/stage), where scripts/gpu/checks.sh finds them. Each file is checked
# against the SHA256SUMS written here. Files a previous call on the same warm machine unpacked are
# kept, so a call that carries nothing can still use them. Exits 3 when the stage holds no program
# to run: the call landed on a fresh machine without carrying one.
set -euo pipefail
cd "$(dirname "$0")/../.."
stage=${STAGE:-$HOME/stage}
mkdir -p "$stage"

unxz_to() {  # unxz_to FILE.xz DEST: xz where installed, else Python's lzma module
  if command -v xz >/dev/null 2>&1; then
    xz -dc "$1" > "$2"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
  fi
}

# A pack an earlier call on this machine unpacked (its copy of the tree may keep it) is not
# unpacked again.
same_pack=0
if [ -f .device-pack/SHA256SUMS ] && cmp -s .device-pack/SHA256SUMS "$stage/SHA256SUMS" &&
  (cd "$stage" && sha256sum --quiet -c SHA256SUMS); then
  same_pack=1
  echo "$stage holds this pack already"
fi
for packed in .device-pack/fer.xz .device-pack/fer2013.cache.xz .device-kernels/kernels.xz .device-vulkan/fer-vulkan.xz; do
  [ -f "$packed" ] || continue
  [ "$same_pack" = 1 ] && [[ $packed == .device-pack/* ]] && continue
  name=$(basename "$packed" .xz)
  unxz_to "$packed" "$stage/$name.part"
  mv "$stage/$name.part" "$stage/$name"
  echo "unpacked $packed -> $stage/$name ($(stat -c %s "$stage/$name") bytes)"
done
if [ -f .device-pack/SHA256SUMS ]; then
  cp .device-pack/SHA256SUMS "$stage/SHA256SUMS"
  (cd "$stage" && sha256sum -c SHA256SUMS)
fi
for exe in fer kernels fer-vulkan; do
  if [ -f "$stage/$exe" ]; then chmod +x "$stage/$exe"; fi
done
# The Vulkan loader and the GL libraries NVIDIA's Vulkan driver needs, where the machine lacks them
# (the device tool's README: unpacked into /).
loaders=$(ldconfig -p)
if ls .device-vulkan/*.deb >/dev/null 2>&1 && { [[ $loaders != *libvulkan.so.1* ]] || [[ $loaders != *libGLdispatch.so.0* ]]; }; then
  for deb in .device-vulkan/*.deb; do dpkg -x "$deb" /; done
  ldconfig
  echo "installed the Vulkan loader and GL libraries from $(ls .device-vulkan/*.deb | xargs -n 1 basename | tr '\n' ' ')"
fi
missing=()
for f in fer fer2013.cache kernels; do [ -f "$stage/$f" ] || missing+=("$f"); done
[ ${#missing[@]} -eq 0 ] || echo "unpack: $stage lacks ${missing[*]}: the parts that need them fail" >&2
if [ ! -f "$stage/fer" ] && [ ! -f "$stage/kernels" ] && [ ! -f "$stage/fer-vulkan" ]; then
  echo "unpack: nothing to run: a fresh machine; carry .device-pack (or .device-kernels, .device-vulkan)" >&2
  exit 3
fi
