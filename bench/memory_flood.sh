#!/usr/bin/env bash
# Memory under a flood of distinct credentials (issue 12, DESIGN P6: "memory is bounded by
# configured cache capacities"). One oidc-authz, two rules:
#   bench      session cookies; its IdP (http://127.0.0.1:1) is DOWN on purpose: the session
#              path must not need it
#   bench-api  bearer tokens from a static issuer (python3 http.server on loopback serving the
#              discovery document and a JWKS with one EC P-256 key); tokens are ES256
# and examples/bench_flood sends, phase by phase, requests that each carry a credential never
# seen before:
#   valid-cookies     sealed sessions          -> allow_session   (kept: caches.sessions)
#   invalid-cookies   random, same length      -> unauthorized    (never kept)
#   valid-tokens      signed ES256 JWTs        -> allow_bearer    (kept: caches.tokens)
#   invalid-tokens    bad signatures           -> unauthorized    (never kept)
#   valid-cookies #2  NEW sealed sessions      -> allow_session   (the cache is already full)
# Around each phase it reads VmRSS and VmHWM from /proc/PID/status (after the phase, and again
# after SETTLE seconds), and checks every decision twice: the tool's count of answers by gRPC
# code, and the delta of oidc-authz's own oidc_authz_check_total{rule,outcome}.
#
# The bound it checks (see docs/operations.md, "Memory"):
#   RSS after the flood <= baseline RSS + SESSIONS_FACTOR x caches.sessions
#                          + TOKENS_FACTOR x caches.tokens x issuers + ALLOWANCE
# where the baseline is read after a short warm-up (WARMUP invalid credentials of each kind,
# which the caches never keep, and 10 valid ones of each). The factors
# are what a byte of cache weight really costs in resident memory: the weights (src/session/
# opened.rs, src/oidc/provider.rs `token_weight`) leave out part of each entry (the cache's own
# bookkeeping, allocator size classes, and for tokens part of the parsed claims). Measured
# (bench/README.md, "Memory under a flood"): sessions 1.12-1.15x while the cache fills, 1.24x
# once a full cache has churned through 400,000 entries; tokens 1.35x and 1.45-1.5x. The
# defaults add margin to the churned figures. ALLOWANCE is what does not grow with the caches
# (runtime and connection buffers, allocator slack; 3 MiB or less in the runs recorded), with
# margin. One issuer serves bearer tokens here.
#
# Every wait and every phase is bounded; every process started here is stopped on exit.
#
# Knobs (environment):
#   VALID_COOKIES=400000 INVALID_COOKIES=200000 VALID_TOKENS=200000 INVALID_TOKENS=200000
#                      requests (distinct credentials) per phase; 0 skips a phase
#   SECOND_COOKIES=200000  requests of the second valid-cookie phase (new cookies); 0 skips it
#   SESSIONS_CACHE=64MiB TOKENS_CACHE=32MiB   the config's caches.sessions / caches.tokens
#   SESSIONS_FACTOR=1.35 TOKENS_FACTOR=1.60 ALLOWANCE_MIB=16   the bound (see above)
#   WARMUP=2000        invalid cookies and invalid tokens sent before the baseline is read
#   CONCURRENCY=64 CONNECTIONS=2   bench_flood's requests in flight / HTTP/2 connections
#   SETTLE=2           seconds to wait after a phase before reading RSS again
#   PHASE_TIMEOUT=900  seconds allowed per phase;  BUILD_TIMEOUT=1800 for cargo
#   SKIP_BUILD=0       1 = use the binaries already in target/release
#   STRICT=0           1 = exit 1 when the RSS after the flood exceeds the bound, or when a
#                      phase's decisions do not all verify
#   KEEP=0             1 = keep the work directory (config, keys, logs, results)
set -euo pipefail

VALID_COOKIES=${VALID_COOKIES:-400000}
INVALID_COOKIES=${INVALID_COOKIES:-200000}
VALID_TOKENS=${VALID_TOKENS:-200000}
INVALID_TOKENS=${INVALID_TOKENS:-200000}
SECOND_COOKIES=${SECOND_COOKIES:-200000}
SESSIONS_CACHE=${SESSIONS_CACHE:-64MiB}
TOKENS_CACHE=${TOKENS_CACHE:-32MiB}
SESSIONS_FACTOR=${SESSIONS_FACTOR:-1.35}
TOKENS_FACTOR=${TOKENS_FACTOR:-1.60}
ALLOWANCE_MIB=${ALLOWANCE_MIB:-16}
WARMUP=${WARMUP:-2000}
CONCURRENCY=${CONCURRENCY:-64}
CONNECTIONS=${CONNECTIONS:-2}
SETTLE=${SETTLE:-2}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-900}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}
SKIP_BUILD=${SKIP_BUILD:-0}
STRICT=${STRICT:-0}
KEEP=${KEEP:-0}

