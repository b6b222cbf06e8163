#!/usr/bin/env bash
# compare.sh: throughput of redoubt against redis-server, side by side.
#
# Builds redoubt (release), starts it and `redis-server --save '' --appendonly no` on free
# ports, and runs redis-benchmark against both alternately (A/B in odd rounds, B/A in even
# ones, test by test, so both share the same stretch of machine noise). Prints, per
# pipeline depth and test, the median requests/s of each, the ratio redoubt/redis, and the
# median p50 latencies. Stops both servers on exit.
#
# usage: benches/compare.sh [options]
#   -t LIST     tests (default: set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,lrange_100,mset)
#   -c N        parallel clients (default 50)
#   -n N        requests per run (default 100000)
#   -P LIST     pipeline depths (default 1,16)
#   -R N        rounds (default 5)
#   -d N        value size in bytes (default: redis-benchmark's 3)
#   -r N        random keys in 0..N-1 (default: off)
#   --mode M    what is compared (default memory):
#                 memory    redoubt --durability none      vs redis-server without persistence
#                 always    redoubt (durable, fsync always) vs redis --appendonly yes --appendfsync always
#                 everysec  redoubt --appendfsync everysec  vs redis --appendonly yes --appendfsync everysec
#   --no-build  use target/release/redoubt as it is (or $REDOUBT_BIN)
#   --keep      keep the raw results directory
#   -h          this help
# Environment: REDOUBT_BIN, REDIS_SERVER, REDOUBT_ARGS / REDIS_ARGS (extra server flags),
#   REDOUBT_PORT (measure a redoubt already running there; benches/cluster.sh uses it).
# Exit status: 0 ok, 1 a run reported errors, 2 usage or setup error.
set -euo pipefail
source "$(dirname "$0")/common.sh"

TESTS="set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,lrange_100,mset"
CLIENTS=50
REQUESTS=100000
PIPES="1,16"
ROUNDS=5
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        -t) TESTS=$2; shift 2;;
        -c) CLIENTS=$2; shift 2;;
        -n) REQUESTS=$2; shift 2;;
        -P) PIPES=$2; shift 2;;
        -R) ROUNDS=$2; shift 2;;
        -d) EXTRA+=(-d "$2"); shift 2;;
        -r) EXTRA+=(-r "$2"); shift 2;;
        --mode) MODE=$2; shift 2;;
        --no-build) NO_BUILD=1; shift;;
        --keep) KEEP=1; shift;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
        *) die "unknown option $1 (see -h)";;
    esac
done
case "${MODE:=memory}" in
    memory) REDOUBT_ARGS="--durability none ${REDOUBT_ARGS:-}";;
    always) REDOUBT_ARGS="--durability raft --appendfsync always ${REDOUBT_ARGS:-}"
            REDIS_ARGS="--appendonly yes --appendfsync always ${REDIS_ARGS:-}";;
    everysec) REDOUBT_ARGS="--durability raft --appendfsync everysec ${REDOUBT_ARGS:-}"
            REDIS_ARGS="--appendonly yes --appendfsync everysec ${REDIS_ARGS:-}";;
    *) die "unknown mode $MODE (memory, always, everysec)";;
esac
export REDOUBT_ARGS REDIS_ARGS
need redis-benchmark redis-tools
need redis-cli redis-tools
need "${REDIS_SERVER:-redis-server}" redis-server
need python3

build_redoubt
start_servers
RAW="$WORK/raw.tsv"
printf 'round\tpipeline\ttest\ttarget\trps\tp50_ms\terrors\n' >"$RAW"
IFS=',' read -r -a TEST_ARR <<<"$TESTS"
IFS=',' read -r -a PIPE_ARR <<<"$PIPES"
echo "mode=$MODE tests=$TESTS clients=$CLIENTS requests=$REQUESTS pipeline=$PIPES rounds=$ROUNDS ${EXTRA[*]:-}"
echo "raw results: $RAW"

