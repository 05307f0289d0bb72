#!/usr/bin/env bash
# systemd-analyze verify of deploy/systemd/*.service in a scratch root that has
# the binaries where the units expect them (/usr/local/bin), then the sandboxing
# exposure score (systemd-analyze security, offline) must stay at or below
# MAX_EXPOSURE. Any warning from verify fails the test.
#   check_systemd.sh REPO BIN_DIR
set -euo pipefail
REPO="$1" BIN="$2"
MAX_EXPOSURE=2.5
command -v systemd-analyze > /dev/null || { echo "systemd-analyze missing: run tools/setup.sh (package systemd)"; exit 1; }
ROOT="$(mktemp -d "${TMPDIR:-/tmp}/eenn-systemd.XXXXXX")"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/usr/local/bin" "$ROOT/etc/systemd/system" "$ROOT/usr/lib/systemd"
cp -r /usr/lib/systemd/system "$ROOT/usr/lib/systemd/"
for b in eenn-server eenn-device; do
  ln "$BIN/$b" "$ROOT/usr/local/bin/$b" 2> /dev/null || cp "$BIN/$b" "$ROOT/usr/local/bin/$b"
done
cp "$REPO"/deploy/systemd/*.service "$ROOT/etc/systemd/system/"
status=0
for u in eenn-server eenn-device; do
  out="$(systemd-analyze verify --root="$ROOT" --man=no "$ROOT/etc/systemd/system/$u.service" 2>&1)" || status=1
  if [ -n "$out" ]; then echo "$out"; status=1; fi
  score="$(systemd-analyze security --offline=yes --root="$ROOT" "$ROOT/etc/systemd/system/$u.service" 2>&1 \
    | sed -nE 's/.*Overall exposure level for [^:]+: ([0-9.]+).*/\1/p')"
  [ -n "$score" ] || { echo "$u: no exposure score"; status=1; continue; }
  echo "$u.service: verify clean, exposure $score (limit $MAX_EXPOSURE)"
  awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }' || { echo "$u: exposure $score > $MAX_EXPOSURE"; status=1; }
done
exit $status