APP_HOST=app.bench.test
API_HOST=api.bench.test
COOKIE_URL="https://$APP_HOST/api/profile?tab=overview"
TOKEN_URL="https://$API_HOST/v1/items?limit=20"
KID=bench-flood-es256

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REL="$ROOT/target/release"
WORK=$(mktemp -d /tmp/oidc-authz-flood.XXXXXX)
PIDS=()

BENCH_NAME=flood
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- tools and build
for t in curl openssl python3; do command -v "$t" >/dev/null || die "$t is required"; done
if [[ $SKIP_BUILD != 1 ]]; then
    log "building (cargo build --release --bin oidc-authz --examples)"
    (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release --bin oidc-authz --examples) ||
        die "build failed"
fi
for b in "$REL/oidc-authz" "$REL/examples/bench_flood"; do
    [[ -x $b ]] || die "missing $b (build first)"
done

# Sizes as the config reads them (powers of 1024 for KiB/MiB/GiB, of 1000 for KB/MB/GB).
bytes_of() {
    python3 - "$1" <<'PY'
import re, sys
m = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*", sys.argv[1])
if not m:
    sys.exit(f"bad size {sys.argv[1]!r}")
mult = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9}
print(int(m.group(1)) * mult[m.group(2)])
PY
}
SESSIONS_BYTES=$(bytes_of "$SESSIONS_CACHE")
TOKENS_BYTES=$(bytes_of "$TOKENS_CACHE")

# ---------------------------------------------------------------- ports, keys, issuer, config
read -r GRPC HTTP ADMIN IDP <<<"$(python3 - 4 <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)"
ISSUER="http://127.0.0.1:$IDP"

# An EC P-256 key (PKCS#8 PEM, what jsonwebtoken's EncodingKey::from_ec_pem reads) and its JWK:
# x and y are the two 32-byte halves after the 0x04 of the uncompressed public point.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/es256.pem" 2>/dev/null ||
    die "openssl cannot make a P-256 key"
openssl pkey -in "$WORK/es256.pem" -pubout -outform DER -out "$WORK/es256.pub.der" 2>/dev/null ||
    die "openssl cannot write the public key"
mkdir -p "$WORK/idp/.well-known"
python3 - "$WORK" "$ISSUER" "$KID" <<'PY' || die "cannot write the static issuer"
import base64, json, os, sys
work, issuer, kid = sys.argv[1:4]
der = open(os.path.join(work, "es256.pub.der"), "rb").read()
point = der[-65:]
assert point[0] == 4, "not an uncompressed P-256 point"
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                  "x": b64(point[1:33]), "y": b64(point[33:65])}]}
json.dump(jwks, open(os.path.join(work, "idp", "jwks.json"), "w"))
json.dump({
    "issuer": issuer,
    "authorization_endpoint": issuer + "/authorize",
    "token_endpoint": issuer + "/token",
    "jwks_uri": issuer + "/jwks.json",
    "response_types_supported": ["code"],
    "subject_types_supported": ["public"],
    "id_token_signing_alg_values_supported": ["ES256"],
}, open(os.path.join(work, "idp", ".well-known", "openid-configuration"), "w"))
PY

CONFIG="$WORK/oidc-authz.yaml"
cat >"$CONFIG" <<EOF
# Written by bench/memory_flood.sh.
server:
  grpc_listen: 127.0.0.1:$GRPC
  http_listen: 127.0.0.1:$HTTP
  admin_listen: 127.0.0.1:$ADMIN
session:
  secrets: ["bench-only-secret-bench-only-secret-0123456789"]
  cookie_name: _oidc_authz
  max_lifetime: 24h
caches:
  sessions: $SESSIONS_CACHE
  tokens: $TOKENS_CACHE
rules_store: inline
default_action: deny
rules:
  # Session cookies. The issuer is on a closed loopback port: the IdP is DOWN.
  - name: bench
    issuer: http://127.0.0.1:1
    redirect_url: https://$APP_HOST/oauth2/callback
    client_id: gateway
    client_secret: bench-client-secret
    cookie_domain: .bench.test
    scope: openid;email;profile
    domains: ["$APP_HOST"]
    allowed: { email_domains: [example.com] }
  # Bearer tokens from the static issuer (discovery + JWKS on loopback).
  - name: bench-api
    issuer: $ISSUER
    redirect_url: https://$API_HOST/oauth2/callback
    client_id: gateway
    client_secret: bench-client-secret
    scope: openid;email;profile
    domains: ["$API_HOST"]
    allowed: { email_domains: [example.com] }
