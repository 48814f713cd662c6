#!/usr/bin/env bash
# There (on the lent GPU machine), after scripts/gpu/unpack.sh: the GPU checks of the open issues.
# Parts run one after another in a call (each call must end within its 10-minute limit). Every
# result goes to $OUT/<part>/ (JSON, CSV, logs), with `nvidia-smi -L` naming the card.
#
#   scripts/gpu/checks.sh speed     Burn vs PyTorch training img/s, VGG19 and ResNet18, batch 128,
#                                   side by side in one call; model B's img/s; VGG19's step of
#                                   FGSM adversarial training (adv-fgsm-vgg19.json)
#   scripts/gpu/checks.sh profile   where a training step's device time goes, kernel by kernel:
#                                   CubeCL's profile of the last of 3 bench-train steps of FER_MODEL
#                                   (PROFILE_MODELS="vgg19 resnet18" for both; profile-MODEL.txt, the
#                                   raw log's end profile-MODEL.log-tail.gz); after `train` its
#                                   shapes are tuned; GPU_BATCH_NORM=composed profiles the composed
#                                   BatchNorm instead (profile-MODEL-composed.*)
#   scripts/gpu/checks.sh wgrad     the convolution weight gradients as Burn computes them against
#                                   fer-models' batched GEMMs, side by side: bench-train of each
#                                   model in WGRAD_MODELS (default FER_MODEL) for each way in
#                                   WGRAD_WAYS (default "backend gemm-stem": the GEMMs for the gray
#                                   first layer only; "gemm" routes every map of 16 pixels or more),
#                                   alternated over WGRAD_ROUNDS rounds (default 2) of WGRAD_STEPS
#                                   timed steps (default 10) after 3 warm-up steps
#                                   (wgrad-MODEL-WAY-ROUND.json; wgrad.txt: each way's median step
#                                   and its speed against Burn's own; fastest-MODEL.txt: the way a
#                                   later train or adv-train part of the call takes, when
#                                   WEIGHT_GRADIENT is unset: the fastest if 3 % ahead, else backend)
#   scripts/gpu/checks.sh batchnorm fer-models' BatchNorm as one autodiff operation (the default)
#                                   against the composed formula (`--gpu-batch-norm composed`), side
#                                   by side: bench-train of each model in BN_MODELS (default "vgg19
#                                   resnet18"), the two ways alternated over BN_ROUNDS rounds
#                                   (default 2) of BN_STEPS timed steps (default 10) after 3 warm-up
#                                   steps (bn-MODEL-WAY-ROUND.json); bn.txt: each way's median step
#                                   over all its rounds and their ratio
#   scripts/gpu/checks.sh kernels   the criterion kernel benches of the device's backend (carry
#                                   .device-kernels)
#   scripts/gpu/checks.sh train N   FER_MODEL (default VGG19) fast recipe for N epochs (resumable:
#                                   call again to go on; stops 15 s before the call's deadline, and
#                                   scripts/gpu/state.sh moves the run to a later lease); per-epoch
#                                   evaluation on the centre crop, then, once the run is done,
#                                   TenCrop on best.fer (eval-tencrop-{public,private}.json)
#   scripts/gpu/checks.sh train budget
#                                   as many epochs as end before FER_GPU_DEADLINE (seconds since
#                                   1970, set at the start of the call) less the time of a TenCrop
#                                   evaluation and of `attack`, from the img/s `speed` measured in
#                                   this call or an earlier one on the machine ($STAGE/burn-*.json;
#                                   else a 5-step bench); per-epoch evaluation on the centre crop,
#                                   then TenCrop on best.fer (eval-tencrop-*.json)
#   scripts/gpu/checks.sh adv-train N BN
#                                   the same with the reference's FGSM adversarial training (ε = 0.3)
#                                   and `--adv-bn BN` (batch-update = the reference, or running), into
#                                   $RUN-fgsm-at-BN (resumable); with INIT=CHECKPOINT it fine-tunes
#                                   that checkpoint instead (fer train --init) into $RUN-fgsm-ft-BN;
#                                   ADV_METHOD=fgsm-rs|n-fgsm|pgd trains with that attack instead (run
#                                   dir $RUN-ADV_METHOD-at-BN; ADV_NOISE=… sets n-fgsm's noise, default
#                                   2ε), ADV_EPS=8/255 at that budget (…-eps8_255-…);
#                                   ADV_LINEARITY=λ adds ELLE's local-linearity term (…-elleλ-…)
#                                   ADV_EVAL_VIEW=center measures each epoch's robustness on the
#                                   centred 44×44 crop instead of the full face (the run's name is
#                                   unchanged: config.json records it); SELECT=mean-balanced (or
#                                   any `fer train --select` value; default mean) picks best.fer;
#                                   ADV_CLEAN_BN=running (with BN running and INIT: frozen BatchNorm
#                                   statistics), ADV_EPS_RAMP=EPOCHS and ADV_WEIGHT=W (default 0.5)
#                                   pass --adv-clean-bn, --adv-eps-ramp and --adv-weight;
#                                   TRADES_BETA=B trains with TRADES (--trades-beta B, PGD or
#                                   FGSM-RS on the clean answer distribution; run dir …-trades<B>-…)
#   scripts/gpu/checks.sh attack    FGSM ε = 0.3 (reference protocol) on every PrivateTest face +
#                                   PGD-10 on the first ATTACK_PGD_FACES (default 1000) on the run's
#                                   best.fer, on full faces and through the centred 44×44 crop (RUN=…
#                                   to attack another run, e.g. an adv-train one; ADV_EPS=… attacks at
#                                   that budget instead; ATTACK_METHODS="fgsm pgd apgd" adds APGD-CE
#                                   then APGD-DLR, 100 passes each, on the PGD faces: the check of a
#                                   defence that PGD-10 can overstate)
#
# Environment: STAGE (where unpack.sh put the files, default $HOME/stage), FER (default
# $STAGE/fer, or $STAGE/fer-vulkan for a vulkan or wgpu FER_DEVICE), FER_GPU_TORCH=0 (`speed`
# without PyTorch), KERNELS (default $STAGE/kernels), FER2013_CSV (default $STAGE/fer2013.cache, else
# $STAGE/fer2013.csv.gz), FER_DEVICE (default cuda), FER_MODEL (vgg19 or resnet18, the model
# `train` and `adv-train` start; default vgg19), RUN (default $STAGE/runs/FER_MODEL-fast),
# FER_GPU_STEPS (timed steps, default 20), LR and WARMUP_EPOCHS (`train`, `adv-train`: the fast
# recipe's peak learning rate and warm-up epochs, e.g. LR=0.001 WARMUP_EPOCHS=0 to fine-tune),
# AUGMENT (`train`, `adv-train`: none or strong, fer's --augment; strong runs are named
# $RUN-augment-strong by default), MIXUP=ALPHA and LABEL_SMOOTHING=S (`train`: fer's --mixup and
# --label-smoothing; the default run name gains -mixupALPHA and -lsS), NESTEROV=1 (`train`,
# `adv-train`: fer's --nesterov; the run name gains -nesterov), EMA=DECAY (`train`, `adv-train`:
# fer's --ema, a moving average of the weights as the run's model; the run name gains -emaDECAY),
# WHOLE_FACES=PCT (`train`, `adv-train`: fer's --whole-faces, whole 48×48 faces in PCT % of the
# training batches, the view the reference's attack evaluates; the run name gains -wholePCT),
# WEIGHT_GRADIENT (`train`, `adv-train`: fer's --weight-gradient, e.g. gemm; default Burn's),
# GPU_BATCH_NORM (`train`, `adv-train`, `profile`: fer's --gpu-batch-norm, operation or composed;
# default operation), SEED=N (`train`, `adv-train`: fer's --seed, default the recipe's 0; the run
# name gains -seedN: a lease that repeats an earlier lease's recipe with another seed gives
# `fer ensemble` a member that errs on other faces), TRAINING_ANSWERS=1 (`train`: TenCrop answers
# of best.fer on the whole Training split too, answers-tencrop-training.csv.gz, ~1 MB: what a later
# run distils from; the budget keeps time for it: ten forwards a face, about three epochs of the
# step, ~32 s on an H200), TEACHERS="A.csv.gz
# B.csv.gz" (`train`: fer's --teacher for each, knowledge distillation from those answers on the
# Training split, averaged; DISTILL_WEIGHT and TEMPERATURE pass --distill-weight and --temperature;
# the run name gains -kdN for N teachers),
# FER_GPU_DEADLINE (for `train budget`), FER_GPU_SMALL=1 (tiny sizes: how this script is tested on
# a CPU), OUT (the device tool sets it).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/gpu/gpu-env.sh
stage=${STAGE:-$HOME/stage}
device=${FER_DEVICE:-cuda}
fer=$stage/fer
# The Vulkan build travels on its own (.device-vulkan): .device-bin's fer has CUDA (and flex) only.
case "$device" in vulkan* | wgpu*) [ -f "$stage/fer-vulkan" ] && fer=$stage/fer-vulkan ;; esac
fer=${FER:-$fer}
# need_flag PART FLAG [SUBCOMMAND]: stop PART, saying so, when the carried fer (SUBCOMMAND) lacks
# FLAG, i.e. the bundle is older than the flag.
need_flag() {
  has_flag "$2" ${3:+"$3"} || { echo "$1: $fer has no $2 (rebuild the bundle)" >&2; exit 2; }
}
# has_flag TEXT [SUBCOMMAND]: whether the carried fer's (SUBCOMMAND's) help names TEXT.
has_flag() {
  "$fer" ${2:+"$2"} --help | grep -q -- "$1"
}
kernels=${KERNELS:-$stage/kernels}
data=${FER2013_CSV:-$stage/fer2013.cache}
[ -n "${FER2013_CSV:-}" ] || [ -f "$data" ] || data=$stage/fer2013.csv.gz
model=${FER_MODEL:-vgg19}
# Each model with its CPU-sized sibling of the same family, which the CPU dry run trains instead.
case "$model" in
  vgg19) small_model=vgg-small ;;
  resnet18) small_model=resnet-small ;;
  *) echo "FER_MODEL=$model: expected vgg19 or resnet18" >&2; exit 2 ;;
