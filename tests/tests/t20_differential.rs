//! t20: differential testing against the real redis-server.
//!
//! proptest generates command sequences over a small key space (`k0`..`k4`), small values,
//! integers and floats, one generator per command family. Each sequence runs on a fresh
//! connection to redoubt and to redis-server 7 (after `FLUSHALL`), command by command, and
//! every reply is compared with `redoubt_tests::compare` (exact unless Redis leaves the
//! order unspecified or the reply is random or time-dependent). After the sequence, the
//! whole keyspace of databases 0 and 1 is read back from both servers and compared too.
//! Each family runs in RESP2 and in RESP3 (`HELLO 3`).
//!
//! Environment:
//! * `PROPTEST_CASES` (default 64): sequences per family and protocol;
//! * `PROPTEST_MAX_SHRINK_ITERS` (default 300): shrinking effort after a mismatch;
//! * `DIFF_MAX_LEN` (default 24): longest sequence;
//! * `DIFF_SEED` (default: fixed per test): a number, or `random`;
//! * `DIFF_TRACE=1`: print every sequence with the oracle's replies;
//! * `DIFF_SKIP_UNKNOWN=1`: leave out commands redoubt does not know yet (`COMMAND INFO`
//!   answers nil), so the families under construction do not hide everything else;
//! * `DIFF_SURVEY=1`: no shrinking; run every case and print a table of the commands whose
//!   replies differ (first mismatch of each case, and later ones once states diverged);
//!   `DIFF_SURVEY_OUT=file` also appends each table to that file
//!   (`scripts/diff-survey.sh` does all this for every family).
//!
//! A failure prints the first mismatching command, both replies, and the whole (shrunk)
//! sequence with the oracle's replies, ready to paste into redis-cli.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use redoubt_tests::compare::{compare_by_rule, compare_exec_by, hash_rule, rule_for, Rule};
use redoubt_tests::{render_command, start_redoubt, Conn, ConnError, Oracle, Value};

type Argv = Vec<String>;
type Gen = fn(&mut P) -> Argv;

macro_rules! a {
    ($($e:expr),* $(,)?) => { vec![$($e.to_string()),*] };
}

// ---------------------------------------------------------------------------------------
// value pools
// ---------------------------------------------------------------------------------------

const KEYS: &[&str] = &["k0", "k1", "k2", "k3", "k4"];
const VALS: &[&str] = &[
    "a",
    "b",
    "abc",
    "hello world",
    "0",
    "1",
    "-1",
    "10",
    "42",
    "3.5",
    "-0.5",
    "1e3",
    "",
    "xyz",
    "foobar",
    "7",
    "9223372036854775807",
    "-9223372036854775808",
];
const ODD_VALS: &[&str] = &[
    " 7",
    "007",
    "+1",
    "9223372036854775808",
    "a\0b",
    "\u{e9}t\u{e9}",
    "12345678901234567890",
    "0x10",
    "1.0",
    "-0",
    "inf",
    "nan",
    "\r\n",
    "\u{ff}\u{fe}",
    // longer than hash-max-listpack-value / zset-max-listpack-value (64) and embstr (44)
    "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv",
];
const INTS: &[&str] = &["0", "1", "-1", "2", "3", "5", "10", "-10", "100", "1000000", "-7"];
const ODD_INTS: &[&str] = &[
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "abc",
    "1.5",
    "",
    " 1",
    "+1",
    "0x10",
    "-0",
    "1e3",
];
const FLOATS: &[&str] =
    &["0", "1", "-1", "0.5", "1.5", "-2.25", "3.14159", "1e3", "1e-3", "2.5e+2", "10.0", "0.1", "7"];
const ODD_FLOATS: &[&str] =
    &["inf", "-inf", "+inf", "nan", "abc", "", "1.7976931348623157e308", "5e-324", " 1", "1e400", "0x1p3"];
const MEMBERS: &[&str] = &["a", "b", "c", "d", "1", "2", "3", "-5", "10", "x y", ""];
const FIELDS: &[&str] = &["f1", "f2", "f3", "a", "1", ""];
const COUNTS: &[&str] = &["0", "1", "2", "3", "5", "-1", "-2", "-5", "10", "100"];
const IDX: &[&str] = &["0", "1", "2", "3", "5", "10", "-1", "-2", "-3", "-10", "100", "-100"];
const JUNK: &[&str] = &["abc", "-1", "", "nan", "99999999999999999999", "NX", "WITHSCORES", "x y"];

/// Draws choices from the numbers proptest generated (shrinks toward the first choice).
struct P<'a> {
    r: &'a [u32],
    i: usize,
    /// Position of this command in its sequence: keeps relative TTLs of a sequence distinct,
    /// so `EXPIRE k 100 GT` never races an earlier `EXPIRE k 100` within the same ms.
    idx: u64,
    /// Unix ms at the start of the sequence (for EXAT/PXAT/EXPIREAT).
    now_ms: u64,
}

impl P<'_> {
    fn n(&mut self) -> u32 {
        let v = self.r.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        v
    }
    fn below(&mut self, n: usize) -> usize {
        self.n() as usize % n.max(1)
    }
    fn pick(&mut self, xs: &[&str]) -> String {
        xs[self.below(xs.len())].to_string()
    }
    /// One chance in `k` (never for the shrunk value 0).
    fn chance(&mut self, k: u32) -> bool {
        self.n() % k == k - 1
    }
    fn key(&mut self) -> String {
        self.pick(KEYS)
    }
    fn keys(&mut self, min: usize, max: usize) -> Vec<String> {
        let n = min + self.below(max - min + 1);
        (0..n).map(|_| self.key()).collect()
    }
    fn val(&mut self) -> String {
        if self.chance(5) {
            self.pick(ODD_VALS)
        } else {
            self.pick(VALS)
        }
    }
    fn int(&mut self) -> String {
        if self.chance(8) {
            self.pick(ODD_INTS)
        } else {
            self.pick(INTS)
        }
    }
    fn float(&mut self) -> String {
        if self.chance(8) {
            self.pick(ODD_FLOATS)
        } else {
            self.pick(FLOATS)
        }
    }
    fn member(&mut self) -> String {
        if self.chance(12) {
            self.pick(ODD_VALS)
        } else {
            self.pick(MEMBERS)
        }
    }
    fn field(&mut self) -> String {
        self.pick(FIELDS)
    }
    fn count(&mut self) -> String {
        self.pick(COUNTS)
    }
    fn idx(&mut self) -> String {
        self.pick(IDX)
    }
    /// A relative TTL in seconds (distinct per command, far from every other TTL pool).
    fn ttl_s(&mut self) -> String {
        if self.chance(8) {
            return self.pick(&["0", "-1", "abc", "9223372036854775807", "1.5"]);
        }
        let base = [100u64, 200, 1000][self.below(3)];
        (base + 3 * self.idx).to_string()
    }
    fn ttl_ms(&mut self) -> String {
        if self.chance(8) {
            return self.pick(&["0", "-5", "abc", "9223372036854775807"]);
        }
        let base = [150_000u64, 250_000, 20_000][self.below(3)];
        (base + 3000 * self.idx).to_string()
    }
    fn at_s(&mut self) -> String {
        if self.chance(6) {
            return self.pick(&["1", "0", "-1"]); // in the past: deletes
        }
        (self.now_ms / 1000 + [400u64, 4000][self.below(2)] + 3 * self.idx).to_string()
    }
    fn at_ms(&mut self) -> String {
        if self.chance(6) {
            return self.pick(&["1", "1000"]);
        }
        (self.now_ms + [450_000u64, 4_500_000][self.below(2)] + 3000 * self.idx).to_string()
    }
    fn timeout(&mut self) -> String {
        self.pick(&["0.01", "0.02"])
    }
}

fn push_opt(p: &mut P, a: &mut Argv, k: u32, words: &[&str]) {
    if p.chance(k) {
        a.push(p.pick(words));
    }
}

// ---------------------------------------------------------------------------------------
// generators per family
// ---------------------------------------------------------------------------------------

/// Writes of other types on the same keys: WRONGTYPE paths in every family.
fn cross() -> Vec<Gen> {
    vec![
        |p| a!["SET", p.key(), p.val()],
        |p| a!["RPUSH", p.key(), p.member(), p.member()],
        |p| a!["SADD", p.key(), p.member()],
        |p| a!["HSET", p.key(), p.field(), p.val()],
        |p| a!["ZADD", p.key(), p.pick(FLOATS), p.member()],
        |p| a!["DEL", p.key()],
    ]
}

fn set_expiry(p: &mut P, a: &mut Argv, allow_keepttl: bool) {
    match p.below(7) {
        0 | 1 => {}
        2 => a.extend([p.pick(&["EX", "ex"]), p.ttl_s()]),
        3 => a.extend(["PX".to_string(), p.ttl_ms()]),
        4 => a.extend(["EXAT".to_string(), p.at_s()]),
        5 => a.extend(["PXAT".to_string(), p.at_ms()]),
        _ if allow_keepttl => a.push("KEEPTTL".into()),
        _ => a.push("PERSIST".into()),
    }
}

fn strings() -> Vec<Gen> {
    let mut v: Vec<Gen> = vec![
        |p| a!["GET", p.key()],
        |p| a!["SET", p.key(), p.val()],
        |p| {
            let mut a = a!["SET", p.key(), p.val()];
            push_opt(p, &mut a, 3, &["NX", "XX", "nx"]);
            push_opt(p, &mut a, 3, &["GET"]);
            set_expiry(p, &mut a, true);
            // Sometimes a second, conflicting option.
            push_opt(p, &mut a, 8, &["NX", "XX", "KEEPTTL", "EX", "GET", "PX"]);
            a
        },
        |p| a!["SETNX", p.key(), p.val()],
        |p| a!["SETEX", p.key(), p.ttl_s(), p.val()],
        |p| a!["PSETEX", p.key(), p.ttl_ms(), p.val()],
        |p| a!["GETSET", p.key(), p.val()],
        |p| a!["GETDEL", p.key()],
        |p| {
            let mut a = a!["GETEX", p.key()];
            set_expiry(p, &mut a, false);
            a
        },
        |p| {
            let mut a = a!["MSET"];
            for _ in 0..1 + p.below(3) {
                a.extend([p.key(), p.val()]);
            }
            a
        },
        |p| {
            let mut a = a!["MSETNX"];
            for _ in 0..1 + p.below(3) {
                a.extend([p.key(), p.val()]);
            }
            a
        },
        |p| {
            let mut a = a!["MGET"];
            a.extend(p.keys(1, 4));
            a
        },
        |p| a!["INCR", p.key()],
        |p| a!["DECR", p.key()],
        |p| a!["INCRBY", p.key(), p.int()],
        |p| a!["DECRBY", p.key(), p.int()],
        |p| a!["INCRBYFLOAT", p.key(), p.float()],
        |p| a!["APPEND", p.key(), p.val()],
        |p| a!["STRLEN", p.key()],
        |p| a!["GETRANGE", p.key(), p.idx(), p.idx()],
        |p| a!["SUBSTR", p.key(), p.idx(), p.idx()],
        |p| a!["SETRANGE", p.key(), p.pick(&["0", "1", "3", "10", "-1", "abc", "536870912"]), p.val()],
        |p| {
            let mut a = a!["LCS", p.key(), p.key()];
            match p.below(5) {
                0 | 1 => {}
                2 => a.push("LEN".into()),
                3 => a.push("IDX".into()),
                _ => {
                    a.push("IDX".into());
                    a.extend(["MINMATCHLEN".into(), p.pick(&["0", "1", "2", "4", "-1"])]);
                    push_opt(p, &mut a, 2, &["WITHMATCHLEN"]);
                }
            }
            push_opt(p, &mut a, 8, &["LEN", "WITHMATCHLEN", "FOO"]);
            a
        },
        |p| a!["SET", p.key(), p.pick(&["ohmytext", "mynewtext", "abcdef", "xbcdy", "hello", "help"])],
        |p| a!["TTL", p.key()],
        |p| a!["PTTL", p.key()],
        |p| a!["OBJECT", "ENCODING", p.key()],
        |p| a!["EXISTS", p.key()],
    ];
    v.extend(cross());
    v
}

