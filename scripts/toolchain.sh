#!/usr/bin/env bash
# Sourced by run.sh and test.sh: makes sure cargo is on PATH, installing
# rustup's stable toolchain when it is missing and the network allows.
if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
    if command -v curl >/dev/null && curl -sSf --max-time 10 https://sh.rustup.rs -o /tmp/rustup-init.sh; then
        echo "installing Rust (rustup, stable)"
        sh /tmp/rustup-init.sh -y --profile minimal --component rustfmt,clippy >/dev/null
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "error: cargo not found and https://sh.rustup.rs unreachable; install Rust (https://rustup.rs) and rerun" >&2
        exit 1
    fi
fi
