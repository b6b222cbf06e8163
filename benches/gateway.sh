#!/usr/bin/env bash
# gateway.sh: end-to-end SMS throughput through redoubt-gateway, measured with the repo's own
# third-party peers (tests/smpp: smpplib customers, a node-smpp vendor SMSC).
#
#   benches/gateway.sh [-n MESSAGES_PER_CLIENT] [-c CLIENTS] [-w WINDOW] [--single]
#
# Topology (default): a 3-node redoubt cluster (release build, fsync always), 2 gateway pods
# (each listing the cluster's nodes), one vendor SMSC. Each client binds a transmitter on one
# pod and a receiver on the other (every receipt crosses pods) and submits with
# registered_delivery=1; a run ends when every acked message has its receipt. Then the same
# clients talk to the vendor directly: the ceiling of the peers themselves on this machine.
# --single uses one durable redoubt node instead of the cluster.
# Prints msg/s (acked and receipted within the run), submit_sm_resp p50/p99 per client, losses.
set -euo pipefail
source "$(dirname "$0")/common.sh"
N=5000; C=3; W=50; SINGLE=""
# (at most 8 clients: the vendor has 8 direct accounts)
while [ $# -gt 0 ]; do
    case "$1" in
        -n) N=$2; shift 2 ;;
        -c) C=$2; shift 2 ;;
        -w) W=$2; shift 2 ;;
        --single) SINGLE=1; shift ;;
        *) die "unknown option $1" ;;
    esac
done
need node nodejs; need python3
PY=${PYTHON:-python3}
"$PY" -c 'import smpplib' 2>/dev/null || die "pip install smpplib"
[ -d "$ROOT/tests/smpp/node_modules/smpp" ] || npm ci --prefix "$ROOT/tests/smpp" --no-audit --no-fund >/dev/null
REDOUBT=${REDOUBT_BIN:-$ROOT/target/release/redoubt}
GATEWAY=${GATEWAY_BIN:-$ROOT/target/release/redoubt-gateway}
[ -x "$REDOUBT" ] && [ -x "$GATEWAY" ] || (cd "$ROOT" && cargo build --release -p redoubt-server -p redoubt-gateway)
WORK=$(mktemp -d /tmp/gwbench.XXXXXX)

# --- the store
NODES=()
if [ -n "$SINGLE" ]; then
    p=$(free_port); mkdir -p "$WORK/n1"
    "$REDOUBT" --port "$p" --bind 127.0.0.1 --dir "$WORK/n1" >"$WORK/n1.log" 2>&1 & PIDS+=($!)
    wait_ping "$p" || die "redoubt did not start"
    NODES=("127.0.0.1:$p")
else
    R=(); P=()
    for i in 1 2 3; do R+=("127.0.0.1:$(free_port)"); P+=("$(free_port)"); done
    MEMBERS="1@${R[0]},2@${R[1]},3@${R[2]}"
    for i in 0 1 2; do
        mkdir -p "$WORK/n$i"
        "$REDOUBT" --port "${P[$i]}" --bind 127.0.0.1 --dir "$WORK/n$i" --node-id $((i + 1)) --cluster "$MEMBERS" \
            >"$WORK/n$i.log" 2>&1 & PIDS+=($!)
    done
    for i in 0 1 2; do wait_ping "${P[$i]}" 30 || die "node $i did not start"; NODES+=("127.0.0.1:${P[$i]}"); done
fi
STATE=$(IFS=,; echo "${NODES[*]}")
REV=$(printf '%s\n' "${NODES[@]}" | tac | paste -sd,)

# --- the vendor and two pods
node "$ROOT/tests/smpp/vendor_smsc.js" --port 0 --accounts vendor:vpw,direct1:dpw,direct2:dpw,direct3:dpw,direct4:dpw,direct5:dpw,direct6:dpw,direct7:dpw,direct8:dpw --dlr-delay-ms 20 >"$WORK/vendor.out" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$WORK/vendor.out" && break; sleep 0.05; done
VPORT=$(grep -o '[0-9]*$' "$WORK/vendor.out" | head -1)
start_pod() {  # name state -> "smpp http"
    "$GATEWAY" --smpp-port 0 --http-port 0 --bind 127.0.0.1 --pod-id "$1" --api-key bench --state "$2" --log warn \
        >"$WORK/pod-$1.out" 2>"$WORK/pod-$1.log" & PIDS+=($!)
    for _ in $(seq 200); do grep -q "redoubt-gateway:" "$WORK/pod-$1.out" && break; sleep 0.05; done
    local line; line=$(head -1 "$WORK/pod-$1.out")
    echo "$(echo "$line" | sed 's/.*smpp [^:]*:\([0-9]*\).*/\1/') $(echo "$line" | sed 's/.*http [^:]*:\([0-9]*\).*/\1/')"
}
read -r A_SMPP A_HTTP < <(start_pod a "$STATE")
read -r B_SMPP B_HTTP < <(start_pod b "$REV")
K=(-s -H "X-API-Key: bench" -H "Content-Type: application/json")
# One account per client: a customer's receipts go to any of its receivers, and each client
# must see its own.
for i in $(seq "$C"); do
    curl "${K[@]}" -X PUT "127.0.0.1:$A_HTTP/api/v1/customers/bench$i" -d '{"password":"pw","max_tps":0,"max_binds":64}' >/dev/null
