#!/usr/bin/env bash
# CPU per ext_authz `Check` decision on the valid-session path, as a ratio to a floor: a
# do-nothing tonic `Check` server (examples/bench_noop_check.rs) driven by the same load, in the
# same run. The design's targets: oidc-authz / floor <= 1.25 with the cookie store, and <= 1.5 with
# the redis store (a third server, `oidc-authz+redis`, on a redis-server this script starts).
#
# Everything runs on loopback. The IdP (http://127.0.0.1:1) is down on purpose: the session path
# must not need it. Every wait and every load run is bounded; every process started here is
# stopped on exit.
#
# Knobs (environment):
#   N=50000          requests per measured run
#   ROUNDS=3         rounds; each round runs every server once, alternating
#   CONNS=4 STREAMS=8  h2load -c / -m (4 connections x 8 concurrent streams)
#   WARMUP=3000      unmeasured requests per server before the rounds
#   RPS=             if set (requests/s per connection, h2load --rps), run the rounds again
#                    paced at CONNS*RPS req/s, so both servers carry the same load
#   PACED_N=         requests per paced run (default: N)
#   NODELAY_SHIM=0   1 = also measure oidc-authz with TCP_NODELAY forced on its accepted sockets
#                    (LD_PRELOAD of bench/nodelay_shim.c; diagnostic, needs a C compiler)
#   REDIS=1          1 = also measure oidc-authz with `session.store: redis` (needs redis-server;
#                    installed with apt-get when missing)
#   BASELINE_BIN=   path to another oidc-authz binary (say, a build of the commit before a change):
#                    adds a server "oidc-authz-baseline" run from it with the same config, so a
#                    change's cost is the ratio of the two in the same run
#   DECIDE=1         1 = finish with examples/bench_decide (in-process cost of the hot-path pieces)
#   ANSWER=1         1 = also measure `noop+answer`: the do-nothing server answering every Check with
#                    oidc-authz's own answer to this request (recorded once, byte for byte), so the
#                    cost of carrying the answer (identity headers, a 1 KB bearer token) is told apart
#                    from the cost of deciding: oidc-authz / noop+answer is the decision's own share
#   OTEL_BENCH=0     1 = also measure `oidc-authz+otel`: spans exported (OTEL_EXPORTER_OTLP_ENDPOINT)
#                    to examples/otlp_receiver on loopback, every Check a sampled root span
#   RUN_TIMEOUT=300  seconds allowed per h2load run;  BUILD_TIMEOUT=1800 for cargo
#   SKIP_BUILD=0     1 = use the binaries already in target/release
#   STRICT=0         1 = exit 1 when a median ratio misses its target (1.25; 1.5 for redis)
#   KEEP=0           1 = keep the work directory (config, logs, request file, results)
set -euo pipefail

N=${N:-50000}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-4}
STREAMS=${STREAMS:-8}
WARMUP=${WARMUP:-3000}
RPS=${RPS:-}
PACED_N=${PACED_N:-$N}
NODELAY_SHIM=${NODELAY_SHIM:-0}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}
SKIP_BUILD=${SKIP_BUILD:-0}
STRICT=${STRICT:-0}
KEEP=${KEEP:-0}
DECIDE=${DECIDE:-1}
ANSWER=${ANSWER:-1}
OTEL_BENCH=${OTEL_BENCH:-0}
REDIS=${REDIS:-1}
BASELINE_BIN=${BASELINE_BIN:-}
TARGET_RATIO=1.25
TARGET_RATIO_REDIS=1.5
URL='https://app.bench.test/dashboard?tab=overview'
CHECK_PATH=/envoy.service.auth.v3.Authorization/Check

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REL="$ROOT/target/release"
WORK=$(mktemp -d /tmp/oidc-authz-bench.XXXXXX)
PIDS=()

BENCH_NAME=bench
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- tools and build
for t in curl python3; do command -v "$t" >/dev/null || die "$t is required"; done
if ! command -v h2load >/dev/null; then
    log "installing h2load (nghttp2-client)"
    timeout 600 apt-get install -y nghttp2-client >/dev/null 2>&1 ||
        { timeout 300 apt-get update >/dev/null 2>&1 &&
          timeout 600 apt-get install -y nghttp2-client >/dev/null 2>&1; } ||
        die "cannot install nghttp2-client (h2load)"
