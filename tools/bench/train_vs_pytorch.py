#!/usr/bin/python3
"""Training throughput of eenn-train next to an equivalent PyTorch loop.

Both train the same plain network (ResNet-18 CIFAR variant with a width
multiplier, naive cross-entropy) with SGD (momentum 0.9, Nesterov, weight decay
5e-4), the same batch size and threads, on CIFAR-10 images held in memory with
the same augmentation (random crop with padding 4, horizontal flip). Rounds
alternate which side runs first; each side reports images/s over its timed
steps. Prints the median of each side and of the per-round ratios, against the PyTorch loop as
written (NCHW) and against the same loop in channels-last memory format (what
eenn-train uses by default).

    /usr/bin/python3 tools/bench/train_vs_pytorch.py --width 0.5 --steps 30 --rounds 3
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


def resnet18_cifar(width, classes=10):
    w = lambda c: max(1, round(c * width))
    layers = [nn.Conv2d(3, w(64), 3, 1, 1, bias=False), nn.BatchNorm2d(w(64)), nn.ReLU()]
    cin = w(64)
    for s, planes in enumerate([64, 128, 256, 512]):
        for i in range(2):
            layers.append(BasicBlock(cin, w(planes), 2 if (s > 0 and i == 0) else 1))
            cin = w(planes)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def torch_images_per_s(args, data, labels, channels_last=False):
    torch.manual_seed(0)
    model = resnet18_cifar(args.width).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    n = data.shape[0]
    seen, t0 = 0, None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            t0, seen = time.perf_counter(), 0
        idx = torch.randint(0, n, (args.batch,))
        x = data[idx]  # uint8 NHWC
        # Random crop with zero padding 4 and horizontal flip, then normalise.
        x = x.permute(0, 3, 1, 2).float().div_(255)
        x = F.pad(x, (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2,))
        x = x[:, :, dy:dy + 32, dx:dx + 32]
        flip = torch.rand(args.batch) < 0.5
        x[flip] = x[flip].flip(3)
        x = (x - mean) / std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels[idx]
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        seen += args.batch
    return seen / (time.perf_counter() - t0)


def eenn_images_per_s(args):
    with tempfile.TemporaryDirectory() as out:
        cmd = [args.bin, "--dataset=folder", f"--data_dir={args.data_dir}", "--model=resnet18",
               f"--width={args.width}", "--train_mode=naive", "--epochs=1", f"--batch={args.batch}",
               f"--max_steps={args.warmup + args.steps}", "--lr=0.05", "--scheduler=none",
               f"--threads={args.threads}", f"--out={out}"]
        subprocess.run(cmd, check=True, capture_output=True)
        with open(os.path.join(out, "train_log.jsonl")) as f:
            return json.loads(f.readline())["images_per_s_steady"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data_dir", default=os.path.join(os.path.dirname(__file__), "../../../shared/datasets/cifar10"))
    p.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "../../build/bin/eenn-train"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # The PyTorch side trains on random uint8 images of CIFAR's shape: the loop's cost does not
    # depend on pixel values, and it spares this process decoding 50,000 JPEGs.
    data = torch.randint(0, 256, (50000, 32, 32, 3), dtype=torch.uint8)
    labels = torch.randint(0, 10, (50000,))
    # Three sides per round, in rotating order: eenn-train (channels-last, its default), the
    # PyTorch loop as written (NCHW, eager default) and the same loop in channels-last.
    sides = ["eenn", "torch", "torch_cl"]
    runs = {k: [] for k in sides}
    ratios = {"torch": [], "torch_cl": []}
    for r in range(args.rounds):
        order = sides[r % 3:] + sides[:r % 3]
        got = {}
        for side in order:
            if side == "eenn":
                got[side] = eenn_images_per_s(args)
            else:
                got[side] = torch_images_per_s(args, data, labels, channels_last=(side == "torch_cl"))
        for k in sides:
            runs[k].append(got[k])
        for k in ratios:
            ratios[k].append(got["eenn"] / got[k])
        print(f"round {r + 1}: eenn-train {got['eenn']:.1f} img/s, PyTorch {got['torch']:.1f} img/s "
              f"(channels-last {got['torch_cl']:.1f}), ratio {ratios['torch'][-1]:.3f} "
              f"({ratios['torch_cl'][-1]:.3f})", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in runs.items()}
    res = {"model": "resnet18", "width": args.width, "batch": args.batch, "threads": args.threads,
           "steps": args.steps, "rounds": args.rounds,
           "eenn_images_per_s": med["eenn"], "pytorch_images_per_s": med["torch"],
           "pytorch_channels_last_images_per_s": med["torch_cl"],
           "ratio_median": statistics.median(ratios["torch"]),
           "ratio_channels_last_median": statistics.median(ratios["torch_cl"])}
    if args.json:
        print(json.dumps(res))
    else:
        print("| model | batch | threads | eenn-train (img/s) | PyTorch (img/s) | PyTorch channels-last (img/s) "
              "| eenn / PyTorch | eenn / PyTorch channels-last |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| ResNet-18 x{args.width} CIFAR | {args.batch} | {args.threads} | {med['eenn']:.1f} | "
              f"{med['torch']:.1f} | {med['torch_cl']:.1f} | {res['ratio_median']:.3f} | "
              f"{res['ratio_channels_last_median']:.3f} |")

if __name__ == "__main__":
    main()