fn keys() -> Vec<Gen> {
    fn expire_flags(p: &mut P, a: &mut Argv) {
        push_opt(p, a, 2, &["NX", "XX", "GT", "LT", "gt"]);
        push_opt(p, a, 10, &["NX", "XX", "GT", "LT", "FOO"]);
    }
    let mut v: Vec<Gen> = vec![
        |p| a!["EXISTS", p.key()],
        |p| {
            let mut a = a!["DEL"];
            a.extend(p.keys(1, 3));
            a
        },
        |p| {
            let mut a = a!["UNLINK"];
            a.extend(p.keys(1, 3));
            a
        },
        |p| {
            let mut a = a!["EXISTS"];
            a.extend(p.keys(1, 4));
            a
        },
        |p| {
            let mut a = a!["TOUCH"];
            a.extend(p.keys(1, 3));
            a
        },
        |p| {
            let mut a = a!["EXPIRE", p.key(), p.ttl_s()];
            expire_flags(p, &mut a);
            a
        },
        |p| {
            let mut a = a!["PEXPIRE", p.key(), p.ttl_ms()];
            expire_flags(p, &mut a);
            a
        },
        |p| {
            let mut a = a!["EXPIREAT", p.key(), p.at_s()];
            expire_flags(p, &mut a);
            a
        },
        |p| {
            let mut a = a!["PEXPIREAT", p.key(), p.at_ms()];
            expire_flags(p, &mut a);
            a
        },
        |p| a!["TTL", p.key()],
        |p| a!["PTTL", p.key()],
        |p| a!["EXPIRETIME", p.key()],
        |p| a!["PEXPIRETIME", p.key()],
        |p| a!["PERSIST", p.key()],
        |p| a!["TYPE", p.key()],
        |p| a!["RENAME", p.key(), p.key()],
        |p| a!["RENAMENX", p.key(), p.key()],
        |p| {
            let mut a = a!["COPY", p.key(), p.key()];
            if p.chance(3) {
                a.extend(["DB".into(), p.pick(&["0", "1", "16", "x"])]);
            }
            push_opt(p, &mut a, 2, &["REPLACE"]);
            a
        },
        |p| a!["MOVE", p.key(), p.pick(&["1", "0", "16", "x"])],
        |p| a!["SELECT", p.pick(&["0", "1", "0", "1", "16", "x"])],
        |p| a!["SWAPDB", p.pick(&["0", "1"]), p.pick(&["1", "0", "16"])],
        |_| a!["DBSIZE"],
        |p| a!["KEYS", p.pick(&["*", "k*", "k[0-2]", "?1", "k\\*", "*0", "[^k]*", "k[!1]"])],
        |p| {
            let mut a = a!["SCAN", "0"];
            if p.chance(2) {
                a.extend(["MATCH".into(), p.pick(&["*", "k[12]", "*3"])]);
            }
            a.extend(["COUNT".into(), "1000".into()]);
            if p.chance(3) {
                a.extend(["TYPE".into(), p.pick(&["string", "list", "set", "zset", "hash", "nosuchtype"])]);
            }
            a
        },
        |p| a!["OBJECT", "ENCODING", p.key()],
        |_| a!["RANDOMKEY"],
        |p| a!["SET", p.key(), p.val(), "EX", p.ttl_s()],
        |p| a!["SET", p.key(), p.pick(&["1", "12345", "abc", "hello world"])],
        |p| a!["RPUSH", p.key(), "a", "b", "c"],
        |p| a!["SADD", p.key(), p.pick(&["1", "2", "a"]), p.pick(&["3", "b"])],
        |p| a!["HSET", p.key(), "f", p.val()],
        |p| a!["ZADD", p.key(), "1", p.member(), "2", p.member()],
        |p| a!["FLUSHDB", p.pick(&["", "SYNC", "ASYNC"])].into_iter().filter(|s| !s.is_empty()).collect(),
    ];
    v.extend(cross());
    v
}

fn hashes() -> Vec<Gen> {
    let mut v: Vec<Gen> = vec![
        |p| a!["HGET", p.key(), p.field()],
        |p| {
            let mut a = a!["HSET", p.key()];
            for _ in 0..1 + p.below(3) {
                a.extend([p.field(), p.val()]);
            }
            a
        },
        |p| a!["HSETNX", p.key(), p.field(), p.val()],
        |p| {
            let mut a = a!["HMSET", p.key()];
            for _ in 0..1 + p.below(2) {
                a.extend([p.field(), p.val()]);
            }
            a
        },
        |p| {
            let mut a = a!["HMGET", p.key()];
            for _ in 0..1 + p.below(3) {
                a.push(p.field());
            }
            a
        },
        |p| {
            let mut a = a!["HDEL", p.key()];
            for _ in 0..1 + p.below(2) {
                a.push(p.field());
            }
            a
        },
        |p| a!["HLEN", p.key()],
        |p| a!["HSTRLEN", p.key(), p.field()],
        |p| a!["HEXISTS", p.key(), p.field()],
        |p| a!["HINCRBY", p.key(), p.field(), p.int()],
        |p| a!["HINCRBYFLOAT", p.key(), p.field(), p.float()],
        |p| a!["HKEYS", p.key()],
        |p| a!["HVALS", p.key()],
        |p| a!["HGETALL", p.key()],
        |p| {
            let mut a = a!["HRANDFIELD", p.key()];
            if p.chance(2) {
                a.push(p.count());
                push_opt(p, &mut a, 2, &["WITHVALUES"]);
            }
            a
        },
        |p| {
            let mut a = a!["HSCAN", p.key(), "0"];
            if p.chance(3) {
                a.extend(["MATCH".into(), p.pick(&["f*", "*", "[a1]"])]);
            }
            a.extend(["COUNT".into(), "1000".into()]);
            a
        },
        |p| a!["OBJECT", "ENCODING", p.key()],
    ];
    v.extend(cross());
    v
}

fn lists() -> Vec<Gen> {
    fn lr(p: &mut P) -> String {
        p.pick(&["LEFT", "RIGHT", "left"])
    }
    let mut v: Vec<Gen> = vec![
        |p| a!["LRANGE", p.key(), p.idx(), p.idx()],
        |p| {
            let mut a = a![p.pick(&["LPUSH", "RPUSH"]), p.key()];
            for _ in 0..1 + p.below(3) {
                a.push(p.member());
            }
            a
        },
        |p| a![p.pick(&["LPUSHX", "RPUSHX"]), p.key(), p.member()],
        |p| {
            let mut a = a![p.pick(&["LPOP", "RPOP"]), p.key()];
            if p.chance(2) {
                a.push(p.count());
            }
            a
        },
        |p| a!["LLEN", p.key()],
        |p| a!["LRANGE", p.key(), "0", "-1"],
        |p| a!["LINDEX", p.key(), p.idx()],
        |p| a!["LSET", p.key(), p.idx(), p.member()],
        |p| a!["LINSERT", p.key(), p.pick(&["BEFORE", "AFTER", "after", "MIDDLE"]), p.member(), p.member()],
        |p| a!["LREM", p.key(), p.count(), p.member()],
        |p| a!["LTRIM", p.key(), p.idx(), p.idx()],
        |p| {
            let mut a = a!["LPOS", p.key(), p.member()];
            if p.chance(2) {
                a.extend(["RANK".into(), p.pick(&["1", "2", "-1", "-2", "0"])]);
            }
            if p.chance(2) {
                a.extend(["COUNT".into(), p.pick(&["0", "1", "2", "-1"])]);
            }
            if p.chance(3) {
                a.extend(["MAXLEN".into(), p.pick(&["0", "1", "3", "-1"])]);
            }
            a
        },
        |p| a!["LMOVE", p.key(), p.key(), lr(p), lr(p)],
        |p| a!["RPOPLPUSH", p.key(), p.key()],
        |p| {
            let ks = p.keys(1, 3);
            let mut a = a!["LMPOP", ks.len()];
            a.extend(ks);
            a.push(lr(p));
            if p.chance(2) {
                a.extend(["COUNT".into(), p.pick(&["1", "2", "10", "0", "-1"])]);
            }
            a
        },
        |p| {
            let mut a = a![p.pick(&["BLPOP", "BRPOP"])];
            a.extend(p.keys(1, 2));
            a.push(p.timeout());
            a
        },
        |p| a!["BLMOVE", p.key(), p.key(), lr(p), lr(p), p.timeout()],
        |p| a!["BRPOPLPUSH", p.key(), p.key(), p.timeout()],
        |p| {
            let ks = p.keys(1, 2);
            let mut a = a!["BLMPOP", p.timeout(), ks.len()];
            a.extend(ks);
            a.push(lr(p));
            if p.chance(2) {
                a.extend(["COUNT".into(), p.pick(&["1", "3"])]);
            }
            a
        },
        |p| a!["OBJECT", "ENCODING", p.key()],
    ];
    v.extend(cross());
    v
}

fn sets() -> Vec<Gen> {
    let mut v: Vec<Gen> = vec![
        |p| a!["SMEMBERS", p.key()],
        |p| {
            let mut a = a!["SADD", p.key()];
            for _ in 0..1 + p.below(4) {
                a.push(p.member());
            }
            a
        },
        |p| {
            let mut a = a!["SADD", p.key()];
            for _ in 0..1 + p.below(4) {
                a.push(p.pick(&["1", "2", "3", "-5", "10", "100", "9223372036854775807"]));
            }
            a
        },
        |p| {
            let mut a = a!["SREM", p.key()];
            for _ in 0..1 + p.below(2) {
                a.push(p.member());
            }
            a
        },
        |p| a!["SCARD", p.key()],
        |p| a!["SISMEMBER", p.key(), p.member()],
        |p| a!["SMISMEMBER", p.key(), p.member(), p.member()],
        |p| {
            let mut a = a![p.pick(&["SINTER", "SUNION", "SDIFF"])];
            a.extend(p.keys(1, 3));
            a
        },
        |p| {
            let mut a = a![p.pick(&["SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"]), p.key()];
            a.extend(p.keys(1, 3));
            a
        },
        |p| {
            let ks = p.keys(1, 3);
            let mut a = a!["SINTERCARD", ks.len()];
            a.extend(ks);
            if p.chance(2) {
                a.extend(["LIMIT".into(), p.pick(&["0", "1", "2", "-1"])]);
            }
            a
        },
        |p| a!["SMOVE", p.key(), p.key(), p.member()],
        |p| {
            let mut a = a!["SPOP", p.key()];
            if p.chance(2) {
                a.push(p.pick(&["0", "1", "2", "5", "-1"]));
            }
            a
        },
        |p| {
            let mut a = a!["SRANDMEMBER", p.key()];
            if p.chance(2) {
                a.push(p.count());
            }
            a
        },
        |p| {
            let mut a = a!["SSCAN", p.key(), "0"];
            if p.chance(3) {
                a.extend(["MATCH".into(), p.pick(&["*", "[ab]", "1*"])]);
            }
            a.extend(["COUNT".into(), "1000".into()]);
            a
        },
        |p| a!["OBJECT", "ENCODING", p.key()],
    ];
    v.extend(cross());
    v
}

