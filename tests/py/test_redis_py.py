"""redis-py (8.x, RESP3 by default) against redoubt, and against redis-server to check the
tests themselves: typed replies, pipelines, WATCH transactions, pub/sub, keyspace
notifications, scanning, errors."""

import threading
import time

import pytest
import redis
from redis.exceptions import ResponseError, WatchError


def test_client_speaks_resp3_by_default(r):
    if int(redis.__version__.split(".")[0]) < 8:
        pytest.skip("redis-py < 8 defaults to RESP2")
    conn = r.connection_pool.get_connection()
    try:
        assert str(conn.protocol) == "3"
    finally:
        r.connection_pool.release(conn)
    hello = r.execute_command("HELLO", "3")
    assert hello["proto"] == 3
    assert hello["server"] == "redis"


def test_strings(r):
    assert r.set("s", "v") is True
    assert r.get("s") == "v"
    assert r.set("s", "w", nx=True) is None
    assert r.set("s", "w", xx=True, get=True) == "v"
    assert r.incr("n") == 1
    assert r.incrby("n", 41) == 42
    assert r.incrbyfloat("f", 1.5) == 1.5
    assert r.incrbyfloat("f", "0.1") == pytest.approx(1.6)
    assert r.append("s", "xyz") == 4
    assert r.getrange("s", 1, -1) == "xyz"
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "b", "missing") == ["1", "2", None]
    assert r.strlen("s") == 4
    assert r.getdel("a") == "1"
    assert r.exists("a", "b") == 1
    assert r.type("b") == "string"
    with pytest.raises(ResponseError, match="not an integer"):
        r.incr("s")


def test_expiry(r):
    r.set("k", "v", ex=100)
    assert 99 <= r.ttl("k") <= 100
    assert 99_000 <= r.pttl("k") <= 100_000
    assert r.persist("k") is True
    assert r.ttl("k") == -1
    assert r.ttl("missing") == -2
    assert r.expire("k", 50, nx=True) is True
    assert r.expire("k", 10, gt=True) is False
    r.set("short", "v", px=50)
    time.sleep(0.2)
    assert r.get("short") is None


def test_hashes(r):
    assert r.hset("h", mapping={"a": "1", "b": "2"}) == 2
    assert r.hgetall("h") == {"a": "1", "b": "2"}
    assert r.hget("h", "a") == "1"
    assert r.hincrby("h", "a", 5) == 6
    assert r.hincrbyfloat("h", "b", 0.5) == 2.5
    assert sorted(r.hkeys("h")) == ["a", "b"]
    assert r.hlen("h") == 2
    assert r.hexists("h", "zz") is False
    assert r.hdel("h", "a", "zz") == 1
    assert r.hrandfield("h") == "b"


def test_lists(r):
    assert r.rpush("l", "a", "b", "c") == 3
    assert r.lpush("l", "z") == 4
    assert r.lrange("l", 0, -1) == ["z", "a", "b", "c"]
    assert r.lpop("l") == "z"
    assert r.rpop("l", 2) == ["c", "b"]
    assert r.llen("l") == 1
    assert r.blpop(["nothing"], timeout=0.05) is None
    assert list(r.blpop(["l"], timeout=1)) == ["l", "a"]
    assert r.lmove("nothing", "x") is None


def test_blocking_pop_is_served_by_another_client(r, r2):
    got = {}

    def waiter():
        got["v"] = r.brpop(["q"], timeout=5)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    r2.lpush("q", "job")
    t.join(6)
    assert list(got["v"]) == ["q", "job"]


def test_sets(r):
    assert r.sadd("s", "a", "b", "c") == 3
    assert r.smembers("s") == {"a", "b", "c"}
    assert r.sismember("s", "a") in (1, True)
    assert r.smismember("s", ["a", "x"]) in ([1, 0], [True, False])
    r.sadd("t", "b", "c", "d")
    assert r.sinter("s", "t") == {"b", "c"}
    assert r.sunion("s", "t") == {"a", "b", "c", "d"}
    assert r.sdiff("s", "t") == {"a"}
    assert r.spop("s", 3) is not None
    assert r.scard("s") == 0


