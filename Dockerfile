# syntax=docker/dockerfile:1
#
# One image holding every Smart Maintenance binary. Each service picks its binary with the
# container command (`command: ["passthrough"]` in docker-compose.yml and k8s/), so the
# workspace is compiled once for all services and every service runs the same build.
#
#   docker build -t smart-maintenance:dev .
#
# BuildKit is required (the default builder since Docker 23): the cache mounts below keep
# the cargo registry and target/ between builds, so a code change rebuilds our crates only.

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------- builder
FROM rust:${RUST_VERSION}-bookworm AS builder

# rdkafka (features ["ssl"]) builds its bundled librdkafka with ./configure + make (not
# CMake; the `cmake-build` feature is off), linking the system OpenSSL and zlib found by
# pkg-config. The rust:bookworm image ships most of these already; listing them keeps the
# build working if the base image slims down. No cmake, libsasl2 (gssapi is off) or python.
# No protoc either: crates/proto/build.rs parses proto/ with protox (pure Rust).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# .dockerignore lets in only what cargo needs (manifests, rustfmt.toml, crates/, services/,
# tests/ (a workspace member), schemas/, proto/).
COPY . .

# --locked: the image builds exactly Cargo.lock. target/ lives in a cache mount, so the
# binaries are copied out to /out in the same step (a cache mount is not part of the layer).
# Every top-level executable in target/release is a [[bin]] of the workspace.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && find target/release -maxdepth 1 -type f -executable -exec cp -t /out {} +

# ---------------------------------------------------------------- runtime
# Same Debian release as the builder, so glibc and libssl3 match what the binaries linked.
FROM debian:bookworm-slim AS runtime

# ca-certificates: TLS to brokers (SM_KAFKA__SECURITY_PROTOCOL=ssl), S3 and webhooks.
# libssl3: librdkafka links OpenSSL dynamically. zlib1g is already in the base image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid, so Kubernetes `runAsNonRoot` can verify it without a runAsUser.
RUN groupadd --system --gid 10001 sm \
 && useradd --system --uid 10001 --gid sm --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sm

# One line per binary: a missing binary fails the build instead of shipping an image
# without it (tests/deployment.rs checks that every service's binary is listed).
COPY --from=builder /out/passthrough /usr/local/bin/
COPY --from=builder /out/ingestion /usr/local/bin/
COPY --from=builder /out/projector /usr/local/bin/
COPY --from=builder /out/anomaly /usr/local/bin/
COPY --from=builder /out/drift /usr/local/bin/
COPY --from=builder /out/prediction /usr/local/bin/
COPY --from=builder /out/query /usr/local/bin/
COPY --from=builder /out/smctl /usr/local/bin/

USER 10001:10001

# The binaries default to 127.0.0.1:9464 (safe on a laptop); inside a container the
# metrics/health endpoint must listen on every interface to be scraped and probed.
ENV SM_TELEMETRY__HTTP_ADDR=0.0.0.0:9464
EXPOSE 9464

# No ENTRYPOINT/CMD: the image holds several binaries, and compose/k8s name the one to run.
# The services handle SIGTERM themselves (graceful shutdown), so no init process is needed.
