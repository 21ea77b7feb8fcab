# syntax=docker/dockerfile:1
# The `lis` binary: every service (`lis serve --roles …`), `lis migrate` and
# `lis admin`. Used by docker-compose.yml.

# Build on the same Debian release as the runtime image, so the binary's glibc
# matches (plain `rust:1` follows Debian's newest release).
FROM rust:1-bookworm AS build
# rdkafka builds its bundled librdkafka from source with make, gcc and perl,
# and links zlib.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p lis \
 && cp target/release/lis /usr/local/bin/lis

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent lis
COPY --from=build /usr/local/bin/lis /usr/local/bin/lis
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["lis"]
CMD ["serve", "--roles", "all"]
