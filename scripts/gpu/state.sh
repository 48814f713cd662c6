#!/usr/bin/env bash
# A training run that goes on across GPU leases: its resumable state (the run directory's files:
# latest.fer, latest.optim, best.fer, ema.fer, config.json, state.json, metrics.csv, …) in pieces
# the device tool can move. A full-width VGG19's state is 160 to 240 MB (80 MB a checkpoint), and a
# call brings back at most 8 files of 16 MiB, 64 MiB together, and carries at most 64 MiB with the
# tracked tree; so the state leaves in several calls and comes back in several more, each piece
# checked by its SHA-256 (scripts/gpu/README.md, "A run across leases").
#
# There (the lent GPU machine):
#   state.sh send RUN_DIR   pack RUN_DIR's state at its last completed epoch (once per epoch, under
#                           $STAGE/state-out/), then copy the next pieces not sent yet into $OUT:
#                           at most 4 of 16 MiB − 64 KiB, and the manifest. Says how many are left:
#                           call again at once (the machine goes back 30 s after a call).
#                           STATE_PIECES="3 4" sends those pieces again (numbered from 1).
#   state.sh receive        take the pieces carried in .device-state/ (a folder `stage` made) into
#                           $STAGE/state-in/; once all are there and checked, unpack the run into
#                           $STAGE/runs/NAME, where checks.sh's `train` part resumes it.
# Here (the build machine):
#   state.sh take DIR...    copy the pieces that calls brought back (the device tool's files_at) into
#                           runs/gpu-state/; once a state is whole and checked, keep it there as
#                           NAME.eEPOCH.tar and unpack the run into runs/gpu/NAME (its checkpoints
#                           can then be evaluated, attacked or exported on the CPU).
#   state.sh stage TAR      split a kept state (runs/gpu-state/NAME.eEPOCH.tar) into .device-state/1,
#                           2, …, each small enough to travel in one call with the tracked tree;
#                           each call carries one folder and runs `bash scripts/gpu/state.sh receive`.
#
# What a state holds: the run directory's top-level files, less temporary files and staged files
# of an epoch that never committed (its subfolders, e.g. attack reports, stay behind). best.fer
# travels once when it equals latest.fer or ema.fer (a marker says which).
#
# Environment: STAGE (there, default $HOME/stage), OUT (there, the device tool sets it),
# STATE_HERE (here, default runs/), STATE_PIECE_BYTES (default 16711680), STATE_OUT_BYTES (what one
# call brings back, default 64 MiB − 64 KiB), STATE_CARRY_BYTES (what a folder of `stage` may hold,
# default 64 MiB less the tree that travels and 256 KiB).
set -euo pipefail
cd "$(dirname "$0")/../.."

piece_bytes=${STATE_PIECE_BYTES:-16711680}
mib=$((1024 * 1024))

die() { echo "state.sh: $*" >&2; exit 1; }
. scripts/gpu/gpu-env.sh

# completed_epochs of a run's state.json.
epoch_of() {
  local n
  n=$(fer_completed_epochs "$1") ||
    die "$1: no completed_epochs"
  echo "$n"
}