fn zsets() -> Vec<Gen> {
    fn score(p: &mut P) -> String {
        if p.chance(10) {
            p.pick(&["nan", "abc", "", "+inf", "-inf", "1e400"])
        } else {
            p.pick(&["0", "1", "2", "2.5", "-3", "1e2", "0.1", "3.0", "1", "2"])
        }
    }
    fn zmember(p: &mut P) -> String {
        p.pick(&["a", "b", "c", "d", "e", "1", "x y", ""])
    }
    fn smin(p: &mut P) -> String {
        p.pick(&["-inf", "+inf", "0", "1", "(1", "2.5", "(2.5", "-3", "10", "abc", "(", "inf"])
    }
    fn lmin(p: &mut P) -> String {
        p.pick(&["-", "+", "[a", "(a", "[c", "(b", "[", "a", "[x y"])
    }
    fn nkeys(p: &mut P, a: &mut Argv) {
        let ks = p.keys(1, 3);
        a.push(ks.len().to_string());
        a.extend(ks);
    }
    let mut v: Vec<Gen> = vec![
        |p| a!["ZRANGE", p.key(), "0", "-1", "WITHSCORES"],
        |p| {
            let mut a = a!["ZADD", p.key()];
            push_opt(p, &mut a, 4, &["NX", "XX"]);
            push_opt(p, &mut a, 4, &["GT", "LT"]);
            push_opt(p, &mut a, 4, &["CH"]);
            push_opt(p, &mut a, 6, &["INCR"]);
            for _ in 0..1 + p.below(3) {
                a.extend([score(p), zmember(p)]);
            }
            a
        },
        |p| a!["ZINCRBY", p.key(), score(p), zmember(p)],
        |p| a!["ZREM", p.key(), zmember(p), zmember(p)],
        |p| a!["ZCARD", p.key()],
        |p| a!["ZSCORE", p.key(), zmember(p)],
        |p| a!["ZMSCORE", p.key(), zmember(p), zmember(p)],
        |p| a![p.pick(&["ZRANK", "ZREVRANK"]), p.key(), zmember(p)],
        |p| a!["ZCOUNT", p.key(), smin(p), smin(p)],
        |p| a!["ZLEXCOUNT", p.key(), lmin(p), lmin(p)],
        |p| {
            let mut a = a!["ZRANGE", p.key()];
            let by = p.below(3);
            match by {
                0 => a.extend([p.idx(), p.idx()]),
                1 => a.extend([smin(p), smin(p), "BYSCORE".into()]),
                _ => a.extend([lmin(p), lmin(p), "BYLEX".into()]),
            }
            push_opt(p, &mut a, 3, &["REV"]);
            if p.chance(3) {
                a.extend(["LIMIT".into(), p.pick(&["0", "1", "-1"]), p.pick(&["1", "2", "-1", "0"])]);
            }
            push_opt(p, &mut a, 2, &["WITHSCORES"]);
            a
        },
        |p| {
            let mut a = a![p.pick(&["ZRANGEBYSCORE", "ZREVRANGEBYSCORE"]), p.key(), smin(p), smin(p)];
            push_opt(p, &mut a, 2, &["WITHSCORES"]);
            if p.chance(3) {
                a.extend(["LIMIT".into(), p.pick(&["0", "1"]), p.pick(&["1", "2", "-1"])]);
            }
            a
        },
        |p| {
            let mut a = a![p.pick(&["ZRANGEBYLEX", "ZREVRANGEBYLEX"]), p.key(), lmin(p), lmin(p)];
            if p.chance(3) {
                a.extend(["LIMIT".into(), p.pick(&["0", "1"]), p.pick(&["1", "2", "-1"])]);
            }
            a
        },
        |p| {
            let mut a = a!["ZREVRANGE", p.key(), p.idx(), p.idx()];
            push_opt(p, &mut a, 2, &["WITHSCORES"]);
            a
        },
        |p| {
            let mut a = a!["ZRANGESTORE", p.key(), p.key()];
            match p.below(2) {
                0 => a.extend([p.idx(), p.idx()]),
                _ => a.extend([smin(p), smin(p), "BYSCORE".into()]),
            }
            push_opt(p, &mut a, 3, &["REV"]);
            a
        },
        |p| {
            let mut a = a![p.pick(&["ZPOPMIN", "ZPOPMAX"]), p.key()];
            if p.chance(2) {
                a.push(p.pick(&["0", "1", "2", "10", "-1"]));
            }
            a
        },
        |p| {
            let mut a = a!["ZMPOP"];
            nkeys(p, &mut a);
            a.push(p.pick(&["MIN", "MAX", "min"]));
            if p.chance(2) {
                a.extend(["COUNT".into(), p.pick(&["1", "2", "10", "0"])]);
            }
            a
        },
        |p| {
            let mut a = a![p.pick(&["BZPOPMIN", "BZPOPMAX"])];
            a.extend(p.keys(1, 2));
            a.push(p.timeout());
            a
        },
        |p| {
            let mut a = a!["BZMPOP", p.timeout()];
            nkeys(p, &mut a);
            a.push(p.pick(&["MIN", "MAX"]));
            a
        },
        |p| a!["ZREMRANGEBYRANK", p.key(), p.idx(), p.idx()],
        |p| a!["ZREMRANGEBYSCORE", p.key(), smin(p), smin(p)],
        |p| a!["ZREMRANGEBYLEX", p.key(), lmin(p), lmin(p)],
        |p| {
            let mut a = a![p.pick(&["ZUNIONSTORE", "ZINTERSTORE"]), p.key()];
            let ks = p.keys(1, 3);
            a.push(ks.len().to_string());
            let n = ks.len();
            a.extend(ks);
            if p.chance(3) {
                a.push("WEIGHTS".into());
                for _ in 0..n {
                    a.push(p.pick(&["1", "2", "0.5", "-1", "0"]));
                }
            }
            if p.chance(3) {
                a.extend(["AGGREGATE".into(), p.pick(&["SUM", "MIN", "MAX", "AVG"])]);
            }
            a
        },
        |p| {
            let mut a = a!["ZDIFFSTORE", p.key()];
            nkeys(p, &mut a);
            a
        },
        |p| {
            let mut a = a![p.pick(&["ZUNION", "ZINTER", "ZDIFF"])];
            nkeys(p, &mut a);
            push_opt(p, &mut a, 2, &["WITHSCORES"]);
            a
        },
        |p| {
            let mut a = a!["ZINTERCARD"];
            nkeys(p, &mut a);
            if p.chance(2) {
                a.extend(["LIMIT".into(), p.pick(&["0", "1", "-1"])]);
            }
            a
        },
        |p| {
            let mut a = a!["ZRANDMEMBER", p.key()];
            if p.chance(2) {
                a.push(p.count());
                push_opt(p, &mut a, 2, &["WITHSCORES"]);
            }
            a
        },
        |p| {
            let mut a = a!["ZSCAN", p.key(), "0"];
            if p.chance(3) {
                a.extend(["MATCH".into(), p.pick(&["*", "[ab]"])]);
            }
            a.extend(["COUNT".into(), "1000".into()]);
            a
        },
        |p| a!["OBJECT", "ENCODING", p.key()],
    ];
    v.extend(cross());
    v
}

fn bits() -> Vec<Gen> {
    fn off(p: &mut P) -> String {
        if p.chance(10) {
            p.pick(&["-1", "4294967296", "abc", "1.5"])
        } else {
            (p.below(80)).to_string()
        }
    }
    fn ftype(p: &mut P) -> String {
        if p.chance(10) {
            p.pick(&["u64", "i65", "x8", "i0", ""])
        } else {
            p.pick(&["i1", "u1", "i5", "u4", "i8", "u8", "i16", "u15", "i32", "u31", "i63", "u63", "i64"])
        }
    }
    fn foff(p: &mut P) -> String {
        p.pick(&["0", "1", "5", "8", "13", "#0", "#1", "#2", "-1", "100"])
    }
    fn range_unit(p: &mut P, a: &mut Argv) {
        push_opt(p, a, 2, &["BYTE", "BIT", "bit", "WORD"]);
    }
    let mut v: Vec<Gen> = vec![
        |p| a!["GETBIT", p.key(), off(p)],
        |p| a!["SETBIT", p.key(), off(p), p.pick(&["0", "1", "1", "2", "-1"])],
        |p| {
            let mut a = a!["BITCOUNT", p.key()];
            if p.chance(2) {
                a.extend([p.idx(), p.idx()]);
                range_unit(p, &mut a);
            }
            a
        },
        |p| {
            let mut a = a!["BITPOS", p.key(), p.pick(&["0", "1", "2"])];
            if p.chance(2) {
                a.push(p.idx());
                if p.chance(2) {
                    a.push(p.idx());
                    range_unit(p, &mut a);
                }
            }
            a
        },
        |p| {
            let mut a = a!["BITOP", p.pick(&["AND", "OR", "XOR", "and", "NOT", "NAND"]), p.key()];
            a.extend(p.keys(1, 3));
            a
        },
        |p| {
            let mut a = a!["BITFIELD", p.key()];
            for _ in 0..1 + p.below(3) {
                match p.below(4) {
                    0 => a.extend(["GET".into(), ftype(p), foff(p)]),
                    1 => a.extend(["SET".into(), ftype(p), foff(p), p.int()]),
                    2 => a.extend(["INCRBY".into(), ftype(p), foff(p), p.pick(&["1", "-1", "100", "-200", "1000000"])]),
                    _ => a.extend(["OVERFLOW".into(), p.pick(&["WRAP", "SAT", "FAIL", "fail", "NONE"])]),
                }
            }
            a
        },
        |p| a!["BITFIELD_RO", p.key(), "GET", ftype(p), foff(p)],
        |p| a!["SET", p.key(), p.pick(&["\u{ff}\u{f0}\u{0}", "foobar", "abc", "\0\0\0\u{1}", "", "1", "\u{7f}"])],
        |p| a!["GET", p.key()],
        |p| a!["STRLEN", p.key()],
        |p| a!["APPEND", p.key(), p.pick(&["\u{ff}", "a", "\0"])],
    ];
    v.extend(cross());
    v
}

