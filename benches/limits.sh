#!/usr/bin/env bash
# limits.sh: what the native rate-limit and lock commands cost, relative to SET on the same
# server, and a lock cycle against the usual recipe on real Redis.
#
# Builds redoubt and tests/examples/cycle_bench (release), starts `redoubt --durability none`
# and `redis-server --save '' --appendonly no` on free ports, then:
#
# 1. redis-benchmark on redoubt, per pipeline depth, rounds interleaving the tests so they
#    share the machine's noise: SET (the yardstick), CL.THROTTLE, RATELIMIT and LOCK.ACQUIRE
#    on random keys (-r: one limiter or lock per user, most calls admitted or new holders),
#    RATELIMIT on one hot key with a large limit (a log of tens of thousands of entries:
#    the O(log n) path), LOCK.INFO. Prints the median requests/s and the ratio to SET.
# 2. cycle_bench (one client program for both servers; --pipeline cycles per round trip):
#    a lock cycle, LOCK.ACQUIRE + LOCK.RELEASE on redoubt against SET NX PX + the
#    compare-and-delete release (EVALSHA of the usual Lua) on redis-server, each beside a
#    SET + DEL cycle on the same server. Prints median cycles/s and ratios.
#
# usage: benches/limits.sh [options]
#   -c N        parallel clients (default 50)
#   -n N        requests per redis-benchmark run (default 200000)
#   -r N        random keys (default 100000)
#   -P LIST     pipeline depths (default 1,16)
#   -R N        rounds (default 3)
#   -s SECS     seconds per cycle_bench run (default 4)
#   -k N        lock names per cycle_bench client, reused in turn (default 1000)
#   --no-build  use the binaries as they are (target dir: $CARGO_TARGET_DIR or target/)
#   --keep      keep the raw results directory
#   -h          this help
# Environment: REDOUBT_BIN, REDIS_SERVER, CARGO_TARGET_DIR.
# Exit status: 0 ok, 1 a run reported errors, 2 usage or setup error.
set -euo pipefail
source "$(dirname "$0")/common.sh"

CLIENTS=50
REQUESTS=200000
RANDKEYS=100000
PIPES="1,16"
ROUNDS=3
SECS=4
CYCLE_KEYS=1000
while [ $# -gt 0 ]; do
    case "$1" in
        -c) CLIENTS=$2; shift 2;;
        -n) REQUESTS=$2; shift 2;;
        -r) RANDKEYS=$2; shift 2;;
        -P) PIPES=$2; shift 2;;
        -R) ROUNDS=$2; shift 2;;
        -s) SECS=$2; shift 2;;
        -k) CYCLE_KEYS=$2; shift 2;;
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
CYCLE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/cycle_bench"
if [ -z "${NO_BUILD:-}" ]; then
    echo "building cycle_bench (release)..." >&2
    (cd "$ROOT" && cargo build --release -q -p redoubt-tests --example cycle_bench) || die "cargo build failed"
fi
[ -x "$CYCLE_BIN" ] || die "no cycle_bench at $CYCLE_BIN"
start_servers
RAW="$WORK/raw.tsv"
printf 'round\tpipeline\ttest\trps\terrors\n' >"$RAW"
echo "clients=$CLIENTS requests=$REQUESTS random_keys=$RANDKEYS pipeline=$PIPES rounds=$ROUNDS cycle_seconds=$SECS cycle_keys=$CYCLE_KEYS"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# name|command (redis-benchmark arguments after the options)
TESTS=(
    "SET|SET k:__rand_int__ v"
    "CL.THROTTLE|CL.THROTTLE rl:__rand_int__ 100 1000 60"
    "RATELIMIT|RATELIMIT sw:__rand_int__ 1000 3600000"
    "RATELIMIT hot key|RATELIMIT hot 1000000 60000"
    "LOCK.ACQUIRE|LOCK.ACQUIRE lk:__rand_int__ worker 1000"
    "LOCK.INFO|LOCK.INFO lk:__rand_int__"
)
IFS=',' read -r -a PIPE_ARR <<<"$PIPES"
for round in $(seq 1 "$ROUNDS"); do
    for pipe in "${PIPE_ARR[@]}"; do
        for t in "${TESTS[@]}"; do
            name=${t%%|*}
            read -r -a cmd <<<"${t#*|}"
            out=$(redis-benchmark -h 127.0.0.1 -p "$A_PORT" -c "$CLIENTS" -n "$REQUESTS" -r "$RANDKEYS" -P "$pipe" \
                --csv "${cmd[@]}" 2>"$WORK/err") || die "redis-benchmark failed: $(cat "$WORK/err")"
            rps=$(printf '%s\n' "$out" | tail -1 | cut -d, -f2 | tr -d '"')
            errs=$(grep -c -i error "$WORK/err" || true)
            printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$pipe" "$name" "$rps" "$errs" >>"$RAW"
        done
    done
