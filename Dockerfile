# hookrelay and hookctl on Debian slim.
#   docker build -t hookrelay:0.1.0 .      (the tag is Cargo's workspace version)
# The dependencies are compiled in a layer of their own (cargo-chef): it is
# rebuilt only when Cargo.toml/Cargo.lock change, not on every source edit.
#
# Bases are pinned to exact tags. Pin them by digest too where your registry
# policy asks for it (docker buildx imagetools inspect rust:1.89.0-bookworm);
# the digests are not written here because they could not be checked when
# this file was written. Rust 1.89 is what Cargo.lock needs (async-nats).
FROM rust:1.89.0-bookworm AS chef
RUN cargo install --locked cargo-chef@0.1.78
WORKDIR /src

# The dependency "recipe": every manifest and the lock file, no sources.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json -p hookrelay -p hookrelay-cli
COPY . .
RUN cargo build --release --locked -p hookrelay -p hookrelay-cli

FROM debian:bookworm-20241111-slim
# ca-certificates for TLS to NATS/Redis with the system roots. Pinned to
# bookworm-security's version (apt-cache madison ca-certificates); bump it
# when Debian replaces it, or the build fails at this step.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=20250419~deb12u2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/hookrelay /src/target/release/hookctl /usr/local/bin/
# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
EXPOSE 50051 9464
# Asks this container's hookrelay for /readyz on server.http_listen's port
# (9464 unless configured otherwise); exits 1 with the reason when not ready.
# It reads the config as the server does from HOOKRELAY_CONFIG and
# HOOKRELAY_*, not from the server's --config argument: pass the file as
# HOOKRELAY_CONFIG if it moves the HTTP port (compose passes --config to both).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["hookrelay", "healthcheck"]
ENTRYPOINT ["hookrelay"]
