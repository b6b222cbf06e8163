//! Judging a redoubt reply against the oracle's reply to the same command.
//!
//! Exact by default: same RESP types (simple vs bulk string, map vs array, double vs string),
//! same error texts, same order. The exceptions are the places where Redis itself promises
//! nothing:
//!
//! * unordered collections (`SMEMBERS`, `SUNION`, `SINTER`, `SDIFF`, `KEYS`, the `SCAN`
//!   family, and `HGETALL`/`HKEYS`/`HVALS` of hashes too big for a listpack, whose order is
//!   the dict's) are compared as multisets;
//! * random replies (`SRANDMEMBER`, `SPOP`, `RANDOMKEY`, `HRANDFIELD`, `ZRANDMEMBER`) are
//!   compared by shape only: same kinds, same lengths, same error text;
//! * time-dependent numbers (`TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`, `OBJECT IDLETIME`)
//!   are compared with a tolerance, since the two servers run each command a few
//!   milliseconds apart;
//! * `EXEC` replies are judged element by element with the rule of each queued command.
//!
//! [`parse_info`] / [`normalize_info`] and [`mask_kv_line`] help with INFO-like and
//! `CLIENT LIST`-like text, whose volatile fields never match.

use std::collections::BTreeMap;

use crate::Value;

/// Entries above which Redis 7.0 stores a hash as a dict (`hash-max-listpack-entries`), so
/// that HGETALL and friends come back in no particular order.
pub const HASH_LISTPACK_MAX: usize = 128;

/// How two replies to one command are compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Exact,
    /// Elements of the (top-level) array/set as a multiset.
    Unordered,
    /// Flat `k v k v` arrays or maps: pairs as a multiset.
    UnorderedPairs,
    /// Unordered only when the collection is larger than a listpack hash can be.
    UnorderedIfBig {
        pairs: bool,
    },
    /// `[cursor, elements]` with elements as a multiset (pairs when `pairs`).
    Scan {
        pairs: bool,
    },
    /// Kinds and lengths only.
    Shape,
    /// Integers within `±n` of each other (negative values, the "no TTL"/"no key" answers,
    /// must match exactly).
    Tolerance(i64),
    /// Not compared at all.
    Ignore,
    /// Lists of records (FUNCTION LIST's libraries and each library's functions, kept in
    /// hash order by Redis) as multisets, at every depth; the records themselves exactly.
    Records,
}

fn upper(a: &[u8]) -> String {
    String::from_utf8_lossy(a).to_ascii_uppercase()
}

/// The rule for a command's reply.
pub fn rule_for<A: AsRef<[u8]>>(argv: &[A]) -> Rule {
    let Some(name) = argv.first() else { return Rule::Exact };
    let name = upper(name.as_ref());
    let sub = argv.get(1).map(|s| upper(s.as_ref())).unwrap_or_default();
    match name.as_str() {
        "SMEMBERS" | "SUNION" | "SINTER" | "SDIFF" | "KEYS" => Rule::Unordered,
        "HGETALL" => Rule::UnorderedIfBig { pairs: true },
        "HKEYS" | "HVALS" => Rule::UnorderedIfBig { pairs: false },
        "SCAN" | "SSCAN" => Rule::Scan { pairs: false },
        "HSCAN" | "ZSCAN" => Rule::Scan { pairs: true },
        "SRANDMEMBER" | "SPOP" | "RANDOMKEY" | "HRANDFIELD" | "ZRANDMEMBER" | "TIME" | "LASTSAVE" => Rule::Shape,
        "TTL" | "EXPIRETIME" => Rule::Tolerance(1),
        "PTTL" | "PEXPIRETIME" => Rule::Tolerance(1000),
        "OBJECT" if sub == "IDLETIME" => Rule::Tolerance(2),
        "OBJECT" if sub == "FREQ" => Rule::Ignore,
        "FUNCTION" if sub == "LIST" => Rule::Records,
        _ => Rule::Exact,
    }
}

/// A total order on values for multiset comparison (by rendering; good enough for tests).
fn sort_key(v: &Value) -> String {
    v.render()
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(sort_key);
    v
}

fn sorted_pairs(v: Vec<Value>) -> Vec<Value> {
    let mut pairs: Vec<(Value, Value)> = Vec::new();
    let mut it = v.into_iter();
    while let Some(k) = it.next() {
        let val = it.next().unwrap_or(Value::Nil);
        pairs.push((k, val));
    }
    pairs.sort_by_key(|(k, v)| (sort_key(k), sort_key(v)));
    pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()
}

