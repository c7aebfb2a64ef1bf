# The development OpenID Provider (tests/e2e/idp.mjs, the `oidc-provider` package) and the sample
# backend (tests/e2e/backend.mjs) of docker-compose.yml: the very programs of `make demo` and the
# end-to-end suite. Build context: the repository root. Node 22: the LTS oidc-provider 9 asks for
# (the suite also runs it on Node 20, with a warning).
FROM node:22-bookworm-slim
WORKDIR /app
# Dependencies first (a layer that changes only with the lock file). playwright-core comes along
# (the suite's browser driver); it downloads no browser.
COPY tests/e2e/package.json tests/e2e/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error && npm cache clean --force
COPY tests/e2e/idp.mjs tests/e2e/backend.mjs ./
USER node
