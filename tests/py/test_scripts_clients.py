"""Client libraries built on Lua scripts and on the native limiter, used as applications use
them:

* redis-py's `redis.lock.Lock` (`r.lock(...)`): acquire (SET NX PX), extend, reacquire and
  release (EVALSHA of its Lua scripts, with SCRIPT LOAD + EVALSHA again on NOSCRIPT), a
  second client blocked until `blocking_timeout`, `LockNotOwnedError` once the lease ran out
  and someone else took the lock;
* the classic compare-and-delete release through `register_script`, and the EVALSHA-then-
  EVAL fallback other clients (go-redis `Script.Run`, ioredis) use;
* a redis-cell style wrapper around CL.THROTTLE (redoubt only: real Redis has no
  CL.THROTTLE without the module).

Everything except the CL.THROTTLE wrapper runs against real Redis too, which checks the
tests themselves.
"""

import hashlib
import threading
import time
from dataclasses import dataclass

import pytest
import redis
from redis.exceptions import LockError, LockNotOwnedError, NoScriptError, ResponseError

COMPARE_AND_DELETE = (
    'if redis.call("get",KEYS[1]) == ARGV[1] then return redis.call("del",KEYS[1]) else return 0 end'
)


class Recording(redis.Redis):
    """A client that records the name of every command it sends (the first word, plus the
    subcommand for SCRIPT), so a test can see which path a library took."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = []

    def execute_command(self, *args, **options):
        name = str(args[0]).upper()
        if name == "SCRIPT":
            name += " " + str(args[1]).upper()
        self.sent.append(name)
        return super().execute_command(*args, **options)


@pytest.fixture
def rec(addr, r):
    c = Recording(host=addr[0], port=addr[1], socket_timeout=10, decode_responses=True)
    yield c
    c.close()


def wait_until(cond, within=10.0, what="condition"):
    """Polls `cond` until it holds. Expiry is the server's business and a loaded machine may
    be late, so tests wait for the state instead of sleeping a fixed time."""
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, f"{what} not reached within {within} s"
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def fresh_lock_scripts():
    # redis.lock.Lock caches its Script objects on the class, with the sha they were made
    # with; each test starts from a clean class so one target's state cannot leak into the
    # other's run.
    redis.lock.Lock.lua_release = redis.lock.Lock.lua_extend = redis.lock.Lock.lua_reacquire = None
    yield


# ---------------------------------------------------------------------------------------
# redis.lock.Lock
# ---------------------------------------------------------------------------------------


def test_lock_acquire_extend_reacquire_release(rec):
    rec.script_flush()
    lock = rec.lock("resource", timeout=10)
    assert not lock.locked() and not lock.owned()
    assert lock.acquire(blocking=False)
    assert lock.locked() and lock.owned()
    token = rec.get("resource")
    assert token and len(token) == 32, token  # uuid1().hex, stored by SET NX PX
    # Bounds loose enough for a slow machine: each holds if the steps take under 5 s.
    assert 5_000 < rec.pttl("resource") <= 10_000

    # extend: adds to the remaining time (EVALSHA fails with NOSCRIPT after the flush, then
    # redis-py loads the script and calls EVALSHA again).
    rec.sent.clear()
    assert lock.extend(5) is True
    assert rec.sent == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"], rec.sent
    assert 10_000 < rec.pttl("resource") <= 15_000
    # replace_ttl: the lease becomes exactly the new time; the script is cached now.
    rec.sent.clear()
    assert lock.extend(2, replace_ttl=True) is True
    assert rec.sent == ["EVALSHA"], rec.sent
    assert 0 < rec.pttl("resource") <= 2_000
    # reacquire: back to the lock's own timeout.
    assert lock.reacquire() is True
    assert 2_000 < rec.pttl("resource") <= 10_000
    assert rec.get("resource") == token, "extending never changes the token"

    rec.sent.clear()
    lock.release()
    assert rec.sent[-1] == "EVALSHA" and "SCRIPT LOAD" in rec.sent, rec.sent
    assert not lock.locked() and not lock.owned()
    assert rec.exists("resource") == 0
    # Releasing twice is the caller's error, found before any command is sent.
    with pytest.raises(LockError, match="not owned or is already unlocked"):
        lock.release()
    with pytest.raises(LockError, match="Cannot extend an unlocked lock"):
        lock.extend(1)
    # The scripts the library needed are in the cache now.
    shas = [redis.lock.Lock.lua_release.sha, redis.lock.Lock.lua_extend.sha, redis.lock.Lock.lua_reacquire.sha]
    assert rec.script_exists(*shas) == [True, True, True]


def test_lock_as_a_context_manager_and_without_timeout(r):
    with r.lock("ctx", timeout=5) as lock:
        assert lock.owned()
        assert 0 < r.pttl("ctx") <= 5_000
    assert r.exists("ctx") == 0
    # No timeout: the key has no expiry, and extending is refused by the library.
    lock = r.lock("forever")
    assert lock.acquire()
    assert r.pttl("forever") == -1
    with pytest.raises(LockError, match="no timeout"):
        lock.extend(1)
    lock.release()
    assert r.exists("forever") == 0


def test_second_client_waits_then_times_out_then_gets_it(r, r2):
    holder = r.lock("shared", timeout=30)
    assert holder.acquire()
    # thread_local=False: the token taken in the waiter thread below is checked from this one.
    other = r2.lock("shared", timeout=30, sleep=0.02, thread_local=False)
    assert other.acquire(blocking=False) is False
    assert other.acquire(blocking_timeout=0.2) is False
    assert not other.owned() and other.locked()
    # The context manager turns a timeout into LockError.
    with pytest.raises(LockError, match="Unable to acquire lock"):
        with r2.lock("shared", blocking_timeout=0.1, sleep=0.02):
            pass

    # A blocked acquire returns once the holder releases.
    got = {}
    waiter = threading.Thread(target=lambda: got.setdefault("ok", other.acquire(blocking_timeout=20)))
    waiter.start()
    time.sleep(0.1)
    assert waiter.is_alive(), "the waiter must still be blocked while the lock is held"
    holder.release()
    waiter.join(30)
    assert got.get("ok") is True
    assert other.owned() and not holder.owned()
    other.release()


def test_lock_not_owned_after_expiry_and_a_new_owner(r, r2):
    first = r.lock("lease", timeout=0.2)
    assert first.acquire()
    # The lease runs out on the server.
    wait_until(lambda: not first.locked(), what="lease expiry")
    assert not first.owned()
    second = r2.lock("lease", timeout=30)
    assert second.acquire(blocking=False)
    # The first holder wakes up late: every write it tries is refused, and the second
    # holder's lock is untouched.
    with pytest.raises(LockNotOwnedError, match="no longer owned"):
        first.extend(10)
    with pytest.raises(LockNotOwnedError, match="no longer owned"):
        first.reacquire()
    with pytest.raises(LockNotOwnedError, match="no longer owned"):
        first.release()
    assert second.owned()
    assert 20_000 < r.pttl("lease") <= 30_000
    second.release()
    assert r.exists("lease") == 0


def test_lock_on_a_key_deleted_behind_its_back(r):
    lock = r.lock("gone", timeout=10)
    assert lock.acquire()
    r.delete("gone")
    assert not lock.locked()
    with pytest.raises(LockNotOwnedError):
        lock.extend(1)
    with pytest.raises(LockNotOwnedError):
        lock.release()


def test_lock_extend_on_a_key_that_lost_its_ttl_is_refused(r):
    # The extend script returns 0 when PTTL is negative (a key without expiry): a lock that
    # someone PERSISTed is not silently given a TTL back.
    lock = r.lock("persisted", timeout=10)
    assert lock.acquire()
    assert r.persist("persisted")
    with pytest.raises(LockNotOwnedError):
        lock.extend(1)
    assert r.pttl("persisted") == -1
    lock.release()


# ---------------------------------------------------------------------------------------
# Scripts: register_script and the EVALSHA -> EVAL fallback
# ---------------------------------------------------------------------------------------


def test_compare_and_delete_with_register_script(rec):
    rec.script_flush()
    release = rec.register_script(COMPARE_AND_DELETE)
    assert rec.script_exists(release.sha) == [False]
    assert rec.set("job", "owner-a", nx=True, px=10_000)
    assert not rec.set("job", "owner-b", nx=True, px=10_000)
    rec.sent.clear()
    assert release(keys=["job"], args=["owner-b"]) == 0
    assert rec.sent == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"], rec.sent
    assert rec.get("job") == "owner-a", "a stranger's release deletes nothing"
    assert rec.script_exists(release.sha) == [True]
    rec.sent.clear()
    assert release(keys=["job"], args=["owner-a"]) == 1
    assert rec.sent == ["EVALSHA"]
    assert rec.exists("job") == 0
    assert release(keys=["job"], args=["owner-a"]) == 0, "nothing left to release"
    # The same script in a pipeline: redis-py loads it before running the pipeline.
    rec.script_flush()
    rec.set("job", "x")
    p = rec.pipeline()
    release(keys=["job"], args=["y"], client=p)
    release(keys=["job"], args=["x"], client=p)
    assert p.execute() == [0, 1]


def run_script(client, script, keys, args):
    """EVALSHA, and EVAL of the body on NOSCRIPT: the fallback go-redis's Script.Run and
    ioredis's defineCommand use (EVAL also puts the script in the cache)."""
    sha = hashlib.sha1(script.encode()).hexdigest()
    try:
        return client.evalsha(sha, len(keys), *keys, *args)
    except NoScriptError:
        return client.eval(script, len(keys), *keys, *args)