/// `v` with its top-level elements sorted (arrays and sets; maps by key).
pub fn unordered(v: &Value, pairs: bool) -> Value {
    match v {
        Value::Array(a) if pairs => Value::Array(sorted_pairs(a.clone())),
        Value::Array(a) => Value::Array(sorted(a.clone())),
        Value::Set(a) => Value::Set(sorted(a.clone())),
        Value::Map(m) => {
            let mut m = m.clone();
            m.sort_by_key(|(k, v)| (sort_key(k), sort_key(v)));
            Value::Map(m)
        }
        // RESP3 HRANDFIELD/ZRANDMEMBER WITHVALUES/ZSCAN pairs come as arrays of pairs.
        other => other.clone(),
    }
}

fn len_of(v: &Value) -> usize {
    match v {
        Value::Array(a) | Value::Set(a) | Value::Push(a) => a.len(),
        Value::Map(m) => m.len() * 2,
        _ => 0,
    }
}

/// Any string element longer than `hash-max-listpack-value` (64): such a hash is a dict.
fn has_long_element(v: &Value) -> bool {
    let long = |x: &Value| x.as_bytes().is_some_and(|b| b.len() > 64);
    match v {
        Value::Array(a) | Value::Set(a) => a.iter().any(long),
        Value::Map(m) => m.iter().any(|(k, v)| long(k) || long(v)),
        _ => false,
    }
}

/// The shape of a reply: every scalar replaced by a placeholder of its kind; errors, nulls
/// and booleans kept; collection lengths kept.
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Simple(_) => Value::Simple(b"?".to_vec()),
        Value::Bulk(_) => Value::Bulk(b"?".to_vec()),
        Value::Verbatim(f, _) => Value::Verbatim(f.clone(), b"?".to_vec()),
        Value::Int(_) => Value::Int(0),
        Value::Double(_) => Value::Double(0.0),
        Value::BigNumber(_) => Value::BigNumber(b"0".to_vec()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::Set(a) => Value::Set(a.iter().map(shape).collect()),
        Value::Push(a) => Value::Push(a.iter().map(shape).collect()),
        Value::Map(m) => Value::Map(m.iter().map(|(k, v)| (shape(k), shape(v))).collect()),
        other => other.clone(),
    }
}

/// Applies a rule's normalisation to one reply (tolerances are not normalisations: see
/// [`compare`]).
pub fn normalize_with(rule: Rule, v: &Value) -> Value {
    match rule {
        Rule::Exact | Rule::Tolerance(_) | Rule::Ignore => v.clone(),
        Rule::Unordered => unordered(v, false),
        Rule::UnorderedPairs => unordered(v, true),
        Rule::UnorderedIfBig { pairs } => {
            let n = if pairs { len_of(v) / 2 } else { len_of(v) };
            if n > HASH_LISTPACK_MAX || has_long_element(v) {
                unordered(v, pairs)
            } else {
                v.clone()
            }
        }
        Rule::Scan { pairs } => match v {
            Value::Array(a) if a.len() == 2 => Value::Array(vec![a[0].clone(), unordered(&a[1], pairs)]),
            other => other.clone(),
        },
        Rule::Shape => shape(v),
        Rule::Records => records(v),
    }
}

/// `v` with every array whose elements are all records (maps, or RESP2's flat arrays)
/// sorted.
fn records(v: &Value) -> Value {
    match v {
        Value::Array(a) => {
            let inner: Vec<Value> = a.iter().map(records).collect();
            if !inner.is_empty() && inner.iter().all(|x| matches!(x, Value::Map(_) | Value::Array(_))) {
                Value::Array(sorted(inner))
            } else {
                Value::Array(inner)
            }
        }
        Value::Map(m) => Value::Map(m.iter().map(|(k, x)| (k.clone(), records(x))).collect()),
        other => other.clone(),
    }
}

/// The normalised reply of `argv` (what [`compare`] compares, tolerances aside).
pub fn normalize<A: AsRef<[u8]>>(argv: &[A], v: &Value) -> Value {
    normalize_with(rule_for(argv), v)
}

/// Compares redoubt's reply (`ours`) with the oracle's (`theirs`) for `argv`.
/// `Err` carries a one-line explanation.
pub fn compare<A: AsRef<[u8]>>(argv: &[A], ours: &Value, theirs: &Value) -> Result<(), String> {
    compare_by_rule(rule_for(argv), ours, theirs)
}

