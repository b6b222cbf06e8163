"""redis-py calling redoubt's native commands (CL.THROTTLE, RATELIMIT, LOCK.*) the way an
application would, with `execute_command`, over RESP3 (redis-py 8's default) and RESP2.
Real Redis has no such commands, so the redis target is skipped here."""

import pytest
import redis
from redis.exceptions import ResponseError


@pytest.fixture
def n(r):
    try:
        r.execute_command("LOCK.INFO", "probe")
    except ResponseError as e:
        if "unknown command" in str(e):
            pytest.skip("native commands are redoubt's own")
        raise
    return r


def test_cl_throttle_is_a_drop_in_for_redis_cell(n):
    assert n.execute_command("CL.THROTTLE", "user123", 15, 30, 60) == [0, 16, 15, -1, 2]
    assert n.execute_command("CL.THROTTLE", "user123", 15, 30, 60, 0) == [0, 16, 15, -1, 2]
    for _ in range(15):
        assert n.execute_command("CL.THROTTLE", "user123", 15, 30, 60)[0] == 0
    assert n.execute_command("CL.THROTTLE", "user123", 15, 30, 60) == [1, 16, 0, 2, 32]
    with pytest.raises(ResponseError, match="Zero rates are not supported"):
        n.execute_command("CL.THROTTLE", "user123", 15, 0, 60)
    with pytest.raises(ResponseError, match="Usage: cl.throttle"):
        n.execute_command("CL.THROTTLE", "user123")
    assert n.type("user123") == "string"
    assert 30 <= n.ttl("user123") <= 32


def test_ratelimit_in_a_pipeline(n):
    p = n.pipeline(transaction=False)
    for _ in range(4):
        p.execute_command("RATELIMIT", "sms:+15550100", 3, 3_600_000)
    replies = p.execute()
    assert [r[0] for r in replies] == [1, 1, 1, 0]
    assert [r[1] for r in replies] == [2, 1, 0, 0]
    assert replies[0][2] == -1 and 3_590_000 < replies[3][2] <= 3_600_000
    assert n.type("sms:+15550100") == "list"


def test_locks(n):
    assert n.execute_command("LOCK.ACQUIRE", "job", "alice", 10_000) == 1
    assert n.execute_command("LOCK.ACQUIRE", "job", "bob", 10_000) is None
    info = n.execute_command("LOCK.INFO", "job")
    assert info["owner"] == "alice" and info["token"] == 1 and 9_000 < info["ttl_ms"] <= 10_000
    assert n.execute_command("LOCK.EXTEND", "job", "alice", 20_000) == 1
    assert n.execute_command("LOCK.RELEASE", "job", "bob") == 0
    assert n.execute_command("LOCK.RELEASE", "job", "alice") == 1
    assert n.execute_command("LOCK.INFO", "job") is None
    assert n.execute_command("LOCK.ACQUIRE", "job", "bob", 10_000) == 2
    assert n.get("job:fence") == "2"
    with pytest.raises(ResponseError, match="invalid expire time in 'lock.acquire' command"):
        n.execute_command("LOCK.ACQUIRE", "job", "bob", 0)


def test_lock_info_is_a_flat_array_in_resp2(addr, n):
    c = redis.Redis(host=addr[0], port=addr[1], protocol=2, decode_responses=True)
    try:
        assert c.execute_command("LOCK.ACQUIRE", "j2", "me", 5_000) == 1
        info = c.execute_command("LOCK.INFO", "j2")
        assert info[:4] == ["owner", "me", "token", 1] and info[4] == "ttl_ms"
    finally:
        c.close()
