#!/usr/bin/python3
"""Batch-1 forward time of an eenn zoo network next to PyTorch eager.

Runs paired rounds: in each round eenn (build/bin/eenn-bench-forward, a fresh
process) and PyTorch eager (this process, python3-torch) each time the same
architecture with the same threads and batch; the order alternates per round.
Reports the median of each side, and the median of the per-round ratios
eenn/PyTorch.

    /usr/bin/python3 tools/bench/forward_vs_pytorch.py --model resnet50 --threads 2

Architectures: resnet18/34/50/101 (torchvision's, with eenn's CIFAR stem
when --variant cifar), vgg11/13/16/19[_bn] (torchvision's features with a
pooled classifier matching eenn's CIFAR VGG head).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torchvision


def build_torch_model(name, variant, num_classes):
    if name.startswith("resnet"):
        depth = name.split("_")[0]
        m = getattr(torchvision.models, depth)(num_classes=num_classes)
        if variant == "cifar":
            m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            m.maxpool = torch.nn.Identity()
        return m
    if name.startswith("vgg"):
        m = getattr(torchvision.models, name)(num_classes=num_classes)
        if variant == "cifar":
            # eenn's CIFAR VGG head: global average pool, Linear(512, 512), ReLU, Linear(512, C).
            m.avgpool = torch.nn.AdaptiveAvgPool2d(1)
            m.classifier = torch.nn.Sequential(
                torch.nn.Flatten(1), torch.nn.Dropout(0.2), torch.nn.Linear(512, 512),
                torch.nn.ReLU(), torch.nn.Linear(512, num_classes))
        return m
    raise SystemExit(f"unsupported architecture {name}")


def time_torch(model, x, warmup, iters):
    times = []
    with torch.no_grad():
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            model(x)
            dt = (time.perf_counter() - t0) * 1000.0
            if i >= warmup:
                times.append(dt)
    return times


def time_eenn(binary, args, warmup, iters):
    cmd = [binary, f"--model={args.model}", f"--variant={args.variant}",
           f"--num_classes={args.num_classes}", f"--threads={args.threads}",
           f"--batch={args.batch}", f"--warmup={warmup}", f"--iters={iters}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["times_ms"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--variant", default="cifar", choices=["cifar", "imagenet"])
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "../../build/bin/eenn-bench-forward"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_torch_model(args.model, args.variant, args.num_classes).eval()
    size = 32 if args.variant == "cifar" else 224
    x = torch.randn(args.batch, 3, size, size)

    eenn_medians, torch_medians, ratios = [], [], []
    for r in range(args.rounds):
        sides = ["eenn", "torch"] if r % 2 == 0 else ["torch", "eenn"]
        med = {}
        for side in sides:
            if side == "eenn":
                med[side] = statistics.median(time_eenn(args.bin, args, args.warmup, args.iters))
            else:
                med[side] = statistics.median(time_torch(model, x, args.warmup, args.iters))
        eenn_medians.append(med["eenn"])
        torch_medians.append(med["torch"])
        ratios.append(med["eenn"] / med["torch"])
        if not args.json:
            print(f"round {r + 1}: eenn {med['eenn']:.2f} ms, pytorch eager {med['torch']:.2f} ms, "
                  f"ratio {ratios[-1]:.3f}", file=sys.stderr)

    result = {
        "model": args.model, "variant": args.variant, "threads": args.threads, "batch": args.batch,
        "rounds": args.rounds, "iters_per_round": args.iters,
        "eenn_ms_median": statistics.median(eenn_medians),
        "pytorch_eager_ms_median": statistics.median(torch_medians),
        "ratio_median": statistics.median(ratios),
        "torch_version": torch.__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"| model | variant | threads | eenn (ms) | PyTorch eager (ms) | eenn / PyTorch |")
        print(f"|---|---|---|---|---|---|")
        print(f"| {args.model} | {args.variant} | {args.threads} | {result['eenn_ms_median']:.2f} | "
              f"{result['pytorch_eager_ms_median']:.2f} | {result['ratio_median']:.3f} |")


if __name__ == "__main__":
    main()
