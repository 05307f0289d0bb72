# Shared set-up of the planner benchmarks (sourced by plan_fidelity.sh and
# plan_adapt.sh): a network namespace whose lo can be rate-limited with tc tbf,
# an optional cgroup CPU cap for the device, and cleanup of everything on exit.
# Set NAME before sourcing; defines NS, CG, RUN, PIDS and the helpers below.
NS="eenn-$NAME-$$"
CG="/sys/fs/cgroup/cpu/$NS"
RUN="$(mktemp -d)"
PIDS=""
cleanup() {
  for p in $PIDS; do kill -TERM "$p" 2>/dev/null || true; done
  # Whatever still runs in the namespace (ip netns del does not stop it).
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # Draining daemons take a moment; the namespace and the cgroup go once empty.
  for _ in $(seq 1 100); do
    [ -z "$(ip netns pids "$NS" 2>/dev/null)" ] && [ -z "$(cat "$CG/cgroup.procs" 2>/dev/null)" ] && break
    sleep 0.1
  done
  ip netns del "$NS" 2>/dev/null || true
  rmdir "$CG" 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT

wait_ready() { for _ in $(seq 1 600); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
# field FILE KEY: a top-level value of a JSON file (ready files, client summaries).
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

# devx CMD...: runs CMD in the device's CPU cgroup once cap_device_cpu set one.
devx() { "$@"; }
# cap_device_cpu SHARE: caps devx commands at SHARE of one core (empty or 1: no cap).
cap_device_cpu() {
  if [ -z "$1" ] || [ "$1" = "1" ]; then return 0; fi
  mkdir -p "$CG"
  echo 8000 > "$CG/cpu.cfs_period_us"  # a short period: throttling in fine slices
  awk -v s="$1" 'BEGIN { q = int(s * 8000); if (q < 1000) q = 1000; print q }' > "$CG/cpu.cfs_quota_us"
  devx() { sh -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$CG" "$@"; }
}

# The namespace, its lo up at MTU 1500 (tbf must see packets no larger than its burst).
netns_up() {
  ip netns add "$NS"
  ip -n "$NS" link set lo up
  ip -n "$NS" link set lo mtu 1500
}
nsx() { ip netns exec "$NS" "$@"; }
# shape RATE_MBIT: tbf on the namespace's lo; burst one timer tick's worth (HZ 250), at least two MTUs.
shape() {
  local burst=$(( $1 * 1000000 / 8 / 250 )); [ "$burst" -lt 3000 ] && burst=3000
  nsx tc qdisc replace dev lo root tbf rate "${1}mbit" burst "$burst" latency 2s
}
