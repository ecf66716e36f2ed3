#!/usr/bin/env bash
# The whole suite, as CI runs it: formatting, lints, unit and integration
# tests against the real NATS and Redis.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/toolchain.sh
scripts/services.sh
echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
# Four at a time: the scenarios are I/O-bound, and two cores shared by
# NATS, Redis, hookrelay and receivers keep timing honest at that load.
cargo test --workspace --locked -- --test-threads 4
