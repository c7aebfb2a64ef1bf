# syntax=docker/dockerfile:1
# The oidc-authz image: a Rust build stage, then a small Debian runtime that runs the binary as a
# non-root user.
#
#   docker build -t oidc-authz .
#   docker run --rm -v $PWD/examples:/etc/oidc-authz:ro oidc-authz validate --config /etc/oidc-authz/oidc-authz.yaml
#
# `oidc-authz` is the entrypoint: the arguments are its command line (default: serve
# --config /etc/oidc-authz/oidc-authz.yaml). Ports: 9001 gRPC (ext_authz Check), 9002 HTTP
# (/oauth2/*, /healthz, /readyz, /metrics), 9003 admin (only when the configuration sets
# server.admin_token). /var/lib/oidc-authz is writable by the user, for a `file:` rule store.
#
# The runtime is debian:bookworm-slim rather than distroless so that docker-compose.yml's
# healthchecks (bash's /dev/tcp) and its `ha` start script (/bin/sh, getent) have a shell;
# the image holds nothing else but ca-certificates.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build --------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Symbols are not needed in the image (set for both builds below, so they share one profile).
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never

# 1. The dependencies alone, built against an empty crate: this layer is rebuilt only when
#    Cargo.toml, Cargo.lock, build.rs or proto/ change, not on every source change.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# 2. The crate itself. `touch`: COPY keeps the files' times, which may be older than the empty
#    crate's build; cargo must see them as changed.
COPY src ./src
RUN find src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked \
 && ./target/release/oidc-authz --version \
 && cp target/release/oidc-authz /oidc-authz

# ---- runtime ------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: TLS to the IdP (discovery, JWKS, token) and to rediss:// Redis.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 oidc-authz \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin oidc-authz \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/oidc-authz \
 && install -d -m 0755 /etc/oidc-authz
COPY --from=build /oidc-authz /usr/local/bin/oidc-authz
# A numeric user, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /var/lib/oidc-authz
EXPOSE 9001 9002 9003
ENTRYPOINT ["/usr/local/bin/oidc-authz"]
CMD ["serve", "--config", "/etc/oidc-authz/oidc-authz.yaml"]
