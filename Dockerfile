# The residency-guard operator image.
#
#   docker build -t ghcr.io/residency-guard/residency-guard:0.1.0 .
#
# Stage 1 builds the release binary with the locked dependency set; stage 2
# copies only that binary onto distroless/cc (glibc, CA certificates, no shell,
# no package manager), matching the builder's Debian 12 glibc.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin residency-guard \
 && cp target/release/residency-guard /residency-guard

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="residency-guard" \
      org.opencontainers.image.description="Kubernetes guardrail that keeps classified workloads on mainland-China nodes and mainland-China egress" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/residency-guard/residency-guard"
COPY --from=build /residency-guard /residency-guard
# The chart runs the pod as 65532:65532 too (runAsNonRoot needs a numeric UID).
# One glibc malloc arena: the watches' initial lists pass ~70 MiB of pages
# through the tokio workers, and per-thread arenas keep the freed pages
# resident (cold start at 10k Pods: 188 MiB RSS with the default, 125 MiB
# with one arena; `cargo bench --bench cold_start`).
ENV MALLOC_ARENA_MAX=1
USER 65532:65532
ENTRYPOINT ["/residency-guard"]
CMD ["serve"]