EOF
"$REL/oidc-authz" validate --config "$CONFIG" >"$WORK/validate.log" 2>&1 ||
    die "the bench config is invalid: $(tr '\n' ' ' <"$WORK/validate.log")"

# ---------------------------------------------------------------- servers
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/idp" "$IDP" >"$WORK/idp.log" 2>&1 &
PIDS+=("$!")
wait_port "$IDP" 20 || die "the static issuer did not listen (see $WORK/idp.log)"
curl -fsS --max-time 5 "$ISSUER/.well-known/openid-configuration" >/dev/null ||
    die "the static issuer serves no discovery"

"$REL/oidc-authz" serve --config "$CONFIG" >"$WORK/oidc-authz.log" 2>&1 &
AUTHZ_PID=$!; PIDS+=("$AUTHZ_PID")
wait_port "$GRPC" 20 || die "oidc-authz did not listen (see $WORK/oidc-authz.log)"
wait_port "$HTTP" 20 || die "oidc-authz HTTP listener did not listen"

flood() { # kind count [extra args...] -> the tool's `result` line on stdout
    local kind=$1 count=$2 url=$COOKIE_URL
    shift 2
    [[ $kind == *tokens ]] && url=$TOKEN_URL
    timeout "$PHASE_TIMEOUT" "$REL/examples/bench_flood" --config "$CONFIG" --grpc "127.0.0.1:$GRPC" \
        --url "$url" --kind "$kind" --count "$count" --concurrency "$CONCURRENCY" \
        --connections "$CONNECTIONS" --signing-key "$WORK/es256.pem" --kid "$KID" "$@" \
        2>>"$WORK/bench_flood.log" | grep '^result ' || true
}

# The bearer rule's provider is ready once a signed token is allowed (bounded).
ready=0
for _ in $(seq 1 60); do
    if flood valid-tokens 1 | grep -q ' as_expected=1 '; then ready=1; break; fi
    sleep 0.5
done
((ready)) || die "oidc-authz never allowed a bearer token (see $WORK/oidc-authz.log, $WORK/bench_flood.log)"

status_kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$AUTHZ_PID/status"; }
mib() { awk -v kb="$1" 'BEGIN {printf "%.1f", kb / 1024}'; }
checks() { # rule outcome -> oidc_authz_check_total{rule,outcome}
    curl -fsS --max-time 5 "http://127.0.0.1:$HTTP/metrics" |
        awk -v want="oidc_authz_check_total{rule=\"$1\",outcome=\"$2\"}" '$1 == want {v = $2} END {printf "%d", v}'
}
field() { # result-line key -> value
    tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k {print $2}'
}

# ---------------------------------------------------------------- warm-up, baseline
# Invalid credentials warm the runtime, the connections and both request paths without putting
# anything in the caches; a few valid ones touch the cache code. So the baseline holds (almost)
# no cache entries, and the caches' whole cost shows in the phases.
log "warm-up: $WARMUP invalid cookies and tokens, 10 valid ones of each"
for kind in invalid-cookies invalid-tokens; do
    [[ -n $(flood "$kind" "$WARMUP") ]] || die "warm-up $kind failed (see $WORK/bench_flood.log)"
done
for kind in valid-cookies valid-tokens; do
    [[ -n $(flood "$kind" 10) ]] || die "warm-up $kind failed (see $WORK/bench_flood.log)"
done
sleep "$SETTLE"
BASE_KB=$(status_kb VmRSS)
log "baseline: VmRSS $(mib "$BASE_KB") MiB, VmHWM $(mib "$(status_kb VmHWM)") MiB (pid $AUTHZ_PID)"