/// Compares two replies under an explicit rule (for callers that know more than the
/// command name, e.g. that a hash is stored as a dict: see [`hash_rule`]).
pub fn compare_by_rule(rule: Rule, ours: &Value, theirs: &Value) -> Result<(), String> {
    match rule {
        Rule::Ignore => Ok(()),
        Rule::Tolerance(n) => match (ours, theirs) {
            (Value::Int(a), Value::Int(b)) if *a >= 0 && *b >= 0 => {
                if (a - b).abs() <= n {
                    Ok(())
                } else {
                    Err(format!("differ by more than {n}"))
                }
            }
            _ if ours == theirs => Ok(()),
            _ => Err("differ".into()),
        },
        _ => {
            let (a, b) = (normalize_with(rule, ours), normalize_with(rule, theirs));
            if a == b {
                Ok(())
            } else if rule == Rule::Exact {
                Err("differ".into())
            } else {
                Err(format!("differ after normalisation ({rule:?}): {} vs {}", a.render(), b.render()))
            }
        }
    }
}

/// The rule for `HGETALL`/`HKEYS`/`HVALS` given the hash's `OBJECT ENCODING` on the
/// oracle: a `hashtable` hash (more than 128 fields, or any field or value longer than 64
/// bytes, ever) is iterated in the dict's seeded order, which differs even between two
/// redis-server processes; a `listpack` one in insertion order.
pub fn hash_rule<A: AsRef<[u8]>>(argv: &[A], encoding: Option<&[u8]>) -> Rule {
    let name = argv.first().map(|a| upper(a.as_ref())).unwrap_or_default();
    let pairs = match name.as_str() {
        "HGETALL" => true,
        "HKEYS" | "HVALS" => false,
        _ => return rule_for(argv),
    };
    match encoding {
        Some(b"hashtable") => {
            if pairs {
                Rule::UnorderedPairs
            } else {
                Rule::Unordered
            }
        }
        Some(_) => Rule::Exact,
        None => rule_for(argv),
    }
}

/// Compares two `EXEC` replies element by element, with the rule of each queued command.
pub fn compare_exec<A: AsRef<[u8]>>(queued: &[Vec<A>], ours: &Value, theirs: &Value) -> Result<(), String> {
    compare_exec_by(queued, ours, theirs, |q| rule_for(q))
}

/// Like [`compare_exec`] with the caller's choice of rule per queued command.
pub fn compare_exec_by<A: AsRef<[u8]>>(
    queued: &[Vec<A>],
    ours: &Value,
    theirs: &Value,
    rule_of: impl Fn(&[A]) -> Rule,
) -> Result<(), String> {
    match (ours, theirs) {
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() && a.len() == queued.len() => {
            for (i, ((x, y), q)) in a.iter().zip(b).zip(queued).enumerate() {
                compare_by_rule(rule_of(q), x, y)
                    .map_err(|e| format!("element {} ({}): {e}", i + 1, crate::render_command(q)))?;
            }
            Ok(())
        }
        _ if ours == theirs => Ok(()),
        _ => Err("differ".into()),
    }
}

// ---------------------------------------------------------------------------------------
// INFO-like text
// ---------------------------------------------------------------------------------------

/// INFO fields that differ between any two servers or any two moments.
pub const VOLATILE_INFO_FIELDS: &[&str] = &[
    "redis_version",
    "redis_git_sha1",
    "redis_git_dirty",
    "redis_build_id",
    "redis_mode",
    "os",
    "arch_bits",
    "monotonic_clock",
    "multiplexing_api",
    "atomicvar_api",
    "gcc_version",
    "process_id",
    "process_supervised",
    "run_id",
    "tcp_port",
    "server_time_usec",
    "uptime_in_seconds",
    "uptime_in_days",
    "hz",
    "configured_hz",
    "lru_clock",
    "executable",
    "config_file",
    "io_threads_active",
    "connected_clients",
    "cluster_connections",
    "maxclients",
    "client_recent_max_input_buffer",
    "client_recent_max_output_buffer",
    "blocked_clients",
    "tracking_clients",
    "clients_in_timeout_table",
    "total_blocking_keys",
    "total_blocking_keys_on_nokey",
];

/// Prefixes of INFO fields that are volatile (memory, CPU, network, latency, ...).
pub const VOLATILE_INFO_PREFIXES: &[&str] = &[
    "used_memory",
    "used_cpu",
    "mem_",
    "allocator_",
    "rss_",
    "total_system_memory",
    "maxmemory_human",
    "total_net",
    "instantaneous_",
    "total_connections_received",
    "total_commands_processed",
    "rdb_",
    "aof_",
    "latency_percentiles_usec_",
    "cmdstat_",
    "errorstat_",
    "eventloop_",
    "peak_",
    "lazyfree",
    "number_of_cached_scripts",
    "used_",
    "master_repl",
    "second_repl",
    "repl_backlog",
    "keyspace_hits",
    "keyspace_misses",
    "expired_",
    "evicted_",
    "current_",
    "migrate_cached",
    "total_reads",
    "total_writes",
    "io_threaded",
    "client_",
    "dump_payload",
    "module_fork",
    "active_defrag",
    "total_active_defrag",
    "total_eviction",
    "total_forks",
    "latest_fork",
    "sync_",
    "total_error_replies",
    "unexpected_error_replies",
    "acl_access_denied",
];

