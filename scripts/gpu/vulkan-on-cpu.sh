#!/usr/bin/env bash
# Here (no GPU needed): run Burn's GPU code path (burn-wgpu: cubecl kernels compiled to SPIR-V) on
# Mesa's llvmpipe, a Vulkan driver that runs on the CPU, side by side with burn-flex, before any
# lent GPU time is spent on it. A small VGG trains one short epoch on each backend from the same
# seed; a checkpoint trained on flex is evaluated and attacked (FGSM, PGD) on both; the script prints
# the figures next to each other and exits 1 when they disagree beyond float rounding.
#   FER        a fer binary built with --features vulkan (default target/release/fer; the one
#              scripts/gpu/bundle.sh builds has it)
#   FER2013_CSV  FER2013 (CSV, .gz or the cache; default ../shared/data/fer2013.csv.gz)
#   OUT        where the runs and JSON go (default /tmp/fer-vulkan-on-cpu)
# Needs the Debian packages mesa-vulkan-drivers and libvulkan1 (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
fer=${FER:-target/release/fer}
data=${FER2013_CSV:-../shared/data/fer2013.csv.gz}
out=${OUT:-/tmp/fer-vulkan-on-cpu}
. scripts/setup.sh
FER_APT_PACKAGES=(mesa-vulkan-drivers libvulkan1)
fer_ensure_apt
"$fer" devices | grep -q vulkan || { echo "$fer has no vulkan backend: build with --features vulkan" >&2; exit 2; }
export CUBECL_WGPU_DEFAULT_DEVICE=Cpu   # `--device vulkan` takes wgpu's default adapter: llvmpipe
rm -rf "$out"; mkdir -p "$out"

"$fer" devices --device vulkan --data "$data" --batch 8 | tee "$out/devices.txt"
small=(--model vgg-small --recipe fast --warmup-epochs 0 --bs 16 --no-tencrop --seed 7 --data "$data")
# The model both backends evaluate and attack: trained on flex (fast), so that it has learned
# something an attack can take away.
"$fer" train "${small[@]}" --epochs 3 --train-limit 3000 --device cpu --out "$out/model" > "$out/model.txt" 2>&1
for dev in cpu vulkan; do
  "$fer" train "${small[@]}" --epochs 1 --train-limit 320 --eval-limit 160 --device "$dev" --out "$out/train-$dev" > "$out/train-$dev.txt" 2>&1
  "$fer" eval --checkpoint "$out/model/best.fer" --split private --device "$dev" --data "$data" --json > "$out/eval-$dev.json"
  for method in fgsm pgd; do
    "$fer" attack --checkpoint "$out/model/best.fer" --method "$method" --eps 8/255 --steps 5 --limit 200 \
      --device "$dev" --data "$data" --json --out "$out/attack-$method-$dev" > "$out/attack-$method-$dev.json"
  done
done

python3 - "$out" <<'PY'
import csv, json, sys
out = sys.argv[1]
def load(name):
    return json.load(open(f"{out}/{name}"))
def metrics(dev):
    return list(csv.DictReader(open(f"{out}/train-{dev}/metrics.csv")))[-1]
rows, ok = [], True
def row(what, a, b, tol):
    global ok
    agree = abs(a - b) <= tol
    ok &= agree
    rows.append(f"{what:<44} {a:>10.4f} {b:>10.4f}  {'ok' if agree else 'DIFFERENT'} (tolerance {tol})")
# Training from one seed: the same crops and batches, but each backend draws its initial weights
# and dropout masks from its own generator, so the losses are only close.
m = {d: metrics(d) for d in ("cpu", "vulkan")}
row("training loss, epoch 1", float(m["cpu"]["train_loss"]), float(m["vulkan"]["train_loss"]), 0.05)
# The same weights evaluated: answers may differ only on faces at a near tie (1 % of 3,589).
e = {d: load(f"eval-{d}.json") for d in ("cpu", "vulkan")}
row("PrivateTest accuracy of one checkpoint", e["cpu"]["accuracy"], e["vulkan"]["accuracy"], 0.01)
row("PrivateTest mean loss", e["cpu"]["mean_loss"], e["vulkan"]["mean_loss"], 1e-3)
for method in ("fgsm", "pgd"):
    a = {d: load(f"attack-{method}-{d}.json") for d in ("cpu", "vulkan")}
    for key in ("clean", "adversarial"):
        row(f"{method.upper()} 8/255, 200 faces: {key} accuracy", a["cpu"][key]["accuracy"], a["vulkan"][key]["accuracy"], 0.03)
    row(f"{method.upper()} 8/255: largest perturbation", a["cpu"]["max_perturbation"], a["vulkan"]["max_perturbation"], 1e-4)
print(f"{'':<44} {'flex':>10} {'vulkan':>10}")
print("\n".join(rows))
sys.exit(0 if ok else 1)
PY
