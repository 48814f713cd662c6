#!/usr/bin/env python3
"""Loads a safetensors file written by `fer export` into PyTorch, and checks it against fer.

`fer export` writes every tensor under Burn's module path, fp32, with the architecture in the
header metadata (see fer_models::export). This script is the other side of that exchange, for
users who take fer-rs weights to PyTorch: it rebuilds the model from the metadata (VGG, ResNet, or
the CNN + landmarks + HOG model), maps the names (BatchNorm `gamma`/`beta` -> `weight`/`bias`,
linear weights transposed from Burn's `[in, out]`), loads them with `strict=True`, and evaluates a
FER2013 split the way fer does, printing the accuracy and confusion matrix as JSON:

    # VGG/ResNet: the centred 44x44 crop (or --full), pixels / 255, as `fer eval --json`
    python3 benches/reference/torch_from_safetensors.py --safetensors vgg19.safetensors \
        --data fer2013.csv.gz --split private --compare <(fer eval --checkpoint vgg19.fer --split private --json)
    # CNN + landmarks + HOG: the whole face and the feature cache of `fer features`, as `fer eval-features --json`
    python3 benches/reference/torch_from_safetensors.py --safetensors cnn-hog-b.safetensors \
        --data fer2013.csv.gz --features features.cache --split private \
        --compare <(fer eval-features --run runs/cnn-hog-b --features features.cache --split private --json)

With --compare, exits 1 unless PyTorch's confusion matrix equals fer's and its mean cross-entropy
(a check of the logits, not only of their argmax) is within --loss-tolerance of fer's. Needs only numpy and torch
(safetensors and the feature cache are read by hand). Nothing in fer-rs depends on it.
"""
import argparse
import gzip
import json
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SPLITS = {"training": "Training", "public": "PublicTest", "private": "PrivateTest"}
LANDMARKS_LEN, SLIDING_HOG_LEN, WHOLE_HOG_LEN = 136, 2592, 72


def read_safetensors(path):
    """Name -> float32 array, and the header metadata."""
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        data = np.frombuffer(raw[8 + n + start : 8 + n + end], dtype="<f4")
        tensors[name] = data.reshape(info["shape"]).copy()
    return tensors, metadata


