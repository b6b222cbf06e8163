# Shared helpers for the benchmark scripts (sourced, not run).
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PIDS=()

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    [ -n "${WORK:-}" ] && [ -d "$WORK" ] && [ -z "${KEEP:-}" ] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT INT TERM

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found (apt-get install ${2:-$1})"; }

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
    else
        local p
        while :; do
            p=$(( 20000 + RANDOM % 40000 ))
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
        done
    fi
}

wait_ping() {  # port [seconds]
    local i
    for i in $(seq 1 $(( ${2:-15} * 20 ))); do
        [ "$(redis-cli -h 127.0.0.1 -p "$1" PING 2>/dev/null)" = PONG ] && return 0
        sleep 0.05
    done
    return 1
}

build_redoubt() {  # sets REDOUBT_BIN
    if [ -z "${REDOUBT_BIN:-}" ]; then
        if [ -z "${NO_BUILD:-}" ]; then
            echo "building redoubt (release)..." >&2
            (cd "$ROOT" && cargo build --release -q -p redoubt-server) || die "cargo build failed"
        fi
        REDOUBT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/redoubt"
    fi
    [ -x "$REDOUBT_BIN" ] || die "no redoubt binary at $REDOUBT_BIN"
}

# start_servers: starts redoubt and redis-server on free ports; sets A_PORT/A_PID (redoubt)
# and B_PORT/B_PID (redis-server). Logs go to $WORK.
start_servers() {
    WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/redoubt-bench.XXXXXX")}
    if [ -n "${REDOUBT_PORT:-}" ]; then
        # A redoubt someone else started (benches/cluster.sh: a cluster's leader).
        A_PORT=$REDOUBT_PORT
        A_PID=external
    else
        A_PORT=$(free_port)
        (cd "$WORK" && exec "$REDOUBT_BIN" --port "$A_PORT" --bind 127.0.0.1 --save '' --appendonly no \
            ${REDOUBT_ARGS:-} >"$WORK/redoubt.log" 2>&1) &
        A_PID=$!
        PIDS+=("$A_PID")
    fi
    B_PORT=$(free_port)
    (cd "$WORK" && exec "${REDIS_SERVER:-redis-server}" --port "$B_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize no --logfile '' ${REDIS_ARGS:-} >"$WORK/redis.log" 2>&1) &
    B_PID=$!
    PIDS+=("$B_PID")
    wait_ping "$A_PORT" || { cat "$WORK/redoubt.log" >&2; die "redoubt did not answer PING on $A_PORT"; }
    wait_ping "$B_PORT" || { cat "$WORK/redis.log" >&2; die "redis-server did not answer PING on $B_PORT"; }
    echo "redoubt      127.0.0.1:$A_PORT pid $A_PID ($REDOUBT_BIN)"
    echo "redis-server 127.0.0.1:$B_PORT pid $B_PID ($("${REDIS_SERVER:-redis-server}" --version | cut -d' ' -f3))"
}
