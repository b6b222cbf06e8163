#!/usr/bin/env bash
# cluster.sh: a local three-node redoubt cluster for trying things out.
#
#   scripts/cluster.sh start    build (release) if needed, start nodes 1-3: clients on
#                               127.0.0.1:7001-7003, raft on 127.0.0.1:17001-17003, data in
#                               ./cluster-data/n1..n3, logs in ./cluster-data/n*.log
#   scripts/cluster.sh status   RAFT INFO role and leader of each node
#   scripts/cluster.sh stop     stop the three nodes (data is kept; start again to rejoin)
#   scripts/cluster.sh clean    stop and delete ./cluster-data
#
# Environment: REDOUBT_BIN (default target/release/redoubt), DATA (default ./cluster-data).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${REDOUBT_BIN:-$ROOT/target/release/redoubt}
DATA=${DATA:-$PWD/cluster-data}
MEMBERS="1@127.0.0.1:17001,2@127.0.0.1:17002,3@127.0.0.1:17003"

start() {
    if [ ! -x "$BIN" ]; then
        (cd "$ROOT" && cargo build --release -p redoubt-server --bin redoubt)
    fi
    for i in 1 2 3; do
        mkdir -p "$DATA/n$i"
        if [ -f "$DATA/n$i.pid" ] && kill -0 "$(cat "$DATA/n$i.pid")" 2>/dev/null; then
            echo "node $i already running (pid $(cat "$DATA/n$i.pid"))"
            continue
        fi
        "$BIN" --port "700$i" --bind 127.0.0.1 --dir "$DATA/n$i" --node-id "$i" --cluster "$MEMBERS" \
            >>"$DATA/n$i.log" 2>&1 &
        echo $! >"$DATA/n$i.pid"
        echo "node $i: redis-cli -p 700$i (pid $!)"
    done
    sleep 1.5
    status
}

status() {
    for i in 1 2 3; do
        printf 'node %s: ' "$i"
        redis-cli -p "700$i" RAFT INFO 2>/dev/null | tr -d '\r' |
            awk -F: '$1=="role"{r=$2} $1=="leader_id"{l=$2} END{ if (r=="") print "down"; else print r", leader " l }'
    done
}

stop() {
    for i in 1 2 3; do
        if [ -f "$DATA/n$i.pid" ]; then
            kill "$(cat "$DATA/n$i.pid")" 2>/dev/null || true
            rm -f "$DATA/n$i.pid"
        fi
    done
}

case "${1:-}" in
    start) start;;
    status) status;;
    stop) stop;;
    clean) stop; rm -rf "$DATA";;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2;;
esac