esac
# AUGMENT=strong (`train`, `adv-train`: fer's --augment) names the default run after it, so the
# `attack` of the same call finds it.
augment=${AUGMENT:-none}
case "$augment" in none | strong) ;; *) echo "AUGMENT=$augment: expected none or strong" >&2; exit 2 ;; esac
aug_suffix=; [ "$augment" != none ] && aug_suffix="-augment-$augment"
[ -n "${MIXUP:-}" ] && aug_suffix="$aug_suffix-mixup$MIXUP"
[ -n "${LABEL_SMOOTHING:-}" ] && aug_suffix="$aug_suffix-ls$LABEL_SMOOTHING"
case "${NESTEROV:-0}" in 0) ;; 1) aug_suffix="$aug_suffix-nesterov" ;; *) echo "NESTEROV=$NESTEROV: expected 0 or 1" >&2; exit 2 ;; esac
[ -n "${EMA:-}" ] && aug_suffix="$aug_suffix-ema$EMA"
[ -n "${WHOLE_FACES:-}" ] && aug_suffix="$aug_suffix-whole$WHOLE_FACES"
[ -n "${TEACHERS:-}" ] && aug_suffix="$aug_suffix-kd$(echo "$TEACHERS" | wc -w)"
case "${SEED:-}" in '' | *[!0-9]*) [ -z "${SEED:-}" ] || { echo "SEED=$SEED: expected a whole number" >&2; exit 2; } ;; *) aug_suffix="$aug_suffix-seed$SEED" ;; esac
run=${RUN:-$stage/runs/$model-fast$aug_suffix}
steps=${FER_GPU_STEPS:-20}
pgd_faces=${ATTACK_PGD_FACES:-1000}
out=${OUT:?set OUT to the folder results go to}
small=${FER_GPU_SMALL:-0}
bs=128; models="vgg19 resnet18"
if [ "$small" = 1 ]; then bs=8; model=$small_model; models="$model"; fi