run_one() {  # round pipe test label port
    local out="$WORK/r$1.P$2.$3.$4"
    local rc=0
    redis-benchmark -h 127.0.0.1 -p "$5" -c "$CLIENTS" -n "$REQUESTS" -P "$2" -t "$3" "${EXTRA[@]}" --csv \
        >"$out.out" 2>"$out.err" || rc=$?
    # CSV rows: "TEST","rps","avg","min","p50","p95","p99","max"; the last row is the test
    # itself (LRANGE_* is preceded by its LPUSH prefill).
    awk -F'","' -v r="$1" -v p="$2" -v t="$3" -v lab="$4" -v rc="$rc" -v errf="$out.err" '
        /^"test"/ { next }
        /^"/ { gsub(/"/, "", $2); gsub(/"/, "", $5); rps = $2; p50 = $5; got = 1 }
        /rror/ { nerr++ }
        END {
            while ((getline line < errf) > 0) if (line ~ /rror|[Cc]ould not connect/) nerr++
            if (!got || rc != 0) { rps = "NaN"; p50 = "NaN"; nerr++ }
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", r, p, toupper(t), lab, rps, p50, nerr + 0
        }' "$out.out" >>"$RAW"
}

for round in $(seq 1 "$ROUNDS"); do
    redis-cli -p "$A_PORT" FLUSHALL >/dev/null
    redis-cli -p "$B_PORT" FLUSHALL >/dev/null
    for pipe in "${PIPE_ARR[@]}"; do
        for t in "${TEST_ARR[@]}"; do
            if [ $((round % 2)) = 1 ]; then
                run_one "$round" "$pipe" "$t" redoubt "$A_PORT"
                run_one "$round" "$pipe" "$t" redis "$B_PORT"
            else
                run_one "$round" "$pipe" "$t" redis "$B_PORT"
                run_one "$round" "$pipe" "$t" redoubt "$A_PORT"
            fi
        done
    done
    echo "round $round/$ROUNDS done"
done

python3 - "$RAW" "$TESTS" "$PIPES" <<'PY'
import csv, statistics, sys
raw, tests, pipes = sys.argv[1], sys.argv[2].upper().split(","), sys.argv[3].split(",")
rows = list(csv.DictReader(open(raw), delimiter="\t"))
def med(vals):
    vals = [float(v) for v in vals if v not in ("NaN", "")]
    return statistics.median(vals) if vals else float("nan")
errors = 0
summary = []
for p in pipes:
    print(f"\npipeline {p}")
    print(f"{'test':<12} {'redoubt rps':>13} {'redis rps':>13} {'ratio':>7} {'p50 redoubt':>12} {'p50 redis':>10}  spread A/B")
    for t in tests:
        sel = lambda lab: [r for r in rows if r["pipeline"] == p and r["test"] == t and r["target"] == lab]
        a, b = sel("redoubt"), sel("redis")
        ra, rb = med(r["rps"] for r in a), med(r["rps"] for r in b)
        pa, pb = med(r["p50_ms"] for r in a), med(r["p50_ms"] for r in b)
        def spread(rs, m):
            v = [float(r["rps"]) for r in rs if r["rps"] != "NaN"]
            return (max(v) - min(v)) / m * 100 if v and m == m and m > 0 else float("nan")
        err = sum(int(r["errors"]) for r in a + b)
        errors += err
        ratio = ra / rb if rb and rb == rb and ra == ra else float("nan")
        flag = "  ERRORS" if err else ""
        print(f"{t:<12} {ra:>13,.0f} {rb:>13,.0f} {ratio:>7.2f} {pa:>12.3f} {pb:>10.3f}  {spread(a, ra):4.0f}%/{spread(b, rb):.0f}%{flag}")
        summary.append(f"{t} p{p} ratio={ratio:.2f}")
print("\nbench: " + " ".join(summary))
sys.exit(1 if errors else 0)
PY
