#!/usr/bin/env bash
# The project's test suite: every crate's unit tests, the conformance corpus and the
# whole-system tests (which start real processes). Needs only cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
