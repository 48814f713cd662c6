#!/usr/bin/env bash
# There (on the lent GPU machine): one whole device call. Unpacks what the call carried
# (scripts/gpu/unpack.sh), runs the given scripts/gpu/checks.sh parts one after another until the
# call's deadline, and packs every result into $OUT/results.tar.gz (results-2.tar.gz, … for a
# second call.sh in one command): the device tool brings back at most 8 files, and the parts write
# dozens. A part that fails or runs out of time is recorded in parts.txt and the next one still
# runs; the archive is written however the parts end. It is also rewritten every
# FER_GPU_SNAPSHOT seconds (default 45) while the parts run, with the live files of the run
# directories ($STAGE/runs/*/, less the checkpoints): a call the device tool stops at its limit
# (which is shorter than asked when little device time is left) still brings back its last one.
# Burn's kernel caches (autotune results, compiled kernels) go back as $OUT/cubecl-cache.tar.gz,
# rewritten with the archive: carried as .device-tune/ in a later session, they spare a fresh
# machine with the same card the autotuning (scripts/gpu/README.md).
#
#   bash scripts/gpu/call.sh [--limit SECONDS] PART...
#
# PART is a checks.sh part with its arguments joined by ':' (speed, kernels, train:30, train:budget,
# attack, adv-train:5:running). Environment variables (RUN, FER_MODEL, ADV_EPS, …) pass through
# to every part. --limit: seconds from now by which the parts must end (default 560, which leaves
# the packing and the transfer inside the tool's 600-second call limit).
set -uo pipefail
cd "$(dirname "$0")/../.."
limit=560
if [ "${1:-}" = --limit ]; then limit=${2:?--limit SECONDS}; shift 2; fi
[ $# -gt 0 ] || { echo "usage: call.sh [--limit SECONDS] PART..." >&2; exit 2; }
out=${OUT:?set OUT to the folder results go to}
stage=${STAGE:-$HOME/stage}
export FER_GPU_DEADLINE=$(($(date +%s) + limit))
results="$out/results"
mkdir -p "$results"
. scripts/gpu/gpu-env.sh

# results.tar.gz, or results-2.tar.gz, … when one command runs call.sh more than once.
archive=$out/results.tar.gz
n=2; while [ -e "$archive" ]; do archive=$out/results-$n.tar.gz; n=$((n + 1)); done
# The archive as things stand: results, and each run directory's files but its checkpoints and
# optimizer state (metrics.csv, config.json, state.json, report.json, plots).
snapshot() {
  local run copy
  for run in "$stage"/runs/*/; do
    [ -d "$run" ] || continue
    copy="$results/runs/$(basename "$run")"
    mkdir -p "$copy"
    find "$run" -maxdepth 1 -type f ! -name '*.fer' ! -name '*.optim' ! -name '*.tmp*' -size -4M -exec cp {} "$copy/" \; 2>/dev/null || true
  done
  # Each writer its own temporary file: the final snapshot never shares one with the loop's.
  tar -C "$out" -czf "$archive.$BASHPID.part" results && mv "$archive.$BASHPID.part" "$archive"
}
# Burn's kernel caches: the repository's cubecl.toml keeps the compiled kernels in target/, beside
# the autotune results (which kernel won for each shape), for every process of the call (each part
# runs from here); a later call on this warm machine finds them there. They also go back in
# $OUT/cubecl-cache.tar.gz, with card.txt naming the card that made them and its compute
# capability: carried in a later session as .device-tune/cubecl-cache.tar.gz, unpack.sh puts them
# back on a fresh machine with the same card (or, failing that, a card of the same compute
# capability), which then skips the minutes of autotuning. Over the tool's 16 MiB a file, only the
# autotune results go back (kilobytes; the kernels compile again).
cache=$PWD/target
export FER_CUBECL_CACHE=$cache
save_cache() {
  [ -d "$cache/autotune" ] || return 0
  local part="$out/cubecl-cache.tar.gz.$BASHPID.part" dirs=() d
  for d in autotune cuda vulkan hip; do [ -d "$cache/$d" ] && dirs+=("$d"); done
  fer_card_txt > "$out/card.txt"
  tar -czf "$part" -C "$out" card.txt -C "$cache" "${dirs[@]}" &&
    if [ "$(stat -c %s "$part")" -gt $((15 * 1024 * 1024)) ]; then
      tar -czf "$part" -C "$out" card.txt -C "$cache" autotune
    fi &&
    mv "$part" "$out/cubecl-cache.tar.gz"
  rm -f "$out/card.txt"
}
pack() {
  pkill -P "$snapshots" 2>/dev/null; kill "$snapshots" 2>/dev/null; wait "$snapshots" 2>/dev/null
  snapshot && rm -rf "$results"
  rm -f "$archive".*.part
  save_cache; rm -f "$out"/cubecl-cache.tar.gz.*.part
  ls -la "$out"
}
(while sleep "${FER_GPU_SNAPSHOT:-45}"; do snapshot; save_cache; done) 2>/dev/null &
snapshots=$!
trap pack EXIT

fer_gpu_env > "$results/gpu-env.txt" 2>&1
{ date -u; nvidia-smi 2>/dev/null || echo "no nvidia-smi (CPU dry run)"; cat "$results/gpu-env.txt"; } > "$results/machine.txt"
bash scripts/gpu/unpack.sh 2>&1 | tee "$results/unpack.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "unpack failed: nothing to run" | tee -a "$results/parts.txt"; exit 3; }

for spec in "$@"; do
  IFS=: read -r -a part <<< "$spec"
  left=$((FER_GPU_DEADLINE - $(date +%s)))
  if [ "$left" -le 10 ]; then
    echo "$spec: skipped, no time left" | tee -a "$results/parts.txt"
    continue
  fi
  start=$(date +%s)
  OUT=$results timeout "$left" bash scripts/gpu/checks.sh "${part[@]}" > "$results/$spec.log" 2>&1
  status=$?
  note=; [ "$status" = 124 ] && note=" (stopped at the deadline)"
  echo "$spec: exit $status after $(($(date +%s) - start)) s$note" | tee -a "$results/parts.txt"
done
