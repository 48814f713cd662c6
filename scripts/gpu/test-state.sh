#!/usr/bin/env bash
# Test of scripts/gpu/state.sh (no GPU needed; run by scripts/run-tests.sh): a run's state leaves a
# "GPU machine" (a scratch stage) in pieces over several "calls" (a fresh $OUT each), is taken here,
# staged into carry folders and received on a fresh stage, and must arrive byte for byte; damaged,
# missing and repacked pieces, and bad arguments, are refused or reported. With FER2013_CSV set (and
# the release fer built, as `cargo test` does, in $CARGO_TARGET_DIR or target/), a real run also
# goes across: 2 epochs trained, moved, then resumed to 3 on the other side must give the
# uninterrupted run's metrics and weights.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
scratch=$(mktemp -d)
[ -n "${TEST_STATE_KEEP:-}" ] || trap 'rm -rf "$scratch"' EXIT
failures=0
state() { bash "$repo/scripts/gpu/state.sh" "$@"; }
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
# expect_fail NAME PATTERN COMMAND...: COMMAND must exit non-zero and say PATTERN.
expect_fail() {
  local name=$1 pattern=$2 log
  shift 2
  log=$("$@" 2>&1) && { fail "$name: exited 0 ($log)"; return; }
  if grep -q -- "$pattern" <<< "$log"; then ok "$name"; else fail "$name: no '$pattern' in: $log"; fi
}
# same_files A B FILE...: each FILE is byte for byte the same in folders A and B.
same_files() {
  local a=$1 b=$2 f
  shift 2
  for f in "$@"; do cmp -s "$a/$f" "$b/$f" || return 1; done
}

# A run directory as `fer train` leaves it: checkpoints, optimiser state, run files; best.fer the
# same as latest.fer; a staged file of an epoch that never committed and a subfolder (neither travels).
run=$scratch/gpu/stage/runs/vgg19-fast-augment-strong
mkdir -p "$run/attack"
head -c 50000 /dev/urandom > "$run/latest.fer"
cp "$run/latest.fer" "$run/best.fer"
head -c 40000 /dev/urandom > "$run/latest.optim"
echo '{"completed_epochs": 7, "best_epoch": 6, "best_score": 0.5}' > "$run/state.json"
echo '{"epochs": 120}' > "$run/config.json"
printf 'epoch,lr\n0,0.01\n' > "$run/metrics.csv"
echo staged > "$run/latest.fer.pending"
echo report > "$run/attack/report.json"
moved=(latest.fer best.fer latest.optim state.json config.json metrics.csv)

export STATE_PIECE_BYTES=10000 STATE_OUT_BYTES=35000   # 3 pieces a call
calls=0
while :; do
  calls=$((calls + 1))
  log=$(STAGE=$scratch/gpu/stage OUT=$scratch/out$calls state send "$run")
  n=$(find "$scratch/out$calls" -name '*.tar.p*' | wc -l)
  [ "$n" -le 3 ] || fail "send: $n pieces in one call, the limit holds 3"
  grep -q 'all .* pieces sent' <<< "$log" && break
  [ "$calls" -lt 20 ] || { fail "send: never done"; break; }
done
# latest.fer and latest.optim, 90 KB, and the tar's headers and padding: 10 or 11 pieces of 10 KB;
# best.fer would add 5 more had it travelled beside latest.fer.
pieces=$(awk 'NR > 1' "$scratch/gpu/stage/state-out/vgg19-fast-augment-strong.e7.sha256" | wc -l)
if [ "$pieces" -le 12 ] && [ "$calls" = $(((pieces + 2) / 3)) ]; then
  ok "send: $pieces pieces in $calls calls (best.fer, the same as latest.fer, travelled once)"
else
  fail "send: $pieces pieces in $calls calls"
fi
log=$(STAGE=$scratch/gpu/stage OUT=$scratch/out-again state send "$run")
grep -q 'sent already' <<< "$log" && [ -z "$(ls "$scratch/out-again" 2>/dev/null)" ] && ok "send: nothing more once all are out" || fail "send again: $log"
STAGE=$scratch/gpu/stage OUT=$scratch/out-resend STATE_PIECES="2" state send "$run" > /dev/null
cmp -s "$scratch/out-resend/vgg19-fast-augment-strong.e7.tar.p01" "$scratch/out1/vgg19-fast-augment-strong.e7.tar.p01" &&
  ok "send: STATE_PIECES sends a piece again" || fail "send: STATE_PIECES=2 did not send piece 2 again"