def test_sorted_sets(r):
    assert r.zadd("z", {"a": 1, "b": 2.5, "c": 3}) == 3
    assert r.zscore("z", "b") == 2.5
    assert r.zrange("z", 0, -1) == ["a", "b", "c"]
    assert r.zrange("z", 0, -1, withscores=True) == [("a", 1.0), ("b", 2.5), ("c", 3.0)]
    assert r.zrangebyscore("z", "(1", "+inf") == ["b", "c"]
    assert r.zincrby("z", 1, "a") == 2.0
    assert r.zrank("z", "a") == 0
    assert r.zpopmin("z") == [("a", 2.0)]
    assert r.zcard("z") == 2
    assert r.zmscore("z", ["b", "nope"]) == [2.5, None]


def test_pipeline_without_transaction(r):
    p = r.pipeline(transaction=False)
    for i in range(100):
        p.set(f"k{i}", i)
    for i in range(100):
        p.get(f"k{i}")
    p.incr("k0")
    p.hset("h", "f", "v")
    p.hgetall("h")
    out = p.execute()
    assert out[:100] == [True] * 100
    assert out[100:200] == [str(i) for i in range(100)]
    assert out[200:] == [1, 1, {"f": "v"}]


def test_pipeline_transaction(r):
    with r.pipeline() as p:
        p.set("a", 1).incr("a").lpush("l", "x").lrange("l", 0, -1)
        assert p.execute() == [True, 2, 1, ["x"]]


def test_transaction_with_errors(r):
    r.set("str", "v")
    with r.pipeline() as p:
        p.set("a", 1).lpush("str", "x").incr("a")
        out = p.execute(raise_on_error=False)
    assert out[0] is True
    assert isinstance(out[1], ResponseError) and str(out[1]).startswith("WRONGTYPE")
    assert out[2] == 2


def test_watch_aborts_on_concurrent_change(r, r2):
    r.set("balance", 10)
    with r.pipeline() as p:
        p.watch("balance")
        current = int(p.get("balance"))
        r2.set("balance", 100)  # another client changes the watched key
        p.multi()
        p.set("balance", current + 1)
        with pytest.raises(WatchError):
            p.execute()
    assert r.get("balance") == "100"


def test_watch_transaction_retries(r, r2):
    r.set("counter", 0)
    attempts = []

    def incr(pipe):
        v = int(pipe.get("counter"))
        if not attempts:
            r2.incr("counter")  # interfere once
        attempts.append(v)
        pipe.multi()
        pipe.set("counter", v + 1)

    r.transaction(incr, "counter")
    assert len(attempts) == 2
    assert r.get("counter") == "2"


