#!/usr/bin/env bash
# scripting.sh: EVALSHA of small Lua scripts on redoubt against redis-server, side by side.
#
# Builds redoubt (release), starts `redoubt --durability none` and `redis-server --save ''
# --appendonly no` on free ports, loads two scripts on both (SCRIPT LOAD; the sha1 must
# match), checks that each returns the same reply on both, then runs redis-benchmark
# against both alternately (A/B in odd rounds, B/A in even ones, test by test, so both
# share the same stretch of machine noise):
#
#   INCR           INCR bench:ctr                          (the yardstick: no script)
#   EVALSHA incr   EVALSHA <sha> 1 bench:ctr:lua           return redis.call('INCR', KEYS[1])
#   EVALSHA cad    EVALSHA <sha> 1 bench:lock intruder     the compare-and-delete lock release,
#                                                          on a lock someone else holds (GET,
#                                                          compare, return 0: the steady state
#                                                          of a contended lock)
#
# Prints, per pipeline depth and test, the median requests/s on each server, the ratio
# redoubt/redis, each server's ratio to its own INCR (what a script costs over the bare
# command), and the spread of the rounds. Stops both servers on exit.
#
# usage: benches/scripting.sh [options]
#   -c N        parallel clients (default 50)
#   -n N        requests per run (default 200000)
#   -P LIST     pipeline depths (default 1,16)
#   -R N        rounds (default 5)
#   --no-build  use the binary as it is (target dir: $CARGO_TARGET_DIR or target/; or $REDOUBT_BIN)
#   --keep      keep the raw results directory
#   -h          this help
# Environment: REDOUBT_BIN, REDIS_SERVER, REDOUBT_ARGS / REDIS_ARGS (extra server flags).
# Exit status: 0 ok, 1 a run reported errors, 2 usage or setup error.
set -euo pipefail
source "$(dirname "$0")/common.sh"

CLIENTS=50
REQUESTS=200000
PIPES="1,16"
ROUNDS=5
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
need "${REDIS_SERVER:-redis-server}" redis-server
need python3

REDOUBT_ARGS="--durability none ${REDOUBT_ARGS:-}"
export REDOUBT_ARGS
build_redoubt
start_servers
RAW="$WORK/raw.tsv"
printf 'round\tpipeline\ttest\ttarget\trps\terrors\n' >"$RAW"
echo "clients=$CLIENTS requests=$REQUESTS pipeline=$PIPES rounds=$ROUNDS"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

INCR_LUA="return redis.call('INCR', KEYS[1])"
CAD_LUA='if redis.call("get",KEYS[1]) == ARGV[1] then return redis.call("del",KEYS[1]) else return 0 end'
load() {  # port script -> sha
    redis-cli -h 127.0.0.1 -p "$1" SCRIPT LOAD "$2"
}
INCR_SHA=$(load "$A_PORT" "$INCR_LUA")
CAD_SHA=$(load "$A_PORT" "$CAD_LUA")
[ "$(load "$B_PORT" "$INCR_LUA")" = "$INCR_SHA" ] || die "the INCR script's sha differs between the servers"
[ "$(load "$B_PORT" "$CAD_LUA")" = "$CAD_SHA" ] || die "the compare-and-delete script's sha differs between the servers"

# Same reply from both, before measuring anything.
prepare() {  # port: the state every round starts from
    redis-cli -h 127.0.0.1 -p "$1" FLUSHALL >/dev/null
    redis-cli -h 127.0.0.1 -p "$1" SET bench:lock owner >/dev/null
}
for port in "$A_PORT" "$B_PORT"; do
    prepare "$port"
    got="$(redis-cli -h 127.0.0.1 -p "$port" EVALSHA "$INCR_SHA" 1 bench:ctr:lua) $(redis-cli -h 127.0.0.1 -p "$port" \
        EVALSHA "$CAD_SHA" 1 bench:lock intruder) $(redis-cli -h 127.0.0.1 -p "$port" GET bench:lock)"
    [ "$got" = "1 0 owner" ] || die "unexpected script replies on port $port: $got (want: 1 0 owner)"
done

