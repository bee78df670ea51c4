#!/usr/bin/env bash
# The project's test suite: every crate's unit tests, the conformance corpus and the
# whole-system tests (which start real processes). Needs only cargo; the end-to-end tests
# under a real Core Lightning also need lightningd, lightning-cli, bitcoind and bitcoin-cli
# (PATH or LIGHTNINGD_BIN_DIR) and are reported as skipped where they are absent.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast

missing=()
for tool in lightningd lightning-cli bitcoind bitcoin-cli; do
  if [ -n "${LIGHTNINGD_BIN_DIR:-}" ] && [ -x "$LIGHTNINGD_BIN_DIR/$tool" ]; then continue; fi
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
  start=$(date +%s)
  cargo test -p tests --test cln -- --ignored --test-threads=1
  echo "end-to-end tests under a real lightningd: $(( $(date +%s) - start )) s"
else
  echo "SKIPPED: end-to-end tests under a real lightningd (not found: ${missing[*]}); they did not run and did not pass"
fi