def test_evalsha_falls_back_to_eval(rec):
    rec.script_flush()
    rec.set("k", "me")
    rec.sent.clear()
    assert run_script(rec, COMPARE_AND_DELETE, ["k"], ["other"]) == 0
    assert rec.sent == ["EVALSHA", "EVAL"], rec.sent
    # EVAL cached it: the next call is one EVALSHA.
    rec.sent.clear()
    assert run_script(rec, COMPARE_AND_DELETE, ["k"], ["me"]) == 1
    assert rec.sent == ["EVALSHA"], rec.sent
    assert rec.exists("k") == 0
    with pytest.raises(NoScriptError, match="No matching script. Please use EVAL."):
        rec.evalsha("0" * 40, 0)
    # A malformed sha is NOSCRIPT too, not a syntax error.
    with pytest.raises(NoScriptError):
        rec.evalsha("not-a-sha", 0)
    with pytest.raises(ResponseError, match="Number of keys can't be greater than number of args"):
        rec.eval("return 1", 2, "only-one")


# ---------------------------------------------------------------------------------------
# A redis-cell style client
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThrottleResult:
    """CL.THROTTLE's five fields as redis-cell documents them."""

    limited: bool
    limit: int  # max_burst + 1
    remaining: int
    retry_after: int  # seconds until a retry can pass; -1 when allowed
    reset_after: int  # seconds until the limit is back to its full burst

    @classmethod
    def parse(cls, reply):
        assert isinstance(reply, list) and len(reply) == 5, reply
        limited, limit, remaining, retry_after, reset_after = reply
        assert limited in (0, 1), reply
        return cls(bool(limited), limit, remaining, retry_after, reset_after)