# name|command (redis-benchmark arguments after the options)
TESTS=(
    "INCR|INCR bench:ctr"
    "EVALSHA incr|EVALSHA $INCR_SHA 1 bench:ctr:lua"
    "EVALSHA cad|EVALSHA $CAD_SHA 1 bench:lock intruder"
)
IFS=',' read -r -a PIPE_ARR <<<"$PIPES"

run_one() {  # round pipe name label port cmd...
    local round=$1 pipe=$2 name=$3 label=$4 port=$5
    shift 5
    local out rc=0
    out=$(redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$REQUESTS" -P "$pipe" --csv "$@" \
        2>"$WORK/err") || rc=$?
    local rps errs
    rps=$(printf '%s\n' "$out" | grep '^"' | grep -v '^"test"' | tail -1 | cut -d, -f2 | tr -d '"')
    errs=$( (printf '%s\n' "$out"; cat "$WORK/err") | grep -c -i 'error\|could not connect' || true)
    if [ "$rc" != 0 ] || [ -z "$rps" ]; then rps=NaN; errs=$((errs + 1)); fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$pipe" "$name" "$label" "$rps" "$errs" >>"$RAW"
}

for round in $(seq 1 "$ROUNDS"); do
    prepare "$A_PORT"
    prepare "$B_PORT"
    for pipe in "${PIPE_ARR[@]}"; do
        for t in "${TESTS[@]}"; do
            name=${t%%|*}
            read -r -a cmd <<<"${t#*|}"
            if [ $((round % 2)) = 1 ]; then
                run_one "$round" "$pipe" "$name" redoubt "$A_PORT" "${cmd[@]}"
                run_one "$round" "$pipe" "$name" redis "$B_PORT" "${cmd[@]}"
            else
                run_one "$round" "$pipe" "$name" redis "$B_PORT" "${cmd[@]}"
                run_one "$round" "$pipe" "$name" redoubt "$A_PORT" "${cmd[@]}"
            fi
        done
    done
    # The lock was never someone else's to delete: both servers still hold it.
    for port in "$A_PORT" "$B_PORT"; do
        [ "$(redis-cli -h 127.0.0.1 -p "$port" GET bench:lock)" = owner ] || die "bench:lock was deleted on port $port"
    done
    echo "round $round/$ROUNDS done"
done

python3 - "$RAW" "$PIPES" <<'PY'
import csv, statistics, sys
raw, pipes = sys.argv[1], sys.argv[2].split(",")
rows = list(csv.DictReader(open(raw), delimiter="\t"))
tests = list(dict.fromkeys(r["test"] for r in rows))
def vals(p, t, lab):
    return [float(r["rps"]) for r in rows if (r["pipeline"], r["test"], r["target"]) == (p, t, lab) and r["rps"] != "NaN"]
def med(v):
    return statistics.median(v) if v else float("nan")
def spread(v):
    return (max(v) - min(v)) / med(v) * 100 if v else float("nan")
errors = sum(int(r["errors"]) for r in rows)
summary = []
for p in pipes:
    print(f"\npipeline {p}")
    print(f"{'test':<14} {'redoubt rps':>12} {'redis rps':>12} {'ratio':>6}   {'vs own INCR A/B':>15}   spread A/B")
    base = {lab: med(vals(p, "INCR", lab)) for lab in ("redoubt", "redis")}
    for t in tests:
        a, b = vals(p, t, "redoubt"), vals(p, t, "redis")
        ra, rb = med(a), med(b)
        ratio = ra / rb if rb > 0 else float("nan")
        own = f"{ra / base['redoubt']:.2f}/{rb / base['redis']:.2f}"
        print(f"{t:<14} {ra:>12,.0f} {rb:>12,.0f} {ratio:>6.2f}   {own:>15}   {spread(a):4.0f}%/{spread(b):.0f}%")
        summary.append(f"{t.replace(' ', '_')} p{p} ratio={ratio:.2f}")
print("\nbench: " + " ".join(summary))
if errors:
    print(f"\nERRORS: {errors} error lines or failed runs (see --keep)")
sys.exit(1 if errors else 0)
PY
