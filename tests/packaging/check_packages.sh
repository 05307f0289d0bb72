#!/usr/bin/env bash
# check_packages.sh BUILD_DIR SOURCE_DIR [IMAGES]
#
# 1. cmake --install BUILD_DIR into a staging prefix: every binary, the bundle,
#    eenn-make-certs and the systemd units (naming that prefix) are there, and
#    the installed eenn-infer classifies two CIFAR-10 images with the
#    installed bundle, as the build tree's eenn-infer does.
# 2. cpack: the eenn, eenn-tools and eenn-models .deb files; dpkg-deb lists
#    the binaries, dpkg-shlibdeps filled Depends (LibTorch, gRPC, ...), every
#    dependency is an installed package here.
# 3. The packages extracted into an empty root (dpkg-deb -x): no binary
#    misses a library or points at the build tree, and the extracted
#    eenn-server, eenn-device and eenn-client classify images end to end.
# IMAGES: CIFAR-10 test images as class folders; without them the check
# skips (exit 77, ctest's SKIP_RETURN_CODE).
set -euo pipefail
BUILD="$(cd "${1:?usage: check_packages.sh BUILD_DIR SOURCE_DIR}" && pwd)"
SRC="$(cd "${2:?usage: check_packages.sh BUILD_DIR SOURCE_DIR}" && pwd)"
DATA="${3:-$SRC/../shared/datasets/cifar10/test}"
TMP="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

DAEMONS=(eenn-server eenn-device)
TOOLS=(eenn-client eenn-infer eenn-train eenn-calibrate eenn-eval eenn-plan eenn-profile eenn-bench-forward
       eenn-bench-server eenn-queue eenn-control-sim)
IMAGES=("$DATA/airplane/0000.jpg" "$DATA/cat/0000.jpg")
for i in "${IMAGES[@]}"; do
  [ -f "$i" ] || { echo "SKIP: CIFAR-10 test image $i not found (cmake -DEENN_CIFAR10_DIR=...)"; exit 77; }
done

# The class eenn-infer gives each image, one "file class exit_layer" line each.
classes() {  # INFER BUNDLE
  "$1" --threads 1 --json --bundle "$2" "${IMAGES[@]}" 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    if l.startswith("{") and "file" in l:
        j = json.loads(l); print(j["file"], j["class"], j["exit_layer"])'
}

echo "== cmake --install into a staging prefix"
PREFIX="$TMP/prefix"
cmake --install "$BUILD" --prefix "$PREFIX" > "$TMP/install.log" || { cat "$TMP/install.log"; fail "cmake --install"; }
for b in "${DAEMONS[@]}" "${TOOLS[@]}" eenn-make-certs; do
  [ -x "$PREFIX/bin/$b" ] || fail "cmake --install did not install bin/$b"
done
BUNDLE="$PREFIX/share/eenn/models/cifar10-resnet18"
for f in manifest.json weights.pt; do
  cmp -s "$SRC/models/cifar10-resnet18/$f" "$BUNDLE/$f" || fail "installed bundle file $f differs or is missing"
