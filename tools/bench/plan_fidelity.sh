#!/usr/bin/env bash
# Planner fidelity and choice: measures the mean end-to-end device service
# time (receipt to reply on eenn-device, queue excluded) at every split with
# eenn-device and eenn-server on the loopback of a network namespace whose lo
# is rate-limited with tc tbf, and sets it against eenn-plan's prediction from
# this machine's profile. Prints, per rate, every split's predicted and
# measured ms, the mean absolute percentage error, the measured best split
# and how the planner's choice measured. Needs root (ip netns, tc).
#
# The device and the server get their own thread counts and profiles;
# DEVICE_CPU (a share of one core, e.g. 0.25) caps the device's profile and
# daemon with a cgroup CPU quota, so the server is the faster side, as it is in
# deployments.
#
#   sudo tools/bench/plan_fidelity.sh [BUNDLE] [RATES_MBIT] [IMAGES] [WIRE] [DEVICE_THREADS]
#        [SERVER_THREADS] [DEVICE_CPU]
#   e.g. tools/bench/plan_fidelity.sh models/cifar10-resnet18 "10 100" 200 fp32 1 1 0.25
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE="${1:-models/cifar10-resnet18}"
RATES="${2:-10 100}"
N="${3:-200}"
WIRE="${4:-fp32}"
DEV_THREADS="${5:-1}"
SRV_THREADS="${6:-$DEV_THREADS}"
DEV_CPU="${7:-}"
DATA="../shared/datasets/cifar10/test"
BIN="$PWD/build/bin"
NAME=fidelity
source tools/bench/netns_common.sh
cap_device_cpu "$DEV_CPU"
enc="${WIRE%%+*}"; comp="none"; [ "$enc" != "$WIRE" ] && comp="zstd"

# N test images spread over the classes (links keep the class folder names),
# used both for the profile's exit shares and for the measured runs.
python3 - "$DATA" "$RUN/images" "$N" <<'PY'
import os, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = sorted(os.path.join(c, f) for c in sorted(os.listdir(src)) for f in sorted(os.listdir(os.path.join(src, c))))
for i in range(n):
    rel = files[i * len(files) // n]
    os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
    os.symlink(os.path.abspath(os.path.join(src, rel)), os.path.join(dst, rel))
PY

devx "$BIN/eenn-profile" --bundle "$BUNDLE" --images "$RUN/images" --out "$RUN/profile" --threads "$DEV_THREADS" \
  --samples 300 --quiet
"$BIN/eenn-profile" --bundle "$BUNDLE" --images "$RUN/images" --out "$RUN/server_profile" \
  --threads "$SRV_THREADS" --samples 300 --quiet
LAYERS=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['eenn']['layers']))" \
  "$RUN/profile/profile_summary.json")

netns_up

ip netns exec "$NS" "$BIN/eenn-server" --bundle "$BUNDLE" --plaintext --listen 127.0.0.1:0 --metrics_address "" --threads "$SRV_THREADS" \
  --ready_file "$RUN/server.ready" > "$RUN/server.log" 2>&1 &
PIDS="$PIDS $!"
wait_ready "$RUN/server.ready"
devx ip netns exec "$NS" "$BIN/eenn-device" --bundle "$BUNDLE" --plaintext --server_plaintext --server "127.0.0.1:$(field "$RUN/server.ready" grpc_port)" \
  --listen 127.0.0.1:0 --metrics_address "" --threads "$DEV_THREADS" --encoding "$enc" --compression "$comp" \
  --ready_file "$RUN/device.ready" > "$RUN/device.log" 2>&1 &
PIDS="$PIDS $!"
wait_ready "$RUN/device.ready"
DEVICE="127.0.0.1:$(field "$RUN/device.ready" grpc_port)"

for rate in $RATES; do
  shape "$rate"
  for s in $(seq 0 "$LAYERS"); do
    nsx "$BIN/eenn-client" --plaintext --quiet --json --concurrency 1 --split "$s" --device "$DEVICE" \
      "$RUN/images" > "$RUN/m_${rate}_${s}.json"
  done
  rtt=$(field "$RUN/m_${rate}_${LAYERS}.json" rtt_ms)
  "$BIN/eenn-plan" --device_profile "$RUN/profile/profile_summary.json" \
    --server_profile "$RUN/server_profile/profile_summary.json" --bandwidth_mbps "$rate" \
    --rtt_ms "$rtt" --wire "$WIRE" --json > "$RUN/plan_${rate}.json"
done
nsx tc qdisc del dev lo root 2>/dev/null || true

python3 - "$RUN" "$LAYERS" "$RATES" "$WIRE" "$DEV_THREADS" "$SRV_THREADS" "$DEV_CPU" <<'PY'
import json, sys
run, layers, rates, wire = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4]
cpu = f" capped at {sys.argv[7]} of a core" if sys.argv[7] else ""
print(f"wire {wire}; device {sys.argv[5]} thread(s){cpu}, server {sys.argv[6]} thread(s), on one machine")
for rate in rates:
    plan = json.load(open(f"{run}/plan_{rate}.json"))
    pred = {c["split"]: c["expected_ms"] for c in plan["candidates"]}
    meas = {}
    for s in range(layers + 1):
        j = json.load(open(f"{run}/m_{rate}_{s}.json"))
        assert j["answered"] == j["requests"], j
        meas[s] = j["device_service_ms"]["mean"]
    rtt = json.load(open(f"{run}/m_{rate}_{layers}.json"))["rtt_ms"]
    print(f"\n{rate} Mbit/s (tbf), RTT {rtt:.3f} ms")
    print("| split | predicted ms | measured ms | error |")
    print("|---|---|---|---|")
    errs = []
    for s in range(layers + 1):
        e = (pred[s] - meas[s]) / meas[s]
        errs.append(abs(e))
        print(f"| {s} | {pred[s]:.3f} | {meas[s]:.3f} | {100 * e:+.1f}% |")
    best = min(meas, key=meas.get)
    pick = plan["best_split"]
    print(f"MAPE {100 * sum(errs) / len(errs):.1f}%; measured best split {best} ({meas[best]:.3f} ms); "
          f"planner's split {pick} measured {meas[pick]:.3f} ms ({100 * (meas[pick] / meas[best] - 1):+.1f}% vs best; "
          f"all-on-device {meas[layers]:.3f}, all-on-server {meas[0]:.3f})")
PY