expect_fail "send: a piece out of range" "not a piece" env STAGE="$scratch/gpu/stage" OUT="$scratch/x" STATE_PIECES=99 bash "$repo/scripts/gpu/state.sh" send "$run"
expect_fail "send: not a run directory" "no state.json" env STAGE="$scratch/gpu/stage" OUT="$scratch/x" bash "$repo/scripts/gpu/state.sh" send "$scratch"
mkdir -p "$scratch/bad name" && echo '{"completed_epochs": 1}' > "$scratch/bad name/state.json"
expect_fail "send: a name the tool cannot bring back" "letters, digits" env STAGE="$scratch/gpu/stage" OUT="$scratch/x" bash "$repo/scripts/gpu/state.sh" send "$scratch/bad name"

# Here: the calls' files taken in two goes, the first incomplete; one piece damaged on the way.
here=$scratch/here
half=$(((calls + 1) / 2))
log=$(STATE_HERE=$here state take $(seq -f "$scratch/out%g" 1 "$half"))
grep -q "of $pieces pieces" <<< "$log" && [ ! -d "$here/gpu" ] && ok "take: an incomplete state waits ($log)" || fail "take, first half: $log"
victim=$(ls "$scratch/out$calls"/*.tar.p* | head -n 1)
cp "$victim" "$scratch/victim"
printf 'X' | dd of="$victim" bs=1 seek=5 conv=notrunc 2>/dev/null
expect_fail "take: a damaged piece is named" "$(basename "$victim") is damaged" env STATE_HERE="$here" bash "$repo/scripts/gpu/state.sh" take $(seq -f "$scratch/out%g" "$((half + 1))" "$calls")
cp "$scratch/victim" "$victim"
log=$(STATE_HERE=$here state take "$scratch/out$calls")
if grep -q 'unpacked into' <<< "$log" && same_files "$run" "$here/gpu/vgg19-fast-augment-strong" "${moved[@]}" &&
  [ ! -e "$here/gpu/vgg19-fast-augment-strong/latest.fer.pending" ] && [ ! -e "$here/gpu/vgg19-fast-augment-strong/attack" ] &&
  [ ! -e "$here/gpu/vgg19-fast-augment-strong/best.fer.same-as" ]; then
  ok "take: the run arrives byte for byte (best.fer restored; no staged file, no subfolder)"
else
  fail "take: $log"
fi
tar=$here/gpu-state/vgg19-fast-augment-strong.e7.tar
[ -f "$tar" ] && [ -z "$(ls "$here/gpu-state"/*.tar.p* 2>/dev/null)" ] && ok "take: the state is kept as one tar, its pieces removed" || fail "take: $(ls "$here/gpu-state")"

# A later epoch packs anew and drops the earlier epoch's pieces there; here, its manifest differs.
echo '{"completed_epochs": 8, "best_epoch": 7, "best_score": 0.6, "pending": ["ema.fer"]}' > "$run/state.json"
head -c 30000 /dev/urandom > "$run/ema.fer"
cp "$run/ema.fer" "$run/best.fer"
for n in $(seq 1 10); do STAGE=$scratch/gpu/stage OUT=$scratch/out-e8 state send "$run"; done > /dev/null
ls "$scratch/gpu/stage/state-out" | grep -q '\.e7\.' && fail "send: epoch 7's pieces stayed beside epoch 8's" || ok "send: a later epoch replaces an earlier one's pieces"
cp "$scratch/out-e8/vgg19-fast-augment-strong.e8.sha256" "$scratch/out-e8/vgg19-fast-augment-strong.e7.sha256"
expect_fail "take: a repacked state's manifest is refused" "packed again" env STATE_HERE="$here" bash "$repo/scripts/gpu/state.sh" take "$scratch/out-e8"
rm "$scratch/out-e8/vgg19-fast-augment-strong.e7.sha256"
STATE_HERE=$scratch/here-e8 state take "$scratch/out-e8" > /dev/null
same_files "$run" "$scratch/here-e8/gpu/vgg19-fast-augment-strong" best.fer ema.fer state.json latest.fer.pending &&
  ok "take: best.fer the same as ema.fer travels once too; listed staged files travel" || fail "take: epoch 8 did not arrive"

# Staged into carry folders and received on a fresh machine, one folder a call.
cd "$scratch" && git init -q carry && cd carry
mkdir -p scripts/gpu && cp "$repo/scripts/gpu/state.sh" "$repo/scripts/gpu/gpu-env.sh" scripts/gpu/ && echo /.device-state > .gitignore
expect_fail "stage: not a kept state" "expected NAME.eEPOCH.tar" bash scripts/gpu/state.sh stage "$run/latest.fer"
expect_fail "stage: no room beside the tree" "no room for the state" env STATE_CARRY_BYTES=100 bash scripts/gpu/state.sh stage "$tar"
log=$(STATE_CARRY_BYTES=25000 bash scripts/gpu/state.sh stage "$tar")
folders=$(ls .device-state | wc -l)
big=$(for f in .device-state/*; do du -cb "$f"/*.tar.p* | tail -n 1 | cut -f1; done | sort -n | tail -n 1)
fewest=$((($(stat -c %s "$tar") + 24999) / 25000))   # each folder filled to its budget
[ "$folders" = "$fewest" ] && [ "$big" -le 25000 ] && ok "stage: $folders folders of at most $big bytes, the fewest that hold it" || fail "stage: $folders folders (fewest $fewest), the largest $big bytes: $log"
mkdir -p "$scratch/fresh/stage/runs/vgg19-fast-augment-strong"   # an older copy there: moved aside
for n in $(seq 1 "$folders"); do
  log=$(STAGE=$scratch/fresh/stage STATE_FROM=.device-state/$n bash scripts/gpu/state.sh receive 2>&1)
  if [ "$n" -lt "$folders" ]; then
    grep -q 'carry the next folder' <<< "$log" || fail "receive $n: $log"
  fi
done
landed=$scratch/fresh/stage/runs/vgg19-fast-augment-strong
if grep -q 'unpacked into' <<< "$log" && grep -q 'moved to' <<< "$log" && same_files "$here/gpu/vgg19-fast-augment-strong" "$landed" "${moved[@]}" &&
  ls -d "$landed".before-e7-* > /dev/null 2>&1; then
  ok "receive: the run lands byte for byte after $folders calls; the copy there before is moved aside"
else
  fail "receive: $log"
fi
expect_fail "receive: nothing carried" "no $scratch/none" env STAGE="$scratch/fresh/stage" STATE_FROM="$scratch/none" bash scripts/gpu/state.sh receive

# A real run across: train 2 of 3 epochs there, move it, resume here on the other side.
fer=${CARGO_TARGET_DIR:-$repo/target}/release/fer
if [ -n "${FER2013_CSV:-}" ] && [ -x "$fer" ] && "$fer" train --help | grep -q -- --stop-after; then
  small=(--model vgg-small --recipe fast --epochs 3 --bs 8 --train-limit 64 --eval-limit 16 --no-tencrop --device cpu --data "$FER2013_CSV")
  "$fer" train "${small[@]}" --out "$scratch/whole" > "$scratch/whole.log" 2>&1
  "$fer" train "${small[@]}" --stop-after 2 --out "$scratch/leg/stage/runs/small" > "$scratch/leg.log" 2>&1
  unset STATE_PIECE_BYTES STATE_OUT_BYTES
  calls=0
  while :; do
    calls=$((calls + 1))
    STAGE=$scratch/leg/stage OUT=$scratch/leg/out$calls STATE_PIECE_BYTES=50000 STATE_OUT_BYTES=100000 state send "$scratch/leg/stage/runs/small" | grep -q 'all .* pieces sent' && break
    [ "$calls" -lt 20 ] || break
  done
  STATE_HERE=$scratch/leg/here state take "$scratch"/leg/out* > /dev/null
  STATE_PIECE_BYTES=50000 STATE_CARRY_BYTES=100000 bash scripts/gpu/state.sh stage "$scratch/leg/here/gpu-state/small.e2.tar" > /dev/null
  for n in $(ls .device-state); do STAGE=$scratch/leg/stage2 STATE_FROM=.device-state/$n bash scripts/gpu/state.sh receive > /dev/null; done
  "$fer" train --resume --device cpu --data "$FER2013_CSV" --out "$scratch/leg/stage2/runs/small" > "$scratch/resume.log" 2>&1
  # Every column but the timings (img_per_s, seconds).
  columns() { python3 -c 'import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for r in rows:
    print({k: v for k, v in r.items() if k not in ("img_per_s", "seconds")})' "$1"; }
  # The weights (a .fer file also holds Burn's random parameter ids; `fer export` writes the
  # same bytes for the same weights and config).
  "$fer" export --checkpoint "$scratch/whole/latest.fer" --out "$scratch/whole.safetensors" > /dev/null 2>&1
  "$fer" export --checkpoint "$scratch/leg/stage2/runs/small/latest.fer" --out "$scratch/leg.safetensors" > /dev/null 2>&1
  if [ "$calls" -ge 2 ] && [ "$(columns "$scratch/whole/metrics.csv")" = "$(columns "$scratch/leg/stage2/runs/small/metrics.csv")" ] &&
    [ -s "$scratch/whole.safetensors" ] && cmp -s "$scratch/whole.safetensors" "$scratch/leg.safetensors"; then
    ok "a real run (vgg-small, 64 faces): 2 epochs, moved in $calls calls and back, resumed to 3 = the run without a break"
  else
    fail "a real run across: $calls calls; metrics or weights differ from the run without a break"
    diff <(columns "$scratch/whole/metrics.csv") <(columns "$scratch/leg/stage2/runs/small/metrics.csv") || true
  fi
else
  echo "note: FER2013_CSV is not set or $fer is not built: the real run across is not tested"
fi

[ "$failures" -eq 0 ] || { echo "test-state: $failures failures" >&2; exit 1; }
echo "test-state: all passed"
