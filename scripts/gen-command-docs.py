#!/usr/bin/env python3
r"""Regenerates redoubt's COMMAND DOCS data from a real redis-server.

Starts `redis-server --port 7301 --save ''` (unless one already answers there), asks for
`COMMAND DOCS` over a raw RESP3 socket (no third-party modules), and writes:

* server/src/cmd/docs/commands.txt: every command's docs in a small line format that
  server/src/cmd/docs.rs parses at startup (format described there and below);
* server/src/cmd/docs/fixtures/*.resp2|.resp3: Redis's raw reply to `COMMAND DOCS <name>`
  for a few commands, which the unit tests compare byte for byte with redoubt's encoding.

Line format (one record per line, fields separated by TAB; in every field `\\`, `\t`,
`\n`, `\r` are escaped as backslash sequences, and `\N` alone marks an absent field):

    C <fullname>                    begins a command (subcommands nest inside their parent)
    s <summary> | v <since> | g <group> | x <complexity> | m <module>
    d <deprecated_since> | r <replaced_by>
    f <doc_flag> <doc_flag>...      doc_flags
    h <since> <changes>             one history entry
    a <depth> <name> <type> <key_spec_index> <token> <summary> <since> <deprecated_since> <flags>
                                    one argument, depth 0 = top level; flags comma-separated
    .                               ends the current command

Subcommands are listed in Redis's dict order, which is random per process (and can shift as
its dicts rehash): regenerating may reorder them. The data and fixtures come from one server
in one run, so they always agree with each other.

Usage: scripts/gen-command-docs.py  (run from anywhere; paths are relative to the repo)
"""

import os
import socket
import subprocess
import sys
import time

PORT = 7301
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "server", "src", "cmd", "docs")
FIXTURES = ["set", "zadd", "client|kill", "client", "sort", "bitfield", "xadd", "georadius"]

# Keys Redis may put in a command's doc map, in the order it writes them.
CMD_KEYS = ["summary", "since", "group", "complexity", "module", "doc_flags",
            "deprecated_since", "replaced_by", "history", "arguments", "subcommands"]
ARG_KEYS = ["name", "type", "key_spec_index", "token", "summary", "since",
            "deprecated_since", "flags", "arguments"]


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        """Parses one RESP2/RESP3 reply. Maps become lists of (key, value) to keep order."""
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+", b"-"):
            return rest.decode()
        if t == b":":
            return int(rest)
        if t in (b"$", b"="):
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if t in (b"*", b"~", b">"):
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        if t == b"%":
            return [(self.read(), self.read()) for _ in range(int(rest))]
        if t == b"_":
            return None
        raise ValueError("unexpected reply type %r" % line)


def raw_reply(port, resp3, *args):
    """Exact bytes of the reply to one command on a fresh connection."""
    c = Conn(port)
    if resp3:
        c.send("HELLO", "3")
        c.read()
    c.send(*args)
    # Parse once to learn where the reply ends, keeping a copy of the bytes seen.
    seen = bytearray()
    fill = c._fill

    def recording_fill():
        before = len(c.buf)
        fill()
        seen.extend(c.buf[before:])

    seen.extend(c.buf)
    c._fill = recording_fill
    c.read()
    c.sock.close()
    return bytes(seen[: len(seen) - len(c.buf)])


def esc(s):
    if s is None:
        return "\\N"
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def check_keys(pairs, allowed, what):
    keys = [k for k, _ in pairs]
    assert all(k in allowed for k in keys), (what, keys)
    assert keys == sorted(keys, key=allowed.index), ("unexpected key order", what, keys)


def emit_args(lines, args, depth):
    for pairs in args:
        check_keys(pairs, ARG_KEYS, "argument")
        a = dict(pairs)
        ksi = a.get("key_spec_index")
        flags = a.get("flags")
        lines.append("\t".join([
            "a", str(depth), esc(a["name"]), esc(a["type"]),
            "\\N" if ksi is None else str(ksi), esc(a.get("token")), esc(a.get("summary")),
            esc(a.get("since")), esc(a.get("deprecated_since")),
            ",".join(flags) if flags else "",
        ]))
        # Redis writes "arguments" for every oneof/block argument and never otherwise.
        assert ("arguments" in a) == (a["type"] in ("oneof", "block")), a
        if "arguments" in a:
            emit_args(lines, a["arguments"], depth + 1)


def emit_command(lines, name, pairs):
    check_keys(pairs, CMD_KEYS, name)
    d = dict(pairs)
    lines.append("C\t" + esc(name))
    for key, tag in [("summary", "s"), ("since", "v"), ("group", "g"), ("complexity", "x"),
                     ("module", "m"), ("deprecated_since", "d"), ("replaced_by", "r")]:
        if key in d:
            lines.append(tag + "\t" + esc(d[key]))
    if "doc_flags" in d:
        assert d["doc_flags"], name
        lines.append("f\t" + "\t".join(esc(f) for f in d["doc_flags"]))
    for since, changes in d.get("history") or []:
        lines.append("h\t%s\t%s" % (esc(since), esc(changes)))
    # Presence of these keys is inferred from non-emptiness when parsing.
    if "history" in d:
        assert d["history"], name
    if "arguments" in d:
        assert d["arguments"], name
        emit_args(lines, d["arguments"], 0)
    if "subcommands" in d:
        assert d["subcommands"], name
        for sub, sub_pairs in d["subcommands"]:
            emit_command(lines, sub, sub_pairs)
    lines.append(".")


def ping(port):
    try:
        c = Conn(port)
        c.send("PING")
        return c.read() == "PONG"
    except OSError:
        return False


def main():
    proc = None
    if not ping(PORT):
        proc = subprocess.Popen(
            ["redis-server", "--port", str(PORT), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            if ping(PORT):
                break
            time.sleep(0.05)
    try:
        c = Conn(PORT)
        c.send("INFO", "server")
        version = [l for l in c.read().splitlines() if l.startswith("redis_version:")][0]
        c.send("HELLO", "3")
        c.read()
        c.send("COMMAND", "DOCS")
        docs = c.read()
        lines = ["# Generated by scripts/gen-command-docs.py from " + version.replace(":", " ")]
        for name, pairs in docs:
            emit_command(lines, name, pairs)
        os.makedirs(os.path.join(OUT_DIR, "fixtures"), exist_ok=True)
        with open(os.path.join(OUT_DIR, "commands.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        for name in FIXTURES:
            base = os.path.join(OUT_DIR, "fixtures", name.replace("|", "_"))
            for resp3, ext in [(False, ".resp2"), (True, ".resp3")]:
                with open(base + ext, "wb") as f:
                    f.write(raw_reply(PORT, resp3, "COMMAND", "DOCS", name))
        print("wrote %d commands (%s)" % (len(docs), version), file=sys.stderr)
    finally:
        if proc:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