fi
if [[ $REDIS == 1 ]] && ! command -v redis-server >/dev/null; then
    log "installing redis-server"
    timeout 600 apt-get install -y redis-server >/dev/null 2>&1 ||
        { timeout 300 apt-get update >/dev/null 2>&1 &&
          timeout 600 apt-get install -y redis-server >/dev/null 2>&1; } ||
        die "cannot install redis-server"
fi
CLK_TCK=$(getconf CLK_TCK)

if [[ $SKIP_BUILD != 1 ]]; then
    log "building (cargo build --release --bin oidc-authz --examples)"
    (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release --bin oidc-authz --examples) ||
        die "build failed"
fi
for b in "$REL/oidc-authz" "$REL/examples/bench_noop_check" "$REL/examples/bench_request" \
    "$REL/examples/bench_decide"; do
    [[ -x $b ]] || die "missing $b (build first)"
done
SHIM=
if [[ $NODELAY_SHIM == 1 ]]; then
    SHIM="$WORK/nodelay_shim.so"
    cc -shared -fPIC -O2 -o "$SHIM" "$ROOT/bench/nodelay_shim.c" -ldl || die "cannot build the shim"
fi

# ---------------------------------------------------------------- ports and config
read -r GRPC HTTP ADMIN NOOP GRPC2 HTTP2 GRPC3 HTTP3 REDIS_PORT GRPC4 HTTP4 NOOP_ANSWER <<<"$(free_ports 12)"

write_config() { # grpc_port http_port file [store]
    local store=${4:-cookie} redis_line=
    if [[ $store == redis ]]; then redis_line="  redis_url: redis://127.0.0.1:$REDIS_PORT"; fi
    cat >"$3" <<EOF
# Written by bench/check_cpu.sh. The issuer is on a closed loopback port: the IdP is DOWN.
server:
  grpc_listen: 127.0.0.1:$1
  http_listen: 127.0.0.1:$2
  admin_listen: 127.0.0.1:$ADMIN
session:
  secrets: ["bench-only-secret-bench-only-secret-0123456789"]
  store: $store
$redis_line
  cookie_name: _oidc_authz
  max_lifetime: 24h
rules_store: inline
default_action: deny
rules:
  - name: bench
    issuer: http://127.0.0.1:1
    redirect_url: https://app.bench.test/oauth2/callback
    client_id: gateway
    client_secret: bench-client-secret
    cookie_domain: .bench.test
    scope: openid;email;profile
    domains: ["*.bench.test", "bench.test"]
    authorization:
      mode: whitelist
      conditions:
        - { path: /public/, match: prefix }
        - { domain: "app.bench.test", path: /healthz, match: exact }
        - { path: "/static/.*\\\\.(css|js)", match: regex }
        - { domain: "docs.bench.test", path: /, match: prefix }
    upstream_token: id_token
    allowed: { email_domains: [example.com] }
EOF
}
CONFIG="$WORK/oidc-authz.yaml"
write_config "$GRPC" "$HTTP" "$CONFIG"
"$REL/oidc-authz" validate --config "$CONFIG" >/dev/null || die "the bench config is invalid"

# ---------------------------------------------------------------- servers
"$REL/examples/bench_noop_check" "127.0.0.1:$NOOP" >"$WORK/noop.log" 2>&1 &
NOOP_PID=$!; PIDS+=("$NOOP_PID")
"$REL/oidc-authz" serve --config "$CONFIG" >"$WORK/oidc-authz.log" 2>&1 &
AUTHZ_PID=$!; PIDS+=("$AUTHZ_PID")
wait_port "$NOOP" 20 || die "noop server did not listen (see $WORK/noop.log)"
wait_port "$GRPC" 20 || die "oidc-authz did not listen (see $WORK/oidc-authz.log)"
wait_port "$HTTP" 20 || die "oidc-authz HTTP listener did not listen"

