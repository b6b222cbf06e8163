#!/usr/bin/env bash
# cluster.sh: a three-node redoubt cluster on this machine, measured side by side.
#
# Builds redoubt (release), starts three durable nodes (`--cluster`, fsync always, each with
# its own --dir) on free ports, waits for a leader, then runs benches/compare.sh twice
# against the leader (alternating rounds, medians, ratios):
#
# 1. writes: SET, INCR, LPUSH on the cluster's leader against
#    `redis-server --appendonly yes --appendfsync always` (issue 3 aims at >= 0.5);
# 2. reads: GET on the leader (linearizable: each batch of reads waits for a read-index
#    round) against GET on an in-memory redoubt (`--durability none`; aim >= 0.5).
#
# Three servers, their Raft traffic and redis-benchmark share the machine's cores.
#
# usage: benches/cluster.sh [options]      (options as compare.sh: -c -n -P -R -t is fixed)
#   -c N        parallel clients (default 50)
#   -n N        requests per run (default 40000)
#   -P LIST     pipeline depths (default 1,16)
#   -R N        rounds (default 3)
#   --no-build  use target/release/redoubt as it is (or $REDOUBT_BIN)
#   --keep      keep the nodes' data and logs
#   -h          this help
# Exit status: 0 ok, 1 a run reported errors, 2 usage or setup error.
set -euo pipefail
source "$(dirname "$0")/common.sh"

CLIENTS=50
REQUESTS=40000
PIPES="1,16"
ROUNDS=3
while [ $# -gt 0 ]; do
    case "$1" in
        -c) CLIENTS=$2; shift 2;;
        -n) REQUESTS=$2; shift 2;;
        -P) PIPES=$2; shift 2;;
        -R) ROUNDS=$2; shift 2;;
        --no-build) NO_BUILD=1; shift;;
        --keep) KEEP=1; shift;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
        *) die "unknown option $1 (see -h)";;
    esac
done
need redis-benchmark redis-tools
need redis-cli redis-tools
need python3
build_redoubt

WORK=$(mktemp -d "${TMPDIR:-/tmp}/redoubt-cluster-bench.XXXXXX")
CPORTS=() RPORTS=()
for i in 1 2 3; do
    CPORTS+=("$(free_port)")
    RPORTS+=("$(free_port)")
done
SPEC="1@127.0.0.1:${RPORTS[0]},2@127.0.0.1:${RPORTS[1]},3@127.0.0.1:${RPORTS[2]}"
for i in 0 1 2; do
    mkdir -p "$WORK/n$((i + 1))"
    "$REDOUBT_BIN" --port "${CPORTS[$i]}" --bind 127.0.0.1 --dir "$WORK/n$((i + 1))" --node-id $((i + 1)) \
        --cluster "$SPEC" >"$WORK/n$((i + 1)).log" 2>&1 &
    PIDS+=("$!")
done
for p in "${CPORTS[@]}"; do
    wait_ping "$p" 30 || die "node on $p did not answer PING (logs in $WORK)"
done
LEADER=""
for _ in $(seq 1 200); do
    id=$(redis-cli -p "${CPORTS[0]}" RAFT INFO 2>/dev/null | tr -d '\r' | sed -n 's/^leader_id://p')
    if [ -n "$id" ]; then LEADER=${CPORTS[$((id - 1))]}; break; fi
    sleep 0.1
done
[ -n "$LEADER" ] || die "no leader elected (logs in $WORK)"
echo "cluster: clients on ${CPORTS[*]}, leader on $LEADER, data in $WORK"

common=(-c "$CLIENTS" -n "$REQUESTS" -P "$PIPES" -R "$ROUNDS" --no-build)
[ -n "${KEEP:-}" ] && common+=(--keep)
rc=0
echo
echo "== writes: 3-node cluster leader (fsync always) vs redis-server --appendfsync always"
REDOUBT_PORT=$LEADER REDOUBT_BIN=$REDOUBT_BIN REDIS_ARGS="--appendonly yes --appendfsync always" \
    "$ROOT/benches/compare.sh" "${common[@]}" -t set,incr,lpush || rc=1
echo
echo "== reads: GET on the cluster leader (linearizable) vs GET on an in-memory redoubt (the \"redis\" column)"
REDOUBT_PORT=$LEADER REDOUBT_BIN=$REDOUBT_BIN REDIS_SERVER=$REDOUBT_BIN REDIS_ARGS="--durability none" \
    "$ROOT/benches/compare.sh" "${common[@]}" -t get || rc=1
exit $rc