fn sort() -> Vec<Gen> {
    // k0 list, k1 set, k2 zset; k3/k4 are STORE destinations (lists); w_<e> weights,
    // h_<e> hashes with field f. Element pool mostly numeric.
    fn elem(p: &mut P) -> String {
        if p.chance(6) {
            p.pick(&["a", "b", "B", "10a", ""])
        } else {
            p.pick(&["1", "2", "3", "10", "-1", "2.5", "7", "0"])
        }
    }
    fn weight(p: &mut P) -> String {
        if p.chance(8) {
            p.pick(&["x", "", "inf"])
        } else {
            p.pick(&["5", "4", "3", "2", "1", "0", "-1", "1.5", "100"])
        }
    }
    let gens: Vec<Gen> = vec![
        |p| {
            let read_only = p.chance(4);
            let key = p.pick(&["k0", "k1", "k2", "k3", "k4"]);
            let mut a = a![if read_only { "SORT_RO" } else { "SORT" }, key.clone()];
            let mut alpha_allowed = true;
            match p.below(5) {
                0 | 1 => {}
                2 => {
                    a.extend(["BY".into(), p.pick(&["w_*", "h_*->f", "nokey_*", "w_*->f"])]);
                    alpha_allowed = false; // ALPHA with BY ties has no defined order
                }
                3 if key != "k1" => a.extend(["BY".into(), "nosort".into()]),
                _ => {}
            }
            if p.chance(3) {
                a.extend(["LIMIT".into(), p.pick(&["0", "1", "2", "-1"]), p.pick(&["1", "2", "3", "-1", "0"])]);
            }
            for _ in 0..p.below(3) {
                a.extend(["GET".into(), p.pick(&["#", "w_*", "h_*->f", "nokey_*", "#"])]);
            }
            push_opt(p, &mut a, 3, &["ASC", "DESC"]);
            if alpha_allowed {
                push_opt(p, &mut a, 3, &["ALPHA"]);
            }
            if !read_only && p.chance(4) {
                a.extend(["STORE".into(), p.pick(&["k3", "k4"])]);
            }
            a
        },
        |p| {
            let mut a = a![p.pick(&["RPUSH", "LPUSH"]), "k0"];
            for _ in 0..1 + p.below(4) {
                a.push(elem(p));
            }
            a
        },
        |p| {
            let mut a = a!["SADD", "k1"];
            for _ in 0..1 + p.below(4) {
                a.push(elem(p));
            }
            a
        },
        |p| a!["ZADD", "k2", p.pick(&["1", "2", "3", "0", "-1", "1.5"]), elem(p)],
        |p| a!["SET", format!("w_{}", elem(p)), weight(p)],
        |p| a!["HSET", format!("h_{}", elem(p)), "f", weight(p)],
        |p| a!["LRANGE", p.pick(&["k3", "k4"]), "0", "-1"],
        |p| a!["SORT", p.pick(&["k0", "k1", "k2"]), p.pick(&["LIMIT", "BY", "GET", "STORE", "FOO", "ALPHA"])],
        |p| a!["SORT", p.pick(&["k0", "k1", "k2"]), "ALPHA", p.pick(&["DESC", "ASC"])],
        |p| a!["SET", p.pick(&["k0", "k1", "k2", "k3"]), "1"],
    ];
    gens
}

fn tx() -> Vec<Gen> {
    vec![
        |_| a!["MULTI"],
        |_| a!["MULTI"],
        |_| a!["EXEC"],
        |_| a!["EXEC"],
        |_| a!["DISCARD"],
        |p| {
            let mut a = a!["WATCH"];
            a.extend(p.keys(1, 2));
            a
        },
        |_| a!["UNWATCH"],
        |p| a!["SET", p.key(), p.val()],
        |p| a!["GET", p.key()],
        |p| a!["INCR", p.key()],
        |p| a!["RPUSH", p.key(), p.member()],
        |p| a!["LRANGE", p.key(), "0", "-1"],
        |p| a!["DEL", p.key()],
        |p| a!["EXPIRE", p.key(), p.ttl_s()],
        |p| a!["TTL", p.key()],
        |p| a!["BLPOP", p.key(), p.timeout()],
        |p| a!["SELECT", p.pick(&["0", "1"])],
        // Queueing errors (abort EXEC) and run-time errors (EXEC carries on).
        |_| a!["GET"],
        |p| a!["NOSUCHCOMMAND", p.key()],
        |p| a!["SET", p.key(), p.val(), "BADOPT"],
        |p| a!["INCRBY", p.key(), p.int()],
        |p| a!["LPUSH", p.key(), "x"],
        // Another client touching watched keys.
        |p| a!["@other", "SET", p.key(), p.val()],
        |p| a!["@other", "DEL", p.key()],
        |p| a!["@other", "EXPIRE", p.key(), p.ttl_s()],
        |p| a!["@other", "GET", p.key()],
        |_| a!["@other", "FLUSHALL"],
    ]
}

/// Lua scripts as client libraries send them: conversions both ways, errors (with the
/// script's SHA and line in the text), the lock-release compare-and-delete, RESP3 replies
/// inside scripts, and a script that fails half-way keeping its first write.
const SCRIPTS: &[&str] = &[
    "return redis.call('SET', KEYS[1], ARGV[1])",
    "return redis.call('GET', KEYS[1])",
    "return redis.call('INCR', KEYS[1])",
    "return redis.pcall('INCR', KEYS[1])",
    "return {1, 2.9, -3.5, 'x', true, false, nil, 4}",
    "return {ok = ARGV[1]}",
    "return {err = 'MYERR bad thing'}",
    "return redis.error_reply(ARGV[1])",
    "return redis.status_reply(ARGV[1])",
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    "return redis.call('HGETALL', KEYS[1])",
    "redis.setresp(3); return redis.call('HGETALL', KEYS[1])",
    "redis.setresp(3); return redis.call('GET', KEYS[1])",
    "redis.setresp(3); return redis.call('ZSCORE', KEYS[1], ARGV[1])",
    "return redis.call('ZSCORE', KEYS[1], ARGV[1])",
    "return redis.call('LPUSH', KEYS[1], ARGV[1])",
    "return redis.call('LRANGE', KEYS[1], 0, -1)",
    "return redis.call(ARGV[1], KEYS[1])",
    "return type(redis.call('GET', KEYS[1]))",
    "error('boom')",
    "return cjson.encode({KEYS[1], ARGV[1]})",
    "return bit.band(tonumber(ARGV[1]) or 0, 255)",
    "return tonumber(ARGV[1])",
    "return redis.call('EXPIRE', KEYS[1], 100)",
    "x = 1",
    "return undefined_global",
    "return redis.sha1hex(ARGV[1])",
    "local n = redis.call('INCR', KEYS[1]); if n > 3 then redis.call('DEL', KEYS[1]) end; return n",
    "return redis.call('SET', KEYS[1])",
    "redis.call('SET', KEYS[1], 'a'); return redis.call('INCR', KEYS[1])",
    "local ok = pcall(redis.call, 'INCR', KEYS[1]); return ok",
    "return redis.call('SUBSCRIBE', KEYS[1])",
    "return redis.call('TYPE', KEYS[1])",
    "return {redis.call('EXISTS', KEYS[1]), redis.call('TTL', KEYS[1])}",
    "return #ARGV + #KEYS",
    "this is not lua",
    // Errors without a position still report the script's line.
    "error('boom', 0)",
    // pcall hands a caught error table to the script as its string (Redis 7.0).
    "local ok, e = pcall(redis.call, 'INCR', KEYS[1], 'x'); return {tostring(ok), e}",
    "local ok, e = pcall(function() error({err = 'MY x'}) end); return e",
    "local ok, e = pcall(function() return redis.call('INCR', KEYS[1]) end); return {type(e), tostring(e)}",
    "error({err = 'MY raised error'})",
    "local function g() error('x', 2) end\nreturn g()",
    // Redis 7 shebang: flags decide what the script may do (and whether EVAL_RO takes it).
    "#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])",
    "#!lua flags=no-writes\nreturn redis.call('SET', KEYS[1], ARGV[1])",
    "#!lua\nreturn redis.call('SET', KEYS[1], ARGV[1])",
    "#!lua flags=allow-oom,no-writes\nreturn redis.call('TYPE', KEYS[1])",
    "#!lua flags=bogus\nreturn 1",
    "#!lua name=x\nreturn 1",
    "#!lua2\nreturn 1",
    "#!lua\nreturn undefined_global",
];

fn scripting() -> Vec<Gen> {
    vec![
        |p| a!["EVAL", p.pick(SCRIPTS), "1", p.key(), p.val()],
        |p| a!["EVAL", p.pick(SCRIPTS), "1", p.key(), p.val()],
        |p| a!["EVAL", p.pick(SCRIPTS), "1", p.key(), p.pick(&["GET", "INCR", "HGETALL", "nosuch", "PING"])],
        |p| a!["EVAL_RO", p.pick(SCRIPTS), "1", p.key(), p.val()],
        |p| a!["EVAL", p.pick(SCRIPTS), p.pick(&["-1", "3", "x"]), p.key(), p.val()],
        |p| a!["EVAL", p.pick(PACK_SCRIPTS), "1", p.key(), p.val()],
        |p| a!["SCRIPT", "LOAD", p.pick(SCRIPTS)],
        |p| a!["EVALSHA", p.pick(SCRIPT_SHAS), "1", p.key(), p.val()],
        |p| a!["EVALSHA_RO", p.pick(SCRIPT_SHAS), "1", p.key(), p.val()],
        |p| a!["SCRIPT", "EXISTS", p.pick(SCRIPT_SHAS), p.pick(SCRIPT_SHAS)],
        |p| a!["SCRIPT", "FLUSH", p.pick(&["SYNC", "ASYNC"])],
        |p| a!["SCRIPT", p.pick(&["KILL", "NOPE"])],
        |p| a!["SET", p.key(), p.val()],
        |p| a!["HSET", p.key(), "f", p.val()],
        |p| a!["ZADD", p.key(), "1.5", p.val()],
        |p| a!["RPUSH", p.key(), p.val()],
    ]
}

/// SHA1s of `SCRIPTS[0, 1, 2, 9, 11]` (and one unknown), for EVALSHA and SCRIPT EXISTS.
const SCRIPT_SHAS: &[&str] = &[
    "d8f2fad9f8e86a53d2a6ebd960b33c4972cacc37",
    "d3c21d0c2b9ca22f82737626a27bcaf5d288f99f",
    "61636018f4e6b5817b89791bbed242f93fa089e3",
    "d02e481a9c91ceec59c5822a58a49d5d5d7ac80b",
    "6fbc820ce6a53108c93f38e95d91f9c2483b039c",
    "ffffffffffffffffffffffffffffffffffffffff",
];

