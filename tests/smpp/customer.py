#!/usr/bin/env python3
"""customer.py: a customer ESME for the gateway's tests, on the third-party PyPI `smpplib`.

    python3 customer.py --port P --system-id S --password W [options]

    --host 127.0.0.1        gateway address
    --bind trx|tx|rx|tx+rx  bind type; tx+rx binds a receiver on --rx-port (another pod) too
    --rx-port P             where the receiver binds (default: --port)
    --count N               messages to submit (default 100)
    --window W              outstanding submit_sm at most (default 10)
    --rate R                submits per second at most (0: as fast as the window allows)
    --source S              source_addr (default 12345)
    --destination D         destination_addr; "{i}" is replaced by the message number
    --text T                message text; "{i}" is replaced by the message number
    --registered-delivery 0|1
    --wait-dlr S            after the last resp, wait up to S seconds for every receipt
    --listen-only S         bind (rx or trx) and only collect receipts for S seconds
    --expect-bind-fail      succeed (exit 0) only if the bind is refused
    --max-errors N          errors tolerated (default 0)
    --json PATH             write the result as JSON (also written when the run breaks)

Result JSON: submitted, acked, errors {status hex: count}, message_ids, receipts
{message_id: [states]} (a duplicate shows as two states), unmatched (receipts for ids this
run did not get), mo [{source, destination, text}] (mobile-originated messages), elapsed_s, msg_per_s, latency_ms {p50, p99}, bind_status, broken.
Exit status: 0 complete, 1 incomplete (or too many errors, or the connection broke),
2 connect or bind failure.
"""
import argparse
import json
import logging
import re
import socket
import sys
import threading
import time

import smpplib.client
import smpplib.consts
import smpplib.exceptions

logging.basicConfig(level=logging.ERROR)
args = argparse.ArgumentParser()
args.add_argument("--host", default="127.0.0.1")
args.add_argument("--port", type=int, required=True)
args.add_argument("--rx-port", type=int, default=0)
args.add_argument("--system-id", required=True)
args.add_argument("--password", required=True)
args.add_argument("--bind", default="trx", choices=["trx", "tx", "rx", "tx+rx"])
args.add_argument("--count", type=int, default=100)
args.add_argument("--window", type=int, default=10)
args.add_argument("--rate", type=float, default=0)
args.add_argument("--source", default="12345")
args.add_argument("--destination", default="4670000{i:04d}")
args.add_argument("--text", default="hello {i}")
args.add_argument("--registered-delivery", type=int, default=1)
args.add_argument("--wait-dlr", type=float, default=10)
args.add_argument("--listen-only", type=float, default=0)
args.add_argument("--expect-bind-fail", action="store_true")
args.add_argument("--max-errors", type=int, default=0)
args.add_argument("--json", default="")
opt = args.parse_args()

lock = threading.Lock()
result = {"mo": [], "submitted": 0, "acked": 0, "errors": {}, "message_ids": [], "receipts": {}, "unmatched": 0,
          "elapsed_s": 0, "msg_per_s": 0, "latency_ms": {}, "bind_status": 0, "broken": ""}
sent_at = {}       # sequence -> monotonic time of the submit
latencies = []
acked_ids = set()
outstanding = 0


def receipt_id(pdu):
    rid = getattr(pdu, "receipted_message_id", None)
    if rid:
        return rid.decode() if isinstance(rid, bytes) else str(rid)
    text = pdu.short_message.decode("latin1") if isinstance(pdu.short_message, bytes) else str(pdu.short_message)
    m = re.search(r"id:(\S+)", text)
    return m.group(1) if m else None


def on_deliver(pdu, **_):
    text = pdu.short_message.decode("latin1") if isinstance(pdu.short_message, bytes) else str(pdu.short_message or "")
    m = re.search(r"stat:(\S+)", text)
    state = m.group(1) if m else str(getattr(pdu, "message_state", "?"))
    esm = getattr(pdu, "esm_class", 0) or 0
    if not (esm & 0x3C) and not getattr(pdu, "receipted_message_id", None):
        with lock:
            result["mo"].append({"source": pdu.source_addr.decode() if isinstance(pdu.source_addr, bytes) else str(pdu.source_addr),
                                 "destination": pdu.destination_addr.decode() if isinstance(pdu.destination_addr, bytes) else str(pdu.destination_addr),
                                 "text": text})
        return 0
    rid = receipt_id(pdu)
    with lock:
        if rid is None:
            result["unmatched"] += 1
        else:
            result["receipts"].setdefault(rid, []).append(state)
    return 0


def on_sent(pdu, **_):
    global outstanding
    if pdu.status != 0:
        return  # counted by on_error
    mid = pdu.message_id.decode() if isinstance(pdu.message_id, bytes) else str(pdu.message_id)
    with lock:
        outstanding -= 1
        result["acked"] += 1
        result["message_ids"].append(mid)
        acked_ids.add(mid)
        t = sent_at.pop(pdu.sequence, None)
        if t is not None:
            latencies.append((time.monotonic() - t) * 1000)


