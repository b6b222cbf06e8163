"""Lua the way client libraries send it, through redis-py against both targets (redoubt
and, to check the tests themselves, real Redis):

* redis-py's `Lock` (acquire, blocking acquire with a timeout, extend, reacquire, release,
  and the errors for a lock someone else holds now), whose scripts go as EVALSHA with the
  NOSCRIPT fallback to EVAL;
* the classic compare-and-delete release through `register_script`;
* Redis 7 functions through redis-py's `function_load` / `fcall` / `fcall_ro` /
  `function_list` / `function_dump` / `function_restore`.
"""

import time

import pytest
from redis.exceptions import LockError, LockNotOwnedError, ResponseError


def test_redis_py_lock_lifecycle(r, r2):
    r.script_flush()  # the first use loads the scripts through the NOSCRIPT fallback
    lock = r.lock("res:invoice-42", timeout=5, blocking=False)
    assert lock.acquire()
    assert lock.locked() and lock.owned()
    assert 0 < r.pttl("res:invoice-42") <= 5000

    # Someone else cannot take it, blocking briefly or not at all.
    other = r2.lock("res:invoice-42", timeout=5, blocking_timeout=0.2)
    assert not other.acquire()
    assert not other.owned()
    with pytest.raises(LockError):
        other.release()

    # Extend adds to the lease; replace_ttl sets it.
    assert lock.extend(10)
    assert 10_000 < r.pttl("res:invoice-42") <= 15_000
    assert lock.extend(3, replace_ttl=True)
    assert 2_000 < r.pttl("res:invoice-42") <= 3_000
    assert lock.reacquire()
    assert 4_000 < r.pttl("res:invoice-42") <= 5_000

    lock.release()
    assert not lock.locked()
    with pytest.raises(LockError):
        lock.release()
    assert other.acquire()
    other.release()


def test_redis_py_lock_after_expiry_belongs_to_the_next_owner(r, r2):
    first = r.lock("res:short", timeout=0.2)
    assert first.acquire(blocking=False)
    time.sleep(0.35)
    second = r2.lock("res:short", timeout=5)
    assert second.acquire(blocking=False)
    with pytest.raises(LockNotOwnedError):
        first.extend(1)
    with pytest.raises(LockNotOwnedError):
        first.release()
    assert second.owned()
    second.release()


def test_redis_py_lock_as_context_manager_serialises_two_clients(r, r2):
    log = []
    with r.lock("res:cm", timeout=5, blocking_timeout=2):
        log.append("a")
        assert not r2.lock("res:cm", timeout=5, blocking_timeout=0.1).acquire()
    with r2.lock("res:cm", timeout=5, blocking_timeout=2):
        log.append("b")
    assert log == ["a", "b"]
    assert r.exists("res:cm") == 0


def test_compare_and_delete_release_script(r):
    release = r.register_script(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
    )
    r.script_flush()
    assert r.set("res:cad", "token-1", nx=True, px=10_000)
    assert release(keys=["res:cad"], args=["token-2"]) == 0
    assert r.get("res:cad") == "token-1"
    assert release(keys=["res:cad"], args=["token-1"]) == 1
    assert r.exists("res:cad") == 0


LIB = """#!lua name=dlr
local function key(id) return 'dlr:' .. id end
redis.register_function('dlr_store', function(keys, args)
  redis.call('HSET', keys[1], 'status', args[1], 'vendor', args[2])
  redis.call('PEXPIRE', keys[1], 86400000)
  return redis.call('HLEN', keys[1])
end)
redis.register_function{function_name='dlr_status', callback=function(keys)
  return redis.call('HGET', keys[1], 'status')
end, flags={'no-writes'}, description='status of one DLR'}
"""


def test_functions_through_redis_py(r):
    r.function_flush()
    assert r.function_load(LIB) == "dlr"
    assert r.fcall("dlr_store", 1, "dlr:m1", "DELIVRD", "vendorA") == 2
    assert r.fcall_ro("dlr_status", 1, "dlr:m1") == "DELIVRD"
    with pytest.raises(ResponseError, match="Can not execute a script with write flag using \\*_ro command"):
        r.fcall_ro("dlr_store", 1, "dlr:m1", "x", "y")
    with pytest.raises(ResponseError, match="Library 'dlr' already exists"):
        r.function_load(LIB)
    assert r.function_load(LIB, replace=True) == "dlr"
    libs = r.function_list(withcode=True)
    assert len(libs) == 1
    lib = libs[0]
    if isinstance(lib, list):  # RESP2: a flat list of pairs
        lib = dict(zip(lib[::2], lib[1::2]))
    assert lib["library_name"] == "dlr" and lib["library_code"] == LIB
    payload = r.function_dump()
    r.function_flush()
    with pytest.raises(ResponseError, match="Function not found"):
        r.fcall("dlr_status", 1, "dlr:m1")
    assert r.function_restore(payload)
    assert r.fcall_ro("dlr_status", 1, "dlr:m1") == "DELIVRD"
    assert 86_000_000 < r.pttl("dlr:m1") <= 86_400_000
    r.function_flush()