SERVERS=(noop oidc-authz)
declare -A CONFIG_OF=([noop]=$CONFIG [oidc-authz]=$CONFIG)
declare -A PID_OF=([noop]=$NOOP_PID [oidc-authz]=$AUTHZ_PID)
declare -A PORT_OF=([noop]=$NOOP [oidc-authz]=$GRPC)
declare -A METRICS_OF=([oidc-authz]=$HTTP)
if [[ -n $SHIM ]]; then
    CONFIG2="$WORK/oidc-authz-nodelay.yaml"
    write_config "$GRPC2" "$HTTP2" "$CONFIG2"
    LD_PRELOAD="$SHIM" "$REL/oidc-authz" serve --config "$CONFIG2" >"$WORK/oidc-authz-nodelay.log" 2>&1 &
    PID_OF[oidc-authz+nodelay]=$!; PIDS+=("$!")
    PORT_OF[oidc-authz+nodelay]=$GRPC2
    CONFIG_OF[oidc-authz+nodelay]=$CONFIG2
    METRICS_OF[oidc-authz+nodelay]=$HTTP2
    { wait_port "$GRPC2" 20 && wait_port "$HTTP2" 20; } || die "oidc-authz (nodelay) did not listen"
    SERVERS+=(oidc-authz+nodelay)
fi
if [[ -n $BASELINE_BIN ]]; then
    [[ -x $BASELINE_BIN ]] || die "BASELINE_BIN=$BASELINE_BIN is not an executable"
    CONFIG4="$WORK/oidc-authz-baseline.yaml"
    write_config "$GRPC4" "$HTTP4" "$CONFIG4"
    "$BASELINE_BIN" serve --config "$CONFIG4" >"$WORK/oidc-authz-baseline.log" 2>&1 &
    PID_OF[oidc-authz-baseline]=$!; PIDS+=("$!")
    PORT_OF[oidc-authz-baseline]=$GRPC4
    CONFIG_OF[oidc-authz-baseline]=$CONFIG4
    METRICS_OF[oidc-authz-baseline]=$HTTP4
    { wait_port "$GRPC4" 20 && wait_port "$HTTP4" 20; } || die "oidc-authz (baseline) did not listen"
    SERVERS+=(oidc-authz-baseline)
fi
if [[ $REDIS == 1 ]]; then
    # Its own redis-server on a free loopback port, no persistence, stopped on exit.
    mkdir -p "$WORK/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK/redis" --logfile "$WORK/redis/redis.log" &
    REDIS_PID=$!; PIDS+=("$REDIS_PID")
    wait_port "$REDIS_PORT" 20 || die "redis-server did not listen (see $WORK/redis/redis.log)"
    CONFIG3="$WORK/oidc-authz-redis.yaml"
    write_config "$GRPC3" "$HTTP3" "$CONFIG3" redis
    "$REL/oidc-authz" validate --config "$CONFIG3" >/dev/null || die "the redis bench config is invalid"
    "$REL/oidc-authz" serve --config "$CONFIG3" >"$WORK/oidc-authz-redis.log" 2>&1 &
    PID_OF[oidc-authz+redis]=$!; PIDS+=("$!")
    PORT_OF[oidc-authz+redis]=$GRPC3
    METRICS_OF[oidc-authz+redis]=$HTTP3
    CONFIG_OF[oidc-authz+redis]=$CONFIG3
    { wait_port "$GRPC3" 20 && wait_port "$HTTP3" 20; } || die "oidc-authz (redis) did not listen"
    SERVERS+=(oidc-authz+redis)
fi

# ---------------------------------------------------------------- OTEL_BENCH=1 (tracing on)
if [[ $OTEL_BENCH == 1 ]]; then
    [[ -x "$REL/examples/otlp_receiver" ]] || die "missing $REL/examples/otlp_receiver (build first)"
    read -r GRPC_OTEL HTTP_OTEL OTLP_PORT <<<"$(free_ports 3)"
    "$REL/examples/otlp_receiver" "127.0.0.1:$OTLP_PORT" /dev/null >"$WORK/otlp_receiver.log" 2>&1 &
    PIDS+=("$!")
    wait_port "$OTLP_PORT" 20 || die "otlp_receiver did not listen (see $WORK/otlp_receiver.log)"
    CONFIG_OTEL="$WORK/oidc-authz-otel.yaml"
    write_config "$GRPC_OTEL" "$HTTP_OTEL" "$CONFIG_OTEL"
    OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT" \
        "$REL/oidc-authz" serve --config "$CONFIG_OTEL" >"$WORK/oidc-authz-otel.log" 2>&1 &
    PID_OF[oidc-authz+otel]=$!; PIDS+=("$!")
    PORT_OF[oidc-authz+otel]=$GRPC_OTEL
    METRICS_OF[oidc-authz+otel]=$HTTP_OTEL
    CONFIG_OF[oidc-authz+otel]=$CONFIG_OTEL
    { wait_port "$GRPC_OTEL" 20 && wait_port "$HTTP_OTEL" 20; } || die "oidc-authz (otel) did not listen"
    SERVERS+=(oidc-authz+otel)
