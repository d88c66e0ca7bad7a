#!/bin/sh
# Regenerates the test CA and the origin certificate (run from this directory).
# Test-only keys: never trust ca.pem outside tests.
set -eu
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 36500 \
  -subj "/CN=netmonitor test CA" -keyout ca-key.pem -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
  -keyout origin-key.pem -out origin.csr
cat > origin.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:origin.test,DNS:a.test,DNS:b.test,DNS:example.test,DNS:*.origin.test,DNS:*.test,IP:127.0.0.1,IP:::1
EXT
openssl x509 -req -in origin.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -sha256 \
  -days 36500 -extfile origin.ext -out origin.pem
rm -f origin.csr origin.ext ca.srl
