#!/usr/bin/env bash
# restart.sh: how long a restart takes to serve again with N keys on disk, redoubt against
# redis-server loading an RDB of the same keys.
#
# redoubt (durable, the default) gets N keys of 16-byte names and values through
# `redis-cli --pipe`, takes a snapshot (RAFT SNAPSHOT), is killed with SIGKILL and started
# again on the same --dir; redis-server gets the same keys, SAVE, SIGKILL, restart on the
# same dump.rdb. The time is from spawning the process to the first PONG (both answer
# -LOADING before that). Rounds alternate, medians are reported.
#
# usage: benches/restart.sh [-n KEYS] [-R ROUNDS] [--no-build] [--keep]
# Environment: REDOUBT_BIN, REDIS_SERVER.
set -euo pipefail
source "$(dirname "$0")/common.sh"

KEYS=1000000
ROUNDS=3
while [ $# -gt 0 ]; do
    case "$1" in
        -n) KEYS=$2; shift 2;;
        -R) ROUNDS=$2; shift 2;;
        --no-build) NO_BUILD=1; shift;;
        --keep) KEEP=1; shift;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
        *) die "unknown option $1 (see -h)";;
    esac
done
need redis-cli redis-tools
need "${REDIS_SERVER:-redis-server}" redis-server
build_redoubt
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/redoubt-restart.XXXXXX")}
mkdir -p "$WORK/redoubt" "$WORK/redis"
PROTO="$WORK/load.proto"
awk -v n="$KEYS" 'BEGIN {
    for (i = 0; i < n; i++) {
        k = sprintf("k%015d", i); v = sprintf("v%015d", i)
        printf "*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$16\r\n%s\r\n", k, v
    }
}' >"$PROTO"

now_ms() { date +%s%3N; }
PID=""
start_redoubt() { (cd "$WORK/redoubt" && exec "$REDOUBT_BIN" --port "$1" --bind 127.0.0.1 --dir "$WORK/redoubt" \
    >>"$WORK/redoubt.log" 2>&1) & PID=$!; PIDS+=("$PID"); }
start_redis() { (cd "$WORK/redis" && exec "${REDIS_SERVER:-redis-server}" --port "$1" --bind 127.0.0.1 \
    --dir "$WORK/redis" --save '' --appendonly no --daemonize no --logfile '' >>"$WORK/redis.log" 2>&1) & PID=$!; PIDS+=("$PID"); }
# time_to_pong start_fn port: sets MS to the ms from spawn to the first PONG (not run in a
# subshell: PID must reach kill9)
time_to_pong() {
    local t0 t1
    t0=$(now_ms)
    "$1" "$2"
    wait_ping "$2" 120 || die "$1 did not answer PONG"
    t1=$(now_ms)
    MS=$((t1 - t0))
}
kill9() { kill -9 "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }

# Load both once.
P=$(free_port); start_redoubt "$P"; wait_ping "$P" 60 || die "redoubt did not start"
redis-cli -p "$P" --pipe <"$PROTO" | tail -1
[ "$(redis-cli -p "$P" DBSIZE)" = "$KEYS" ] || die "redoubt DBSIZE"
redis-cli -p "$P" RAFT SNAPSHOT >/dev/null
until [ "$(redis-cli -p "$P" RAFT INFO | tr -d '\r' | awk -F: '$1=="snapshot_index"{print $2}')" != 0 ]; do sleep 0.2; done
sleep 1
kill9
P=$(free_port); start_redis "$P"; wait_ping "$P" 60 || die "redis did not start"
redis-cli -p "$P" --pipe <"$PROTO" | tail -1
redis-cli -p "$P" SAVE >/dev/null
kill9
du -sh "$WORK/redoubt" "$WORK/redis"

A=(); B=()
for r in $(seq 1 "$ROUNDS"); do
    P=$(free_port); time_to_pong start_redoubt "$P"; A+=("$MS")
    [ "$(redis-cli -p "$P" DBSIZE)" = "$KEYS" ] || die "redoubt lost keys after restart"
    kill9
    P=$(free_port); time_to_pong start_redis "$P"; B+=("$MS")
    [ "$(redis-cli -p "$P" DBSIZE)" = "$KEYS" ] || die "redis lost keys after restart"
    kill9
    echo "round $r: redoubt ${A[-1]} ms, redis ${B[-1]} ms"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ma=$(median "${A[@]}"); mb=$(median "${B[@]}")
echo "restart to PONG with $KEYS keys: redoubt $ma ms, redis-server $mb ms, ratio $(awk -v a="$ma" -v b="$mb" 'BEGIN{printf "%.2f", a/b}')"
