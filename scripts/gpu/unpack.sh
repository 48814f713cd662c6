#!/usr/bin/env bash
# There (on the lent GPU machine), first in every call: unpack what the call carried from
# scripts/gpu/bundle.sh (.device-pack: fer + FER2013; .device-kernels: the kernel benches) into
# $STAGE (default $HOME/stage), where scripts/gpu/checks.sh finds them. Each file is checked
# against the SHA256SUMS written here. Files a previous call on the same warm machine unpacked are
# kept, so a call that carries nothing can still use them. Exits 3 when the stage holds neither fer
# nor the kernel benches: the call landed on a fresh machine without carrying them.
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

for packed in .device-pack/fer.xz .device-pack/fer2013.cache.xz .device-kernels/kernels.xz; do
  [ -f "$packed" ] || continue
  name=$(basename "$packed" .xz)
  unxz_to "$packed" "$stage/$name.part"
  mv "$stage/$name.part" "$stage/$name"
  echo "unpacked $packed -> $stage/$name ($(stat -c %s "$stage/$name") bytes)"
done
if [ -f .device-pack/SHA256SUMS ]; then
  cp .device-pack/SHA256SUMS "$stage/SHA256SUMS"
  (cd "$stage" && sha256sum -c SHA256SUMS)
fi
[ -f "$stage/kernels" ] && chmod +x "$stage/kernels"
missing=()
for f in fer fer2013.cache kernels; do [ -f "$stage/$f" ] || missing+=("$f"); done
[ ${#missing[@]} -eq 0 ] || echo "unpack: $stage lacks ${missing[*]}: the parts that need them fail" >&2
if [ ! -f "$stage/fer" ] && [ ! -f "$stage/kernels" ]; then
  echo "unpack: nothing to run: a fresh machine; carry .device-pack (or .device-kernels) in this call" >&2
  exit 3
fi
[ -f "$stage/fer" ] && chmod +x "$stage/fer"
