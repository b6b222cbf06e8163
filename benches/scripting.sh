#!/usr/bin/env bash
# scripting.sh: what running a small Lua script costs on redoubt against redis-server.
#
# Builds redoubt (release), starts `redoubt --durability none` and `redis-server --save ''
# --appendonly no` on free ports, loads the same scripts and library on both, and runs
# redis-benchmark with each command below against both, alternating (A/B in odd rounds, B/A
# in even ones). Prints the median requests/s of each, the ratio redoubt/redis, and, for
# reference, SET on the same servers.
#
#   EVALSHA incr   `return redis.call('INCR', KEYS[1])`
#   EVALSHA cad    the lock-release compare-and-delete (GET, compare; nothing to delete here)
#   FCALL incr     the INCR script as a Redis 7 function
#
# usage: benches/scripting.sh [options]
#   -c N        parallel clients (default 50)
#   -n N        requests per run (default 100000)
#   -P LIST     pipeline depths (default 1,16)
#   -R N        rounds (default 3)
#   --no-build  use target/release/redoubt as it is (or $REDOUBT_BIN)
#   -h          this help
# Exit status: 0 ok, 1 a run reported errors, 2 usage or setup error.
set -euo pipefail
source "$(dirname "$0")/common.sh"

CLIENTS=50
REQUESTS=100000
PIPES="1,16"
ROUNDS=3
while [ $# -gt 0 ]; do
    case "$1" in
        -c) CLIENTS=$2; shift 2;;
        -n) REQUESTS=$2; shift 2;;
        -P) PIPES=$2; shift 2;;
        -R) ROUNDS=$2; shift 2;;
        --no-build) NO_BUILD=1; shift;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
        *) die "unknown option $1 (see -h)";;
    esac
done
need redis-benchmark redis-tools
need redis-cli redis-tools
need python3
export REDOUBT_ARGS="--durability none"
build_redoubt
start_servers

INCR='return redis.call("INCR", KEYS[1])'
CAD='if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end'
LIB=$'#!lua name=bench\nredis.register_function("incr", function(keys) return redis.call("INCR", keys[1]) end)'
for port in "$A_PORT" "$B_PORT"; do
    SHA_INCR=$(redis-cli -p "$port" SCRIPT LOAD "$INCR")
    SHA_CAD=$(redis-cli -p "$port" SCRIPT LOAD "$CAD")
    redis-cli -p "$port" FUNCTION LOAD REPLACE "$LIB" >/dev/null
done

RAW="$WORK/raw.tsv"
printf 'round\tpipeline\ttest\ttarget\trps\terrors\n' >"$RAW"
run_one() {  # round pipe name label port command...
    local round=$1 pipe=$2 name=$3 label=$4 port=$5
    shift 5
    local out="$WORK/r$round.P$pipe.$name.$label"
    local rc=0
    redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$REQUESTS" -P "$pipe" -r 100000 --csv "$@" \
        >"$out.out" 2>"$out.err" || rc=$?
    local rps errors=0
    rps=$(awk -F'","' '/^"/ && !/^"test"/ { gsub(/"/, "", $2); v = $2 } END { print v }' "$out.out")
    if [ "$rc" != 0 ] || [ -z "$rps" ] || grep -qi "error" "$out.out" "$out.err"; then errors=1; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$pipe" "$name" "$label" "${rps:-NaN}" "$errors" >>"$RAW"
}

IFS=',' read -r -a PIPE_ARR <<<"$PIPES"
for round in $(seq 1 "$ROUNDS"); do
    for pipe in "${PIPE_ARR[@]}"; do
        for name in SET EVALSHA_incr EVALSHA_cad FCALL_incr; do
            case $name in
                SET) cmd=(SET key:__rand_int__ v);;
                EVALSHA_incr) cmd=(EVALSHA "$SHA_INCR" 1 ctr:__rand_int__);;
                EVALSHA_cad) cmd=(EVALSHA "$SHA_CAD" 1 key:__rand_int__ token);;
                FCALL_incr) cmd=(FCALL incr 1 ctr:__rand_int__);;
            esac
            if [ $((round % 2)) = 1 ]; then
                run_one "$round" "$pipe" "$name" redoubt "$A_PORT" "${cmd[@]}"
                run_one "$round" "$pipe" "$name" redis "$B_PORT" "${cmd[@]}"
            else
                run_one "$round" "$pipe" "$name" redis "$B_PORT" "${cmd[@]}"
                run_one "$round" "$pipe" "$name" redoubt "$A_PORT" "${cmd[@]}"
            fi
        done
    done
    echo "round $round/$ROUNDS done"
done

python3 - "$RAW" "$PIPES" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
errors = sum(int(r["errors"]) for r in rows)
def med(p, t, lab):
    v = [float(r["rps"]) for r in rows if r["pipeline"] == p and r["test"] == t and r["target"] == lab and r["rps"] != "NaN"]
    return statistics.median(v) if v else float("nan")
summary = []
for p in sys.argv[2].split(","):
    print(f"\npipeline {p}")
    print(f"{'command':<14} {'redoubt rps':>12} {'redis rps':>12} {'ratio':>6}")
    for t in ["SET", "EVALSHA_incr", "EVALSHA_cad", "FCALL_incr"]:
        a, b = med(p, t, "redoubt"), med(p, t, "redis")
        print(f"{t:<14} {a:>12,.0f} {b:>12,.0f} {a / b:>6.2f}")
        summary.append(f"{t} p{p} ratio={a / b:.2f}")
print("\nbench: " + " ".join(summary) + ("  ERRORS" if errors else ""))
sys.exit(1 if errors else 0)
PY
