#!/usr/bin/env bash
# There (on the lent GPU machine), after scripts/gpu/README.md's staging calls: the GPU checks of
# the open issues, one part per `run` call (each must finish within the 10-minute call limit).
# Every result goes to $OUT/<part>/ (JSON, CSV, logs), with `nvidia-smi -L` naming the card.
#
#   scripts/gpu/checks.sh speed     Burn vs PyTorch training img/s, VGG19 and ResNet18, batch 128,
#                                   side by side in one call; model B's img/s; the kernel benches
#   scripts/gpu/checks.sh train N   FER_MODEL (default VGG19) fast recipe for N epochs (resumable:
#                                   call again to go on)
#   scripts/gpu/checks.sh adv-train N BN
#                                   the same with the reference's FGSM adversarial training (ε = 0.3)
#                                   and `--adv-bn BN` (batch-update = the reference, or running), into
#                                   $RUN-fgsm-at-BN (resumable); with INIT=CHECKPOINT it fine-tunes
#                                   that checkpoint instead (fer train --init) into $RUN-fgsm-ft-BN;
#                                   ADV_METHOD=fgsm-rs|pgd trains with that attack instead (run dir
#                                   $RUN-ADV_METHOD-at-BN), ADV_EPS=8/255 at that budget (…-eps8_255-…)
#                                   ADV_EVAL_VIEW=center measures each epoch's robustness on the
#                                   centred 44×44 crop instead of the full face (the run's name is
#                                   unchanged: config.json records it); SELECT=mean-balanced (or
#                                   any `fer train --select` value; default mean) picks best.fer;
#                                   ADV_CLEAN_BN=running (with BN running and INIT: frozen BatchNorm
#                                   statistics), ADV_EPS_RAMP=EPOCHS and ADV_WEIGHT=W (default 0.5)
#                                   pass --adv-clean-bn, --adv-eps-ramp and --adv-weight;
#                                   TRADES_BETA=B trains with TRADES (--trades-beta B, PGD or
#                                   FGSM-RS on the clean answer distribution; run dir …-trades<B>-…)
#   scripts/gpu/checks.sh attack    FGSM ε = 0.3 (reference protocol) + PGD-10 on the run's best.fer,
#                                   on full faces and through the centred 44×44 crop (RUN=… to attack
#                                   another run, e.g. an adv-train one; ADV_EPS=… attacks at that
#                                   budget instead)
#
# Environment: FER (the fer binary, default $HOME/stage/fer), KERNELS (default $HOME/stage/kernels),
# FER2013_CSV (default $HOME/stage/fer2013.csv.gz), FER_DEVICE (default cuda), FER_MODEL (vgg19 or
# resnet18, the model `train` and `adv-train` start; default vgg19), RUN (default
# $HOME/stage/runs/FER_MODEL-fast), FER_GPU_STEPS (timed steps, default 20), FER_GPU_SMALL=1 (tiny
# sizes: how this script is tested on a CPU), OUT (the device tool sets it).
set -euo pipefail
cd "$(dirname "$0")/../.."
fer=${FER:-$HOME/stage/fer}
kernels=${KERNELS:-$HOME/stage/kernels}
data=${FER2013_CSV:-$HOME/stage/fer2013.csv.gz}
device=${FER_DEVICE:-cuda}
model=${FER_MODEL:-vgg19}
# Each model with its CPU-sized sibling of the same family, which the CPU dry run trains instead.
case "$model" in
  vgg19) small_model=vgg-small ;;
  resnet18) small_model=resnet-small ;;
  *) echo "FER_MODEL=$model: expected vgg19 or resnet18" >&2; exit 2 ;;
esac
run=${RUN:-$HOME/stage/runs/$model-fast}
steps=${FER_GPU_STEPS:-20}
out=${OUT:?set OUT to the folder results go to}
small=${FER_GPU_SMALL:-0}
bs=128; models="vgg19 resnet18"
if [ "$small" = 1 ]; then bs=8; model=$small_model; models="$model"; fi

# The training attack and the budget of adv-train and attack; a run's name says both unless they
# are the reference's (fgsm, 0.3), so the default names stay those of earlier sessions.
adv=${ADV_METHOD:-fgsm}
eps=${ADV_EPS:-0.3}
case "$adv" in fgsm | fgsm-rs | pgd) ;; *) echo "ADV_METHOD=$adv: expected fgsm, fgsm-rs or pgd" >&2; exit 2 ;; esac
eps_suffix=; [ "$eps" != 0.3 ] && eps_suffix="-eps${eps//\//_}"
tag=$adv$eps_suffix
[ -n "${TRADES_BETA:-}" ] && tag="$tag-trades$TRADES_BETA"

