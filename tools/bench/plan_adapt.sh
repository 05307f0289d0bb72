#!/usr/bin/env bash
# Live planning under a changing link: eenn-server and eenn-device (with its
# live planner) on the loopback of a network namespace rate-limited with tc
# tbf, eenn-client sending images throughout; the tbf is replaced by another
# rate mid-run, and back. Prints a timeline of the device's split and link
# estimates (from its /metrics) and how long each move took after the change.
# Needs root (ip netns, tc, a cgroup for the device's CPU cap).
#
#   tools/bench/plan_adapt.sh [BUNDLE] [RATE_A] [RATE_B] [PHASE_S] [DEVICE_CPU] [WIRE]
#   e.g. tools/bench/plan_adapt.sh models/cifar10-resnet18 5 200 15 0.25 fp32
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE="${1:-models/cifar10-resnet18}"
RATE_A="${2:-5}"
RATE_B="${3:-200}"
PHASE="${4:-15}"
DEV_CPU="${5:-0.25}"
WIRE="${6:-fp32}"
DATA="../shared/datasets/cifar10/test"
BIN="$PWD/build/bin"
NAME=adapt
source tools/bench/netns_common.sh
cap_device_cpu "$DEV_CPU"
enc="${WIRE%%+*}"; comp="none"; [ "$enc" != "$WIRE" ] && comp="zstd"

devx "$BIN/eenn-profile" --bundle "$BUNDLE" --images "$DATA" --calibration_limit 1000 --samples 200 \
  --threads 1 --out "$RUN/device_profile" --quiet
"$BIN/eenn-profile" --bundle "$BUNDLE" --images "$DATA" --calibration_limit 1000 --samples 200 \
  --threads 1 --out "$RUN/server_profile" --quiet
for r in "$RATE_A" "$RATE_B"; do
  "$BIN/eenn-plan" --device_profile "$RUN/device_profile/profile_summary.json" \
    --server_profile "$RUN/server_profile/profile_summary.json" --bandwidth_mbps "$r" --rtt_ms 0.2 \
    --wire "$WIRE" --quiet
done

netns_up
shape "$RATE_A"

ip netns exec "$NS" "$BIN/eenn-server" --bundle "$BUNDLE" --plaintext --listen 127.0.0.1:0 --metrics_address "" --threads 1 \
  --ready_file "$RUN/server.ready" > "$RUN/server.log" 2>&1 &
PIDS="$PIDS $!"
wait_ready "$RUN/server.ready"
devx ip netns exec "$NS" "$BIN/eenn-device" --bundle "$BUNDLE" --plaintext --server_plaintext \
  --server "127.0.0.1:$(field "$RUN/server.ready" grpc_port)" --listen 127.0.0.1:0 \
  --metrics_address 127.0.0.1:0 --threads 1 --encoding "$enc" --compression "$comp" \
  --device_profile "$RUN/device_profile/profile_summary.json" \
  --server_profile "$RUN/server_profile/profile_summary.json" \
  --ready_file "$RUN/device.ready" > "$RUN/device.log" 2>&1 &
PIDS="$PIDS $!"
wait_ready "$RUN/device.ready"
DEVICE="127.0.0.1:$(field "$RUN/device.ready" grpc_port)"
METRICS="http://127.0.0.1:$(field "$RUN/device.ready" metrics_port)/metrics"

ip netns exec "$NS" "$BIN/eenn-client" --plaintext --quiet --json --concurrency 1 --device "$DEVICE" "$DATA" \
  > "$RUN/client.json" 2>&1 &
CLIENT=$!
PIDS="$PIDS $CLIENT"

# Timeline: every 0.5 s, the device's split and estimates; the rate changes
# at PHASE and 2 * PHASE seconds.
nsx python3 - "$METRICS" "$PHASE" "$RATE_A" "$RATE_B" "$NS" <<'PY'
import subprocess, sys, time, urllib.request
url, phase, a, b, ns = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def metrics():
    out = {}
    for line in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
        if line.startswith("eenn_device_") and " " in line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out
def shape(rate):
    burst = max(3000, int(rate) * 1000000 // 8 // 250)
    subprocess.run(["tc", "qdisc", "replace", "dev", "lo", "root", "tbf", "rate", f"{rate}mbit",
                    "burst", str(burst), "latency", "2s"], check=True)
t0 = time.time()
changes = [(phase, b), (2 * phase, a)]
last_change, last_split, moves = None, None, []
print("   t s | rate Mbit/s | split | best | est. Mbit/s | RTT ms | offloads")
rate = a
while time.time() - t0 < 3 * phase:
    t = time.time() - t0
    if changes and t >= changes[0][0]:
        rate = changes.pop(0)[1]
        shape(rate)
        last_change = t
        print(f"  -- tbf replaced: {rate} Mbit/s --")
    m = metrics()
    split = int(m.get("eenn_device_split_layer", -1))
    if last_split is not None and split != last_split and last_change is not None:
        moves.append((rate, last_split, split, t - last_change))
    last_split = split
    print(f"{t:6.1f} | {rate:>11} | {split:5d} | {int(m.get('eenn_device_plan_best_split', -1)):4d} | "
          f"{m.get('eenn_device_link_bandwidth_bytes_per_second', 0) * 8e-6:11.1f} | "
          f"{m.get('eenn_device_link_rtt_seconds', 0) * 1e3:6.3f} | "
          f"{int(m.get('eenn_device_offloads_total', 0))}")
    time.sleep(0.5)
for rate, s0, s1, dt in moves:
    print(f"after the change to {rate} Mbit/s: split {s0} -> {s1} in {dt:.1f} s")
PY
grep 'planner:' "$RUN/device.log" || true
