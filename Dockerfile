# syntax=docker/dockerfile:1.7
# Container images for Gembok's two binaries, built from one workspace:
#
#   docker build --target gembok-proxy    -t ghcr.io/gembok/gembok-proxy:0.1.0 .
#   docker build --target gembok-injector -t ghcr.io/gembok/gembok-injector:0.1.0 .
#
# Runtime images are distroless (glibc, CA certificates, no shell, no package manager) and run as
# the unprivileged user 65532 ("nonroot"); the manifests add read-only root filesystems, no
# privilege escalation, all capabilities dropped and seccomp RuntimeDefault. Release CI pins the
# base images by digest (the tags below are the upgrade channel).

ARG RUST_VERSION=1.95

# ---- build: compile both binaries, each on its own -----------------------------------------
# One `cargo build` of both would unify their dependencies' features, so the proxy would carry
# what only the injector needs (once: the regex Unicode tables, +0.6 MiB idle RSS per pod). Built
# alone, the proxy is the binary benches/ measures.
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
# cmake/clang: aws-lc-rs (rustls' default crypto provider) builds C code; make: jemalloc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang make pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p gembok-proxy \
 && install -D -m 0555 target/release/gembok-proxy /out/gembok-proxy \
 && cargo build --release --locked -p gembok-injector \
 && install -D -m 0555 target/release/gembok-injector /out/gembok-injector

# ---- gembok-proxy: the sidecar ------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS gembok-proxy
LABEL org.opencontainers.image.title="gembok-proxy" \
      org.opencontainers.image.description="Gembok TLS 1.3 encryption sidecar" \
      org.opencontainers.image.source="https://github.com/gembok/gembok" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build --chown=0:0 /out/gembok-proxy /usr/local/bin/gembok-proxy
USER 65532:65532
# 15700: admin (/live, /ready, /metrics). TLS and outbound ports come from the flags.
EXPOSE 15700
ENTRYPOINT ["/usr/local/bin/gembok-proxy"]

# ---- gembok-injector: the admission webhook and offline CLI --------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS gembok-injector
LABEL org.opencontainers.image.title="gembok-injector" \
      org.opencontainers.image.description="Gembok mutating admission webhook and inject CLI" \
      org.opencontainers.image.source="https://github.com/gembok/gembok" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build --chown=0:0 /out/gembok-injector /usr/local/bin/gembok-injector
USER 65532:65532
# 8443: webhook (HTTPS), 15780: admin (/live, /ready, /metrics).
EXPOSE 8443 15780
ENTRYPOINT ["/usr/local/bin/gembok-injector"]
CMD ["serve"]
