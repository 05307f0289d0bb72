#!/usr/bin/env bash
# Wire encodings end to end: for each encoding, starts eenn-server and an
# eenn-device on loopback with the given bundle and split, classifies the
# images through eenn-client, and reports bytes per offload and class agreement
# with fp32 on every image (the collaborative fp32 answers equal local full
# inference; tests/integration/collab_test.cc checks that at every split).
#
#   tools/bench/collab_wire.sh [BUNDLE] [IMAGES] [SPLIT]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE="${1:-models/cifar10-resnet18}"
DATA="${2:-../shared/datasets/cifar10/test}"
SPLIT="${3:-5}"
RUN="$(mktemp -d)"
PIDS=""
trap 'for p in $PIDS; do kill -TERM $p 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$RUN"' EXIT
wait_ready() { for _ in $(seq 1 600); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
port_of() { sed -E 's/.*"grpc_port": ([0-9]+).*/\1/' "$1"; }

build/bin/eenn-server --bundle "$BUNDLE" --listen 127.0.0.1:0 --metrics_address "" --threads 1 --plaintext \
  --ready_file "$RUN/server.ready" > "$RUN/server.log" 2>&1 &
PIDS="$PIDS $!"
wait_ready "$RUN/server.ready"
SERVER="127.0.0.1:$(port_of "$RUN/server.ready")"
for enc in fp32 fp16 int8 int8+zstd; do
  e="${enc%%+*}"; c="none"; [ "$enc" != "$e" ] && c="zstd"
  build/bin/eenn-device --bundle "$BUNDLE" --server "$SERVER" --listen 127.0.0.1:0 --metrics_address "" \
    --plaintext --server_plaintext \
    --threads 1 --split "$SPLIT" --encoding "$e" --compression "$c" --ready_file "$RUN/$enc.ready" \
    > "$RUN/$enc.log" 2>&1 &
  pid=$!
  wait_ready "$RUN/$enc.ready"
  build/bin/eenn-client --plaintext --quiet --json --concurrency 4 --device "127.0.0.1:$(port_of "$RUN/$enc.ready")" \
    --results "$RUN/$enc.jsonl" "$DATA" > "$RUN/$enc.json"
  kill -TERM $pid; wait $pid
done
python3 - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
def load(enc):
    res = {}
    for line in open(f"{run}/{enc}.jsonl"):
        j = json.loads(line)
        res[j["file"]] = j
    return res, json.load(open(f"{run}/{enc}.json"))
ref, ref_sum = load("fp32")
print("| encoding | bytes/offload | vs fp32 | offloads | class agrees with fp32 | accuracy | p50 ms |")
print("|---|---|---|---|---|---|---|")
for enc in ["fp32", "fp16", "int8", "int8+zstd"]:
    r, s = load(enc)
    agree = sum(1 for f, j in r.items() if "class" in j and j["class"] == ref[f].get("class"))
    print(f"| {enc} | {s['bytes_per_offload']:.0f} | {ref_sum['bytes_per_offload'] / s['bytes_per_offload']:.2f}x | "
          f"{s['offloaded']} | {100.0 * agree / len(r):.2f}% ({agree}/{len(r)}) | {100 * s['accuracy']:.2f}% | "
          f"{s['latency_ms']['p50']:.2f} |")
PY
