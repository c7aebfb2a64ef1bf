#!/usr/bin/env bash
# The web console in headless Chromium (see tests/e2e/console.mjs). From any directory:
#
#   tests/e2e/console.sh
#
# Needs Debian's chromium (apt-get install -y chromium), node/npm and cargo. OIDC_AUTHZ_BIN
# reuses a binary; otherwise target/release/oidc-authz is built when missing or older than
# src/console/index.html. Screenshots and the server log: target/e2e/console/.
# The last line printed is `N passed, M failed`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

chromium=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $chromium ]]; then
    echo "$chromium not found: apt-get update && apt-get install -y chromium" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
if [[ ! -d tests/e2e/node_modules/playwright-core ]]; then
    (cd tests/e2e && timeout 10m npm ci --no-audit --no-fund --loglevel=error)
fi
# The test bounds itself (5 minutes after the build); this is the outer safety net.
exec timeout -k 20s "${E2E_CONSOLE_TIMEOUT:-40m}" node tests/e2e/console.mjs
