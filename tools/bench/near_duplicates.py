#!/usr/bin/python3
"""Near-duplicate audit of a class-folder image dataset (train against test).

A validation split carved from the training images promises what the test split
will show only if held-out training images are no closer to the images the model
learnt from than test images are. This script measures that: for every training
image the RMS pixel distance (0-255 scale) to its nearest *other* training image,
and for every test image to its nearest training image, and prints the share of
each below a few distances, with how often that nearest image has the same label.
A random validation split is a random sample of the first population, so equal
shares mean the held-out images are not made easier by duplicates.

    /usr/bin/python3 tools/bench/near_duplicates.py --data_dir ../shared/datasets/cifar10

Exact search over raw pixels in float32 (CIFAR-10: 60,000 x 50,000 distances of
3,072 values, about 5 minutes on 2 cores). Pixel distance finds copies and
re-encodings, not shifted or re-cropped versions of an image.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
from PIL import Image


def load_split(root):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        sys.exit(f"near_duplicates: no class folders in {root}")
    images, labels = [], []
    shape = None
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        for f in sorted(os.listdir(folder)):
            path = os.path.join(folder, f)
            try:
                a = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
            except OSError as e:
                sys.exit(f"near_duplicates: cannot decode {path}: {e}")
            if shape is None:
                shape = a.shape
            elif a.shape != shape:
                sys.exit(f"near_duplicates: {path} is {a.shape}, the split's first image {shape}")
            images.append(a)
            labels.append(label)
    x = torch.from_numpy(np.stack(images).reshape(len(images), -1)).float()
    return x, torch.tensor(labels), classes


def nearest(queries, base, base_sq, same_set, chunk):
    """RMS distance from each query to its nearest row of `base` and that row's index."""
    q_sq = (queries * queries).sum(1)
    dist = torch.empty(len(queries))
    index = torch.empty(len(queries), dtype=torch.long)
    for s in range(0, len(queries), chunk):
        e = min(s + chunk, len(queries))
        d = q_sq[s:e, None] + base_sq[None, :] - 2 * queries[s:e] @ base.T
        if same_set:
            rows = torch.arange(s, e)
            d[rows - s, rows] = float("inf")
        v, a = d.min(1)
        dist[s:e] = (v.clamp(min=0) / queries.shape[1]).sqrt()
        index[s:e] = a
    return dist, index


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", required=True, help="dataset root with train/ and test/ class folders")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk", type=int, default=1000, help="query rows per distance block")
    p.add_argument("--distances", default="1,5,10,15,20,30", help="RMS distances to report")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.time()
    train, train_labels, classes = load_split(os.path.join(args.data_dir, "train"))
    test, test_labels, test_classes = load_split(os.path.join(args.data_dir, "test"))
    if classes != test_classes:
        sys.exit("near_duplicates: train and test have different class folders")
    print(f"loaded {len(train)} train and {len(test)} test images in {time.time() - t0:.0f} s",
          file=sys.stderr)
    base_sq = (train * train).sum(1)
    d_train, i_train = nearest(train, train, base_sq, True, args.chunk)
    d_test, i_test = nearest(test, train, base_sq, False, args.chunk)
    print(f"searched in {time.time() - t0:.0f} s", file=sys.stderr)
    same_train = train_labels[i_train] == train_labels
    same_test = train_labels[i_test] == test_labels

    print("| nearest training image within (RMS, 0-255) | train images (of "
          f"{len(train)}) | same label | test images (of {len(test)}) | same label |")
    print("|---|---|---|---|---|")
    for r in (float(v) for v in args.distances.split(",")):
        mt, ms = d_train < r, d_test < r
        print(f"| {r:g} | {100 * mt.float().mean():.2f}% | {100 * (mt & same_train).float().mean():.2f}% "
              f"| {100 * ms.float().mean():.2f}% | {100 * (ms & same_test).float().mean():.2f}% |")
    print(f"median nearest distance: train {d_train.median():.1f}, test {d_test.median():.1f}")


if __name__ == "__main__":
    main()
