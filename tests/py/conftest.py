"""Fixtures for the redis-py tests: one Redis client per target server.

Targets:
  * redoubt: $REDOUBT_HOST/$REDOUBT_PORT when set (the Rust test `t30_clients::redis_py`
    sets them for the server it runs in-process); otherwise the `redoubt` binary
    ($REDOUBT_BIN, else target/release/redoubt, else target/debug/redoubt) is started on a
    free port for the session.
  * redis: $ORACLE_PORT when set; otherwise `redis-server` is started on a free port when it
    is installed. Running every test against real Redis too checks the tests themselves.

A target that is not available is skipped, except under CI=true where a missing redoubt
fails the run. Set REDIS_PY_TARGETS=redoubt (or redis) to run against one only.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") in ("true", "1")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ping(port, proc=None, within=15.0):
    deadline = time.time() + within
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                s.settimeout(1.0)
                if s.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


class _Spawned:
    def __init__(self, argv, port):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="redis-py-target-")
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(argv, cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.ok = _wait_ping(port, self.proc)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _redoubt_binary():
    env = os.environ.get("REDOUBT_BIN")
    if env:
        return env
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    for profile in ("release", "debug"):
        p = target / profile / "redoubt"
        if p.exists():
            return str(p)
    return None


_spawned = {}


def _target_addr(name):
    """(host, port) of a target, or a reason to skip it."""
    wanted = os.environ.get("REDIS_PY_TARGETS")
    if wanted and name not in wanted.split(","):
        return None, f"{name} not in REDIS_PY_TARGETS"
    if name == "redoubt":
        if os.environ.get("REDOUBT_PORT"):
            return (os.environ.get("REDOUBT_HOST", "127.0.0.1"), int(os.environ["REDOUBT_PORT"])), None
        binary = _redoubt_binary()
        if binary is None:
            return None, "no redoubt binary (cargo build --release -p redoubt-server) and no REDOUBT_PORT"
        if name not in _spawned:
            port = _free_port()
            _spawned[name] = _Spawned([binary, "--port", str(port), "--save", ""], port)
        sp = _spawned[name]
        return (("127.0.0.1", sp.port), None) if sp.ok else (None, f"{binary} did not start")
    if os.environ.get("ORACLE_PORT"):
        return ("127.0.0.1", int(os.environ["ORACLE_PORT"])), None
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if binary is None:
        return None, "redis-server is not installed"
    if name not in _spawned:
        port = _free_port()
        _spawned[name] = _Spawned([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no"], port)
    sp = _spawned[name]
    return (("127.0.0.1", sp.port), None) if sp.ok else (None, "redis-server did not start")


def pytest_sessionfinish(session, exitstatus):
    for sp in _spawned.values():
        sp.stop()


@pytest.fixture(params=["redoubt", "redis"])
def addr(request):
    a, why = _target_addr(request.param)
    if a is None:
        if IN_CI and request.param == "redoubt" and not os.environ.get("REDIS_PY_TARGETS"):
            pytest.fail(f"redoubt target unavailable under CI: {why}")
        pytest.skip(why)
    return a


@pytest.fixture
def r(addr):
    """A client with redis-py's defaults (RESP3 in redis-py 8), on an empty server."""
    c = redis.Redis(host=addr[0], port=addr[1], socket_timeout=10, decode_responses=True)
    c.flushall()
    yield c
    c.close()


@pytest.fixture
def r2(addr):
    """A second, independent client to the same server."""
    c = redis.Redis(host=addr[0], port=addr[1], socket_timeout=10, decode_responses=True)
    yield c
    c.close()
