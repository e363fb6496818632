# syntax=docker/dockerfile:1
#
# The one `sqsaga` binary (orchestrator, workers, CLI) in a minimal image.
#
#   docker build -t sqsaga:0.1.0 --build-arg GIT_SHA=$(git rev-parse HEAD) .
#   docker run --rm sqsaga:0.1.0 demo
#
# Kubernetes runs it with a read-only root filesystem as uid 65532, with /tmp
# on an emptyDir (deploy/k8s/base). scripts/check-deploy.sh checks that the
# binary copied below is the one the workspace builds.

# ---- build -------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The commit being built, for the build fingerprint: .git is not in the build
# context (.dockerignore), so the build script cannot ask git itself.
ARG GIT_SHA=unknown
COPY . .
# --locked: build exactly Cargo.lock. The caches make rebuilds incremental; the
# binary is copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    SQSAGA_GIT_SHA="${GIT_SHA}" cargo build --release --locked -p sqsaga-cli \
    && install -D -m 0755 target/release/sqsaga /out/sqsaga

# ---- runtime -----------------------------------------------------------------
# distroless/cc: glibc, libgcc, CA certificates, tzdata; no shell, no package
# manager. The :nonroot tag's user is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="sqsaga" \
      org.opencontainers.image.description="Sagas on Amazon SQS: orchestrator, workers and CLI" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/sqsaga"
COPY --from=builder /out/sqsaga /usr/local/bin/sqsaga
# Listen on all interfaces inside the container (the binary's default is
# 127.0.0.1:8080, unreachable for probes); the embedded backend, when used,
# keeps its data under /tmp, the only writable path on a read-only root fs.
ENV SQSAGA_HTTP_ADDR=0.0.0.0:8080 \
    SQSAGA_DATA_DIR=/tmp/sqsaga
USER 65532:65532
# health (/healthz), readiness (/readyz), metrics (/metrics)
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sqsaga"]
CMD ["--help"]