/// FUNCTION libraries: good ones, a replacement, collisions, and every kind of load error.
const LIBS: &[&str] = &[
    "#!lua name=lib1\nredis.register_function('set1', function(keys, args) return redis.call('SET', keys[1], args[1]) end)\n\
     redis.register_function{function_name='get1', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}, description='reads'}",
    "#!lua name=lib1\nredis.register_function('incr1', function(keys) return redis.call('INCR', keys[1]) end)",
    "#!lua name=lib2\nlocal function helper(k) return redis.call('TYPE', k) end\n\
     redis.register_function('type2', function(keys) return helper(keys[1]) end)\n\
     redis.register_function{function_name='ro2', callback=function(keys, args) return redis.call('LPUSH', keys[1], args[1]) end, flags={'no-writes', 'allow-oom'}}",
    "#!lua name=lib3\nredis.register_function('SET1', function() return 1 end)",
    "#!lua name=lib4\nredis.register_function('err4', function(keys, args) return redis.call('nosuch') end)\n\
     redis.register_function('boom4', function() error('boom') end)\n\
     redis.register_function('kargs', function(keys, args) return {#keys, #args, keys[1], args[1]} end)\n\
     redis.register_function('g4', function() return KEYS end)\n\
     redis.register_function('half4', function(keys) redis.call('SET', keys[1], 'x'); return redis.call('INCR', keys[1]) end)",
    "#!lua name=lib7\nredis.register_function{function_name='ctl', callback=function(keys) redis.setresp(3); return redis.call('HGETALL', keys[1]) end}\n\
     redis.register_function('cjs', function(keys, args) return cjson.encode({keys[1], args[1]}) end)",
    "return 1",
    "#!lua name=lib5\nreturn 1",
    "#!lua name=lib5\nredis.register_function('x', 5)",
    "#!lua name=lib5\nredis.register_function{function_name='x', callback=function() end, flags={'bogus'}}",
    "#!lua name=bad-name\nredis.register_function('x', function() end)",
    "#!lua name=lib6\nx = 1",
    "#!lua name=lib6\nstring.len('x')",
    "#!lua name=lib6\nthis is not lua",
    // Not 'a' and 'A': Redis 7.0.15 accepts that pair, then crashes when a failed
    // FUNCTION LOAD REPLACE of the library puts it back.
    "#!lua name=lib6\nredis.register_function('a', function() end)\nredis.register_function('a', function() end)",
    "#!lua name=lib6 foo=bar\nredis.register_function('a', function() end)",
    "#!lua name=lib6",
];

/// Libraries outlive FLUSHALL: each sequence starts from the same four (so that most FCALLs
/// find their function; DELETE, FLUSH and REPLACE take them away).
const FUNCTION_FLUSH: &[&[&str]] = &[
    &["FUNCTION", "FLUSH"],
    &["FUNCTION", "LOAD", LIBS[0]],
    &["FUNCTION", "LOAD", LIBS[2]],
    &["FUNCTION", "LOAD", LIBS[4]],
    &["FUNCTION", "LOAD", LIBS[5]],
];

const FUNCTIONS: &[&str] =
    &["set1", "get1", "GET1", "incr1", "type2", "ro2", "err4", "boom4", "kargs", "g4", "half4", "ctl", "cjs", "nosuch"];

fn functions() -> Vec<Gen> {
    vec![
        |p| a!["FUNCTION", "LOAD", p.pick(LIBS)],
        |p| a!["FUNCTION", "LOAD", p.pick(LIBS)],
        |p| a!["FUNCTION", "LOAD", "REPLACE", p.pick(LIBS)],
        |p| a!["FUNCTION", "LOAD", p.pick(&["BOGUS", "REPLACE"]), "x", p.pick(LIBS)],
        |p| a!["FCALL", p.pick(FUNCTIONS), "1", p.key(), p.val()],
        |p| a!["FCALL", p.pick(FUNCTIONS), "1", p.key(), p.val()],
        |p| a!["FCALL", p.pick(FUNCTIONS), "0"],
        |p| a!["FCALL_RO", p.pick(FUNCTIONS), "1", p.key(), p.val()],
        |p| a!["FCALL", p.pick(FUNCTIONS), p.pick(&["-1", "3", "x"]), p.key()],
        |p| a!["FUNCTION", "DELETE", p.pick(&["lib1", "lib2", "lib3", "lib4", "lib7", "LIB1", "nosuch"])],
        |p| a!["FUNCTION", "FLUSH", p.pick(&["SYNC", "ASYNC", "BOGUS"])],
        |_| a!["FUNCTION", "LIST"],
        |_| a!["FUNCTION", "LIST", "WITHCODE"],
        |p| a!["FUNCTION", "LIST", "LIBRARYNAME", p.pick(&["lib1", "lib*", "*2", "nosuch"])],
        |p| a!["FUNCTION", "LIST", p.pick(&["LIBRARYNAME", "BOGUS", "WITHCODE"])],
        |_| a!["FUNCTION", "STATS"],
        |_| a!["FUNCTION", "KILL"],
        |p| a!["FUNCTION", p.pick(&["NOPE", "DUMP x", "RESTORE"])],
        |p| a!["EVAL_RO", p.pick(&SCRIPTS[SCRIPTS.len() - 8..]), "1", p.key(), p.val()],
        |p| a!["SET", p.key(), p.val()],
        |p| a!["HSET", p.key(), "f", p.val()],
        |p| a!["RPUSH", p.key(), p.val()],
    ]
}

