#!/usr/bin/env bash
# Test of scripts/gpu/unpack.sh's choice of kernel cache (no GPU needed; run by scripts/run-tests.sh):
# a copy of the GPU scripts in a scratch tree, a fake `nvidia-smi` that names the card, and small
# archives made on named cards. unpack.sh must put into target/ the cache made on this card, else
# one made on a card of the same compute capability (not with FER_TUNE_SAME_ARCH=0), else none.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failures=0
checks=0

# make_archive FILE NAME [CAP] MARK: an autotune archive made on card NAME (compute capability CAP,
# none when empty), holding autotune/mark.txt = MARK, as call.sh writes them.
make_archive() {
  local file=$1 name=$2 cap=$3 mark=$4 dir
  dir=$(mktemp -d "$scratch/archive.XXXXXX")
  mkdir -p "$dir/autotune/0.10.0/device-0-0-cuda"
  echo "$mark" > "$dir/autotune/mark.txt"
  if [ -n "$cap" ]; then printf '%s\ncompute_cap=%s\n' "$name" "$cap"; else printf '%s\n' "$name"; fi > "$dir/card.txt"
  mkdir -p "$(dirname "$file")"
  tar -czf "$file" -C "$dir" card.txt autotune
  rm -rf "$dir"
}

# check CASE CARD CAP EXPECTED [ENV...]: unpack.sh in a fresh tree whose archives are set up by
# the function setup_CASE, on a card named CARD of compute capability CAP; EXPECTED is the mark
# of the archive that must land in target/, or "none".
check() {
  local case=$1 card=$2 cap=$3 expected=$4 tree got
  shift 4
  checks=$((checks + 1))
  tree="$scratch/$checks-$case"
  mkdir -p "$tree/scripts/gpu/autotune" "$tree/bin" "$tree/stage"
  cp "$repo/scripts/gpu/unpack.sh" "$repo/scripts/gpu/gpu-env.sh" "$tree/scripts/gpu/"
  cat > "$tree/bin/nvidia-smi" <<EOF
#!/usr/bin/env bash
case "\$*" in
  *compute_cap*) echo "$cap" ;;
  *name*) echo "$card" ;;
esac
EOF
  chmod +x "$tree/bin/nvidia-smi"
  # A program in the stage, so unpack.sh does not stop for want of one.
  printf '#!/bin/sh\n' > "$tree/stage/fer"
  "setup_$case" "$tree"
  (cd "$tree" && env PATH="$tree/bin:$PATH" STAGE="$tree/stage" "$@" bash scripts/gpu/unpack.sh > "$tree/log" 2>&1) || {
    echo "FAIL $case: unpack.sh exited with $?"; cat "$tree/log"; failures=$((failures + 1)); return
  }
  got=$(cat "$tree/target/autotune/mark.txt" 2>/dev/null || echo none)
  if [ "$got" = "$expected" ] && [ ! -e "$tree/target/card.txt" ]; then
    echo "ok   $case: $got ($(grep -h 'target/\|kernel cache' "$tree/log" | head -n 1))"
  else
    echo "FAIL $case: target/ holds '$got', expected '$expected'"; cat "$tree/log"; failures=$((failures + 1))
  fi
}

setup_h200_tracked() { make_archive "$1/scripts/gpu/autotune/nvidia-h200.tar.gz" "NVIDIA H200" 9.0 h200; }
setup_old_card_txt() { make_archive "$1/scripts/gpu/autotune/nvidia-h200.tar.gz" "NVIDIA H200" "" h200; }
setup_carried_and_tracked() {
  setup_h200_tracked "$1"
  make_archive "$1/.device-tune/cubecl-cache.tar.gz" "NVIDIA H100 80GB HBM3" 9.0 h100
}
setup_carried_other_card() {
  setup_h200_tracked "$1"
  make_archive "$1/.device-tune/cubecl-cache.tar.gz" "NVIDIA A100-SXM4-80GB" 8.0 a100
}
setup_present() { setup_h200_tracked "$1"; mkdir -p "$1/target/autotune"; echo earlier > "$1/target/autotune/mark.txt"; }

check h200_tracked "NVIDIA H200" 9.0 h200                        # the card that made it
check h200_tracked "NVIDIA H100 80GB HBM3" 9.0 h200              # another card, the same architecture
check h200_tracked "NVIDIA H100 80GB HBM3" 9.0 none FER_TUNE_SAME_ARCH=0
check h200_tracked "NVIDIA A100-SXM4-80GB" 8.0 none              # another architecture
check old_card_txt "NVIDIA H200" 9.0 h200                        # card.txt of before 2026-12-07: the name alone
check old_card_txt "NVIDIA H100 80GB HBM3" 9.0 none              # no capability recorded: not compared
check carried_and_tracked "NVIDIA H100 80GB HBM3" 9.0 h100       # this card's before the same architecture's
check carried_and_tracked "NVIDIA H200" 9.0 h200                 # the tracked one when it is this card's
check carried_other_card "NVIDIA H100 80GB HBM3" 9.0 h200        # a carried cache of another card is passed over
check present "NVIDIA H200" 9.0 earlier                          # caches already in target/ stay

# The tracked archives record their card and its compute capability.
for archive in "$repo"/scripts/gpu/autotune/*.tar.gz; do
  if tar -xzOf "$archive" card.txt | grep -q '^compute_cap=[0-9]'; then
    echo "ok   $(basename "$archive") records its compute capability"
  else
    echo "FAIL $(basename "$archive"): its card.txt lacks compute_cap="; failures=$((failures + 1))
  fi
done

[ "$failures" -eq 0 ] || { echo "test-unpack: $failures failures" >&2; exit 1; }
echo "test-unpack: all passed"