fi

# ---------------------------------------------------------------- the request
# One request file per server: the same request, with a session cookie for that server's store.
REQ="$WORK/check_request.grpc"
REQ_INFO=$("$REL/examples/bench_request" "$CONFIG" "$URL" "$REQ") || die "bench_request failed"
log "request: $REQ_INFO"
declare -A REQ_OF=()
for s in "${SERVERS[@]}"; do
    if [[ ${CONFIG_OF[$s]} == "$CONFIG" ]]; then
        REQ_OF[$s]=$REQ
    else
        REQ_OF[$s]="$WORK/check_request.$s.grpc"
        info=$("$REL/examples/bench_request" "${CONFIG_OF[$s]}" "$URL" "${REQ_OF[$s]}") ||
            die "bench_request failed for $s"
        log "request for $s: $info"
    fi
done

# ---------------------------------------------------------------- helpers
allow_session() { # metrics_port -> oidc_authz_check_total{rule="…",outcome="allow_session"}, summed
    # over rules (a build from before the `rule` label writes {outcome="allow_session"} alone)
    curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk '/^oidc_authz_check_total\{/ {t = 1}
             /^oidc_authz_check_total\{(.*,)?outcome="allow_session"[,}]/ {n += $2}
             END {if (!t) exit 1; print n + 0}'
}

check_outcomes() { # metrics_port -> all check_total lines, compact
    curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk '/^oidc_authz_check_total\{/ {sub(/^oidc_authz_check_total/, ""); gsub(/"/, ""); printf "%s=%s ", $1, $2}'
}

grpc_once() { # server out_body -> prints curl's response headers and trailers
    curl -sS --max-time 10 --http2-prior-knowledge -v -o "$2" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        --data-binary "@${REQ_OF[$1]}" "http://127.0.0.1:${PORT_OF[$1]}$CHECK_PATH" 2>&1 | grep '^< ' || true
}

h2load_run() { # server n [rps] -> h2load output
    local extra=()
    if [[ -n ${3:-} ]]; then extra=(--rps="$3"); fi
    timeout "$RUN_TIMEOUT" h2load -n "$2" -c "$CONNS" -m "$STREAMS" -t 1 "${extra[@]}" \
        --data="${REQ_OF[$1]}" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:${PORT_OF[$1]}$CHECK_PATH"
}

# ---------------------------------------------------------------- decision check
for s in "${SERVERS[@]}"; do
    before=
    if [[ -n ${METRICS_OF[$s]:-} ]]; then before=$(allow_session "${METRICS_OF[$s]}"); fi
    hdrs=$(grpc_once "$s" "$WORK/response.$s.bin")
    grep -q '^< HTTP/2 200' <<<"$hdrs" || die "$s: no HTTP/2 200: $hdrs"
    grep -qi '^< grpc-status: 0' <<<"$hdrs" || die "$s: no grpc-status 0: $hdrs"
    if [[ -n $before ]]; then
        after=$(allow_session "${METRICS_OF[$s]}")
        ((after == before + 1)) ||
            die "$s: allow_session went $before -> $after; the session path was not taken ($(check_outcomes "${METRICS_OF[$s]}"))"
        grep -aq 'x-auth-request-user' "$WORK/response.$s.bin" ||
            die "$s: the CheckResponse carries no identity header"
        log "$s: HTTP 200, grpc-status 0, allow_session +1, identity headers present"
    else
        log "$s: HTTP 200, grpc-status 0"
    fi
done

# The floor again, now sending oidc-authz's own answer (recorded just above).
if [[ $ANSWER == 1 ]]; then
    "$REL/examples/bench_noop_check" "127.0.0.1:$NOOP_ANSWER" --answer "$WORK/response.oidc-authz.bin" \
        >"$WORK/noop-answer.log" 2>&1 &
    PID_OF[noop+answer]=$!; PIDS+=("$!")
    PORT_OF[noop+answer]=$NOOP_ANSWER
    REQ_OF[noop+answer]=$REQ
    wait_port "$NOOP_ANSWER" 20 || die "noop+answer did not listen (see $WORK/noop-answer.log)"
    grpc_once noop+answer "$WORK/response.noop+answer.bin" >/dev/null
    cmp -s "$WORK/response.noop+answer.bin" "$WORK/response.oidc-authz.bin" ||
        die "noop+answer does not send oidc-authz's answer byte for byte"
    log "noop+answer: sends oidc-authz's answer ($(stat -c %s "$WORK/response.oidc-authz.bin") bytes) byte for byte"
    SERVERS=(noop noop+answer "${SERVERS[@]:1}")