/// Scripts over the `struct` and `cmsgpack` libraries: packed bytes returned as bulk strings
/// (compared byte for byte), unpacked values, every format option and msgpack type, integer
/// and float boundaries, array-or-map detection, nesting limits, the offsets of
/// `unpack_one` / `unpack_limit`, Lua's stack limit on results, and the error texts (raised,
/// or caught with `pcall`, where the function's name reads `?`).
const PACK_SCRIPTS: &[&str] = &[
    // struct: pack
    r#"return struct.pack('>bBhHlLiIT', -1, 255, -2, 65535, -3, 2^40, -4, 4294967295, 7)"#,
    r#"return struct.pack('<bBhHlLiIT', -1, 255, -2, 65535, -3, 2^40, -4, 4294967295, 7)"#,
    r#"return struct.pack('bBhH', 1.9, -1.9, 300, '12')"#,
    r#"return struct.pack('!>bdbfbi3c2s', 1, 1.5, 2, 0.1, 3, -5, 'xy', 'nul')"#,
    r#"return struct.pack('!2 <bhbi bd', 1, 2, 3, 4, 5, 6)"#,
    r#"return struct.pack('>I16i16i0I3i7', 1, -2, 3, 0x123456, -1)"#,
    r#"return struct.pack('>L>l>L>l>L', 2^64, -2^64, 0/0, 1/0, 2^63 + 2^20)"#,
    r#"return struct.pack('<d>d<f>f', -0.0, 1/0, 0/0, -1/0)"#,
    r#"return struct.pack('>c0xs', ARGV[1], ARGV[1])"#,
    r#"return struct.pack('>c3', ARGV[1])"#,
    r#"return struct.pack('b\0b', 1, 2)"#,
    r#"return struct.pack('>I', ARGV[1])"#,
    r#"return struct.pack('s', 12.5)"#,
    // struct: unpack
    r#"return {struct.unpack('>bBhHlLiI', struct.pack('>bBhHlLiI', -1, 255, -2, 65535, -3, 2^40, -4, 2^32 - 1))}"#,
    r#"return {struct.unpack('<i3I5i12', string.rep(string.char(255), 20))}"#,
    r#"return {struct.unpack('>i12', string.char(0, 0, 0, 0, 128, 0, 0, 0, 0, 0, 0, 0))}"#,
    r#"return {struct.unpack('>i0I0', 'abc')}"#,
    r#"local a, b, c = struct.unpack('>fd', struct.pack('>fd', 0.1, 0.1)); return {tostring(a), tostring(b), c}"#,
    r#"local a, b, c = struct.unpack('<d<f', string.rep(string.char(255), 12)); return {tostring(a), tostring(b), c}"#,
    r#"return {struct.unpack('Bc0s', '\5helloworld\0rest')}"#,
    r#"return {struct.unpack('c1c0', '3abcdef')}"#,
    r#"return {struct.unpack('!4bi', struct.pack('!4bi', 7, 8))}"#,
    r#"return {struct.unpack('>h', ARGV[1] .. 'xx', 2)}"#,
    r#"return {struct.unpack('', 'abc', -5)}"#,
    r#"return {struct.unpack('x', 'abc', 3)}"#,
    r#"return {struct.unpack('c2', ARGV[1])}"#,
    r#"return {struct.unpack('>I', struct.pack('>I', ARGV[1]))}"#,
    r#"return {struct.unpack(string.rep('b', 5000), string.rep('a', 5000))}"#,
    r#"return #{struct.unpack(string.rep('b', 7997), string.rep('a', 8000))}"#,
    r#"return #{struct.unpack(string.rep('c1', 7996), string.rep('a', 8000), 1)}"#,
    r#"return struct.unpack(string.rep('b', 7998), string.rep('a', 8000))"#,
    // struct: size
    r#"return struct.size('!bhlTfdxi7c3')"#,
    r#"return {struct.size('>!4bi'), struct.size('!bd'), struct.size('!2bd'), struct.size('q9z'), struct.size(12)}"#,
    // struct: errors
    r#"local ok, e = pcall(function() return struct.pack('q') end); return e"#,
    r#"return struct.pack('c5', 'ab')"#,
    r#"return {pcall(struct.pack, 'i', 'x')}"#,
    r#"return struct.pack('i')"#,
    r#"return struct.pack('b', {})"#,
    r#"return struct.pack()"#,
    r#"return struct.pack(12)"#,
    r#"return struct.pack('i33', 1)"#,
    r#"return struct.pack('!3i', 1)"#,
    r#"return struct.pack('!0i', 1)"#,
    r#"return struct.pack('=i', 1)"#,
    r#"return struct.size('c99999999999')"#,
    r#"return struct.size('i2147483648')"#,
    r#"return struct.unpack('i', 'abc')"#,
    r#"return struct.unpack('i', 'abcd', 0)"#,
    r#"return struct.unpack('b', 'abc', -5)"#,
    r#"return struct.unpack('s', 'abc')"#,
    r#"return struct.unpack('c0', 'abc')"#,
    r#"return struct.unpack('bq', 'a')"#,
    r#"return struct.unpack('b', nil)"#,
    r#"return struct.size('s')"#,
    r#"return struct.size('c0')"#,
    r#"return struct.size('#')"#,
    r#"local p = struct.pack; return p('=')"#,
    r#"struct.pack = nil"#,
    r#"struct.newfield = 1"#,
    // cmsgpack: pack
    r#"return cmsgpack.pack(0, 127, 128, 255, 256, 65535, 65536, 2^32 - 1, 2^32, 2^53, -1, -32, -33, -128, -129, -32768, -32769, -2^31, -2^31 - 1, -2^63)"#,
    r#"return cmsgpack.pack(1.5, 0.1, -0.0, 2^63, -2^63, 1/0, -1/0, 0/0, 2^64, 1e300, 3.4028234663852886e38, 1e-300)"#,
    r#"return cmsgpack.pack({}, {1, 2, 3}, {[2] = 1}, {[1.5] = 1}, {a = 1}, {1, 2, nil, 4})"#,
    r#"return cmsgpack.pack(string.rep('x', 31), string.rep('y', 32), string.rep('z', 255), string.rep('w', 256))"#,
    r#"return cmsgpack.pack(string.rep('a', 65535), string.rep('b', 65536))"#,
    r#"local t = {}; t[1] = t; return cmsgpack.pack(t)"#,
    r#"local t = {}; for i = 1, 20 do t = {t} end; return cmsgpack.pack(t)"#,
    r#"local t = {}; for i = 1, 20 do t = {k = t} end; return cmsgpack.pack(t)"#,
    r#"return cmsgpack.pack(true, false, nil, redis.sha1hex, cjson.null)"#,
    r#"local t = {}; for i = 1, 16 do t[i] = i end; return cmsgpack.pack(t)"#,
    r#"local t = {}; for i = 1, 70000 do t[i] = i % 3 end; return cmsgpack.pack(t)"#,
    r#"local t = {}; for i = 1, 16 do t['k' .. i] = i end; return cmsgpack.pack(t)"#,
    r#"local t = {}; for i = 1, 70000 do t['k' .. i] = true end; return #cmsgpack.pack(t)"#,
    r#"return cmsgpack.pack({a = {b = {c = {1, 2, {d = 'e'}}}}})"#,
    r#"return cmsgpack.pack({1, 2, 3, x = 1})"#,
    r#"return cmsgpack.pack({[1] = 'a', [2] = 'b', [3] = 'c', [-1] = 'z', [0] = 'y'})"#,
    r#"return cmsgpack.pack({[2^31] = 1}, {[1] = 1, [2^31] = 2}, {[2^31 - 1] = 0})"#,
    r#"return cmsgpack.pack(ARGV[1], tonumber(ARGV[1]))"#,
    r#"return cmsgpack.pack(KEYS, ARGV)"#,
    // cmsgpack: unpack
    r#"return cmsgpack.unpack(cmsgpack.pack({1, 2, {3, 'x'}}))"#,
    r#"return {cmsgpack.unpack(cmsgpack.pack(1, 'two', {3}, true))}"#,
    r#"local t = cmsgpack.unpack(cmsgpack.pack({a = 1, b = {2, 3}})); return {t.a, t.b[1], t.b[2]}"#,
    r#"return {cmsgpack.unpack(string.char(0xcc, 200, 0xcd, 1, 0, 0xce, 0, 1, 0, 0, 0xd0, 0x80, 0xd1, 0x80, 0, 0xd2, 0x80, 0, 0, 0, 0xc3, 0xa1, 0x41, 0xe0, 0x7f))}"#,
    r#"local a, b = cmsgpack.unpack(string.char(0xcf, 255, 255, 255, 255, 255, 255, 255, 255, 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 1)); return {tostring(a), tostring(b)}"#,
    r#"local a, b, c = cmsgpack.unpack(string.char(0xca, 0x3d, 0xcc, 0xcc, 0xcd, 0xcb, 0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a, 0xca, 0x7f, 0xc0, 0, 0)); return {tostring(a), tostring(b), tostring(c)}"#,
    r#"local a, b, c = cmsgpack.unpack(string.char(0xd9, 2) .. 'hi' .. string.char(0xda, 0, 3) .. 'abc' .. string.char(0xdb, 0, 0, 0, 1) .. 'z'); return {a, b, c}"#,
    r#"local a, b, c, d = cmsgpack.unpack(string.char(0xdc, 0, 2, 1, 2, 0xdd, 0, 0, 0, 1, 3, 0xde, 0, 1, 0xa1, 0x6b, 4, 0xdf, 0, 0, 0, 1, 5, 6)); return {a, b, c.k, d[5]}"#,
    r#"local t = cmsgpack.unpack(string.char(0x94, 1, 0xc0, 3, 0xc2)); return {t[1], t[2] == nil, t[3], t[4]}"#,
    r#"local t = cmsgpack.unpack(string.char(0x82, 0x81, 1, 2, 3, 0xc0, 0xa1, 0x78, 0xc3)); local n = 0; for k, v in pairs(t) do n = n + 1 end; return {n, t.x}"#,
    r#"return {cmsgpack.unpack_one(cmsgpack.pack(1, 2, 3))}"#,
    r#"return {cmsgpack.unpack_one(cmsgpack.pack(1, 2, 3), 2)}"#,
    r#"return {cmsgpack.unpack_one(cmsgpack.pack(1, 2, 3), 3)}"#,
    r#"return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 2)}"#,
    r#"return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 0)}"#,
    r#"return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 0, 1)}"#,
    r#"return {cmsgpack.unpack_limit(cmsgpack.pack(1, 'abc', 3), 5, 1)}"#,
    r#"return {cmsgpack.unpack_limit(cmsgpack.pack(1, 'abc', 3), 1.9, '1')}"#,
    r#"local s = cmsgpack.pack(1, 'two', {3}); local out, off = {}, 0; while off >= 0 do local v; off, v = cmsgpack.unpack_one(s, off); out[#out + 1] = type(v) end; return out"#,
    r#"return cmsgpack.unpack(ARGV[1])"#,
    r#"return {cmsgpack.unpack(ARGV[1])}"#,
    r#"return {pcall(cmsgpack.unpack, ARGV[1])}"#,
    r#"return {cmsgpack.unpack_one(ARGV[1])}"#,
    r#"return {cmsgpack.unpack_limit(ARGV[1], 2, 1)}"#,
    r#"return cmsgpack.unpack(12)"#,
    r#"return #{cmsgpack.unpack(string.rep('a', 7999))}"#,
    r#"return #{cmsgpack.unpack(string.rep(string.char(0x91), 3999) .. 'a')}"#,
    r#"return #{cmsgpack.unpack(string.rep(string.char(0xa1, 0x61), 7999))}"#,
    // Arguments a function does not read still take stack slots.
    r#"local t = {} for i = 1, 7990 do t[i] = 'x' end return #{struct.unpack('b', 'a', 1, unpack(t))}"#,
    r#"local t = {} for i = 1, 7990 do t[i] = 'x' end return struct.unpack('bbbbbbb', 'abcdefg', 1, unpack(t))"#,
    r#"local t = {} for i = 1, 7990 do t[i] = {} end return {cmsgpack.unpack_one('abc', 1, unpack(t))}"#,
    r#"local t = {} for i = 1, 4000 do t[i] = 'x' .. i end return #cmsgpack.pack(unpack(t))"#,
    r#"local t = {} for i = 1, 4001 do t[i] = {} end return #cmsgpack.pack(unpack(t))"#,
    // cmsgpack: errors
    r#"return cmsgpack.pack()"#,
    r#"return {pcall(cmsgpack.pack)}"#,
    r#"return cmsgpack.unpack(string.char(0xc1))"#,
    r#"return cmsgpack.unpack(string.char(0xc4, 1, 0))"#,
    r#"return cmsgpack.unpack(string.char(0x92, 1))"#,
    r#"return cmsgpack.unpack(string.char(0xdb, 0, 0, 1, 0, 0x61))"#,
    r#"return {pcall(function() return cmsgpack.unpack(string.char(0x81, 0xc0, 1)) end)}"#,
    r#"return {pcall(function() return cmsgpack.unpack(string.char(0x81, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0, 1)) end)}"#,
    r#"return cmsgpack.unpack_one('abc', -1)"#,
    r#"return cmsgpack.unpack_one('abc', 4)"#,
    r#"return cmsgpack.unpack_limit('abc', -1, 2^32 + 5)"#,
    r#"return cmsgpack.unpack_limit('abc')"#,
    r#"return cmsgpack.unpack_limit('abc', 'x')"#,
    r#"return cmsgpack.unpack({})"#,
    r#"return cmsgpack.unpack_one()"#,
    r#"return cmsgpack:unpack_one()"#,
    r#"return #{cmsgpack.unpack(string.rep('a', 8000))}"#,
    r#"return #{cmsgpack.unpack_limit(string.rep('a', 7999), 7999)}"#,
    r#"return #{cmsgpack.unpack(string.rep(string.char(0x91), 4000) .. 'a')}"#,
    r#"return #{cmsgpack.unpack(string.rep(string.char(0x81), 7998) .. 'a')}"#,
    r#"return #{cmsgpack.unpack(string.rep(string.char(0x81), 7999) .. 'a')}"#,
    r#"cmsgpack.pack = nil"#,
    r#"return cmsgpack._NAME .. ' ' .. cmsgpack._VERSION .. ' ' .. cmsgpack._COPYRIGHT .. ' ' .. cmsgpack._DESCRIPTION"#,
    r#"return struct.pack('>I2', #cmsgpack.pack({1, 2, 3})) .. cmsgpack.pack(struct.pack('<i', -1))"#,
];

/// `ARGV[1]` for the `PACK_SCRIPTS` that read it, besides the `val()` pool: bytes that are
/// msgpack (an array, a map, a truncated double, a fixstr longer than the input).
const PACK_ARGS: &[&[u8]] = &[
    b"a",
    b"abc",
    b"hello world",
    b"0",
    b"-1",
    b"42",
    b"3.5",
    b"1e3",
    b"",
    b"9223372036854775807",
    b" 7",
    b"a\0b",
    b"\xff\xfe",
    b"\xc3\xbf\xc3\xbe",
    b"\x93\x01\x02\x03",
    b"\x81\xa1k\x01",
    b"\xcb\x40",
    b"nan",
    b"0x10",
];

/// Unknown commands and subcommands (the rest of the error family mutates other families).
fn oddities() -> Vec<Gen> {
    vec![
        |p| a!["FOOBAR", p.key()],
        |p| a!["OBJECT", p.pick(&["FOO", "encoding", "REFCOUNT", "freq"]), p.key()],
        |_| a!["OBJECT"],
        |p| a![p.pick(&["set", "Set", "sEt"]), p.key(), p.val()],
        |p| a!["GET", p.key(), "extra"],
    ]
}

fn all_gens() -> Vec<Gen> {
    let mut v = Vec::new();
    for f in [strings, keys, hashes, lists, sets, zsets, bits] {
        v.extend(f());
    }
    v
}

/// The error family: a command from any family, then (usually) damaged.
fn mutate(mut a: Argv, p: &mut P) -> Argv {
    match p.below(8) {
        0 => a.truncate(1),
        1 => {
            if a.len() > 1 {
                a.pop();
            }
        }
        2 => a.push(p.pick(JUNK)),
        3 | 4 => {
            if a.len() > 1 {
                let i = 1 + p.below(a.len() - 1);
                a[i] = p.pick(JUNK);
            }
        }
        5 => {
            if a.len() > 2 {
                let i = 1 + p.below(a.len() - 1);
                a.remove(i);
            }
        }
        6 => {
            let mut s = a[0].to_ascii_lowercase();
            if p.chance(2) {
                s = s.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect();
            }
            a[0] = s;
        }
        _ => {}
    }
    a
}

