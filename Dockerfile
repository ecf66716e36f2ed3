# hookrelay and hookctl on Debian slim. Build: docker build -t hookrelay .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hookrelay -p hookrelay-cli

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 hookrelay
COPY --from=build /src/target/release/hookrelay /src/target/release/hookctl /usr/local/bin/
USER hookrelay
EXPOSE 50051 9464
ENTRYPOINT ["hookrelay"]
