#!/usr/bin/env bash
# The main job: collaborative early-exit inference on loopback. Installs what is
# missing, builds, starts eenn-server and eenn-device with the shipped bundle,
# classifies the CIFAR-10 test images through eenn-client, prints the summary
# and shuts both daemons down cleanly.
#
#   EENN_BUNDLE   bundle directory (default models/cifar10-resnet18)
#   EENN_DATA     images to classify (default ../shared/datasets/cifar10/test)
#   EENN_DEMO_ARGS extra eenn-device flags, e.g. "--encoding=int8 --split=7"
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
BUNDLE="${EENN_BUNDLE:-models/cifar10-resnet18}"
DATA="${EENN_DATA:-../shared/datasets/cifar10/test}"
if [ ! -d "$DATA" ]; then
  echo "demo: CIFAR-10 test images not found at $DATA (set EENN_DATA)" >&2
  exit 2
fi
RUN="$(mktemp -d)"
SERVER_PID="" DEVICE_PID=""
cleanup() {
  for pid in $DEVICE_PID $SERVER_PID; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $DEVICE_PID $SERVER_PID; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT

wait_ready() {  # file pid name
  for _ in $(seq 1 600); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "demo: $3 exited:"; cat "$RUN/$3.log"; exit 1; }
    sleep 0.1
  done
  echo "demo: $3 did not start"; cat "$RUN/$3.log"; exit 1
}
port_of() { sed -E 's/.*"grpc_port": ([0-9]+).*/\1/' "$1"; }

echo "== eenn demo: collaborative early-exit inference with $BUNDLE on loopback"
# Mutual TLS on both hops, with a throwaway CA made for this run.
tools/make-certs.sh "$RUN/certs" server device client
C="$RUN/certs"
# One LibTorch thread each: the two daemons share this machine's cores.
build/bin/eenn-server --bundle "$BUNDLE" --listen 127.0.0.1:0 --metrics_address 127.0.0.1:0 \
  --tls_cert "$C/server.pem" --tls_key "$C/server.key" --tls_ca "$C/ca.pem" --threads 1 --ready_file "$RUN/server.ready" > "$RUN/server.log" 2>&1 &
SERVER_PID=$!
wait_ready "$RUN/server.ready" "$SERVER_PID" server
SERVER_PORT="$(port_of "$RUN/server.ready")"
# shellcheck disable=SC2086
build/bin/eenn-device --bundle "$BUNDLE" --server "127.0.0.1:$SERVER_PORT" --listen 127.0.0.1:0 \
  --metrics_address 127.0.0.1:0 --tls_cert "$C/device.pem" --tls_key "$C/device.key" --tls_ca "$C/ca.pem" \
  --threads 1 --ready_file "$RUN/device.ready" ${EENN_DEMO_ARGS:-} \
  > "$RUN/device.log" 2>&1 &
DEVICE_PID=$!
wait_ready "$RUN/device.ready" "$DEVICE_PID" device
DEVICE_PORT="$(port_of "$RUN/device.ready")"
head -n 2 "$RUN/server.log" "$RUN/device.log" | grep -v '^$' | grep -v '^==>' || true
echo "-- classifying $(find "$DATA" -name '*.jpg' | wc -l) images through eenn-device (127.0.0.1:$DEVICE_PORT)"
build/bin/eenn-client --device "127.0.0.1:$DEVICE_PORT" --concurrency 4 \
  --tls_cert "$C/client.pem" --tls_key "$C/client.key" --tls_ca "$C/ca.pem" "$DATA"
echo "-- shutting down"
kill -TERM "$DEVICE_PID" "$SERVER_PID"
wait "$DEVICE_PID" && wait "$SERVER_PID" && echo "demo: both daemons drained and exited cleanly"
SERVER_PID="" DEVICE_PID=""
