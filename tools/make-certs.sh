#!/usr/bin/env bash
# A throwaway certificate authority and one certificate per name, for mutual
# TLS between eenn-client, eenn-device and eenn-server (the demo, the tests).
#
#   tools/make-certs.sh DIR [NAME...]      # default names: server device client
#
# Writes DIR/ca.pem (+ ca.key) and DIR/NAME.pem + DIR/NAME.key for each name:
# ECDSA P-256, valid for 2 days, for localhost and 127.0.0.1, usable as server
# and client certificates. Production deployments use their own PKI instead.
set -euo pipefail
DIR="${1:?usage: make-certs.sh DIR [NAME...]}"
shift
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(server device client)
mkdir -p "$DIR"
cd "$DIR"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout ca.key -out ca.pem -subj "/CN=eenn throwaway CA" 2> /dev/null
cat > ext.cnf <<'EXT'
subjectAltName = DNS:localhost, IP:127.0.0.1
extendedKeyUsage = serverAuth, clientAuth
basicConstraints = CA:FALSE
EXT
for n in "${NAMES[@]}"; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$n.key" \
    -out "$n.csr" -subj "/CN=$n" 2> /dev/null
  openssl x509 -req -in "$n.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile ext.cnf -out "$n.pem" 2> /dev/null
  rm -f "$n.csr"
done
rm -f ext.cnf ca.srl
chmod 644 ./*.pem
