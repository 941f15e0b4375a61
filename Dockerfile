# One image with all regindex binaries; docker-compose.yml picks the command.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
    && mkdir /out \
    && cp target/release/regindex-api target/release/regindex-worker target/release/regindexctl /out/

FROM debian:bookworm-slim
# curl: docker-compose.yml's healthchecks probe /readyz and /healthz with it.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 regindex
COPY --from=build /out/ /usr/local/bin/
COPY config.example.yaml /etc/regindex/config.yaml
ENV REGINDEX_CONFIG=/etc/regindex/config.yaml
USER regindex
# 8080: api (public), 8081: api operator surface (stats, metrics), 9091: worker metrics
EXPOSE 8080 8081 9091
CMD ["regindex-api"]