done

# Lock cycles: the same client program against both servers.
SHA=$(redis-cli -p "$B_PORT" SCRIPT LOAD \
    'if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end')
CYC="$WORK/cycles.tsv"
printf 'round\tpipeline\tcase\tcycles_per_sec\terrors\n' >"$CYC"
cycle() {  # round pipe label port expect cmd...
    local round=$1 pipe=$2 label=$3 port=$4 expect=$5
    shift 5
    local line
    line=$("$CYCLE_BIN" --port "$port" --clients "$CLIENTS" --pipeline "$pipe" --seconds "$SECS" --keys "$CYCLE_KEYS" \
        --expect "$expect" -- "$@")
    local cps errs
    cps=$(sed -n 's/.*cycles_per_sec=\([0-9]*\).*/\1/p' <<<"$line")
    errs=$(sed -n 's/.*errors=\([0-9]*\) unexpected=\([0-9]*\).*/\1+\2/p' <<<"$line")
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$pipe" "$label" "$cps" "$((errs))" >>"$CYC"
}
for round in $(seq 1 "$ROUNDS"); do
    for pipe in "${PIPE_ARR[@]}"; do
        cycle "$round" "$pipe" "redoubt SET+DEL" "$A_PORT" ok,1 'SET c:{i} v' 'DEL c:{i}'
        cycle "$round" "$pipe" "redoubt LOCK.ACQUIRE+LOCK.RELEASE" "$A_PORT" int,1 \
            'LOCK.ACQUIRE lock:{i} me 10000' 'LOCK.RELEASE lock:{i} me'
        cycle "$round" "$pipe" "redis SET+DEL" "$B_PORT" ok,1 'SET c:{i} v' 'DEL c:{i}'
        cycle "$round" "$pipe" "redis SET NX PX+EVALSHA release" "$B_PORT" ok,1 \
            'SET lock:{i} me NX PX 10000' "EVALSHA $SHA 1 lock:{i} me"
    done
done

python3 - "$RAW" "$CYC" <<'PY'
import csv, statistics, sys
from collections import defaultdict

def load(path, key_cols, val_col):
    d, errs = defaultdict(list), 0
    with open(path) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            d[tuple(row[c] for c in key_cols)].append(float(row[val_col]))
            errs += int(row["errors"])
    return d, errs

rb, e1 = load(sys.argv[1], ["pipeline", "test"], "rps")
cy, e2 = load(sys.argv[2], ["pipeline", "case"], "cycles_per_sec")
med = lambda v: statistics.median(v)
print("\n## redis-benchmark on redoubt (--durability none): median requests/s, ratio to SET")
for pipe in sorted({p for p, _ in rb}, key=int):
    base = med(rb[(pipe, "SET")])
    print(f"\npipeline {pipe}")
    print(f"  {'command':<20} {'req/s':>10} {'vs SET':>7}")
    for (p, t), v in rb.items():
        if p == pipe:
            print(f"  {t:<20} {med(v):>10.0f} {med(v) / base:>7.2f}")
print("\n## lock cycles (cycle_bench, same client for both servers): median cycles/s")
for pipe in sorted({p for p, _ in cy}, key=int):
    print(f"\npipeline {pipe} (cycles per round trip)")
    print(f"  {'case':<36} {'cycles/s':>10} {'vs SET+DEL':>10}")
    for server in ("redoubt", "redis"):
        base = med(cy[(pipe, f"{server} SET+DEL")])
        for (p, c), v in cy.items():
            if p == pipe and c.startswith(server):
                print(f"  {c:<36} {med(v):>10.0f} {med(v) / base:>10.2f}")
    a = med(cy[(pipe, "redoubt LOCK.ACQUIRE+LOCK.RELEASE")])
    b = med(cy[(pipe, "redis SET NX PX+EVALSHA release")])
    print(f"  redoubt lock cycle / redis recipe: {a / b:.2f}")
if e1 or e2:
    print(f"\nERRORS: {e1} redis-benchmark error lines, {e2} failed or unexpected cycle replies")
    sys.exit(1)
PY
