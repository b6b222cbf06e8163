#!/usr/bin/env bash
# memory.sh: memory per key of redoubt and redis-server for the same data set.
#
# Builds redoubt (release), starts it and `redis-server --save '' --appendonly no` on free
# ports, loads N keys (default 1,000,000) of 16-byte names and 16-byte values into each with
# `redis-cli --pipe`, and reports, for both, used_memory (INFO memory) and the process RSS
# before and after, as bytes per key, with the ratio redoubt/redis.
#
# usage: benches/memory.sh [-n KEYS] [-k KEY_BYTES] [-v VALUE_BYTES] [--no-build] [--keep]
# Environment: REDOUBT_BIN, REDIS_SERVER, REDOUBT_ARGS / REDIS_ARGS.
set -euo pipefail
source "$(dirname "$0")/common.sh"

KEYS=1000000
KSIZE=16
VSIZE=16
while [ $# -gt 0 ]; do
    case "$1" in
        -n) KEYS=$2; shift 2;;
        -k) KSIZE=$2; shift 2;;
        -v) VSIZE=$2; shift 2;;
        --no-build) NO_BUILD=1; shift;;
        --keep) KEEP=1; shift;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
        *) die "unknown option $1 (see -h)";;
    esac
done
[ "$KSIZE" -ge 8 ] && [ "$VSIZE" -ge 8 ] || die "key and value sizes must be at least 8 bytes"
need redis-cli redis-tools
need "${REDIS_SERVER:-redis-server}" redis-server

REDOUBT_ARGS="--durability none ${REDOUBT_ARGS:-}"
build_redoubt
start_servers
PROTO="$WORK/load.proto"
echo "generating $KEYS SETs of ${KSIZE}-byte keys and ${VSIZE}-byte values..."
# key = "k" + zero-padded index to KSIZE bytes; value = "v" + zero-padded index to VSIZE.
awk -v n="$KEYS" -v ks="$KSIZE" -v vs="$VSIZE" 'BEGIN {
    kf = "k%0" (ks - 1) "d"; vf = "v%0" (vs - 1) "d"
    for (i = 0; i < n; i++) {
        k = sprintf(kf, i); v = sprintf(vf, i)
        printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
    }
}' >"$PROTO"

info_field() {  # port field
    redis-cli -h 127.0.0.1 -p "$1" INFO memory 2>/dev/null | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'
}
rss_bytes() {  # pid
    awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"
}

declare -A R
measure() {  # label port pid
    local label=$1 port=$2 pid=$3 out
    R[$label.used0]=$(info_field "$port" used_memory)
    R[$label.rss0]=$(rss_bytes "$pid")
    out=$(redis-cli -h 127.0.0.1 -p "$port" --pipe <"$PROTO" 2>&1) || die "$label: redis-cli --pipe failed: $out"
    echo "$out" | grep -q "errors: 0, replies: $KEYS" || die "$label: load reported errors: $out"
    local n
    n=$(redis-cli -h 127.0.0.1 -p "$port" DBSIZE)
    [ "$n" = "$KEYS" ] || die "$label: DBSIZE is $n, expected $KEYS"
    sleep 1  # let lazy frees and allocator stats settle
    R[$label.used1]=$(info_field "$port" used_memory)
    R[$label.rss1]=$(rss_bytes "$pid")
}
echo "loading redoubt..."
measure redoubt "$A_PORT" "$A_PID"
echo "loading redis-server..."
measure redis "$B_PORT" "$B_PID"

per_key() {  # before after
    if [ -z "$1" ] || [ -z "$2" ]; then echo "n/a"; else awk -v a="$1" -v b="$2" -v n="$KEYS" 'BEGIN { printf "%.1f", (b - a) / n }'; fi
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b }'
}
mib() { [ -n "$1" ] && awk -v x="$1" 'BEGIN { printf "%.1f MiB", x / 1048576 }' || echo "n/a"; }

ua=$(per_key "${R[redoubt.used0]}" "${R[redoubt.used1]}"); ub=$(per_key "${R[redis.used0]}" "${R[redis.used1]}")
ra=$(per_key "${R[redoubt.rss0]}" "${R[redoubt.rss1]}"); rb=$(per_key "${R[redis.rss0]}" "${R[redis.rss1]}")
echo
echo "$KEYS keys, ${KSIZE}-byte names, ${VSIZE}-byte values"
printf '%-26s %16s %16s %7s\n' "" redoubt redis-server ratio
printf '%-26s %16s %16s %7s\n' "used_memory after" "$(mib "${R[redoubt.used1]}")" "$(mib "${R[redis.used1]}")" ""
printf '%-26s %16s %16s %7s\n' "RSS after" "$(mib "${R[redoubt.rss1]}")" "$(mib "${R[redis.rss1]}")" ""
printf '%-26s %16s %16s %7s\n' "used_memory bytes/key" "$ua" "$ub" "$(ratio "$ua" "$ub")"
printf '%-26s %16s %16s %7s\n' "RSS bytes/key" "$ra" "$rb" "$(ratio "$ra" "$rb")"
echo "memory: used_memory/key redoubt=$ua redis=$ub ratio=$(ratio "$ua" "$ub"); rss/key redoubt=$ra redis=$rb ratio=$(ratio "$ra" "$rb")"