struct Family {
    name: &'static str,
    gens: fn() -> Vec<Gen>,
    /// Damage commands (the wrong-arity / syntax family).
    mutate: bool,
    /// Commands run (and compared) before the generated ones.
    prelude: &'static [&'static [&'static str]],
}

const TYPED_KEYS: &[&[&str]] = &[
    &["SET", "k0", "hello"],
    &["RPUSH", "k1", "a", "b", "c"],
    &["SADD", "k2", "a", "b"],
    &["HSET", "k3", "f", "v"],
    &["ZADD", "k4", "1", "a", "2", "b"],
];

fn errors_gens() -> Vec<Gen> {
    let mut v = all_gens();
    v.extend(oddities());
    v
}

fn mixed_gens() -> Vec<Gen> {
    let mut v = all_gens();
    v.extend(tx());
    v.extend(sort().into_iter().skip(1));
    v
}

// ---------------------------------------------------------------------------------------
// running a sequence on both servers
// ---------------------------------------------------------------------------------------

type Seq = Vec<(u32, Vec<u32>)>;

struct Harness {
    /// Command names redoubt knows (`None` = do not filter); filled lazily.
    known: Option<std::sync::Mutex<BTreeMap<String, bool>>>,
    family: Family,
    gens: Vec<Gen>,
    resp3: bool,
    ours: std::net::SocketAddr,
    theirs: std::net::SocketAddr,
    seed: String,
}

struct Step {
    argv: Argv,
    ours: String,
    theirs: String,
}

struct Mismatch {
    at: usize,
    why: String,
    steps: Vec<Step>,
}

fn show(r: &Result<Value, ConnError>) -> String {
    match r {
        Ok(v) => v.render(),
        Err(e) => format!("<no reply: {e}>"),
    }
}

struct Pair {
    ours: Conn,
    theirs: Conn,
}

impl Harness {
    fn proto(&self) -> &'static str {
        if self.resp3 {
            "RESP3"
        } else {
            "RESP2"
        }
    }

    fn pair(&self) -> Result<Pair, String> {
        let mut ours = Conn::connect(self.ours);
        let mut theirs = Conn::connect(self.theirs);
        if self.resp3 {
            let t = theirs.hello3().map_err(|e| format!("oracle HELLO 3: {e}"))?;
            let o = ours.hello3();
            match (&o, &t) {
                (Ok(Value::Map(_)), Value::Map(_)) => {}
                _ => return Err(format!("HELLO 3: redoubt {} / redis-server {}", show(&o), t.render())),
            }
        }
        Ok(Pair { ours, theirs })
    }

    /// The argv for one generated command.
    fn argv(&self, t: u32, r: &[u32], idx: usize, now_ms: u64) -> Argv {
        let mut p = P { r, i: 0, idx: idx as u64, now_ms };
        let g = self.gens[t as usize % self.gens.len()];
        let a = g(&mut p);
        if self.family.mutate && !p.chance(4) {
            mutate(a, &mut p)
        } else {
            a
        }
    }

    /// With `DIFF_SKIP_UNKNOWN`, whether redoubt's command table has this command.
    fn redoubt_knows(&self, argv: &Argv) -> bool {
        let Some(known) = &self.known else { return true };
        let name = if argv[0] == "@other" { &argv[1] } else { &argv[0] }.to_ascii_lowercase();
        let mut k = known.lock().unwrap();
        if let Some(&b) = k.get(&name) {
            return b;
        }
        let knows = |addr| {
            let mut c = Conn::connect(addr);
            match c.try_cmd(&["COMMAND", "INFO", name.as_str()]) {
                Ok(Value::Array(v)) => v.first().is_some_and(|x| !matches!(x, Value::Nil | Value::NilArray)),
                _ => true,
            }
        };
        // Commands unknown to Redis too (the error paths) stay in.
        let b = knows(self.ours) || !knows(self.theirs);
        k.insert(name, b);
        b
    }

    /// Runs one sequence; `Err` at the first reply that differs. In survey mode, also
    /// collects every later mismatch into `later`.
    fn run(&self, seq: &Seq, mut later: Option<&mut Vec<String>>) -> Result<(), Mismatch> {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let mut steps: Vec<Step> = Vec::new();
        let mut first: Option<(usize, String)> = None;
        let fail = |steps: Vec<Step>, at: usize, why: String| Mismatch { at, why, steps };
        let mut main = match self.pair() {
            Ok(p) => p,
            Err(e) => return Err(fail(steps, 0, e)),
        };
        let mut other: Option<Pair> = None;
        let mut in_multi = false;
        let mut queued: Vec<Argv> = Vec::new();

        let mut cmds: Vec<Argv> = vec![a!["FLUSHALL"]];
        cmds.extend(
            self.family
                .prelude
                .iter()
                .map(|c| c.iter().map(|s| s.to_string()).collect::<Argv>())
                .filter(|a| self.redoubt_knows(a)),
        );
        let n_setup = cmds.len();
        for (i, (t, r)) in seq.iter().enumerate() {
            let argv = self.argv(*t, r, i, now_ms);
            if self.redoubt_knows(&argv) {
                cmds.push(argv);
            }
        }

        let exec = |argv: &Argv,
                    steps: &mut Vec<Step>,
                    main: &mut Pair,
                    other: &mut Option<Pair>,
                    in_multi: &mut bool,
                    queued: &mut Vec<Argv>|
         -> Result<(), String> {
            let (on_other, argv) = if argv[0] == "@other" { (true, argv[1..].to_vec()) } else { (false, argv.clone()) };
            let pair = if on_other {
                if other.is_none() {
                    *other = Some(self.pair()?);
                }
                other.as_mut().unwrap()
            } else {
                &mut *main
            };
            let o = pair.ours.try_cmd(&argv);
            let t = pair.theirs.try_cmd(&argv);
            let mut shown = argv.clone();
            if on_other {
                shown.insert(0, "(other client)".into());
            }
            steps.push(Step { argv: shown, ours: show(&o), theirs: show(&t) });
            let t = t.map_err(|e| format!("the oracle gave no reply ({e}): a bug in the test"))?;
            let o = o.map_err(|e| format!("redoubt gave no reply: {e}"))?;
            let name = argv[0].to_ascii_uppercase();
            let verdict = if name == "EXEC" && *in_multi && !on_other && matches!(t, Value::Array(_)) {
                let rules: Vec<Rule> = queued.iter().map(|q| rule(q, &mut pair.theirs)).collect();
                let idx = |q: &[String]| queued.iter().position(|x| x.as_slice() == q).unwrap_or(0);
                compare_exec_by(queued, &o, &t, |q| rules.get(idx(q)).copied().unwrap_or_else(|| rule_for(q)))
            } else if *in_multi && !on_other && name != "DISCARD" {
                // No side queries while the oracle's connection is queueing.
                compare_by_rule(rule_for(&argv), &o, &t)
            } else {
                compare_by_rule(rule(&argv, &mut pair.theirs), &o, &t)
            };
            if !on_other {
                if *in_multi {
                    if name == "EXEC" || name == "DISCARD" {
                        *in_multi = false;
                        queued.clear();
                    } else if t == Value::Simple(b"QUEUED".to_vec()) {
                        queued.push(argv.clone());
                    }
                } else if name == "MULTI" && t == Value::Simple(b"OK".to_vec()) {
                    *in_multi = true;
                    queued.clear();
                }
                if name == "SPOP" && !*in_multi && o != t {
                    resync_spop(&argv, &o, &t, &mut pair.theirs);
                }
            }
            verdict
        };

        for (i, argv) in cmds.iter().enumerate() {
            if let Err(why) = exec(argv, &mut steps, &mut main, &mut other, &mut in_multi, &mut queued) {
                let at = steps.len() - 1;
                if i < n_setup || later.is_none() {
                    return Err(fail(steps, at, why));
                }
                if first.is_none() {
                    first = Some((at, why));
                } else if let Some(l) = later.as_deref_mut() {
                    l.push(argv[0].to_ascii_uppercase());
                }
                if main.ours.try_cmd(&["PING"]).is_err() {
                    break; // redoubt closed the connection: the rest would only repeat that
                }
            }
        }
        // Read the whole keyspace back from both.
        if first.is_none() {
            if let Err((at, why)) = self.check_state(&mut main, &mut steps, in_multi) {
                return Err(fail(steps, at, why));
            }
        }
        if std::env::var_os("DIFF_TRACE").is_some() {
            let mut s = format!("--- sequence [{} {}]\n", self.family.name, self.proto());
            for st in &steps {
                let _ = writeln!(s, "  {:40} -> {}", render_command(&st.argv), st.theirs);
            }
            println!("{s}");
        }
        match first {
            Some((at, why)) => Err(fail(steps, at, why)),
            None => Ok(()),
        }
    }

    fn check_state(&self, pair: &mut Pair, steps: &mut Vec<Step>, in_multi: bool) -> Result<(), (usize, String)> {
        let mut cmd = |argv: Argv, steps: &mut Vec<Step>| -> Result<Value, (usize, String)> {
            let o = pair.ours.try_cmd(&argv);
            let t = pair.theirs.try_cmd(&argv);
            steps.push(Step { argv: argv.clone(), ours: show(&o), theirs: show(&t) });
            let at = steps.len() - 1;
            let t = t.map_err(|e| (at, format!("oracle: {e}")))?;
            let o = o.map_err(|e| (at, format!("redoubt gave no reply: {e}")))?;
            let r = rule(&argv, &mut pair.theirs);
            compare_by_rule(r, &o, &t).map_err(|e| (at, format!("final state check: {e}")))?;
            Ok(t)
        };
        if in_multi {
            cmd(a!["DISCARD"], steps)?;
        }
        for db in ["0", "1"] {
            cmd(a!["SELECT", db], steps)?;
            let keys = match cmd(a!["KEYS", "*"], steps)? {
                Value::Array(k) | Value::Set(k) => k,
                _ => vec![],
            };
            let mut keys: Vec<Vec<u8>> = keys.iter().filter_map(|k| k.as_bytes().map(|b| b.to_vec())).collect();
            keys.sort();
            for k in keys {
                let k = String::from_utf8_lossy(&k).into_owned();
                let ty = cmd(a!["TYPE", k], steps)?;
                let read = match ty.as_bytes() {
                    Some(b"string") => a!["GET", k],
                    Some(b"list") => a!["LRANGE", k, "0", "-1"],
                    Some(b"set") => a!["SMEMBERS", k],
                    Some(b"hash") => a!["HGETALL", k],
                    Some(b"zset") => a!["ZRANGE", k, "0", "-1", "WITHSCORES"],
                    _ => continue,
                };
                cmd(read, steps)?;
                cmd(a!["PTTL", k], steps)?;
            }
        }
        Ok(())
    }

    fn render(&self, m: &Mismatch) -> String {
        let mut s = String::new();
        let step = &m.steps[m.at];
        let _ = writeln!(
            s,
            "differential mismatch [{} {}] at command {} of {}:",
            self.family.name,
            self.proto(),
            m.at + 1,
            m.steps.len()
        );
        let _ = writeln!(s, "    {}", render_command(&step.argv));
        let _ = writeln!(s, "  redoubt:      {}", step.ours);
        let _ = writeln!(s, "  redis-server: {}", step.theirs);
        let _ = writeln!(s, "  ({})", m.why);
        let _ = writeln!(
            s,
            "the sequence{} (-> redis-server's reply; <> marks a difference):",
            if self.resp3 { ", after HELLO 3" } else { "" }
        );
        for (i, st) in m.steps.iter().enumerate() {
            let mark = if i == m.at {
                ">>"
            } else if st.ours != st.theirs {
                "<>"
            } else {
                "  "
            };
            let _ = writeln!(s, "{mark} {:3}  {:40} -> {}", i + 1, render_command(&st.argv), st.theirs);
            if i == m.at {
                break;
            }
        }
        let _ = writeln!(
            s,
            "(seed: DIFF_SEED={}; rerun: cargo nextest run -p redoubt-tests --test t20_differential {}::{})",
            self.seed,
            self.family.name,
            self.proto().to_lowercase()
        );
        s
    }
}