# ---------------------------------------------------------------- phases
ROWS=()
ALL_VERIFIED=1
phase() { # label kind count rule outcome
    local label=$1 kind=$2 count=$3 rule=$4 outcome=$5
    ((count > 0)) || return 0
    local before before_m result after settled peak after_m delta_m verified=yes
    before=$(status_kb VmRSS)
    before_m=$(checks "$rule" "$outcome")
    log "phase $label: $count x $kind (expect $outcome)"
    result=$(flood "$kind" "$count")
    after=$(status_kb VmRSS)
    sleep "$SETTLE"
    settled=$(status_kb VmRSS)
    peak=$(status_kb VmHWM)
    after_m=$(checks "$rule" "$outcome")
    delta_m=$((after_m - before_m))
    [[ -n $result ]] || { result="(no result)"; verified=NO; }
    log "  $result"
    [[ $(field as_expected "$result") == "$count" ]] || verified=NO
    ((delta_m == count)) || verified=NO
    [[ $verified == yes ]] || ALL_VERIFIED=0
    local rate weight
    rate=$(field rate_per_s "$result")
    weight=$(field entry_weight "$result")
    log "  tool: $(field as_expected "$result")/$count as expected; metrics: $outcome +$delta_m; RSS $(mib "$before") -> $(mib "$after") MiB (settled $(mib "$settled")), peak $(mib "$peak")"
    ROWS+=("$(printf '| %s | %s | %s (tool %s, %s +%s) | %s → %s | %+.1f | %s | %s/s | %s |' \
        "$label" "$count" "$verified" "$(field as_expected "$result")" "$outcome" "$delta_m" \
        "$(mib "$before")" "$(mib "$settled")" "$(awk -v a="$settled" -v b="$before" 'BEGIN {print (a - b) / 1024}')" \
        "$(mib "$peak")" "${rate:-?}" "${weight:-?}")")
}

T0=$(date +%s)
phase "valid cookies" valid-cookies "$VALID_COOKIES" bench allow_session
phase "invalid cookies" invalid-cookies "$INVALID_COOKIES" bench unauthorized
phase "valid tokens" valid-tokens "$VALID_TOKENS" bench-api allow_bearer
phase "invalid tokens" invalid-tokens "$INVALID_TOKENS" bench-api unauthorized
phase "valid cookies #2 (new)" valid-cookies "$SECOND_COOKIES" bench allow_session
ELAPSED=$(($(date +%s) - T0))

FINAL_KB=$(status_kb VmRSS)
PEAK_KB=$(status_kb VmHWM)
TOTAL=$((VALID_COOKIES + INVALID_COOKIES + VALID_TOKENS + INVALID_TOKENS + SECOND_COOKIES))
# One issuer serves bearer tokens here (the cookie rule's IdP is down and verifies nothing).
BOUND_KB=$(awk -v b="$BASE_KB" -v s="$SESSIONS_BYTES" -v t="$TOKENS_BYTES" -v sf="$SESSIONS_FACTOR" \
    -v tf="$TOKENS_FACTOR" -v a="$ALLOWANCE_MIB" 'BEGIN {printf "%d", b + (sf * s + tf * t) / 1024 + a * 1024}')
OVER_KB=$((FINAL_KB - BASE_KB - SESSIONS_BYTES / 1024 - TOKENS_BYTES / 1024))

{
    echo
    echo "oidc-authz memory under a flood: $TOTAL distinct credentials in ${ELAPSED}s"
    echo "caches: sessions $SESSIONS_CACHE, tokens $TOKENS_CACHE; concurrency $CONCURRENCY over $CONNECTIONS connections; $(nproc) cores"
    echo
    echo "| phase | requests | decisions verified | RSS before → after (MiB) | delta | peak (VmHWM) | rate | entry weight (B) |"
    echo "|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "baseline RSS (after warm-up)   $(mib "$BASE_KB") MiB"
    echo "RSS after the flood            $(mib "$FINAL_KB") MiB (growth $(mib $((FINAL_KB - BASE_KB))) MiB; peak $(mib "$PEAK_KB") MiB)"
    echo "caches (sessions + tokens)     $(mib $((SESSIONS_BYTES / 1024 + TOKENS_BYTES / 1024))) MiB"
    echo "growth beyond the caches       $(mib "$OVER_KB") MiB"
    echo "bound = baseline + $SESSIONS_FACTOR x sessions + $TOKENS_FACTOR x tokens + $ALLOWANCE_MIB MiB = $(mib "$BOUND_KB") MiB (margin $(mib $((BOUND_KB - FINAL_KB))) MiB)"
} | tee "$WORK/report.txt"

rc=0
if ((FINAL_KB > BOUND_KB)); then
    log "RSS after the flood ($(mib "$FINAL_KB") MiB) is OVER the bound ($(mib "$BOUND_KB") MiB)"
    [[ $STRICT == 1 ]] && rc=1
else
    log "RSS after the flood is within the bound"
fi
if ((ALL_VERIFIED == 0)); then
    log "some phase's decisions did not verify (see the table and $WORK/bench_flood.log)"
    [[ $STRICT == 1 ]] && rc=1
fi
exit "$rc"