done
if [ -d "$SRC/deploy/systemd" ]; then
  for u in "$SRC"/deploy/systemd/*.service; do
    unit="$PREFIX/lib/systemd/system/$(basename "$u")"
    [ -f "$unit" ] || fail "unit $(basename "$u") not installed"
    grep -q "ExecStart=$PREFIX/bin/eenn-" "$unit" || fail "$unit does not start the binary under $PREFIX"
    ! grep -q "/usr/local/" "$unit" || fail "$unit still names /usr/local"
  done
fi
[ ! -d "$SRC/deploy" ] || [ -f "$PREFIX/share/doc/eenn/deploy/README.md" ] || fail "deploy/ not installed"
want="$(classes "$BUILD/bin/eenn-infer" "$SRC/models/cifar10-resnet18")"
got="$(classes "$PREFIX/bin/eenn-infer" "$BUNDLE")"
[ "$(echo "$want" | wc -l)" -eq 2 ] || fail "build tree eenn-infer did not classify both images: $want"
[ "$got" = "$want" ] || fail "installed eenn-infer disagrees: got '$got', want '$want'"
echo "installed eenn-infer: $got"
"$PREFIX/bin/eenn-make-certs" "$TMP/pki" server > /dev/null 2>&1 || fail "installed eenn-make-certs failed"
[ -f "$TMP/pki/server.pem" ] || fail "eenn-make-certs wrote no certificate"

echo "== cpack"
cpack -G DEB --config "$BUILD/CPackConfig.cmake" -B "$TMP/pkg" > "$TMP/cpack.log" 2>&1 ||
  { cat "$TMP/cpack.log"; fail "cpack"; }
VERSION="$(dpkg-deb -f "$(ls "$TMP"/pkg/eenn_*.deb)" Version)"
declare -A DEB
for p in eenn eenn-tools eenn-models; do
  DEB[$p]="$(ls "$TMP"/pkg/${p}_*.deb 2>/dev/null | head -1)"
  [ -f "${DEB[$p]}" ] || { ls -l "$TMP/pkg"; fail "no $p package"; }
  [ "$(dpkg-deb -f "${DEB[$p]}" Package)" = "$p" ] || fail "${DEB[$p]} is not package $p"
  [ "$(dpkg-deb -f "${DEB[$p]}" Version)" = "$VERSION" ] || fail "$p has another version"
  dpkg-deb --info "${DEB[$p]}" > /dev/null || fail "dpkg-deb --info ${DEB[$p]}"
  echo "$(basename "${DEB[$p]}"): $(du -k "${DEB[$p]}" | cut -f1) KiB"
done
contents() { dpkg-deb --contents "$1" | awk '{print $6}'; }
for b in "${DAEMONS[@]}" eenn-make-certs; do
  contents "${DEB[eenn]}" | grep -qx "./usr/bin/$b" || fail "package eenn lacks /usr/bin/$b"
done
for b in "${TOOLS[@]}"; do
  contents "${DEB[eenn-tools]}" | grep -qx "./usr/bin/$b" || fail "package eenn-tools lacks /usr/bin/$b"
done
contents "${DEB[eenn-models]}" | grep -qx "./usr/share/eenn/models/cifar10-resnet18/weights.pt" ||
  fail "package eenn-models lacks the bundle"
[ "$(dpkg-deb -f "${DEB[eenn-models]}" Architecture)" = all ] || fail "eenn-models is not Architecture: all"
if [ -d "$SRC/deploy/systemd" ]; then
  contents "${DEB[eenn]}" | grep -qx "./usr/lib/systemd/system/eenn-server.service" || fail "package eenn lacks the units"
fi
for p in eenn eenn-tools; do
  depends="$(dpkg-deb -f "${DEB[$p]}" Depends)"
  echo "$p Depends: $depends"
  for lib in libtorch libgrpc++ libprotobuf libc6; do
    echo "$depends" | grep -q "$lib" || fail "$p Depends lacks $lib (dpkg-shlibdeps): $depends"
  done
  # Every dependency (one alternative of each) is an installed package here.
  echo "$depends" | tr ',' '\n' | while read -r alt; do
    ok=0
    for d in $(echo "$alt" | tr '|' '\n' | sed 's/(.*)//' | tr -d ' '); do
      dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "install ok installed" && ok=1
    done
    [ $ok -eq 1 ] || fail "$p depends on '$alt', which no installed package satisfies"
  done
done

echo "== the packages extracted into an empty root"
ROOT="$TMP/root"
for p in eenn eenn-tools eenn-models; do dpkg-deb -x "${DEB[$p]}" "$ROOT"; done
for b in "${DAEMONS[@]}" "${TOOLS[@]}"; do
  exe="$ROOT/usr/bin/$b"
  [ -x "$exe" ] || fail "extracted root lacks /usr/bin/$b"
  ! ldd "$exe" | grep -q "not found" || { ldd "$exe" | grep "not found"; fail "$b misses libraries"; }
  ! readelf -d "$exe" | grep -E "RPATH|RUNPATH" | grep -q "$BUILD" || fail "$b points at the build tree"
  ! readelf -S "$exe" | grep -q "\.debug_info" || fail "$b is not stripped"
done
"$ROOT/usr/bin/eenn-server" --version > /dev/null || fail "eenn-server --version"
BUNDLE="$ROOT/usr/share/eenn/models/cifar10-resnet18"
got="$(classes "$ROOT/usr/bin/eenn-infer" "$BUNDLE")"
[ "$got" = "$want" ] || fail "packaged eenn-infer disagrees: got '$got', want '$want'"

# The packaged daemons on loopback: every request offloaded (split 1) and answered.
wait_ready() {  # FILE PID LOG
  for _ in $(seq 1 600); do
    [ -s "$1" ] && python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3"; fail "daemon $3 exited"; }
    sleep 0.1
  done
  cat "$3"; fail "daemon $3 not ready"
}
port() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['grpc_port'])" "$1"; }
"$ROOT/usr/bin/eenn-server" --bundle "$BUNDLE" --plaintext --threads 1 --listen 127.0.0.1:0 \
  --metrics_address 127.0.0.1:0 --ready_file "$TMP/server.ready" > "$TMP/server.log" 2>&1 &
PIDS+=($!)
wait_ready "$TMP/server.ready" "${PIDS[-1]}" "$TMP/server.log"
"$ROOT/usr/bin/eenn-device" --bundle "$BUNDLE" --plaintext --server_plaintext --threads 1 --split 1 \
  --listen 127.0.0.1:0 --metrics_address 127.0.0.1:0 --server "127.0.0.1:$(port "$TMP/server.ready")" \
  --ready_file "$TMP/device.ready" > "$TMP/device.log" 2>&1 &
PIDS+=($!)
wait_ready "$TMP/device.ready" "${PIDS[-1]}" "$TMP/device.log"
summary="$("$ROOT/usr/bin/eenn-client" --plaintext --quiet --json --device "127.0.0.1:$(port "$TMP/device.ready")" \
  "${IMAGES[@]}")" || fail "packaged eenn-client failed: $summary"
echo "packaged eenn-client: $summary" | cut -c1-240
python3 - "$summary" <<'PY' || fail "packaged daemons did not answer both images on the server"
import json, sys
s = json.loads(sys.argv[1])
assert s["answered"] == 2 and s["lost"] == 0 and s["decided"]["server"] == 2, s
PY
kill -TERM "${PIDS[@]}"
for p in "${PIDS[@]}"; do wait "$p" || fail "a packaged daemon did not stop cleanly on SIGTERM"; done
PIDS=()
echo "PASS"
