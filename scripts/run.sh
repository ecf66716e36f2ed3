#!/usr/bin/env bash
# Quickstart: installs what is missing, makes sure NATS and Redis run, then
# runs the all-in-one hookrelay (arguments are passed on, e.g. `dispatcher`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/toolchain.sh
scripts/services.sh
exec cargo run --release -p hookrelay -- "$@"
