# pgbastion in a container: build with the Rust toolchain, run on a slim Debian.
#   docker build -t pgbastion .
#   docker run -p 6432:6432 -v pgbastion-data:/var/lib/pgbastion pgbastion
# Configuration is by PGBASTION_* environment variables (or a TOML file via PGBASTION_CONFIG).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p pgbastion-web --bin pgbastion \
    && install -m 0755 target/release/pgbastion /usr/local/bin/pgbastion

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/pgbastion --shell /usr/sbin/nologin pgbastion \
    && install -d -m 0700 -o pgbastion -g pgbastion /var/lib/pgbastion
COPY --from=build /usr/local/bin/pgbastion /usr/local/bin/pgbastion
COPY static /usr/share/pgbastion/static
USER pgbastion
WORKDIR /var/lib/pgbastion
# Keys, the gateway's TLS certificate and (without PGBASTION_STORE_URL) the SQLite store.
ENV PGBASTION_DATA_DIR=/var/lib/pgbastion \
    PGBASTION_GATEWAY_LISTEN=0.0.0.0:6432 \
    PGBASTION_CONSOLE_LISTEN=0.0.0.0:8080 \
    PGBASTION_CONSOLE_STATIC_DIR=/usr/share/pgbastion/static
VOLUME ["/var/lib/pgbastion"]
EXPOSE 6432 8080
ENTRYPOINT ["pgbastion"]
CMD ["serve"]
