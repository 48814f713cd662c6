#!/usr/bin/env bash
# The main fer-rs job on real FER2013: build the CLI, print the dataset table, write the cache,
# train a model with the reference recipe (resumable), and evaluate the selected checkpoint.
#
# FER2013 is taken from $FER2013_CSV, else data/fer2013.csv(.gz); the cache goes to data/.
# Knobs (environment):
#   FER_FEATURES  cargo features of the CLI      (default: flex,ndarray; add cuda / wgpu / vulkan on a GPU machine)
#   FER_DEVICE    --device for training          (default: cpu = flex; e.g. cuda, cuda:1, vulkan)
#   FER_MODEL     vgg19 | resnet18 | vgg-small | resnet-small   (default: vgg19)
#   FER_EPOCHS    epochs                         (default: 250, the reference)
#   FER_RUN       run directory                  (default: runs/$FER_MODEL)
#   FER_TRAIN_ARGS  extra `fer train` flags, e.g. "--recipe fast" or "--train-limit 2000"
# Rerunning continues an interrupted run (--resume). VGG19 on a 2-core CPU trains at ~8 img/s
# (about an hour per epoch): use a GPU, or FER_MODEL=vgg-small with FER_TRAIN_ARGS for a quick look.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
fer_setup

features=${FER_FEATURES:-flex,ndarray}
device=${FER_DEVICE:-cpu}
model=${FER_MODEL:-vgg19}
epochs=${FER_EPOCHS:-250}
run=${FER_RUN:-runs/$model}

cargo build --release --locked -p fer --no-default-features --features "$features"
fer=target/release/fer
mkdir -p data runs
"$fer" stats
[ -f data/fer2013.cache ] || "$fer" preprocess --out data/fer2013.cache

if [ -f "$run/state.json" ]; then
    "$fer" train --resume --out "$run" --device "$device" --data data/fer2013.cache
else
    # shellcheck disable=SC2086
    "$fer" train --model "$model" --epochs "$epochs" --out "$run" --device "$device" --data data/fer2013.cache ${FER_TRAIN_ARGS:-}
fi
"$fer" eval --checkpoint "$run/best.fer" --split private --tencrop --device "$device" --data data/fer2013.cache
echo "main job done: $run/report.json, $run/curves.png, $run/confusion_private.png"
