#!/usr/bin/env bash
# Quickstart: installs what is missing, makes sure NATS and Redis run, builds
# hookrelay and hookctl, then runs the all-in-one hookrelay (arguments are
# passed on, e.g. `dispatcher`). Ctrl-C stops hookrelay; `scripts/services.sh
# stop` stops the NATS and Redis that were started for it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/toolchain.sh
scripts/services.sh

# The API needs a bearer token: make one on first run, keep it for hookctl
# (which reads .local/hookctl-token), and give hookrelay only its hash.
mkdir -p .local
if [ ! -s .local/hookctl-token ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > .local/hookctl-token)
    echo "admin token written to .local/hookctl-token (hookctl reads it from there)"
fi
export HOOKRELAY_AUTH__ADMIN_TOKEN_SHA256="${HOOKRELAY_AUTH__ADMIN_TOKEN_SHA256:-$(tr -d '\n' < .local/hookctl-token | sha256sum | cut -d' ' -f1)}"
# Quickstart receivers live on this machine: allow loopback destinations.
export HOOKRELAY_DISPATCHER__ALLOW_PRIVATE="${HOOKRELAY_DISPATCHER__ALLOW_PRIVATE:-127.0.0.0/8,::1/128}"
# Both binaries, so that the walkthrough's hookctl is ready when hookrelay is.
echo "building hookrelay and hookctl (release; the first build takes a few minutes)"
cargo build --release -p hookrelay -p hookrelay-cli
echo "hookctl: $PWD/target/release/hookctl (alias hookctl=$PWD/target/release/hookctl)"
echo "stop: Ctrl-C stops hookrelay; scripts/services.sh stop stops the NATS and Redis this script started"
exec target/release/hookrelay "$@"
