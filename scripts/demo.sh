#!/usr/bin/env bash
# One command for a newcomer: Envoy (the repository's envoy/envoy.yaml), oidc-authz, a
# development OpenID Provider and a sample backend, on this machine. It prints the URL to open
# and the test user's credentials; Ctrl-C stops everything.
#
#   scripts/demo.sh        (or: make demo)      DEMO_PORT=8080 by default
#
# Needs node/npm, python3 (for Envoy from PyPI) and cargo. A browser of your own: Chromium is
# only needed by the end-to-end suite, so its absence is fine here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=tests/e2e/setup.sh
source tests/e2e/setup.sh

e2e_npm_ci
e2e_envoy
e2e_build

# Node handles Ctrl-C itself (it stops every process it started); the trap only makes sure the
# whole group goes if this script is killed.
node tests/e2e/demo.mjs &
demo=$!
trap 'kill -TERM "$demo" 2>/dev/null || true' INT TERM
trap 'kill -TERM "$demo" 2>/dev/null || true' EXIT
rc=0
wait "$demo" || rc=$?
# A trapped signal interrupts `wait`: wait again for the demo to finish stopping.
wait "$demo" 2>/dev/null || true
trap - EXIT
exit "$rc"
