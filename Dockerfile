# syntax=docker/dockerfile:1
#
# authgate container image.
#
#   docker build -t authgate:0.1.0 .
#   docker run --rm -p 4180:4180 \
#     -v "$PWD/gateway.toml:/etc/authgate/gateway.toml:ro" authgate:0.1.0
#   docker run --rm -v "$PWD/gateway.toml:/etc/authgate/gateway.toml:ro" \
#     authgate:0.1.0 check --config /etc/authgate/gateway.toml    # validate a config (exit 2 if invalid)
#
# No configuration is baked in: mount one at /etc/authgate/gateway.toml (Kubernetes: a
# ConfigMap), give secrets as files (`client_secret_file`, `cookie_secrets_file`) or as
# AUTHGATE_<SECTION>__<KEY> environment variables.
#
# For reproducible production builds, pin both base images by digest
# (`rust:1-slim-bookworm@sha256:...`, `gcr.io/distroless/cc-debian12:nonroot@sha256:...`).

############################ build stage ############################
# Debian 12 (bookworm) like the runtime image, so the binary links against the same glibc
# major version it will run with. `rust:1` follows the latest stable toolchain; Cargo.toml
# needs at least 1.88 (rust-version), edition 2024.
# The slim image ships gcc and libc6-dev, which `ring` (rustls' crypto) needs to build its
# C/assembly parts; nothing links OpenSSL, so no libssl-dev.
FROM rust:1-slim-bookworm AS builder

# pipefail: a failing `authgate --version` below must fail the build even though it is piped.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

WORKDIR /build

# 1) Dependency layer: compile every dependency against dummy sources. This layer is only
#    rebuilt when Cargo.toml or Cargo.lock change, not on every source edit.
#    Both targets exist (lib: src/lib.rs, bin: src/main.rs), so both get a stub.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# 2) The real sources. `touch` makes their mtime newer than the stub build's artifacts:
#    COPY keeps the build context's mtimes, and cargo would otherwise consider the stub
#    build up to date and ship an empty binary. The `--version` check guards against that
#    ever happening: the stub prints nothing, the real binary `authgate <version>`.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && ./target/release/authgate --version | grep -q '^authgate ' \
    && install -D -m 0755 target/release/authgate /out/authgate

############################ runtime stage ############################
# distroless/cc: glibc, libgcc_s (Rust's unwinder) and nothing else: no shell, no package
# manager. The `nonroot` tag runs as uid/gid 65532.
# TLS trust: the webpki-roots CA bundle is compiled into the binary (used for the OIDC
# provider and an https:// upstream), so the image needs no ca-certificates package
# (distroless happens to ship /etc/ssl/certs anyway; authgate does not read it). A private
# CA for the upstream goes in `[upstream] ca_file`.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="authgate" \
      org.opencontainers.image.description="Reverse-proxy OpenID Connect auth gateway" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/authgate /authgate

# Numeric uid:gid (the same as distroless' `nonroot`): Kubernetes' runAsNonRoot can only
# verify a numeric user, a user name in the image makes the pod fail to start.
USER 65532:65532

# The gateway's default listen port (`[server] listen = "0.0.0.0:4180"`).
EXPOSE 4180

# No HEALTHCHECK: distroless has no shell nor curl to run one, and authgate has no
# self-probe subcommand. Orchestrators probe over HTTP instead: GET /healthz (liveness,
# 200 while the process serves) and GET /readyz (readiness, 200 once OIDC discovery
# succeeded and the session store answers). See deploy/kubernetes/sidecar.yaml.

# Logs go to stderr (`RUST_LOG` filters, default info); set `[server] log_format = "json"`
# for log pipelines. `TOKIO_WORKER_THREADS` sets the worker thread count (match the CPU
# limit). SIGTERM drains in-flight requests for `shutdown_grace`, then exits 0.
ENTRYPOINT ["/authgate"]
CMD ["--config", "/etc/authgate/gateway.toml"]
