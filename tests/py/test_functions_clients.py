"""Redis 7 functions through redis-py (`function_load`, `fcall`, `fcall_ro`,
`function_list`, `function_dump`, `function_restore`), against both targets (redoubt and,
to check the test itself, real Redis). redis-py's Lock and the compare-and-delete release
are in test_scripts_clients.py."""

import pytest
from redis.exceptions import ResponseError


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
