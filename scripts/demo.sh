#!/usr/bin/env bash
# The end-to-end demo on embedded defaults: builds the three binaries, then runs `node demo`
# (two nodes, each with its own vls-proxy and signer, mutual TLS between them).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "Building node, vls-proxy and signer (release)..."
cargo build --release --bins -p node -p vls-proxy -p signer
exec ./target/release/node demo "$@"