# The training attack and the budget of adv-train and attack; a run's name says both unless they
# are the reference's (fgsm, 0.3), so the default names stay those of earlier sessions.
adv=${ADV_METHOD:-fgsm}
eps=${ADV_EPS:-0.3}
case "$adv" in fgsm | fgsm-rs | n-fgsm | pgd) ;; *) echo "ADV_METHOD=$adv: expected fgsm, fgsm-rs, n-fgsm or pgd" >&2; exit 2 ;; esac
[ -n "${ADV_NOISE:-}" ] && [ "$adv" != n-fgsm ] && { echo "ADV_NOISE: a setting of ADV_METHOD=n-fgsm only" >&2; exit 2; }
eps_suffix=; [ "$eps" != 0.3 ] && eps_suffix="-eps${eps//\//_}"
tag=$adv$eps_suffix
[ -n "${TRADES_BETA:-}" ] && tag="$tag-trades$TRADES_BETA"
[ -n "${ADV_NOISE:-}" ] && tag="$tag-noise${ADV_NOISE//\//_}"
[ -n "${ADV_LINEARITY:-}" ] && tag="$tag-elle$ADV_LINEARITY"

part=${1:?usage: checks.sh speed | profile | wgrad | batchnorm | kernels | train N|budget | adv-train N BN | attack}
dir="$out/$part"
if [ "$part" = adv-train ]; then
  bn=${3:?usage: checks.sh adv-train EPOCHS batch-update|batch|running}
  if [ -n "${INIT:-}" ]; then kind=ft; else kind=at; fi
  run="$run-$tag-$kind-$bn"; dir="$out/$part-$tag-$kind-$bn"
