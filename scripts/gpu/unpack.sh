#!/usr/bin/env bash
# There (on the lent GPU machine), first in every call: unpack what the call carried from
# scripts/gpu/bundle.sh into $STAGE (default $HOME/stage), where scripts/gpu/checks.sh finds it:
#   .device-bin      fer (CUDA and flex; it loads only the C runtime)
#   .device-pack     FER2013 (fer2013.cache)
#   .device-kernels  the criterion kernel benches
#   .device-vulkan   fer-vulkan, and Debian's Vulkan loader and GL libraries (*.deb, unpacked into
#                    / where the machine lacks them)
#   .device-tune     cubecl-cache.tar.gz: Burn's autotune results and compiled kernels from an
#                    earlier session's call on the same card (call.sh writes it to $OUT)
# Each folder's SHA256SUMS is checked against what was unpacked. What a previous call on the same
# warm machine unpacked is kept (and not unpacked again), so a call can use it without carrying
# it. Exits 3 when the stage holds no program to run: a fresh machine, and the call carried none.
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

for folder in .device-bin .device-pack .device-kernels .device-vulkan; do
  [ -d "$folder" ] || continue
  sums="$stage/SHA256SUMS$folder"
  if [ -f "$folder/SHA256SUMS" ] && cmp -s "$folder/SHA256SUMS" "$sums" && (cd "$stage" && sha256sum --quiet -c "$sums"); then
    echo "$stage holds $folder already"
    continue
  fi
  for packed in "$folder"/*.xz; do
    [ -f "$packed" ] || continue
    name=$(basename "$packed" .xz)
    unxz_to "$packed" "$stage/$name.part"
    mv "$stage/$name.part" "$stage/$name"
    echo "unpacked $packed -> $stage/$name ($(stat -c %s "$stage/$name") bytes)"
  done
  if [ -f "$folder/SHA256SUMS" ]; then
    cp "$folder/SHA256SUMS" "$sums"
    (cd "$stage" && sha256sum -c "$sums")
  fi
done

# The Vulkan loader and the GL libraries NVIDIA's Vulkan driver needs, where the machine lacks them
# (the device tool's README: unpacked into /).
loaders=$(ldconfig -p)
if ls .device-vulkan/*.deb >/dev/null 2>&1 && { [[ $loaders != *libvulkan.so.1* ]] || [[ $loaders != *libGLdispatch.so.0* ]]; }; then
  for deb in .device-vulkan/*.deb; do dpkg -x "$deb" /; done
  ldconfig
  echo "installed the Vulkan loader and GL libraries from $(ls .device-vulkan/*.deb | xargs -n 1 basename | tr '\n' ' ')"
fi
# Burn's kernel caches from an earlier session's call ($OUT/cubecl-cache.tar.gz there, carried as
# .device-tune/cubecl-cache.tar.gz) into target/, where the repository's cubecl.toml has CubeCL
# look: used only on the card that made them (card.txt; autotune results are filed by device
# index, not by card), and only where this machine has none yet. Without a carried one, the
# autotune results kept in the repository (scripts/gpu/autotune/CARD.tar.gz: small, and they
# outlive the ignored .device-* folders of a machine) are tried.
tune_archives=(.device-tune/cubecl-cache.tar.gz)
[ -f .device-tune/cubecl-cache.tar.gz ] || tune_archives=(scripts/gpu/autotune/*.tar.gz)
if [ -f "${tune_archives[0]}" ]; then
  . scripts/gpu/gpu-env.sh
  here=$(fer_gpu_name)
  if [ -d target/autotune ]; then
    echo "target/ holds kernel caches already: ${tune_archives[*]} not unpacked"
  else
    for archive in "${tune_archives[@]}"; do
      tmp=$(mktemp -d "$stage/tune.XXXXXX")
      tar -C "$tmp" -xzf "$archive"
      made=$(cat "$tmp/card.txt" 2>/dev/null || true)
      if [ "$made" = "$here" ]; then
        rm "$tmp/card.txt"; mkdir -p target; cp -r "$tmp"/* target/
        echo "unpacked $archive -> target/ ($(ls "$tmp" | tr '\n' ' '), made on ${made:-no GPU})"
        rm -rf "$tmp"
        break
      fi
      echo "unpack: $archive's kernel caches were made on '${made}', this card is '${here}': not used" >&2
      rm -rf "$tmp"
    done
  fi
fi
# A program whose libraries do not resolve fails at its start: say so now.
for exe in fer kernels fer-vulkan; do
  if [ -f "$stage/$exe" ]; then
    chmod +x "$stage/$exe"
    unresolved=$(ldd "$stage/$exe" | grep "not found" || true)
    [ -z "$unresolved" ] || echo "unpack: $exe cannot load: $unresolved" >&2
  fi
done
missing=()
for f in fer fer2013.cache kernels; do [ -e "$stage/$f" ] || missing+=("$f"); done
[ ${#missing[@]} -eq 0 ] || echo "unpack: $stage lacks ${missing[*]}: the parts that need them fail" >&2
if [ ! -f "$stage/fer" ] && [ ! -f "$stage/kernels" ] && [ ! -f "$stage/fer-vulkan" ]; then
  echo "unpack: nothing to run: a fresh machine; carry .device-bin (or .device-kernels, .device-vulkan)" >&2
  exit 3
fi