done
curl "${K[@]}" -X PUT "127.0.0.1:$A_HTTP/api/v1/vendors/v1" \
    -d "{\"host\":\"127.0.0.1\",\"port\":$VPORT,\"system_id\":\"vendor\",\"password\":\"vpw\",\"bind\":\"transceiver\",\"max_tps\":0,\"window\":200,\"enabled\":true}" >/dev/null
curl "${K[@]}" -X PUT "127.0.0.1:$A_HTTP/api/v1/routes/default" -d '{"vendors":["v1"]}' >/dev/null
for port in "$A_HTTP" "$B_HTTP"; do
    for _ in $(seq 200); do curl -s "127.0.0.1:$port/health" | grep -q '"v1":"bound"' && break; sleep 0.05; done
done

run_clients() {  # label tx_port rx_port system_id password
    local label=$1 start end i
    start=$(date +%s.%N)
    for i in $(seq "$C"); do
        local tx=$2 rx=$3
        if [ $((i % 2)) = 0 ] && [ "$label" = gateway ]; then tx=$3; rx=$2; fi
        "$PY" "$ROOT/tests/smpp/customer.py" --port "$tx" --rx-port "$rx" --bind tx+rx --system-id "$4$i" --password "$5" \
            --count "$N" --window "$W" --destination "46${i}{i:08d}" --wait-dlr 120 --json "$WORK/$label-$i.json" >/dev/null 2>&1 &
        CL+=($!)
    done
    for p in "${CL[@]}"; do wait "$p" || true; done
    CL=()
    end=$(date +%s.%N)
    "$PY" - "$WORK" "$label" "$C" "$N" "$start" "$end" <<'PY'
import json, sys
work, label, c, n, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
acked = receipted = dup = 0; p50 = []; p99 = []; missing = []
for i in range(1, c + 1):
    d = json.load(open(f"{work}/{label}-{i}.json"))
    ids = d["message_ids"]; r = d["receipts"]
    acked += len(ids); receipted += sum(1 for x in ids if x in r); dup += sum(1 for v in r.values() if len(v) > 1)
    missing += [x for x in ids if x not in r]
    if d["latency_ms"]: p50.append(d["latency_ms"]["p50"]); p99.append(d["latency_ms"]["p99"])
secs = end - start
print(f"{label:8s} {c} clients x {n}: {acked}/{c*n} acked, {receipted} receipted, {dup} duplicate receipts, "
      f"{secs:.1f} s, {receipted/secs:,.0f} msg/s end to end; submit_sm_resp p50 {max(p50 or [0]):.1f} ms p99 {max(p99 or [0]):.1f} ms (worst client)")
open(f"{work}/{label}-missing", "w").write("\n".join(missing[:3]))
PY
    if [ "$1" = gateway ] && [ -s "$WORK/gateway-missing" ]; then
        echo "acked without a receipt, e.g.:"
        while read -r id; do curl -s "${K[@]}" "127.0.0.1:$A_HTTP/api/v1/messages/$id"; echo; done <"$WORK/gateway-missing"
    fi
}
CL=()
echo "# $(date -u +%FT%TZ) $(nproc) cores; store: $([ -n "$SINGLE" ] && echo 'one durable node' || echo '3-node cluster'); window $W"
run_clients gateway "$A_SMPP" "$B_SMPP" bench pw
run_clients direct "$VPORT" "$VPORT" direct dpw
[ -n "${HOLD:-}" ] && [ -s "$WORK/gateway-missing" ] && { echo "holding for $HOLD s: $WORK"; sleep "$HOLD"; }