fi
[ "$part" = attack ] && dir="$out/attack-$(basename "$run")$eps_suffix"
mkdir -p "$dir"
{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi (CPU dry run)"; "$fer" --version || echo "$fer does not start"; } > "$dir/machine.txt"

case "$part" in
  speed)
    # A Burn failure is recorded, not fatal: PyTorch's figures still come, and the part fails last.
    failed=0
    for m in $models; do
      "$fer" bench-train --model "$m" --bs "$bs" --steps "$steps" --device "$device" --json > "$dir/burn-$m.json" ||
        { echo "fer bench-train --model $m: exit $?" >&2; failed=1; }
      if [ "$small" != 1 ] && [ "${FER_GPU_TORCH:-1}" != 0 ]; then
        python3 benches/reference/torch_train.py --model "$m" --bs "$bs" --steps "$steps" > "$dir/torch-$m.txt" 2>&1 || true
        # Strict fp32 above (TF32 off); then its autotuned convolutions, the best it does in fp32;
        # then TF32 allowed with autotuning, PyTorch's fastest f32 training: Burn's autotuned CUDA
        # kernels read f32 as TF32 on tensor cores too, so this is the like-for-like pairing.
        python3 benches/reference/torch_train.py --model "$m" --bs "$bs" --steps "$steps" --cudnn-benchmark > "$dir/torch-$m-cudnn-benchmark.txt" 2>&1 || true
        python3 benches/reference/torch_train.py --model "$m" --bs "$bs" --steps "$steps" --cudnn-benchmark --tf32 > "$dir/torch-$m-tf32-cudnn-benchmark.txt" 2>&1 || true
      fi
    done
    # The landmarks + HOG model B (Burn only: the reference is TensorFlow/tflearn, not timed here).
    hog=cnn-hog-b; hog_args=(); [ "$small" = 1 ] && { hog=cnn-hog-tiny; hog_args=(--feature-set landmarks); }
    "$fer" bench-train --model "$hog" "${hog_args[@]}" --bs "$bs" --steps "$steps" --device "$device" --json > "$dir/burn-$hog.json" ||
      { echo "fer bench-train --model $hog: exit $?" >&2; failed=1; }
    # Adversarial training's step (the reference's FGSM, ε = 0.3, from a frozen copy) beside the
    # clean one above: the end-to-end cost of the defence. Skipped by a binary older than the flag.
    if has_flag --adversarial bench-train; then
      m=${models%% *}
      "$fer" bench-train --model "$m" --bs "$bs" --steps "$steps" --device "$device" --json --adversarial fgsm --eps 0.3 > "$dir/adv-fgsm-$m.json" ||
        { echo "fer bench-train --model $m --adversarial fgsm: exit $?" >&2; failed=1; }
    fi
    mkdir -p "$stage"   # the figures, for `train budget` in a later call
    for json in "$dir"/burn-*.json; do
      if [ -s "$json" ]; then cp "$json" "$stage/"; fi
    done
    [ "$failed" = 0 ]
    ;;
  profile)
    # Each bench runs in its own folder whose cubecl.toml turns CubeCL's profiling on (CubeCL reads
    # the first cubecl.toml from the working directory up) and shares the kernel caches of the
    # other parts (the repository's target/): after `speed` or `train`, the shapes are tuned.
    # Absolute paths: the benches run elsewhere, and cubecl.toml's paths are read from there.
    cache=$(realpath -m "${FER_CUBECL_CACHE:-target}"); dir=$(realpath "$dir"); fer=$(realpath "$fer")
    case "$device" in cpu* | flex* | ndarray*) echo "profile: CubeCL profiles Burn's GPU backends only, not --device $device"; exit 0 ;; esac
    profiled=${PROFILE_MODELS:-$model}; [ "$small" = 1 ] && profiled=$model
    bn_way=${GPU_BATCH_NORM:-operation}
    bn_args=(); bn_suffix=
    if [ "$bn_way" != operation ]; then need_flag profile --gpu-batch-norm; bn_args=(--gpu-batch-norm "$bn_way"); bn_suffix=-$bn_way; fi
    for m in $profiled; do
      name=$m$bn_suffix
      mkdir -p "$dir/cwd-$name"
      fer_cubecl_toml "$dir/cwd-$name/cubecl.toml" "$cache" "$dir/profile-$name.log"
      (cd "$dir/cwd-$name" && "$fer" bench-train "${bn_args[@]}" --model "$m" --bs "$bs" --steps 3 --warmup 2 --device "$device" --json) > "$dir/profile-$name.json"
      python3 scripts/gpu/profile-summary.py "$dir/profile-$name.log" | tee "$dir/profile-$name.txt"
      # The log's last 4 MB (the last steps' launches and tables): the whole log, autotuning
      # included, could pass the 16 MiB a returned file may have.
      tail -c 4000000 "$dir/profile-$name.log" | gzip > "$dir/profile-$name.log-tail.gz" && rm "$dir/profile-$name.log"
      rm -rf "$dir/cwd-$name"
    done
    ;;
  wgrad)
    # The ways in one call on one machine, alternated round by round so drift hits each: the
    # ratios of the medians to Burn's are what count. A binary older than a way's flag value skips
    # that way, saying so.
    need_flag wgrad --weight-gradient
    compared=${WGRAD_MODELS:-$model}; [ "$small" = 1 ] && compared=$model
    ways=()
    for way in ${WGRAD_WAYS:-backend gemm-stem}; do
      if [ "$way" = backend ] || has_flag "${way%%:*}"; then ways+=("$way"); else echo "wgrad: $fer has no --weight-gradient $way (rebuild the bundle)" | tee -a "$dir/wgrad.txt"; fi
    done
    for m in $compared; do
      for round in $(seq 1 "${WGRAD_ROUNDS:-2}"); do
        for way in "${ways[@]}"; do
          "$fer" bench-train --weight-gradient "$way" --model "$m" --bs "$bs" --steps "${WGRAD_STEPS:-10}" --warmup 3 --device "$device" --json > "$dir/wgrad-$m-${way//:/_}-$round.json" ||
            echo "fer bench-train --weight-gradient $way --model $m: exit $?" >&2
        done
      done
      python3 - "$m" "$dir" "${ways[@]}" <<'PY' | tee -a "$dir/wgrad.txt"