fi

# ---------------------------------------------------------------- measurement
RESULTS="$WORK/results.tsv"
printf 'mode\tround\tserver\tn\tticks\tus_per_req\treq_per_s\n' >"$RESULTS"

measure() { # mode round server n rps
    local mode=$1 round=$2 s=$3 n=$4 rps=${5:-} pid=${PID_OF[$3]} t0 t1 out ok reqs us
    t0=$(cpu_ticks "$pid") || die "$s is not running"
    out=$(h2load_run "$s" "$n" "$rps") || die "$s: h2load failed or timed out: $out"
    t1=$(cpu_ticks "$pid") || die "$s died during the run"
    ok=$(sed -nE 's/^requests: .* ([0-9]+) succeeded, ([0-9]+) failed.*/\1 \2/p' <<<"$out")
    [[ $ok == "$n 0" ]] || die "$s: not every request succeeded ($ok): $out"
    grep -qE "^status codes: $n 2xx" <<<"$out" || die "$s: non-2xx responses: $out"
    reqs=$(sed -nE 's/^finished in [^,]+, ([0-9.]+) req\/s.*/\1/p' <<<"$out")
    us=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$round" "$s" "$n" $((t1 - t0)) "$us" "$reqs" >>"$RESULTS"
    log "$mode round $round  $(printf '%-20s' "$s") $(printf '%7s' "$us") us CPU/req  $(printf '%9s' "$reqs") req/s  ($((t1 - t0)) ticks)"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "warm-up: $WARMUP requests per server"
for s in "${SERVERS[@]}"; do
    h2load_run "$s" "$WARMUP" >/dev/null || die "$s: warm-up failed"
done

declare -A SESSION_BEFORE=()
for s in "${SERVERS[@]}"; do
    if [[ -n ${METRICS_OF[$s]:-} ]]; then SESSION_BEFORE[$s]=$(allow_session "${METRICS_OF[$s]}"); fi
done

MODES=(saturate)
if [[ -n $RPS ]]; then MODES+=(paced); fi
declare -A SENT=()
for mode in "${MODES[@]}"; do
    n=$N rps=
    if [[ $mode == paced ]]; then n=$PACED_N rps=$RPS; fi
    log "$mode: $ROUNDS rounds x ${#SERVERS[@]} servers x $n requests (h2load -c $CONNS -m $STREAMS -t 1${rps:+ --rps $rps})"
    for round in $(seq 1 "$ROUNDS"); do
        # Alternate the order, so neither server always runs first after the other.
        order=("${SERVERS[@]}")
        if ((round % 2 == 0)); then
            order=()
            for ((i = ${#SERVERS[@]} - 1; i >= 0; i--)); do order+=("${SERVERS[$i]}"); done
        fi
        for s in "${order[@]}"; do
            measure "$mode" "$round" "$s" "$n" "$rps"
            SENT[$s]=$((${SENT[$s]:-0} + n))
        done
    done
done

# Every measured request to oidc-authz must have been decided allow through the session.
DECISIONS_OK=1
for s in "${SERVERS[@]}"; do
    [[ -n ${METRICS_OF[$s]:-} ]] || continue
    after=$(allow_session "${METRICS_OF[$s]}")
    delta=$((after - ${SESSION_BEFORE[$s]}))
    if ((delta == ${SENT[$s]})); then
        log "$s: allow_session +$delta for ${SENT[$s]} measured requests: every one decided allow (session)"
    else
        log "$s: allow_session +$delta for ${SENT[$s]} measured requests: MISMATCH ($(check_outcomes "${METRICS_OF[$s]}"))"
        DECISIONS_OK=0
    fi
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
DECIDE_OUT=
if [[ $DECIDE == 1 ]]; then
    DECIDE_OUT=$(timeout 120 "$REL/examples/bench_decide" "$CONFIG" "$REQ" 0.5 2>&1) ||
        DECIDE_OUT="bench_decide failed: $DECIDE_OUT"
fi

# ---------------------------------------------------------------- report
echo
echo "oidc-authz Check CPU benchmark  ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, CLK_TCK=$CLK_TCK)"
echo "tree: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
echo "request: $REQ_INFO"
echo "load: h2load -c $CONNS -m $STREAMS -t 1, $ROUNDS rounds; CPU = utime+stime of the server process"
echo "machine load average before/after the rounds: $LOAD_BEFORE / $LOAD_AFTER (high = noisy numbers)"
awk -F'\t' -v target="$TARGET_RATIO" -v target_redis="$TARGET_RATIO_REDIS" '
    function median(list,    a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    NR == 1 { next }
    {
        key = $1 SUBSEP $3
        us[key] = us[key] " " $6; rps[key] = rps[key] " " $7
        cpu[$1 SUBSEP $2 SUBSEP $3] = $6
        if (!(($1) in seen_mode)) { seen_mode[$1] = 1; modes[++nm] = $1 }
        if (!(($3) in seen_srv)) { seen_srv[$3] = 1; srv[++ns] = $3 }
        if ($2 + 0 > rounds[$1] + 0) rounds[$1] = $2 + 0
    }
    END {
        for (m = 1; m <= nm; m++) {
            mode = modes[m]
            printf "\n[%s]\n%-22s %14s %12s   %s\n", mode, "server", "CPU us/req", "req/s", "per round (us/req)"
            for (i = 1; i <= ns; i++) {
                k = mode SUBSEP srv[i]
                if (!(k in us)) continue
                printf "%-22s %14.1f %12.0f  %s\n", srv[i], median(us[k]), median(rps[k]), us[k]
            }
            for (i = 1; i <= ns; i++) {
                if (srv[i] == "noop" || !((mode SUBSEP srv[i]) in us)) continue
                ratios = ""
                for (r = 1; r <= rounds[mode]; r++)
                    ratios = ratios " " sprintf("%.2f", cpu[mode SUBSEP r SUBSEP srv[i]] / cpu[mode SUBSEP r SUBSEP "noop"])
                med = median(ratios)
                if (srv[i] == "noop+answer") {
                    printf "ratio noop+answer / noop: %.2fx (median of rounds:%s)  what carrying the answer costs\n", med, ratios
                    continue
                }
                t = (srv[i] ~ /redis/) ? target_redis : target
                printf "ratio %s / noop: %.2fx (median of rounds:%s)  target <= %sx: %s\n",
                    srv[i], med, ratios, t, (med <= t ? "MET" : "MISSED")
                if ((mode SUBSEP "noop+answer") in us && srv[i] !~ /^noop/) {
                    ratios = ""
                    for (r = 1; r <= rounds[mode]; r++)
                        ratios = ratios " " sprintf("%.2f", cpu[mode SUBSEP r SUBSEP srv[i]] / cpu[mode SUBSEP r SUBSEP "noop+answer"])
                    printf "  %s / noop+answer: %.2fx (median of rounds:%s)  what deciding costs\n", srv[i], median(ratios), ratios
                }
                if (mode == "saturate" && srv[i] == "oidc-authz") headline = med
                if (mode == "saturate" && srv[i] == "oidc-authz+redis") headline_redis = med
            }
        }
        if (headline != "") print headline > "/dev/stderr"
        if (headline_redis != "") print headline_redis > "/dev/stderr"
    }' "$RESULTS" 2>"$WORK/headline"
if [[ -n $DECIDE_OUT ]]; then
    printf '\n[in process, one thread, wall time per call: examples/bench_decide]\n%s\n' "$DECIDE_OUT"
fi
echo
[[ $DECISIONS_OK == 1 ]] || die "allow_session did not count every measured request"
HEADLINE=$(sed -n 1p "$WORK/headline")
HEADLINE_REDIS=$(sed -n 2p "$WORK/headline")
if [[ $STRICT == 1 ]] && awk -v r="$HEADLINE" -v t="$TARGET_RATIO" 'BEGIN {exit !(r > t)}'; then
    die "median ratio $HEADLINE exceeds $TARGET_RATIO"
fi
if [[ $STRICT == 1 && -n $HEADLINE_REDIS ]] && awk -v r="$HEADLINE_REDIS" -v t="$TARGET_RATIO_REDIS" 'BEGIN {exit !(r > t)}'; then
    die "median ratio of the redis store $HEADLINE_REDIS exceeds $TARGET_RATIO_REDIS"
fi
if [[ $KEEP == 1 ]]; then log "raw results: $RESULTS"; fi
