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
# .device-tune/cubecl-cache.tar.gz), else the autotune results kept in the repository
# (scripts/gpu/autotune/CARD.tar.gz: small, and they outlive the ignored .device-* folders of a
# machine), into target/, where the repository's cubecl.toml has CubeCL look, and only where this
# machine has none yet. Autotune results are filed by device index, not by card, so card.txt says
# which card made them: the first archive made on this card is used, else (unless
# FER_TUNE_SAME_ARCH=0) the first made on a card of the same CUDA compute capability, such as the
# H200's results on an H100 (both 9.0: the same kernels and candidates; their winners on the other
# card may differ a little, and shapes they lack are tuned here), which spares minutes of tuning.
tune_archives=()
for archive in .device-tune/cubecl-cache.tar.gz scripts/gpu/autotune/*.tar.gz; do
  [ -f "$archive" ] && tune_archives+=("$archive")
done
if [ ${#tune_archives[@]} -gt 0 ]; then
  . scripts/gpu/gpu-env.sh
  if [ -d target/autotune ]; then
    echo "target/ holds kernel caches already: ${tune_archives[*]} not unpacked"
  else
    here=$(fer_gpu_name)
    here_cap=$(fer_gpu_arch)
    [ "${FER_TUNE_SAME_ARCH:-1}" != 0 ] || here_cap=
    picked=
    for pass in card arch; do
      for archive in "${tune_archives[@]}"; do
        card=$(tar -xzOf "$archive" card.txt 2>/dev/null || true)
        made=$(printf '%s\n' "$card" | head -n 1)
        made_cap=$(printf '%s\n' "$card" | sed -n 's/^compute_cap=//p' | head -n 1)
        if { [ $pass = card ] && [ "$made" = "$here" ]; } ||
          { [ $pass = arch ] && [ -n "$here_cap" ] && [ "$made_cap" = "$here_cap" ]; }; then
          picked=$archive
          break 2
        fi
      done
    done
    if [ -n "$picked" ]; then
      tmp=$(mktemp -d "$stage/tune.XXXXXX")
      tar -C "$tmp" -xzf "$picked"
      rm -f "$tmp/card.txt"; mkdir -p target; cp -r "$tmp"/* target/
      rm -rf "$tmp"
      if [ $pass = card ]; then
        echo "unpacked $picked -> target/ (made on ${made:-no GPU}, this card)"
      else
        echo "unpacked $picked -> target/ (made on $made, compute capability $made_cap as this card's, $here: its winners may differ a little here; the shapes it lacks are tuned here)"
      fi
    else
      echo "unpack: no kernel cache made on this card ('${here}', compute capability ${here_cap:-not compared}) among ${tune_archives[*]}: every shape is tuned here" >&2
    fi
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
