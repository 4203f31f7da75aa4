# syntax=docker/dockerfile:1.7
# Container images for Gembok's two binaries, built from one workspace:
#
#   docker build --target gembok-proxy      -t ghcr.io/gembok/gembok-proxy:0.1.0 .
#   docker build --target gembok-proxy-fips -t ghcr.io/gembok/gembok-proxy:0.1.0-fips .
#   docker build --target gembok-injector   -t ghcr.io/gembok/gembok-injector:0.1.0 .
#
# Runtime images are distroless (glibc, CA certificates, no shell, no package manager) and run as
# the unprivileged user 65532 ("nonroot"); the manifests add read-only root filesystems, no
# privilege escalation, all capabilities dropped and seccomp RuntimeDefault. Release CI pins the
# base images by digest (the tags below are the upgrade channel).

ARG RUST_VERSION=1.95

# ---- toolchain: Rust, the C tools, the workspace -----------------------------------------
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS toolchain
# cmake/clang: aws-lc-rs (rustls' default crypto provider) builds C code; make: jemalloc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang make pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .

# ---- build: compile both binaries, each on its own -----------------------------------------
# One `cargo build` of both would unify their dependencies' features, so the proxy would carry
# what only the injector needs (once: the regex Unicode tables, +0.6 MiB idle RSS per pod). Built
# alone, the proxy is the binary benches/ measures.
FROM toolchain AS build
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p gembok-proxy \
 && install -D -m 0555 target/release/gembok-proxy /out/gembok-proxy \
 && cargo build --release --locked -p gembok-injector \
 && install -D -m 0555 target/release/gembok-injector /out/gembok-injector

# ---- build-fips: the proxy with AWS-LC's FIPS module (proxy/src/config/fips.rs) -------------
# Go: the FIPS module's build (aws-lc-fips-sys) needs it besides cmake. Its own target directory:
# the FIPS aws-lc-rs must not replace the one the other build links.
FROM toolchain AS build-fips
RUN apt-get update \
 && apt-get install -y --no-install-recommends golang-go \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p gembok-proxy --features fips --target-dir target/fips \
 && install -D -m 0555 target/fips/release/gembok-proxy /out/gembok-proxy

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

# ---- gembok-proxy-fips: the sidecar in FIPS mode (tag it <version>-fips) --------------------
# The injector's --proxy-image (or a pod's gembok.io/image) picks it for the pods that need it.
FROM gcr.io/distroless/cc-debian12:nonroot AS gembok-proxy-fips
LABEL org.opencontainers.image.title="gembok-proxy" \
      org.opencontainers.image.description="Gembok TLS 1.3 encryption sidecar, FIPS build (AWS-LC FIPS module)" \
      org.opencontainers.image.source="https://github.com/gembok/gembok" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build-fips --chown=0:0 /out/gembok-proxy /usr/local/bin/gembok-proxy
USER 65532:65532
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