class Throttle:
    """What rate-limit libraries (throttled-py, redis-cell clients in other languages) wrap:
    one key, its GCRA parameters fixed, `allow()` consuming and `peek()` not."""

    def __init__(self, client, key, max_burst, count, period):
        self.client, self.key = client, key
        self.params = (max_burst, count, period)

    def allow(self, quantity=1):
        return ThrottleResult.parse(self.client.execute_command("CL.THROTTLE", self.key, *self.params, quantity))

    def peek(self):
        return self.allow(0)

    def allow_many(self, n):
        """n calls in one round trip (a pipeline), as a batch sender checks a batch."""
        p = self.client.pipeline(transaction=False)
        for _ in range(n):
            p.execute_command("CL.THROTTLE", self.key, *self.params, 1)
        return [ThrottleResult.parse(x) for x in p.execute()]


@pytest.fixture
def native(r):
    try:
        r.execute_command("CL.THROTTLE", "probe", 1, 1, 1, 0)
    except ResponseError as e:
        if "unknown command" in str(e):
            pytest.skip("CL.THROTTLE is redoubt's own (redis-cell is a module)")
        raise
    r.delete("probe")
    return r


def test_redis_cell_style_client(native, r2):
    # 5 per minute with a burst of 3: 4 pass at once, then one every 12 s.
    t = Throttle(native, "api:user42", 3, 5, 60)
    assert t.peek() == ThrottleResult(False, 4, 4, -1, 0)
    first = t.allow()
    assert first == ThrottleResult(False, 4, 3, -1, 12)
    batch = t.allow_many(4)
    assert [b.limited for b in batch] == [False, False, False, True]
    assert [b.remaining for b in batch] == [2, 1, 0, 0]
    refused = batch[-1]
    assert 0 < refused.retry_after <= 12 and 36 < refused.reset_after <= 48, refused
    # Another client (another process of the application) shares the same limiter.
    other = Throttle(r2, "api:user42", 3, 5, 60)
    assert other.allow().limited
    assert other.peek().remaining == 0
    # A request for more than the whole burst can never pass, and costs nothing.
    big = Throttle(native, "api:bulk", 3, 5, 60).allow(5)
    assert big.limited and big.retry_after == -1 and big.remaining == 4
    # Other users are limited separately.
    assert not Throttle(native, "api:user43", 3, 5, 60).allow().limited
    with pytest.raises(ResponseError, match="Zero rates are not supported"):
        Throttle(native, "api:bad", 3, 0, 60).allow()