class Block(nn.Module):
    """A VGG block: conv 3x3 -> BatchNorm (GroupNorm of `groups` groups when set) -> ReLU (-> 2x2 max-pool)."""

    def __init__(self, cin, cout, pool, groups=None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm2d(cout) if groups is None else nn.GroupNorm(groups, cout)
        self.pool = pool

    def forward(self, x):
        x = F.relu(self.norm(self.conv(x)))
        return F.max_pool2d(x, 2, 2) if self.pool else x


class Vgg(nn.Module):
    def __init__(self, config):
        super().__init__()
        blocks, channels = [], config.get("in_channels", 1)
        for item in config["layers"]:
            if item == "MaxPool":
                blocks[-1].pool = True
            else:
                blocks.append(Block(channels, item["Conv"], False, config.get("group_norm")))
                channels = item["Conv"]
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(channels, config.get("num_classes", 7))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Projection(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.norm(self.conv(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(cout)
        self.shortcut = Projection(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        out = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet(nn.Module):
    def __init__(self, config):
        super().__init__()
        widths = config["widths"]
        self.stem_conv = nn.Conv2d(config.get("in_channels", 1), widths[0], 3, 1, 1, bias=False)
        self.stem_norm = nn.BatchNorm2d(widths[0])
        blocks, channels = [], widths[0]
        for stage, (count, width) in enumerate(zip(config["blocks"], widths)):
            for b in range(count):
                blocks.append(BasicBlock(channels, width, 2 if stage > 0 and b == 0 else 1))
                channels = width
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(channels, config.get("num_classes", 7))

    def forward(self, x):
        x = F.relu(self.stem_norm(self.stem_conv(x)))
        for block in self.blocks:
            x = block(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ConvBlock(nn.Module):
    """conv ("same") -> ReLU -> BatchNorm (-> max-pool 3/2 "same": one row/column of -inf after)."""

    def __init__(self, cin, spec):
        super().__init__()
        k = spec["kernel"]
        self.pad = ((k - 1) // 2, k - 1 - (k - 1) // 2)  # TensorFlow's and Burn's "same"
        self.conv = nn.Conv2d(cin, spec["width"], k)
        self.norm = nn.BatchNorm2d(spec["width"])
        self.pool = spec["pool"]

    def forward(self, x):
        (a, b) = self.pad
        x = self.norm(F.relu(self.conv(F.pad(x, (a, b, a, b)))))
        if self.pool:
            x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)
        return x


class CnnHog(nn.Module):
    """Image branch and feature branch, concatenated (image first) into the classifier."""

    def __init__(self, config):
        super().__init__()
        convs, channels, side = [], 1, config.get("image_side", 48)
        for spec in config["convs"]:
            convs.append(ConvBlock(channels, spec))
            channels = spec["width"]
            side = (side + 1) // 2 if spec["pool"] else side

        def chain(width_in, widths):
            layers = []
            for w in widths:
                layers.append(nn.Linear(width_in, w))
                width_in = w
            return nn.ModuleList(layers)

        self.convs = nn.ModuleList(convs)
        self.image_fc = chain(channels * side * side, config["image_fc"])
        self.feature_fc = chain(config["feature_len"], config["feature_fc"])
        self.classifier = nn.Linear(config["image_fc"][-1] + config["feature_fc"][-1], config.get("num_classes", 7))

    def forward(self, images, features):
        x = images
        for block in self.convs:
            x = block(x)
        x = x.flatten(1)
        for layer in self.image_fc:  # dropout before all but the last: a no-op in evaluation
            x = F.relu(layer(x))
        f = features
        for layer in self.feature_fc:
            f = F.relu(layer(f))
        return self.classifier(torch.cat([x, f], 1))


def torch_state(tensors):
    """Burn's names and layouts -> PyTorch's."""
    state = {}
    for name, value in tensors.items():
        prefix, _, leaf = name.rpartition(".")
        leaf = {"gamma": "weight", "beta": "bias"}.get(leaf, leaf)
        if leaf == "weight" and value.ndim == 2:
            value = value.T  # Burn's Linear weight is [in, out]
        state[f"{prefix}.{leaf}"] = torch.from_numpy(np.ascontiguousarray(value))
    return state


def load(path):
    """The PyTorch model of a `fer export` file, in eval mode, and its kind and metadata."""
    tensors, metadata = read_safetensors(path)
    if "fer_model_config" in metadata:
        config = json.loads(metadata["fer_model_config"])
        family = config["family"]
        model = {"vgg": Vgg, "resnet": ResNet}[family](config["config"])
        kind = family
    elif "fer_feature_model_config" in metadata:
        model, kind = CnnHog(json.loads(metadata["fer_feature_model_config"])), "cnn-hog"
    else:
        raise SystemExit(f"{path}: no fer_model_config / fer_feature_model_config metadata: not from `fer export`")
    state = torch_state(tensors)
    # BatchNorm's batch counter is PyTorch-only; everything else must match exactly.
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            state[f"{name}.num_batches_tracked"] = module.num_batches_tracked
    model.load_state_dict(state, strict=True)
    return model.eval(), kind, metadata


def read_split(path, split):
    """Faces [N, 48, 48] uint8 and labels of one split, in the file's order."""
    opener = gzip.open if path.endswith(".gz") else open
    faces, labels = [], []
    with opener(path, "rt") as f:
        header = f.readline().strip().split(",")
        col = {name: i for i, name in enumerate(header)}
        for line in f:
            fields = line.rstrip("\n").split(",")
            if fields[col["Usage"]] == SPLITS[split]:
                labels.append(int(fields[col["emotion"]]))
                faces.append(np.array(fields[col["pixels"]].split(), dtype=np.uint8).reshape(48, 48))
    return np.stack(faces), np.array(labels)


def read_feature_cache(path, split, set_name):
    """The feature rows of one split as the model reads them (landmarks / 48)."""
    raw = open(path, "rb").read()
    if raw[:8] != b"FERFEATS":
        raise SystemExit(f"{path}: not a fer-rs feature cache")
    counts = [int.from_bytes(raw[16 + 8 * i : 24 + 8 * i], "little") for i in range(3)]
    per_face = LANDMARKS_LEN + SLIDING_HOG_LEN + WHOLE_HOG_LEN
    index = list(SPLITS).index(split)
    start = 40 + 4 * per_face * sum(counts[:index])
    rows = np.frombuffer(raw[start : start + 4 * per_face * counts[index]], dtype="<f4").reshape(-1, per_face)
    landmarks = rows[:, :LANDMARKS_LEN] / np.float32(48.0)
    parts = {
        "landmarks-sliding-hog": [landmarks, rows[:, LANDMARKS_LEN : LANDMARKS_LEN + SLIDING_HOG_LEN]],
        "landmarks-whole-hog": [landmarks, rows[:, LANDMARKS_LEN + SLIDING_HOG_LEN :]],
        "landmarks": [landmarks],
    }[set_name]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--safetensors", required=True)
    ap.add_argument("--data", required=True, help="FER2013 .csv or .csv.gz")
    ap.add_argument("--split", choices=list(SPLITS), default="private")
    ap.add_argument("--features", help="feature cache of `fer features` (CNN + landmarks + HOG model)")
    ap.add_argument("--full", action="store_true", help="VGG/ResNet: the whole 48x48 face, not the centred crop")
    ap.add_argument("--crop", type=int, default=44)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--compare", help="JSON of `fer eval --json` / `fer eval-features --json` to compare with")
    ap.add_argument("--loss-tolerance", type=float, default=1e-5, help="largest relative gap of the mean loss")
    args = ap.parse_args()

    torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, kind, metadata = load(args.safetensors)
    faces, labels = read_split(args.data, args.split)
    images = torch.from_numpy(faces.astype(np.float32) / np.float32(255.0)).unsqueeze(1)
    if kind == "cnn-hog":
        if not args.features:
            raise SystemExit("the CNN + landmarks + HOG model needs --features (the cache of `fer features`)")
        features = torch.from_numpy(read_feature_cache(args.features, args.split, metadata["fer_feature_set"]))
        if len(features) != len(images):
            raise SystemExit(f"{args.features}: {len(features)} faces of {args.split}, the data has {len(images)}")
    elif not args.full:
        top = (48 - args.crop) // 2  # fer's centre crop
        images = images[:, :, top : top + args.crop, top : top + args.crop]

    predictions, losses = [], []
    targets = torch.from_numpy(labels)
    with torch.no_grad():
        for at in range(0, len(images), args.batch):
            x = images[at : at + args.batch]
            logits = model(x, features[at : at + args.batch]) if kind == "cnn-hog" else model(x)
            predictions.append(logits.argmax(1))
            losses.append(F.cross_entropy(logits.double(), targets[at : at + args.batch], reduction="none"))
    predictions = torch.cat(predictions).numpy()
    confusion = np.zeros((7, 7), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    report = {
        "faces": int(len(labels)),
        "accuracy": float((predictions == labels).mean()),
        "mean_loss": float(torch.cat(losses).mean()),
        "confusion": confusion.tolist(),
    }
    print(json.dumps(report))
    if args.compare:
        fer = json.load(open(args.compare))
        same = fer["confusion"] == report["confusion"]
        differing = int(np.abs(np.array(fer["confusion"]) - confusion).sum()) // 2
        # The mean cross-entropy checks the logits themselves, not only their argmax.
        loss_gap = abs(fer["mean_loss"] - report["mean_loss"]) / max(abs(fer["mean_loss"]), 1e-12)
        print(
            f"fer: {100 * fer['accuracy']:.2f} %, mean loss {fer['mean_loss']:.6f}; PyTorch: "
            f"{100 * report['accuracy']:.2f} %, mean loss {report['mean_loss']:.6f} (relative gap {loss_gap:.1e}); "
            + ("confusion matrices identical" if same else f"confusion matrices differ (at least {differing} faces)"),
            file=sys.stderr,
        )
        sys.exit(0 if same and loss_gap < args.loss_tolerance else 1)


if __name__ == "__main__":
    main()
