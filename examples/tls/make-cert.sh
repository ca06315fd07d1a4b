#!/usr/bin/env bash
# Makes a self-signed certificate for localhost in this directory, with the
# openssl command line. For a real deployment use your CA's chain instead.
set -euo pipefail
cd "$(dirname "$0")"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout key.pem -out cert.pem -days 30 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1"
chmod 600 key.pem
echo "wrote $(pwd)/cert.pem and $(pwd)/key.pem"