def _wait_message(p, timeout=3.0, kind=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = p.get_message(timeout=0.1)
        if m is not None and (kind is None or m["type"] == kind):
            return m
    return None


def test_pubsub(r, r2):
    p = r.pubsub()
    p.subscribe("news")
    assert _wait_message(p, kind="subscribe")["channel"] == "news"
    p.psubscribe("n*")
    assert _wait_message(p, kind="psubscribe")["channel"] == "n*"
    assert r2.publish("news", "hello") == 2
    msgs = [_wait_message(p), _wait_message(p)]
    kinds = sorted((m["type"], m["channel"], m["data"]) for m in msgs)
    assert kinds == [("message", "news", "hello"), ("pmessage", "news", "hello")]
    assert r2.pubsub_channels() == ["news"]
    assert r2.pubsub_numsub("news") == [("news", 1)]
    assert r2.pubsub_numpat() == 1
    p.unsubscribe("news")
    p.punsubscribe()
    assert _wait_message(p, kind="unsubscribe")["channel"] == "news"
    assert r2.publish("news", "again") == 0
    p.close()


def test_pubsub_thread(r, r2):
    got = []
    p = r.pubsub()
    p.subscribe(**{"ev": lambda m: got.append(m["data"])})
    t = p.run_in_thread(sleep_time=0.01)
    try:
        deadline = time.time() + 3
        while r2.pubsub_numsub("ev")[0][1] == 0 and time.time() < deadline:
            time.sleep(0.02)
        for i in range(5):
            r2.publish("ev", str(i))
        deadline = time.time() + 3
        while len(got) < 5 and time.time() < deadline:
            time.sleep(0.02)
    finally:
        t.stop()
        t.join(2)
        p.close()
    assert got == ["0", "1", "2", "3", "4"]


def test_keyspace_notifications(r, r2):
    r.config_set("notify-keyspace-events", "KEA")
    try:
        assert r.config_get("notify-keyspace-events")["notify-keyspace-events"] in ("AKE", "KEA")
        p = r2.pubsub()
        p.psubscribe("__keyspace@0__:*", "__keyevent@0__:*")
        _wait_message(p, kind="psubscribe")
        _wait_message(p, kind="psubscribe")
        r.set("foo", "bar")
        r.lpush("lst", "x")
        r.set("gone", "v", px=30)
        seen = set()
        deadline = time.time() + 5
        while time.time() < deadline and ("__keyevent@0__:expired", "gone") not in seen:
            m = p.get_message(timeout=0.1)
            if m and m["type"] == "pmessage":
                seen.add((m["channel"], m["data"]))
            if ("__keyevent@0__:expired", "gone") not in seen:
                r.exists("gone")  # an access expires the key too
        assert ("__keyspace@0__:foo", "set") in seen
        assert ("__keyevent@0__:set", "foo") in seen
        assert ("__keyspace@0__:lst", "lpush") in seen
        assert ("__keyevent@0__:expired", "gone") in seen
        p.close()
    finally:
        r.config_set("notify-keyspace-events", "")


def test_scan_iter(r):
    with r.pipeline(transaction=False) as p:
        for i in range(300):
            p.set(f"user:{i}", i)
        p.sadd("other", "x")
        p.execute()
    assert sorted(r.scan_iter(match="user:*", count=17)) == sorted(f"user:{i}" for i in range(300))
    assert list(r.scan_iter(_type="set")) == ["other"]
    assert r.dbsize() == 301
    r.hset("h", mapping={f"f{i}": i for i in range(200)})
    assert len(dict(r.hscan_iter("h", count=10))) == 200


def test_errors_are_responses(r):
    r.set("s", "x")
    with pytest.raises(ResponseError, match="^WRONGTYPE"):
        r.lpush("s", "a")
    with pytest.raises(ResponseError, match="unknown command"):
        r.execute_command("NOSUCHCOMMAND")
    with pytest.raises(ResponseError, match="wrong number of arguments"):
        r.execute_command("GET")
    assert r.ping() is True


def test_client_and_server_commands(r):
    assert r.client_setname("tester") is True
    assert r.client_getname() == "tester"
    assert isinstance(r.client_id(), int)
    info = r.info()
    assert "redis_version" in info
    assert r.info("keyspace") == {}
    r.set("a", 1)
    assert r.info("keyspace")["db0"]["keys"] == 1
    assert r.echo("hi") == "hi"
    assert isinstance(r.time()[0], int)
    assert r.dbsize() == 1


def test_resp2_client_still_works(addr):
    c = redis.Redis(host=addr[0], port=addr[1], protocol=2, decode_responses=True)
    try:
        c.flushall()
        c.hset("h", "a", "1")
        assert c.hgetall("h") == {"a": "1"}
        c.zadd("z", {"m": 1.5})
        assert c.zrange("z", 0, -1, withscores=True) == [("m", 1.5)]
        assert c.smembers("nope") == set()
    finally:
        c.close()


def test_binary_values(addr):
    c = redis.Redis(host=addr[0], port=addr[1])
    try:
        c.flushall()
        v = bytes(range(256)) * 10
        c.set(b"\x00k\xff", v)
        assert c.get(b"\x00k\xff") == v
    finally:
        c.close()
