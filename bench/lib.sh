# Shared by the bench/ scripts (sourced, not run): logging, the work directory's cleanup, and
# the loopback helpers. The caller sets BENCH_NAME (the log prefix), WORK (its work directory),
# KEEP (1 = keep WORK) and PIDS=() before sourcing; every PID appended to PIDS is stopped on
# exit, and WORK is removed unless KEEP=1 or the script failed.

log() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

stop_pid() { # pid: TERM, up to 5 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ $KEEP == 1 || $rc != 0 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_ports() { # prints $1 free loopback TCP ports
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

wait_port() { # port seconds: until something listens on 127.0.0.1:port
    local i
    for i in $(seq 1 $(($2 * 10))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

ctx_switches() { # pid -> context switches (voluntary + involuntary) of all its threads so far
    # A thread that sleeps and is woken counts one voluntary switch: the process's wake-ups.
    awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print s + 0}' /proc/"$1"/task/*/status 2>/dev/null
}

cpu_ticks() { # pid -> utime + stime of the whole process (all threads), in clock ticks
    local s
    s=$(<"/proc/$1/stat") || return 1
    s=${s##*) } # fields after "(comm)": state is field 3, utime 14, stime 15
    # shellcheck disable=SC2086
    set -- $s
    echo $((${12} + ${13}))
}