# pack RUN_DIR DIR KEY: DIR/KEY.tar.pNN and DIR/KEY.sha256 (the tar's SHA-256, then each piece's).
pack() {
  local run=$1 dir=$2 key=$3 name tmp f base other
  name=$(basename "$run")
  tmp=$(mktemp -d "$dir/pack.XXXXXX")
  mkdir "$tmp/$name"
  for f in "$run"/*; do
    [ -f "$f" ] || continue
    base=$(basename "$f")
    case "$base" in
      *.tmp* | *.part) continue ;;
      # Staged files travel only while state.json lists them (an epoch killed in its commit).
      *.pending) grep -q '"pending"' "$run/state.json" || continue ;;
    esac
    ln "$f" "$tmp/$name/$base" 2>/dev/null || cp -p "$f" "$tmp/$name/$base"
  done
  if [ -f "$tmp/$name/best.fer" ]; then
    for other in latest.fer ema.fer; do
      if [ -f "$tmp/$name/$other" ] && cmp -s "$tmp/$name/best.fer" "$tmp/$name/$other"; then
        rm "$tmp/$name/best.fer"
        echo "$other" > "$tmp/$name/best.fer.same-as"
        break
      fi
    done
  fi
  tar -cf "$tmp/$key.tar" -C "$tmp" "$name"
  (cd "$tmp" && split -b "$piece_bytes" -d -a 2 "$key.tar" "$key.tar.p" && sha256sum "$key.tar" "$key".tar.p* > "$key.sha256")
  mv "$tmp/$key".tar.p* "$dir/"
  mv "$tmp/$key.sha256" "$dir/"
  rm -rf "$tmp"
}

# pieces KEY.sha256: the pieces it lists, in order.
pieces() { awk 'NR > 1 {print $2}' "$1"; }

# assemble DIR KEY: checks the pieces in DIR that KEY.sha256 lists. Prints "complete" once all are
# there and right, and builds DIR/KEY.tar (checked too); else prints how many are there. A damaged
# piece is removed, named, and the exit status is 1.
assemble() {
  local dir=$1 key=$2 manifest have=0 total=0 p bad=0
  manifest="$dir/$key.sha256"
  for p in $(pieces "$manifest"); do
    total=$((total + 1))
    [ -f "$dir/$p" ] || continue
    if (cd "$dir" && awk -v p="$p" 'NR > 1 && $2 == p' "$key.sha256" | sha256sum --quiet -c - >/dev/null 2>&1); then
      have=$((have + 1))
    else
      echo "state.sh: $dir/$p is damaged (its SHA-256 differs from $key.sha256): removed; bring it again" >&2
      rm -f "$dir/$p"
      bad=1
    fi
  done
  if [ "$have" -lt "$total" ]; then
    echo "$key: $have of $total pieces"
    return "$bad"
  fi
  (cd "$dir" && cat $(pieces "$key.sha256") > "$key.tar.part" && mv "$key.tar.part" "$key.tar")
  (cd "$dir" && head -n 1 "$key.sha256" | sha256sum --quiet -c -) ||
    { rm -f "$dir/$key.tar"; die "$dir/$key.tar: its SHA-256 differs from $key.sha256 though every piece matched"; }
  echo complete
}

# unpack TAR RUNS: the run in TAR into RUNS/NAME (an existing RUNS/NAME is moved aside to
# RUNS/NAME.before-eEPOCH-TIME first); prints its directory.
unpack() {
  local tar=$1 runs=$2 name tmp same aside
  name=$(tar -tf "$tar" | awk -F/ 'NR == 1 {print $1}')
  mkdir -p "$runs"
  tmp=$(mktemp -d "$runs/.unpack.XXXXXX")
  tar -xf "$tar" -C "$tmp"
  if [ -f "$tmp/$name/best.fer.same-as" ]; then
    same=$(cat "$tmp/$name/best.fer.same-as")
    case "$same" in latest.fer | ema.fer) ;; *) die "$tar: best.fer.same-as names $same" ;; esac
    cp -p "$tmp/$name/$same" "$tmp/$name/best.fer"
    rm "$tmp/$name/best.fer.same-as"
  fi
  if [ -e "$runs/$name" ]; then
    aside="$runs/$name.before-e$(epoch_of "$tmp/$name/state.json")-$(date +%s)"
    mv "$runs/$name" "$aside"
    echo "state.sh: $runs/$name existed: moved to $aside" >&2
  fi
  mv "$tmp/$name" "$runs/$name"
  rmdir "$tmp"
  echo "$runs/$name"
}

# The bytes that travel with every call besides what it carries: the tracked files and the
# untracked ones git does not ignore.
tree_bytes() {
  { git ls-files -z; git ls-files -z -o --exclude-standard; } | xargs -0 -r du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s + 0}'
}

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
  send)
    run=${1:?usage: state.sh send RUN_DIR}
    run=${run%/}
    out=${OUT:?set OUT to the folder results go to}
    [ -f "$run/state.json" ] || die "$run: no state.json (not a run directory, or no epoch completed yet)"
    name=$(basename "$run")
    [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || die "$run: the device tool brings back only names of letters, digits, '.', '_' and '-'"
    epoch=$(epoch_of "$run/state.json")
    key="$name.e$epoch"
    dir=${STAGE:-$HOME/stage}/state-out
    mkdir -p "$dir"
    if [ ! -f "$dir/$key.sha256" ]; then
      # An earlier epoch's pieces are of no use once a later epoch is committed.
      rm -f "$dir/$name".e[0-9]*.tar.p* "$dir/$name".e[0-9]*.sha256 "$dir/$name".e[0-9]*.sent
      pack "$run" "$dir" "$key"
      echo "$key: packed $(du -cb "$dir/$key".tar.p* | awk '$2 == "total" {printf "%.1f", $1 / 1048576}') MiB in $(pieces "$dir/$key.sha256" | wc -l) pieces"
    fi
    touch "$dir/$key.sent"
    mapfile -t all < <(pieces "$dir/$key.sha256")
    total=${#all[@]}
    per_call=$(((${STATE_OUT_BYTES:-$((64 * mib - 64 * 1024))}) / piece_bytes))
    [ "$per_call" -gt 7 ] && per_call=7
    [ "$per_call" -ge 1 ] || die "STATE_OUT_BYTES holds no piece of $piece_bytes bytes"
    chosen=()
    if [ -n "${STATE_PIECES:-}" ]; then
      for n in $STATE_PIECES; do
        [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le "$total" ] || die "STATE_PIECES: $n is not a piece of 1 to $total"
        chosen+=("${all[$((n - 1))]}")
      done
      [ "${#chosen[@]}" -le "$per_call" ] || die "STATE_PIECES: at most $per_call pieces a call"
    else
      for p in "${all[@]}"; do
        [ "${#chosen[@]}" -lt "$per_call" ] || break
        grep -qxF "$p" "$dir/$key.sent" || chosen+=("$p")
      done
    fi
    if [ "${#chosen[@]}" -eq 0 ]; then
      echo "$key: all $total pieces were sent already (STATE_PIECES=\"N …\" sends pieces again)"
      exit 0
    fi
    mkdir -p "$out"
    cp "$dir/$key.sha256" "$out/"
    for p in "${chosen[@]}"; do
      cp "$dir/$p" "$out/"
      grep -qxF "$p" "$dir/$key.sent" || echo "$p" >> "$dir/$key.sent"
    done
    left=$(comm -23 <(printf '%s\n' "${all[@]}" | sort) <(sort "$dir/$key.sent") | wc -l)
    echo "$key: sent ${chosen[*]} ($((total - left)) of $total pieces out)"
    if [ "$left" -gt 0 ]; then
      echo "$key: $left pieces left: call again at once with: bash scripts/gpu/state.sh send $run"
    else
      echo "$key: all $total pieces sent; here: bash scripts/gpu/state.sh take <each call's files_at>"
    fi
    ;;
  receive)
    stage=${STAGE:-$HOME/stage}
    from=${STATE_FROM:-.device-state}
    [ -d "$from" ] || die "no $from: carry a folder that state.sh stage made (.device-state/N)"
    dir="$stage/state-in"
    mkdir -p "$dir"
    found=0
    while IFS= read -r -d '' f; do
      cp -f "$f" "$dir/"
      found=$((found + 1))
    done < <(find "$from" -type f \( -name '*.sha256' -o -name '*.tar.p[0-9]*' \) -print0)
    [ "$found" -gt 0 ] || die "$from holds no pieces"
    status=0
    for manifest in "$dir"/*.sha256; do
      [ -f "$manifest" ] || die "$from holds pieces but no manifest (NAME.eEPOCH.sha256)"
      key=$(basename "$manifest" .sha256)
      result=$(assemble "$dir" "$key") || status=1
      if [ "$result" = complete ]; then
        where=$(unpack "$dir/$key.tar" "$stage/runs")
        rm -f "$dir/$key".tar* "$manifest"
        echo "$key: unpacked into $where: the same train part (its RUN, or the env that names it) resumes it"
      elif [ -n "$result" ]; then
        echo "$result: carry the next folder and call receive again"
      fi
    done
    exit "$status"
    ;;
  take)
    [ $# -gt 0 ] || die "usage: state.sh take DIR... (each call's returned files)"
    here=${STATE_HERE:-runs}
    dir="$here/gpu-state"
    mkdir -p "$dir"
    for from in "$@"; do
      [ -d "$from" ] || die "$from: no such folder"
      for f in "$from"/*.sha256 "$from"/*.tar.p[0-9]*; do
        [ -f "$f" ] || continue
        # A manifest of another packing of the same key would not match its pieces.
        if [ -f "$dir/$(basename "$f")" ] && [[ $f == *.sha256 ]] && ! cmp -s "$f" "$dir/$(basename "$f")"; then
          die "$f differs from $dir/$(basename "$f"): the state was packed again; take the new pieces into an empty STATE_HERE"
        fi
        cp -f "$f" "$dir/"
      done
    done
    status=0
    for manifest in "$dir"/*.sha256; do
      [ -f "$manifest" ] || continue
      key=$(basename "$manifest" .sha256)
      [ -f "$dir/$key.tar" ] && continue
      result=$(assemble "$dir" "$key") || status=1
      if [ "$result" = complete ]; then
        where=$(unpack "$dir/$key.tar" "$here/gpu")
        rm -f $(for p in $(pieces "$manifest"); do echo "$dir/$p"; done)
        echo "$key: kept as $dir/$key.tar, unpacked into $where"
      else
        echo "$result"
      fi
    done
    exit "$status"
    ;;
  stage)
    tar=${1:?usage: state.sh stage runs/gpu-state/NAME.eEPOCH.tar}
    [ -f "$tar" ] || die "$tar: no such file"
    key=$(basename "$tar" .tar)
    [[ $key =~ ^[A-Za-z0-9._-]+\.e[0-9]+$ ]] || die "$tar: expected NAME.eEPOCH.tar, as state.sh take keeps them"
    [ "$(tar -tf "$tar" | grep -c '^[^/]*/state.json$')" = 1 ] || die "$tar: no state.json in it: not a run's state"
    if [ -n "${STATE_CARRY_BYTES:-}" ]; then
      budget=$STATE_CARRY_BYTES
    else
      budget=$((64 * mib - $(tree_bytes) - 256 * 1024))
    fi
    [ "$budget" -ge 4096 ] || die "a call carries $budget bytes beside the tree: no room for the state"
    rm -rf .device-state
    tmp=$(mktemp -d)
    abs=$(realpath "$tar")
    # Carried files have no size limit of their own: one piece fills a call.
    (cd "$tmp" && split -b "$budget" -d -a 2 "$abs" "$key.tar.p" &&
      { echo "$(sha256sum < "$abs" | cut -d' ' -f1)  $key.tar"; sha256sum "$key".tar.p*; } > "$key.sha256")
    folder=1 used=0
    mkdir -p ".device-state/$folder"
    for p in $(pieces "$tmp/$key.sha256"); do
      size=$(stat -c %s "$tmp/$p")
      if [ "$used" -gt 0 ] && [ $((used + size)) -gt "$budget" ]; then
        folder=$((folder + 1)) used=0
        mkdir -p ".device-state/$folder"
      fi
      mv "$tmp/$p" ".device-state/$folder/"
      used=$((used + size))
    done
    for f in .device-state/*/; do cp "$tmp/$key.sha256" "$f"; done
    rm -rf "$tmp"
    echo "$key: $folder calls, one after another on one warm machine (at most $budget bytes each beside the tree):"
    for n in $(seq 1 "$folder"); do
      echo "  carry [\".device-state/$n\"], command: bash scripts/gpu/state.sh receive"
    done
    ;;
  *) die "usage: state.sh send RUN_DIR | receive | take DIR... | stage TAR" ;;
esac