part=${1:?usage: checks.sh speed | train N | adv-train N BN | attack}
dir="$out/$part"
if [ "$part" = adv-train ]; then
  bn=${3:?usage: checks.sh adv-train EPOCHS batch-update|batch|running}
  if [ -n "${INIT:-}" ]; then kind=ft; else kind=at; fi
  run="$run-$tag-$kind-$bn"; dir="$out/$part-$tag-$kind-$bn"
fi
[ "$part" = attack ] && dir="$out/attack-$(basename "$run")$eps_suffix"
mkdir -p "$dir"
{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi (CPU dry run)"; "$fer" --version; } > "$dir/machine.txt"

case "$part" in
  speed)
    for m in $models; do
      "$fer" bench-train --model "$m" --bs "$bs" --steps "$steps" --device "$device" --json > "$dir/burn-$m.json"
      if [ "$small" != 1 ]; then
        python3 benches/reference/torch_train.py --model "$m" --bs "$bs" --steps "$steps" > "$dir/torch-$m.txt" 2>&1 || true
      fi
    done
    # The landmarks + HOG model B (Burn only: the reference is TensorFlow/tflearn, not timed here).
    hog=cnn-hog-b; hog_args=(); [ "$small" = 1 ] && { hog=cnn-hog-tiny; hog_args=(--feature-set landmarks); }
    "$fer" bench-train --model "$hog" "${hog_args[@]}" --bs "$bs" --steps "$steps" --device "$device" --json > "$dir/burn-$hog.json"
    if [ -x "$kernels" ] || [ -f "$kernels" ]; then
      chmod +x "$kernels"
      FER_BENCH_BATCH=$bs timeout 420 "$kernels" --bench "${device%%:*}/" > "$dir/kernels.txt" 2>&1 || echo "kernels: exit $?" >> "$dir/kernels.txt"
    fi
    ;;
  train | adv-train)
    epochs=${2:?usage: checks.sh $part EPOCHS}
    args=(--model "$model" --recipe fast --bs "$bs" --epochs "$epochs" --device "$device" --data "$data" --out "$run")
    if [ "$part" = adv-train ]; then
      args+=(--adversarial "$adv" --eps "$eps" --adv-bn "$bn" --adv-eval-view "${ADV_EVAL_VIEW:-full}" --select "${SELECT:-mean}" --adv-clean-bn "${ADV_CLEAN_BN:-batch-update}" --adv-eps-ramp "${ADV_EPS_RAMP:-0}")
      if [ -n "${TRADES_BETA:-}" ]; then args+=(--trades-beta "$TRADES_BETA"); else args+=(--adv-weight "${ADV_WEIGHT:-0.5}"); fi
      [ -n "${INIT:-}" ] && args+=(--init "$INIT")
    fi
    [ "$small" = 1 ] && args+=(--train-limit 64 --eval-limit 16 --no-tencrop)
    [ "$small" = 1 ] && [ "$part" = adv-train ] && args+=(--check-faces 8)
    if [ -f "$run/state.json" ]; then "$fer" train --resume --device "$device" --data "$data" --out "$run"; else "$fer" train "${args[@]}"; fi > "$dir/train.txt" 2>&1
    cp "$run/metrics.csv" "$run/config.json" "$dir/"
    [ -f "$run/report.json" ] && cp "$run/report.json" "$dir/"
    ;;
  attack)
    limit=(); [ "$small" = 1 ] && limit=(--limit 16)
    "$fer" attack --checkpoint "$run/best.fer" --method fgsm --eps "$eps" --device "$device" --data "$data" "${limit[@]}" --out "$dir/fgsm" --json > "$dir/fgsm.json"
    "$fer" attack --checkpoint "$run/best.fer" --method pgd --eps "$eps" --steps 10 --device "$device" --data "$data" "${limit[@]}" --out "$dir/pgd" --json > "$dir/pgd.json"
    for method in fgsm pgd; do
      "$fer" attack --checkpoint "$run/best.fer" --center-crop --method "$method" --eps "$eps" --steps 10 --device "$device" --data "$data" "${limit[@]}" --out "$dir/$method-center" --json > "$dir/$method-center.json"
    done
    ;;
  *) echo "unknown part $part: speed | train N | adv-train N BN | attack" >&2; exit 2 ;;
esac
ls -la "$dir"
