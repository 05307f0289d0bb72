#!/usr/bin/env bash
# The main job: installs what is missing, builds, and classifies the CIFAR-10
# test set with the shipped early-exit bundle, printing a few answers and the
# summary (accuracy, exit histogram, time per image).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
BUNDLE="${EENN_BUNDLE:-models/cifar10-resnet18}"
DATA="${EENN_DATA:-../shared/datasets/cifar10/test}"
if [ ! -d "$DATA" ]; then
  echo "demo: CIFAR-10 test images not found at $DATA (set EENN_DATA)" >&2
  exit 2
fi
echo "== eenn demo: local early-exit classification with $BUNDLE"
echo "-- first answers:"
build/bin/eenn-infer --bundle "$BUNDLE" --threads 2 "$DATA/airplane/0000.jpg" "$DATA/cat/0000.jpg" \
  "$DATA/ship/0000.jpg" "$DATA/truck/0000.jpg"
echo "-- the whole test set ($(find "$DATA" -name '*.jpg' | wc -l) images):"
build/bin/eenn-infer --bundle "$BUNDLE" --threads 2 --quiet "$DATA"
