# syntax=docker/dockerfile:1
#
# authgate container image.
#
#   docker build -t authgate:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg SOURCE=https://git.example.com/you/authgate .
#   docker run --rm -p 4180:4180 \
#     -v "$PWD/gateway.toml:/etc/authgate/gateway.toml:ro" authgate:0.1.0
#   docker run --rm -v "$PWD/gateway.toml:/etc/authgate/gateway.toml:ro" \
#     authgate:0.1.0 check                # validate a config (exit 2 if invalid)
#
# No configuration is baked in: mount one at /etc/authgate/gateway.toml (Kubernetes: a
# ConfigMap), give secrets as files (`client_secret_file`, `cookie_secrets_file`) or as
# AUTHGATE_<SECTION>__<KEY> environment variables.
#
# Base images are pinned by digest (the tag in the comment above each FROM says which), so a
# rebuild starts from the same bytes. To move to newer ones (Debian security updates, a new
# Rust), look the digests up and replace both:
#   docker buildx imagetools inspect rust:1.95.0-slim-bookworm          # "Digest:" line
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot

############################ build stage ############################
# Debian 12 (bookworm) like the runtime image, so the binary links against the same glibc
# major version it will run with. Rust 1.95.0, the toolchain the project is tested with;
# Cargo.toml needs at least 1.88 (rust-version), edition 2024.
# The slim image ships gcc and libc6-dev, which `ring` (rustls' crypto) needs to build its
# C/assembly parts; nothing links OpenSSL, so no libssl-dev.
# rust:1.95.0-slim-bookworm (multi-architecture index)
FROM rust:1.95.0-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS builder

# pipefail: a failing `authgate --version` below must fail the build even though it is piped.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

WORKDIR /build

# The product has no development provider: every build here is `--no-default-features`
# (no `demo` feature), so `authgate demo`, the development OpenID provider (the workspace
# member tests/devidp) and its private keys are not compiled in. Step 2 shows it.

# 1) Dependency layer: compile every dependency against dummy sources. This layer is only
#    rebuilt when a manifest or Cargo.lock changes, not on every source edit.
#    Both targets exist (lib: src/lib.rs, bin: src/main.rs), so both get a stub. Cargo reads
#    every workspace member's manifest, so the development provider's comes too, with an
#    empty lib.rs that stays: its real sources are never copied (a build with the demo
#    would not compile).
COPY Cargo.toml Cargo.lock ./
COPY tests/devidp/Cargo.toml tests/devidp/
RUN mkdir src tests/devidp/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs tests/devidp/src/lib.rs \
    && cargo build --release --locked --no-default-features \
    && rm -rf src

# 2) The real sources. `touch` makes their mtime newer than the stub build's artifacts:
#    COPY keeps the build context's mtimes, and cargo would otherwise consider the stub
#    build up to date and ship an empty binary. The `--version` check guards against that
#    ever happening: the stub prints nothing, the real binary `authgate <version>`.
#    .ci/no-demo then shows the binary has no development provider: clap refuses `demo`,
#    and neither the keys (copied into this build stage only to be looked for) nor the
#    demo's banner are in the file.
#    build.rs stamps the git revision into `authgate_build_info`: the context has no .git, so
#    it comes from the REVISION build argument (the same one the image label shows).
COPY build.rs ./
COPY src ./src
COPY .ci/no-demo /check/no-demo
COPY tests/devidp/keys /check/keys
ARG REVISION=unknown
RUN touch src/main.rs src/lib.rs \
    && AUTHGATE_REVISION="${REVISION}" cargo build --release --locked --no-default-features \
    && ./target/release/authgate --version | grep -q '^authgate ' \
    && /check/no-demo target/release/authgate /check/keys \
    && install -D -m 0755 target/release/authgate /out/authgate

############################ runtime stage ############################
# distroless/cc: glibc, libgcc_s (Rust's unwinder) and nothing else: no shell, no package
# manager. The `nonroot` tag runs as uid/gid 65532.
# TLS trust: the webpki-roots CA bundle is compiled into the binary (used for the OIDC
# provider and an https:// upstream), so the image needs no ca-certificates package
# (distroless happens to ship /etc/ssl/certs anyway; authgate does not read it). A private
# CA for the upstream goes in `[upstream] ca_file`.
# gcr.io/distroless/cc-debian12:nonroot (multi-architecture index)
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

# OCI annotations. VERSION and REVISION (the git commit) come from the build command (see
# the top of this file); SOURCE is where the repository lives, for tools that link an image
# to its code.
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="authgate" \
      org.opencontainers.image.description="Reverse-proxy OpenID Connect auth gateway: login, server-side sessions, token refresh" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

COPY --from=builder /out/authgate /authgate

# Numeric uid:gid (the same as distroless' `nonroot`): Kubernetes' runAsNonRoot can only
# verify a numeric user, a user name in the image makes the pod fail to start.
USER 65532:65532

# The gateway's default listen port (`[server] listen = "0.0.0.0:4180"`), and the metrics
# port the shipped configurations use (`[server] metrics_listen = "0.0.0.0:9090"`; without
# it /metrics is served on 4180). EXPOSE only documents: publish what your config uses.
EXPOSE 4180 9090

# The configuration the gateway, `check` and `healthcheck` all read: set AUTHGATE_CONFIG to
# use another path, and all three follow.
ENV AUTHGATE_CONFIG=/etc/authgate/gateway.toml

# `authgate healthcheck` needs no shell: it reads the configuration, sends GET /healthz to
# the `listen` address (loopback for 0.0.0.0; TLS when the listener has TLS) and exits 0 on
# a 200 within 3 s, else 1. Docker and Podman run it; Kubernetes ignores HEALTHCHECK and
# uses its own probes (GET /healthz and /readyz, deploy/kubernetes/).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/authgate", "healthcheck"]

# Logs go to stderr (`RUST_LOG` filters, default info); set `[server] log_format = "json"`
# for log pipelines. `TOKIO_WORKER_THREADS` sets the worker thread count (match the CPU
# limit). SIGTERM drains in-flight requests for `shutdown_grace`, then exits 0.
ENTRYPOINT ["/authgate"]