/// The comparison rule for `argv`, asking the oracle for a hash's encoding when the order
/// of HGETALL/HKEYS/HVALS depends on it.
fn rule(argv: &[String], oracle: &mut Conn) -> Rule {
    let name = argv[0].to_ascii_uppercase();
    if matches!(name.as_str(), "HGETALL" | "HKEYS" | "HVALS") && argv.len() == 2 {
        let enc = oracle.try_cmd(&["OBJECT", "ENCODING", argv[1].as_str()]).ok();
        return hash_rule(argv, enc.as_ref().and_then(|v| v.as_bytes()));
    }
    rule_for(argv)
}

/// After an SPOP both servers popped *some* members; make the oracle's set equal to ours by
/// giving back what it popped and removing what redoubt popped.
fn resync_spop(argv: &Argv, ours: &Value, theirs: &Value, oracle: &mut Conn) {
    fn members(v: &Value) -> Vec<Vec<u8>> {
        match v {
            Value::Bulk(b) => vec![b.clone()],
            Value::Array(a) | Value::Set(a) => a.iter().filter_map(|x| x.as_bytes().map(|b| b.to_vec())).collect(),
            _ => vec![],
        }
    }
    let (o, t) = (members(ours), members(theirs));
    if o.len() != t.len() || o.is_empty() {
        return;
    }
    let key = argv[1].as_bytes().to_vec();
    let mut add = vec![b"SADD".to_vec(), key.clone()];
    add.extend(t);
    let mut rem = vec![b"SREM".to_vec(), key];
    rem.extend(o);
    let _ = oracle.try_cmd(&add);
    let _ = oracle.try_cmd(&rem);
}

fn env_num(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn differential(family: Family, resp3: bool) {
    let Some(oracle) = Oracle::start() else { return };
    let server = start_redoubt(&[]);
    let cases = env_num("PROPTEST_CASES", 64);
    let max_len = env_num("DIFF_MAX_LEN", 24).max(1) as usize;
    let name_hash = family.name.bytes().fold(1469598103934665603u64, |h, b| (h ^ b as u64).wrapping_mul(1099511628211));
    let (rng_seed, seed) = match std::env::var("DIFF_SEED").ok().as_deref() {
        Some("random") => {
            let s = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
            (RngSeed::Fixed(s), s.to_string())
        }
        Some(n) if n.parse::<u64>().is_ok() => (RngSeed::Fixed(n.parse().unwrap()), n.to_string()),
        _ => (RngSeed::Fixed(name_hash ^ resp3 as u64), "default".to_string()),
    };
    let survey = std::env::var("DIFF_SURVEY").is_ok_and(|v| v != "0" && !v.is_empty());
    let skip_unknown = std::env::var("DIFF_SKIP_UNKNOWN").is_ok_and(|v| v != "0" && !v.is_empty());
    let h = Harness {
        known: skip_unknown.then(Default::default),
        gens: (family.gens)(),
        family,
        resp3,
        ours: server.addr,
        theirs: oracle.addr,
        seed,
    };
    let strategy = prop::collection::vec((any::<u32>(), prop::collection::vec(any::<u32>(), 32)), 1..=max_len);
    let config = Config {
        cases,
        max_shrink_iters: env_num("PROPTEST_MAX_SHRINK_ITERS", 300),
        failure_persistence: None,
        rng_seed,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if survey {
        let mut first: BTreeMap<String, (usize, String)> = BTreeMap::new();
        let mut later_all = Vec::new();
        let mut failed = 0;
        for _ in 0..cases {
            let seq = strategy.new_tree(&mut runner).expect("generate").current();
            let mut later = Vec::new();
            if let Err(m) = h.run(&seq, Some(&mut later)) {
                failed += 1;
                let name = m.steps[m.at]
                    .argv
                    .iter()
                    .find(|a| !a.starts_with('('))
                    .map(|a| a.to_ascii_uppercase())
                    .unwrap_or_default();
                let e = first.entry(name).or_insert((0, h.render(&m)));
                e.0 += 1;
            }
            later_all.extend(later);
        }
        let mut later_counts: BTreeMap<String, usize> = BTreeMap::new();
        for l in later_all {
            *later_counts.entry(l).or_default() += 1;
        }
        let mut report = format!("survey [{} {}]: {failed} of {cases} sequences differ\n", h.family.name, h.proto());
        report.push_str("first mismatch per sequence, by command:\n");
        for (name, (n, _)) in &first {
            let _ = writeln!(report, "  {name:20} {n}");
        }
        if !later_counts.is_empty() {
            report.push_str("later mismatches (after the states may have diverged):\n");
            for (name, n) in &later_counts {
                let _ = writeln!(report, "  {name:20} {n}");
            }
        }
        if let Some(k) = &h.known {
            let unknown: Vec<String> = k.lock().unwrap().iter().filter(|(_, &b)| !b).map(|(n, _)| n.clone()).collect();
            let _ = writeln!(report, "left out (unknown to redoubt): {}", unknown.join(" "));
        }
        report.push_str("one example per command:\n");
        for (_, (_, ex)) in first {
            report.push_str(&ex);
            report.push('\n');
        }
        println!("{report}");
        if let Ok(path) = std::env::var("DIFF_SURVEY_OUT") {
            use std::io::Write;
            // One write per report, in append mode: parallel tests do not interleave.
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("DIFF_SURVEY_OUT");
            f.write_all(format!("{report}\n").as_bytes()).expect("write survey");
        }
        if failed > 0 {
            panic!("{report}");
        }
        return;
    }
    let result = runner.run(&strategy, |seq| h.run(&seq, None).map_err(|m| TestCaseError::fail(h.render(&m))));
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, _)) => panic!("{reason}"),
        Err(TestError::Abort(reason)) => panic!("proptest aborted: {reason}"),
    }
    drop(server);
    drop(oracle);
}

macro_rules! family_tests {
    ($($name:ident => $family:expr;)*) => {
        $(
            mod $name {
                use super::*;
                #[test]
                fn resp2() {
                    differential($family, false);
                }
                #[test]
                fn resp3() {
                    differential($family, true);
                }
            }
        )*
    };
}

family_tests! {
    strings => Family { name: "strings", gens: strings, mutate: false, prelude: &[] };
    keys => Family { name: "keys", gens: keys, mutate: false, prelude: &[] };
    hashes => Family { name: "hashes", gens: hashes, mutate: false, prelude: &[] };
    lists => Family { name: "lists", gens: lists, mutate: false, prelude: &[] };
    sets => Family { name: "sets", gens: sets, mutate: false, prelude: &[] };
    zsets => Family { name: "zsets", gens: zsets, mutate: false, prelude: &[] };
    bits => Family { name: "bits", gens: bits, mutate: false, prelude: &[] };
    sort => Family { name: "sort", gens: sort, mutate: false, prelude: &[] };
    tx => Family { name: "tx", gens: tx, mutate: false, prelude: &[] };
    scripting => Family { name: "scripting", gens: scripting, mutate: false, prelude: &[] };
    functions => Family { name: "functions", gens: functions, mutate: false, prelude: FUNCTION_FLUSH };
    errors => Family { name: "errors", gens: errors_gens, mutate: true, prelude: TYPED_KEYS };
    mixed => Family { name: "mixed", gens: mixed_gens, mutate: false, prelude: &[] };
}

/// Every `PACK_SCRIPTS` entry once (those reading `ARGV[1]` with each of `PACK_ARGS`), in
/// RESP2 and RESP3: the random `scripting` family draws from the list too, but would take
/// many cases to reach all of it.
#[test]
fn scripting_pack_libraries_every_script() {
    let Some(oracle) = Oracle::start() else { return };
    let server = start_redoubt(&[]);
    let mut failures = Vec::new();
    for resp3 in [false, true] {
        let mut ours = Conn::connect(server.addr);
        let mut theirs = Conn::connect(oracle.addr);
        if resp3 {
            theirs.hello3().expect("oracle HELLO 3");
            ours.hello3().expect("redoubt HELLO 3");
        }
        for script in PACK_SCRIPTS {
            let args: &[&[u8]] = if script.contains("ARGV") { PACK_ARGS } else { &[b"x"] };
            for arg in args {
                let argv: [&[u8]; 5] = [b"EVAL", script.as_bytes(), b"1", b"k0", arg];
                let t = theirs.try_cmd(&argv).expect("the oracle replies");
                let o = ours.try_cmd(&argv);
                let same = matches!(&o, Ok(o) if compare_by_rule(Rule::Exact, o, &t).is_ok());
                if !same {
                    failures.push(format!(
                        "[{}] {}\n  redoubt:      {}\n  redis-server: {}",
                        if resp3 { "RESP3" } else { "RESP2" },
                        render_command(&argv),
                        show(&o),
                        t.render()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} replies differ:\n{}", failures.len(), failures.join("\n"));
}

/// The differential machinery itself, checked against two redis-servers: every family must
/// agree with itself, or the generators produce commands whose replies are not determined
/// by the sequence (time races, unspecified order) and the real tests would be flaky.
#[test]
#[ignore = "self-check of the generators: run with --ignored after changing them"]
fn generators_are_deterministic_on_redis_itself() {
    let (Some(a), Some(b)) = (Oracle::start(), Oracle::start()) else { return };
    for resp3 in [false, true] {
        for family in [
            Family { name: "strings", gens: strings, mutate: false, prelude: &[] },
            Family { name: "keys", gens: keys, mutate: false, prelude: &[] },
            Family { name: "hashes", gens: hashes, mutate: false, prelude: &[] },
            Family { name: "lists", gens: lists, mutate: false, prelude: &[] },
            Family { name: "sets", gens: sets, mutate: false, prelude: &[] },
            Family { name: "zsets", gens: zsets, mutate: false, prelude: &[] },
            Family { name: "bits", gens: bits, mutate: false, prelude: &[] },
            Family { name: "sort", gens: sort, mutate: false, prelude: &[] },
            Family { name: "tx", gens: tx, mutate: false, prelude: &[] },
            Family { name: "scripting", gens: scripting, mutate: false, prelude: &[] },
            Family { name: "functions", gens: functions, mutate: false, prelude: FUNCTION_FLUSH },
            Family { name: "errors", gens: errors_gens, mutate: true, prelude: TYPED_KEYS },
            Family { name: "mixed", gens: mixed_gens, mutate: false, prelude: &[] },
        ] {
            let h = Harness {
                known: None,
                gens: (family.gens)(),
                family,
                resp3,
                ours: a.addr,
                theirs: b.addr,
                seed: "self-check".into(),
            };
            let strategy = prop::collection::vec((any::<u32>(), prop::collection::vec(any::<u32>(), 32)), 1..=24usize);
            let mut runner = TestRunner::new(Config {
                cases: env_num("PROPTEST_CASES", 300),
                failure_persistence: None,
                ..Config::default()
            });
            let r = runner.run(&strategy, |seq| h.run(&seq, None).map_err(|m| TestCaseError::fail(h.render(&m))));
            if let Err(TestError::Fail(reason, _)) = r {
                panic!("{reason}");
            }
        }
    }
}