/// Parses INFO text into `field -> value` (sections and comments dropped).
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// INFO text as a map without the volatile fields: what two servers in the same logical
/// state should agree on (e.g. `keyspace` lines, `role`, `loading`).
pub fn normalize_info(text: &str) -> BTreeMap<String, String> {
    parse_info(text)
        .into_iter()
        .filter(|(k, _)| {
            !VOLATILE_INFO_FIELDS.contains(&k.as_str()) && !VOLATILE_INFO_PREFIXES.iter().any(|p| k.starts_with(p))
        })
        .collect()
}

/// Masks the values of `fields` in a `k=v k=v` line (CLIENT LIST/INFO, keyspace lines):
/// `mask_kv_line("id=7 addr=1.2.3.4:5 age=0", &["id", "addr", "age"])` gives
/// `"id=* addr=* age=*"`.
pub fn mask_kv_line(line: &str, fields: &[&str]) -> String {
    line.split(' ')
        .map(|w| match w.split_once('=') {
            Some((k, _)) if fields.contains(&k) => format!("{k}=*"),
            _ => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn rules() {
        assert_eq!(rule_for(&["smembers", "k"]), Rule::Unordered);
        assert_eq!(rule_for(&["GET", "k"]), Rule::Exact);
        assert_eq!(rule_for(&["object", "idletime", "k"]), Rule::Tolerance(2));
        assert_eq!(rule_for(&["OBJECT", "ENCODING", "k"]), Rule::Exact);
    }

    #[test]
    fn unordered_and_shape() {
        let a = Value::Array(vec![b("b"), b("a")]);
        let c = Value::Array(vec![b("a"), b("b")]);
        assert!(compare(&["SMEMBERS", "s"], &a, &c).is_ok());
        assert!(compare(&["LRANGE", "s", "0", "-1"], &a, &c).is_err());
        assert!(compare(&["SRANDMEMBER", "s", "2"], &a, &Value::Array(vec![b("x"), b("y")])).is_ok());
        assert!(compare(&["SRANDMEMBER", "s", "2"], &a, &Value::Array(vec![b("x")])).is_err());
        let h1 = Value::Array(vec![b("f1"), b("1"), b("f2"), b("2")]);
        let h2 = Value::Array(vec![b("f2"), b("2"), b("f1"), b("1")]);
        // small hashes keep insertion order in Redis: exact
        assert!(compare(&["HGETALL", "h"], &h1, &h2).is_err());
        let big = |rev: bool| {
            let mut v: Vec<Value> = (0..200).flat_map(|i| [b(&format!("f{i}")), b(&i.to_string())]).collect();
            if rev {
                v = sorted_pairs(v).into_iter().rev().collect::<Vec<_>>();
                v = v.chunks(2).flat_map(|c| [c[1].clone(), c[0].clone()]).collect();
            }
            Value::Array(v)
        };
        assert!(compare(&["HGETALL", "h"], &big(false), &big(true)).is_ok());
    }

    #[test]
    fn tolerance_and_exec() {
        assert!(compare(&["PTTL", "k"], &Value::Int(99_990), &Value::Int(100_000)).is_ok());
        assert!(compare(&["PTTL", "k"], &Value::Int(-1), &Value::Int(-2)).is_err());
        assert!(compare(&["TTL", "k"], &Value::Int(10), &Value::Int(100)).is_err());
        let q = vec![vec!["SET", "k", "v"], vec!["TTL", "k"]];
        let a = Value::Array(vec![Value::Simple(b"OK".to_vec()), Value::Int(99)]);
        let c = Value::Array(vec![Value::Simple(b"OK".to_vec()), Value::Int(100)]);
        assert!(compare_exec(&q, &a, &c).is_ok());
    }

    #[test]
    fn info() {
        let t = "# Server\r\nredis_version:7.0.15\r\nuptime_in_seconds:3\r\n\r\n# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n";
        let n = normalize_info(t);
        assert_eq!(n.len(), 1);
        assert_eq!(n["db0"], "keys=1,expires=0,avg_ttl=0");
        assert_eq!(mask_kv_line("id=3 addr=127.0.0.1:5 name=x", &["id", "addr"]), "id=* addr=* name=x");
    }
}
