# The meshql binary (`--profile quick`: optimised, no LTO; about 15 minutes on 2 cores).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --profile quick -p meshql-cli && cp target/quick/meshql /usr/local/bin/meshql

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/meshql /usr/local/bin/meshql
ENTRYPOINT ["meshql"]
