# The image the deploy/ manifests name (ghcr.io/kube-sentinel/kube-sentinel): one binary with the
# sentinel and operator subcommands.   docker build -t ghcr.io/kube-sentinel/kube-sentinel:0.1.0 .
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kube-sentinel

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/kube-sentinel /usr/local/bin/kube-sentinel
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kube-sentinel"]
