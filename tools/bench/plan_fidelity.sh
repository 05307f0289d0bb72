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
NS="eenn-fidelity-$$"
RUN="$(mktemp -d)"
PIDS=""
CG="/sys/fs/cgroup/cpu/eenn-fidelity-$$"
cleanup() {
  for p in $PIDS; do kill -TERM "$p" 2>/dev/null || true; done
  # Whatever still runs in the namespace (ip netns del does not stop it).
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rmdir "$CG" 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT
wait_ready() { for _ in $(seq 1 600); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
port_of() { sed -E 's/.*"grpc_port": ([0-9]+).*/\1/' "$1"; }
# devx CMD...: runs CMD in the device's CPU cgroup (when DEVICE_CPU is set).
devx() { "$@"; }
if [ -n "$DEV_CPU" ]; then
  mkdir -p "$CG"
  echo 8000 > "$CG/cpu.cfs_period_us"  # a short period: throttling in fine slices
  quota=$(awk -v s="$DEV_CPU" 'BEGIN { q = int(s * 8000); if (q < 1000) q = 1000; print q }')
  echo "$quota" > "$CG/cpu.cfs_quota_us"
  devx() { sh -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$CG" "$@"; }
fi
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

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link set lo mtu 1500  # tbf must see packets no larger than its burst
nsx() { ip netns exec "$NS" "$@"; }

ip netns exec "$NS" "$BIN/eenn-server" --bundle "$BUNDLE" --listen 127.0.0.1:0 --metrics_address "" --threads "$SRV_THREADS" \
  --ready_file "$RUN/server.ready" > "$RUN/server.log" 2>&1 &
PIDS="$PIDS $!"
wait_ready "$RUN/server.ready"
devx ip netns exec "$NS" "$BIN/eenn-device" --bundle "$BUNDLE" --server "127.0.0.1:$(port_of "$RUN/server.ready")" \
  --listen 127.0.0.1:0 --metrics_address "" --threads "$DEV_THREADS" --encoding "$enc" --compression "$comp" \
  --ready_file "$RUN/device.ready" > "$RUN/device.log" 2>&1 &
PIDS="$PIDS $!"
wait_ready "$RUN/device.ready"
DEVICE="127.0.0.1:$(port_of "$RUN/device.ready")"

for rate in $RATES; do
  # Burst: one timer tick's worth at this rate (HZ 250), at least two MTUs.
  burst=$(( rate * 1000000 / 8 / 250 )); [ "$burst" -lt 3000 ] && burst=3000
  nsx tc qdisc replace dev lo root tbf rate "${rate}mbit" burst "$burst" latency 2s
  for s in $(seq 0 "$LAYERS"); do
    nsx "$BIN/eenn-client" --quiet --json --concurrency 1 --split "$s" --device "$DEVICE" \
      "$RUN/images" > "$RUN/m_${rate}_${s}.json"
  done
  rtt=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['rtt_ms'])" "$RUN/m_${rate}_${LAYERS}.json")
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
