#!/usr/bin/env bash
# End-to-end suite of oidc-authz against real Envoy 1.40, the certified `oidc-provider` IdP and
# headless Chromium (see tests/e2e/suite.mjs for the scenarios). From any directory:
#
#   tests/e2e/run.sh                 # install what is missing, build, run every scenario
#   E2E_ONLY=sign-out tests/e2e/run.sh   # only scenarios whose name contains the text
#
# Needs Debian's chromium, redis-server and wrk (apt-get install -y chromium redis-server wrk),
# node/npm, python3 and cargo.
# ENVOY_BIN=/path/to/envoy reuses an Envoy; E2E_SKIP_BUILD=1 skips cargo build --release.
# Screenshots and logs: target/e2e/. The last line printed is `N passed, M failed`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=tests/e2e/setup.sh
source tests/e2e/setup.sh

if ! e2e_setup; then
    echo "0 passed, 1 failed"
    exit 1
fi

# The suite runs in its own process group so that, whatever happens (Ctrl-C, a timeout, a
# crash), everything it started (Envoy, oidc-authz, the IdP, the backend, Chromium) is
# stopped with it. Its own bound: a normal run takes about two minutes.
set -m
timeout -k 20s "${E2E_TIMEOUT:-15m}" node tests/e2e/suite.mjs &
suite=$!
set +m
stop_suite() { kill -TERM -- "-$suite" 2>/dev/null || true; }
trap stop_suite EXIT
trap 'stop_suite; exit 130' INT TERM
rc=0
wait "$suite" || rc=$?
trap - EXIT
if ((rc == 124 || rc == 137)); then
    echo "the end-to-end suite timed out"
    echo "0 passed, 1 failed"
fi
exit "$rc"
