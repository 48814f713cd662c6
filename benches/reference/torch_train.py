#!/usr/bin/env python3
"""Side-by-side reference for `fer bench-train`: the same training step in PyTorch, fp32.

Same architectures as fer-models (one gray input channel, 44x44 crops, 3x3 convs with BatchNorm,
adaptive average pool, dropout 0.5, Linear(512, 7); ResNet18 CIFAR-style) and the same step as
`fer bench-train`: forward in train mode, cross-entropy, backward, every gradient element clamped
to +-0.1, SGD(lr 0.01, momentum 0.9, dampening 0, weight decay 5e-4). Fixed random inputs, so data
loading is not measured. Prints one JSON line with the keys of `fer bench-train --json`.

TF32 is off unless --tf32 (PyTorch enables it for cuDNN convolutions by default, which is not fp32);
cudnn.benchmark is off unless --cudnn-benchmark (PyTorch's default).

    python3 benches/reference/torch_train.py --model vgg19 --bs 128 --steps 20 --warmup 5 --device cuda

Used only as a yardstick on the GPU machine; nothing in fer-rs depends on it.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


class Vgg(nn.Module):
    def __init__(self, layers=VGG19, classes=7, dropout=0.5):
        super().__init__()
        blocks, channels = [], 1
        for item in layers:
            if item == "M":
                blocks.append(nn.MaxPool2d(2, 2))
            else:
                blocks += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(self.dropout(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, classes=7, dropout=0.5):
        super().__init__()
        self.conv = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(64)
        blocks, cin = [], 64
        for stage, width in enumerate([64, 128, 256, 512]):
            for b in range(2):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(cin, width, stride))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(512, classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(self.dropout(x))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg19", choices=["vgg19", "resnet18"])
    p.add_argument("--bs", type=int, default=128)
    p.add_argument("--crop", type=int, default=44)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tf32", action="store_true", help="allow TF32 (not fp32)")
    p.add_argument("--cudnn-benchmark", action="store_true")
    a = p.parse_args()
    if a.steps < 1:
        p.error("--steps must be at least 1")
    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    torch.manual_seed(0)
    device = torch.device(a.device)
    model = (Vgg() if a.model == "vgg19" else ResNet18()).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = torch.rand(a.bs, 1, a.crop, a.crop, device=device)
    targets = torch.arange(a.bs, device=device) % 7
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    seconds, warmup_seconds = [], []
    for step in range(a.warmup + a.steps):
        started = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), targets)
        loss.backward()
        for param in model.parameters():
            param.grad.data.clamp_(-0.1, 0.1)
        opt.step()
        sync()
        (seconds if step >= a.warmup else warmup_seconds).append(time.perf_counter() - started)
    med = statistics.median(seconds)
    print(json.dumps({
        "framework": "pytorch " + torch.__version__,
        "device": str(device) + (" " + torch.cuda.get_device_name(device) if device.type == "cuda" else ""),
        "model": a.model,
        "batch_size": a.bs,
        "crop": a.crop,
        "warmup_steps": a.warmup,
        "warmup_seconds": warmup_seconds,
        "step_seconds": seconds,
        "median_step_seconds": med,
        "median_img_per_s": a.bs / med,
        "tf32": a.tf32,
        "cudnn_benchmark": a.cudnn_benchmark,
        "parameters": sum(p.numel() for p in model.parameters()),
    }))


if __name__ == "__main__":
    main()