def on_error(pdu):
    global outstanding
    with lock:
        key = "0x%08x" % pdu.status
        result["errors"][key] = result["errors"].get(key, 0) + 1
        if pdu.command == "submit_sm_resp":
            outstanding -= 1
            sent_at.pop(pdu.sequence, None)


def client(port):
    c = smpplib.client.Client(opt.host, port, timeout=0.5, allow_unknown_opt_params=True)
    c.set_message_received_handler(on_deliver)
    c.set_message_sent_handler(on_sent)
    c.set_error_pdu_handler(on_error)
    c.connect()
    # smpplib leaves Nagle on; with small windows that costs 40 ms per delayed ACK.
    c._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def bind(c, kind):
    fn = {"trx": c.bind_transceiver, "tx": c.bind_transmitter, "rx": c.bind_receiver}[kind]
    fn(system_id=opt.system_id, password=opt.password)


def finish(code):
    with lock:
        result["elapsed_s"] = round(time.monotonic() - start, 3)
        if result["elapsed_s"] > 0:
            result["msg_per_s"] = round(result["acked"] / result["elapsed_s"], 1)
        if latencies:
            s = sorted(latencies)
            result["latency_ms"] = {"p50": round(s[len(s) // 2], 2), "p99": round(s[min(len(s) - 1, int(len(s) * 0.99))], 2)}
        result["unmatched"] += sum(1 for k in result["receipts"] if k not in acked_ids) if opt.count else 0
        out = json.dumps(result)
    if opt.json:
        with open(opt.json, "w") as f:
            f.write(out)
    print("customer: submitted %d acked %d errors %s receipts %d unmatched %d %.1f msg/s" % (
        result["submitted"], result["acked"], result["errors"], len(result["receipts"]), result["unmatched"],
        result["msg_per_s"]))
    sys.exit(code)


start = time.monotonic()
tx_kind = {"trx": "trx", "tx": "tx", "rx": None, "tx+rx": "tx"}[opt.bind]
rx_kind = {"trx": None, "tx": None, "rx": "rx", "tx+rx": "rx"}[opt.bind]
try:
    tx = client(opt.port) if tx_kind else None
    if tx:
        bind(tx, tx_kind)
    rx = client(opt.rx_port or opt.port) if rx_kind else None
    if rx:
        bind(rx, rx_kind)
except smpplib.exceptions.PDUError as e:
    result["bind_status"] = e.args[1] if len(e.args) > 1 else -1
    finish(0 if opt.expect_bind_fail else 2)
except (smpplib.exceptions.ConnectionError, OSError) as e:
    result["broken"] = "connect: %s" % e
    finish(2)
if opt.expect_bind_fail:
    finish(1)

stop = threading.Event()


def rx_loop():
    while not stop.is_set():
        try:
            rx.read_once()
        except Exception as e:  # the pod went away: report what we have
            result["broken"] = "receiver: %s" % e
            return


rx_thread = None
if rx:
    rx_thread = threading.Thread(target=rx_loop, daemon=True)
    rx_thread.start()

reader = tx or rx
if opt.listen_only:
    deadline = time.monotonic() + opt.listen_only
    while time.monotonic() < deadline:
        if tx:
            try:
                tx.read_once()
            except Exception as e:
                result["broken"] = str(e)
                break
        else:
            time.sleep(0.05)
    stop.set()
    finish(0)

code = 0
try:
    i = 0
    gap = 1.0 / opt.rate if opt.rate > 0 else 0
    next_at = time.monotonic()
    while True:
        with lock:
            done = result["acked"] + sum(result["errors"].values())
            room = opt.window - outstanding
        if done >= opt.count:
            break
        while room > 0 and i < opt.count:
            if gap:
                now = time.monotonic()
                if now < next_at:
                    time.sleep(next_at - now)
                next_at = max(next_at, time.monotonic()) + gap
            pdu = tx.send_message(
                source_addr_ton=smpplib.consts.SMPP_TON_ALNUM, source_addr_npi=smpplib.consts.SMPP_NPI_UNK,
                source_addr=opt.source, dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN, destination_addr=opt.destination.format(i=i),
                short_message=opt.text.format(i=i).encode(), registered_delivery=opt.registered_delivery)
            with lock:
                sent_at[pdu.sequence] = time.monotonic()
                outstanding += 1
                result["submitted"] += 1
            i += 1
            room -= 1
        tx.read_once()
    if opt.registered_delivery and opt.wait_dlr > 0:
        deadline = time.monotonic() + opt.wait_dlr
        while time.monotonic() < deadline:
            with lock:
                if acked_ids.issubset(result["receipts"].keys()):
                    break
            if opt.bind == "trx":
                tx.read_once()
            else:
                time.sleep(0.05)
        with lock:
            if not acked_ids.issubset(result["receipts"].keys()):
                code = 1
except Exception as e:
    result["broken"] = "%s: %s" % (type(e).__name__, e)
    code = 1
stop.set()
if sum(result["errors"].values()) > opt.max_errors:
    code = 1
if result["acked"] + sum(result["errors"].values()) < opt.count:
    code = 1
finish(code)
