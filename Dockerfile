# A small non-root image of the activator.
#   docker build -t activator:latest .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin activator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/activator /usr/local/bin/activator
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/activator"]
