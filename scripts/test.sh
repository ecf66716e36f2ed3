#!/usr/bin/env bash
# The whole suite, as CI runs it: formatting, lints, unit and integration
# tests against the real NATS and Redis. Every step and every test binary
# runs even when an earlier one fails; the last line gives the totals.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/toolchain.sh
scripts/services.sh || exit 1
status=0
echo "==> cargo fmt --check"
cargo fmt --all --check || status=1
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings || status=1
echo "==> deployment files (promtool, hadolint, docker-compose, kubernetes-validate)"
scripts/check-deploy.sh || status=1
echo "==> cargo test"
log="$(mktemp)"
# Four at a time: the scenarios are I/O-bound, and two cores shared by
# NATS, Redis, hookrelay and receivers keep timing honest at that load.
cargo test --workspace --locked --no-fail-fast -- --test-threads 4 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# Totals over every test binary ("test result: ok. 5 passed; 0 failed; 1 ignored; ...").
totals="$(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/) p += $i
        if ($(i+1) ~ /^failed/) f += $i
        if ($(i+1) ~ /^ignored/) s += $i
    }
} END { printf "%d passed, %d failed, %d skipped", p, f, s }' "$log")"
rm -f "$log"
[ "$status" -eq 0 ] || echo "(formatting, lints or a test binary failed: see above)"
echo "totals: $totals"
exit "$status"