import glob, json, statistics, sys
model, folder, ways = sys.argv[1], sys.argv[2], sys.argv[3:]
steps, warmups = {}, {}
for way in ways:
    for path in sorted(glob.glob(f"{folder}/wgrad-{model}-{way.replace(':', '_')}-[0-9]*.json")):
        try:
            run = json.load(open(path))
        except (OSError, ValueError) as e:
            print(f"wgrad: {path} unreadable ({e})")
            continue
        steps.setdefault(way, []).extend(run["step_seconds"])
        warmups.setdefault(way, []).append(sum(run["warmup_seconds"]))
if "backend" not in steps:
    print(f"wgrad {model}: no figure of Burn's own weight gradients to compare with")
    sys.exit(0)
base = statistics.median(steps["backend"])
for way in ways:
    if way not in steps:
        print(f"wgrad {model} {way}: no figure")
        continue
    med = statistics.median(steps[way])
    print(f"wgrad {model} {way}: median step {med * 1e3:.1f} ms over {len(steps[way])} steps, "
          f"{base / med:.2f}x Burn's speed; warm-ups {', '.join(f'{w:.0f}' for w in warmups[way])} s")
# The way a later `train` of this model in the call takes: the fastest median, if it beats Burn's
# by 3 % or more (less is within these machines' drift).
best = min((statistics.median(steps[w]), w) for w in steps)
choice = best[1] if best[0] <= 0.97 * base else "backend"
open(f"{folder}/fastest-{model}.txt", "w").write(choice + "\n")
print(f"wgrad {model}: a later train part in this call takes --weight-gradient {choice}")
PY
    done
    ;;
  batchnorm)
    # Both ways in one call on one machine, alternated round by round so drift hits both: the
    # ratio of the medians is what counts. A binary older than the flag has nothing to compare.
    need_flag batchnorm --gpu-batch-norm
    compared=${BN_MODELS:-$models}; [ "$small" = 1 ] && compared=$model
    for m in $compared; do
      for round in $(seq 1 "${BN_ROUNDS:-2}"); do
        for way in operation composed; do
          "$fer" bench-train --gpu-batch-norm "$way" --model "$m" --bs "$bs" --steps "${BN_STEPS:-10}" --warmup 3 --device "$device" --json > "$dir/bn-$m-$way-$round.json" ||
            echo "fer bench-train --gpu-batch-norm $way --model $m: exit $?" >&2
        done
      done
      python3 scripts/gpu/bn-summary.py "$dir" "$m" | tee -a "$dir/bn.txt"
    done
    ;;
  kernels)
    [ -f "$kernels" ] || { echo "no $kernels: carry .device-kernels (scripts/gpu/bundle.sh)" >&2; exit 2; }
    chmod +x "$kernels"
    FER_BENCH_BATCH=$bs timeout 420 "$kernels" --bench "${device%%:*}/" > "$dir/kernels.txt" 2>&1 || echo "kernels: exit $?" >> "$dir/kernels.txt"
    ;;
  train | adv-train)
    epochs=${2:?usage: checks.sh $part EPOCHS}
    # One batch shape in training and evaluation: each new batch size is autotuned anew on a GPU
    # (minutes; the partial last batch and 64-face evaluation batches took the whole call of
    # 2026-12-04's second lease). --eval-batch $bs also lets the centre-crop evaluation reuse the
    # training's tuned convolutions. A binary older than the flags runs without them.
    args=(--model "$model" --recipe fast --bs "$bs" --device "$device" --data "$data" --out "$run" --augment "$augment")
    has_flag --drop-last train && args+=(--drop-last --eval-batch "$bs")
    wg=(); [ -n "${WEIGHT_GRADIENT:-}" ] && wg=(--weight-gradient "$WEIGHT_GRADIENT")
    # Unset, the way a `wgrad` part of this call found fastest for this model (wgrad/fastest-MODEL.txt).
    if [ -z "${WEIGHT_GRADIENT:-}" ] && [ -s "$out/wgrad/fastest-$model.txt" ]; then
      wg=(--weight-gradient "$(cat "$out/wgrad/fastest-$model.txt")")
      echo "$part: --weight-gradient ${wg[1]}, the fastest of this call's wgrad part" | tee "$dir/weight-gradient.txt"
    fi
    if [ -n "${GPU_BATCH_NORM:-}" ]; then need_flag "$part" --gpu-batch-norm; wg+=(--gpu-batch-norm "$GPU_BATCH_NORM"); fi
    train_time=()
    if [ "$epochs" = budget ]; then
      [ "$part" = train ] || { echo "budget: train only" >&2; exit 2; }
      deadline=${FER_GPU_DEADLINE:?budget needs FER_GPU_DEADLINE (seconds since 1970)}
      speed_json="$out/speed/burn-$model.json"; [ -f "$speed_json" ] || speed_json="$stage/burn-$model.json"
      if [ ! -f "$speed_json" ]; then
        speed_json="$dir/burn-$model.json"
        "$fer" bench-train --model "$model" --bs "$bs" --steps 5 --device "$device" --json > "$speed_json"
      fi
      faces=(28709 7178 3589); [ "$small" = 1 ] && faces=(64 32 16)
      # Seconds per epoch: one training pass, plus the two test splits' centre-crop forward passes
      # (a forward costs about a third of a training step; twice with EMA: the average and the raw
      # weights); 15 % for loading and the checkpoints.
      # Reserved after training: TenCrop on both test splits, and `attack` (per face FGSM about
      # 5 forwards on every PrivateTest face, PGD-10 about 32 on the first $pgd_faces, full faces
      # and crops), plus 20 s for each process's start.
      # Autotuning: the bench's warm-up less its steps' own time is what tuning every convolution
      # shape of one training step cost. The autotune cache in target/ spares `fer train` those
      # shapes, but each new batch size (rounded to a power of two) or image side is tuned again:
      # once more allowed for training (the last, smaller batch; the evaluation batches), twice for
      # TenCrop and the attacks (48×48 faces, other batches). Whole-face training batches
      # (WHOLE_FACES) cost (48/44)² of a crop batch and tune their own shapes once more.
      read -r epochs warmup reserve tuning < <(python3 - "$speed_json" "$deadline" "${faces[@]}" "$pgd_faces" "$([ -n "${EMA:-}" ] && echo 2 || echo 1)" "${WHOLE_FACES:-0}" "${TRAINING_ANSWERS:-0}" <<'PY'
import json, sys, time
bench = json.load(open(sys.argv[1]))
ips = bench["median_img_per_s"]
warmups = bench.get("warmup_seconds", [])
tuning = max(0.0, sum(warmups) - len(warmups) * bench["median_step_seconds"])
deadline, train, test, private, pgd, evals, whole, training_answers = float(sys.argv[2]), *map(int, sys.argv[3:])
epoch_s = 1.15 * (train * (1 + whole / 100 * ((48 / 44) ** 2 - 1)) + evals * test / 3) / ips + 3
# TenCrop of the Training split (TRAINING_ANSWERS=1) as of the test splits, and its process start.
tencrop = test + training_answers * train
reserve = 1.15 * (tencrop * 10 + 2 * (private * 5 + min(pgd, private) * 32)) / 3 / ips + (6 + training_answers) * 20 + 2 * tuning
# Autotune keys round map sides up to powers of two, so a 48x48 step shares all but its 3x3-map
# keys with the 44x44 one (the tracked results lack only that weight gradient): one more round of
# the measured tuning, at least 45 s.
whole_tuning = max(tuning, 45.0) if whole else 0.0
epochs = max(0, int((deadline - time.time() - reserve - tuning - whole_tuning - 30) // epoch_s))
print(epochs, min(2, epochs // 5), int(reserve), int(tuning))
PY
)
      echo "budget: $epochs epochs (warm-up $warmup) from $speed_json, $reserve s kept for evaluation and attack; autotuning one training step's shapes took $tuning s" | tee "$dir/budget.txt"
      [ "$epochs" -gt 0 ] || { echo "budget: no time for one epoch" | tee -a "$dir/budget.txt"; exit 1; }
      train_time=(timeout $((deadline - $(date +%s) - reserve)))
    fi
    # A fixed number of epochs (a schedule longer than the call: one leg of a run that goes on in
    # a later call or lease, scripts/gpu/state.sh) stops 15 s before the call's deadline, so the
    # part still copies the run files out; each completed epoch is committed, and `--resume` goes on.
    budgeted=0; [ ${#train_time[@]} -gt 0 ] && budgeted=1
    if [ "$budgeted" = 0 ] && [ -n "${FER_GPU_DEADLINE:-}" ]; then
      left=$((FER_GPU_DEADLINE - $(date +%s) - 15))
      [ "$left" -gt 0 ] || { echo "$part: no time left before the call's deadline" >&2; exit 1; }
      train_time=(timeout "$left")
    fi
    args+=(--epochs "$epochs")
    # The fast recipe's peak learning rate (0.01) and warm-up suit training from scratch; a
    # fine-tuning (INIT) may want less: LR=0.001 WARMUP_EPOCHS=0. Else `budget` sets the warm-up.
    warmup=${WARMUP_EPOCHS:-${warmup:-}}
    [ -n "$warmup" ] && args+=(--warmup-epochs "$warmup")
    [ -n "${LR:-}" ] && args+=(--lr "$LR")
    [ -n "${SEED:-}" ] && args+=(--seed "$SEED")
    if [ "${NESTEROV:-0}" = 1 ]; then
      need_flag "$part" --nesterov train
      args+=(--nesterov)
    fi
    if [ -n "${EMA:-}" ]; then
      need_flag "$part" --ema train
      args+=(--ema "$EMA")
    fi
    if [ -n "${WHOLE_FACES:-}" ]; then
      need_flag "$part" --whole-faces train
      args+=(--whole-faces "$WHOLE_FACES")
    fi
    if [ -n "${MIXUP:-}${LABEL_SMOOTHING:-}" ]; then
      [ "$part" = train ] || { echo "MIXUP, LABEL_SMOOTHING: train only (mixup is for clean training)" >&2; exit 2; }
      need_flag "$part" --mixup train
      [ -n "${MIXUP:-}" ] && args+=(--mixup "$MIXUP")
      [ -n "${LABEL_SMOOTHING:-}" ] && args+=(--label-smoothing "$LABEL_SMOOTHING")
    fi
    if [ -n "${TEACHERS:-}${DISTILL_WEIGHT:-}${TEMPERATURE:-}" ]; then
      [ "$part" = train ] || { echo "TEACHERS: train only (distillation is for clean training)" >&2; exit 2; }
      [ -n "${TEACHERS:-}" ] || { echo "DISTILL_WEIGHT, TEMPERATURE: settings of TEACHERS" >&2; exit 2; }
      need_flag "$part" --teacher train
      for teacher in $TEACHERS; do
        [ -f "$teacher" ] || { echo "TEACHERS: no file $teacher" >&2; exit 2; }
        args+=(--teacher "$teacher")
      done
      [ -n "${DISTILL_WEIGHT:-}" ] && args+=(--distill-weight "$DISTILL_WEIGHT")
      [ -n "${TEMPERATURE:-}" ] && args+=(--temperature "$TEMPERATURE")
    fi
    if [ "${TRAINING_ANSWERS:-0}" = 1 ]; then
      [ "$part" = train ] || { echo "TRAINING_ANSWERS: train only" >&2; exit 2; }
      need_flag "$part" --answers eval
    fi
    if [ "$part" = adv-train ]; then
      args+=(--adversarial "$adv" --eps "$eps" --adv-bn "$bn" --adv-eval-view "${ADV_EVAL_VIEW:-full}" --select "${SELECT:-mean}" --adv-clean-bn "${ADV_CLEAN_BN:-batch-update}" --adv-eps-ramp "${ADV_EPS_RAMP:-0}")
      if [ -n "${TRADES_BETA:-}" ]; then args+=(--trades-beta "$TRADES_BETA"); else args+=(--adv-weight "${ADV_WEIGHT:-0.5}"); fi
      [ "$adv" = n-fgsm ] && need_flag "$part" --adv-noise train
      [ -n "${ADV_NOISE:-}" ] && args+=(--adv-noise "$ADV_NOISE")
      if [ -n "${ADV_LINEARITY:-}" ]; then
        need_flag "$part" --adv-linearity train
        args+=(--adv-linearity "$ADV_LINEARITY")
      fi
      [ -n "${INIT:-}" ] && args+=(--init "$INIT")
    fi
    [ "$small" = 1 ] && args+=(--train-limit 64 --eval-limit 16)
    # Each epoch is evaluated on the centre crop (TenCrop on both test splits costs about 0.8 of a
    # training epoch); best.fer, picked on PublicTest, is evaluated with TenCrop at the end.
    args+=(--no-tencrop)
    [ "$small" = 1 ] && [ "$part" = adv-train ] && args+=(--check-faces 8)
    status=0
    if [ -f "$run/state.json" ]; then
      "${train_time[@]}" "$fer" "${wg[@]}" train --resume --device "$device" --data "$data" --out "$run" > "$dir/train.txt" 2>&1 || status=$?
    else
      "${train_time[@]}" "$fer" "${wg[@]}" train "${args[@]}" > "$dir/train.txt" 2>&1 || status=$?
    fi
    case "$status" in
      0) ;;
      124) echo "fer train: out of time after epoch $(fer_completed_epochs "$run/state.json" || echo 0); the run resumes with the same command (in a later lease: scripts/gpu/state.sh)" | tee -a "$dir/train.txt" ;;
      *) echo "fer train: exit $status" | tee -a "$dir/train.txt" ;;
    esac
    cp "$run/metrics.csv" "$run/config.json" "$dir/" 2>/dev/null || true
    [ -f "$run/report.json" ] && cp "$run/report.json" "$dir/"
    # After a budget's stop too: the budget kept time for this evaluation; a leg's stop did not.
    if { [ "$status" = 0 ] || [ "$budgeted" = 1 ]; } && [ -f "$run/best.fer" ]; then
      for split in public private; do
        # Each face's answer too (370 KB a split, 140 KB compressed), where the binary has
        # --answers (since 2026-12-07): a later run's answers on the same faces can then be tested
        # against these (`fer compare`) without moving the checkpoint (80 MB: scripts/gpu/state.sh).
        each=(); has_flag --answers eval && each=(--answers "$dir/answers-tencrop-$split.csv")
        "$fer" eval --checkpoint "$run/best.fer" --split "$split" --tencrop --device "$device" --data "$data" --json "${each[@]}" > "$dir/eval-tencrop-$split.json"
      done
      # The Training split's answers: a later run's teacher (`fer train --teacher`, TEACHERS).
      if [ "${TRAINING_ANSWERS:-0}" = 1 ]; then
        "$fer" eval --checkpoint "$run/best.fer" --split training --tencrop --device "$device" --data "$data" --json --answers "$dir/answers-tencrop-training.csv" > "$dir/eval-tencrop-training.json"
        gzip -f "$dir/answers-tencrop-training.csv"
      fi
    fi
    [ "$status" = 0 ]
    ;;
  attack)
    # FGSM on every PrivateTest face (the reference's protocol); PGD-10 on the first $pgd_faces, as
    # the CPU figures in docs/RESULTS.md (about 6.5× an FGSM pass: the whole split would cost the
    # budget's training more epochs than the figure gains precision).
    # APGD (ATTACK_METHODS) sets its own step sizes and takes 100 passes (`fer attack`'s default).
    for method in ${ATTACK_METHODS:-fgsm pgd}; do
      faces=(); [ "$method" != fgsm ] && faces=(--limit "$pgd_faces")
      [ "$small" = 1 ] && faces=(--limit 16)
      steps=(); [ "$method" = pgd ] && steps=(--steps 10)
      args=(--checkpoint "$run/best.fer" --method "$method" --eps "$eps" "${steps[@]}" --device "$device" --data "$data" "${faces[@]}")
      "$fer" attack "${args[@]}" --out "$dir/$method" --json > "$dir/$method.json"
      "$fer" attack "${args[@]}" --center-crop --out "$dir/$method-center" --json > "$dir/$method-center.json"
    done
    ;;
  *) echo "unknown part $part: speed | profile | wgrad | batchnorm | kernels | train N | adv-train N BN | attack" >&2; exit 2 ;;
esac
ls -la "$dir"
