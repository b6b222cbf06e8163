//! A linearizability checker for histories of Redis commands recorded by concurrent clients.
//!
//! A history is a list of [`Entry`]s: which client ran which command on which key, when it
//! was sent (`invoke`), and when its reply arrived with what reply (`done`), or `done: None`
//! when the outcome is unknown (the connection closed, the reply timed out). An operation of
//! unknown outcome may or may not have taken effect, and if it did, at any moment after its
//! invocation: the checker lets it take effect anywhere after `invoke`, or never.
//!
//! The history is linearizable when every operation can be given a single instant between
//! its invocation and its reply at which it took effect, such that the replies are those of
//! the sequential model run in that order. Linearizability is compositional, so each key is
//! checked on its own ([`check`] runs the keys on threads), against one of three models
//! ([`Kind`]): a register (`SET k v` -> `OK`, `GET k` -> value or nil), a counter (`INCR k`
//! -> the new value, `GET k`), and a list (`LPUSH k v` -> the new length,
//! `LRANGE k 0 -1` -> the list).
//!
//! The search is Wing & Gong's, as refined by Lowe ("Testing for linearizability", 2017)
//! and used by Porcupine: the invocations and replies sit in one time-ordered linked list;
//! the search walks it, "lifting" (linearizing) an invoked operation whenever the model
//! accepts its reply, and backtracks when it reaches a reply it could not linearize first.
//! Every configuration visited, the set of linearized operations (a bitset) with the model
//! state, is remembered, so a configuration is never explored twice: that cache is what
//! makes histories of thousands of operations per key cheap when the concurrency is a
//! handful of clients. Two reductions keep operations of unknown outcome from blowing the
//! search up:
//!
//! * identical operations of unknown outcome (every lost `INCR` of a key) are
//!   interchangeable, so only the earliest-invoked one not yet linearized is ever tried;
//! * an unknown `SET` whose value no `GET` returned can be left out (had it taken effect,
//!   moving it to the end changes no reply), and so can an unknown `LPUSH` whose value is
//!   missing from a "final" `LRANGE` (one invoked after every other operation completed).
//!
//! When no order works, the [`Anomaly`] names the reply that could not be explained in the
//! deepest configuration the search reached, the model state(s) just before it, and a
//! window of the history around it: the operations it could have been ordered after and
//! the last few that were linearized before.
//!
//! Unit tests of the checker: `cargo nextest run -p redoubt-tests --lib linearize`.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Value;

// ---------------------------------------------------------------------------------------
// histories
// ---------------------------------------------------------------------------------------

/// A command, without its key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Set(String),
    Get,
    Incr,
    LPush(String),
    /// `LRANGE k 0 -1`.
    LRange,
}

impl Op {
    /// True for commands that change nothing: one of unknown outcome is left out.
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get | Op::LRange)
    }

    /// The command's arguments after the name and key, as sent.
    pub fn argv(&self, key: &str) -> Vec<String> {
        match self {
            Op::Set(v) => vec!["SET".into(), key.into(), v.clone()],
            Op::Get => vec!["GET".into(), key.into()],
            Op::Incr => vec!["INCR".into(), key.into()],
            Op::LPush(v) => vec!["LPUSH".into(), key.into(), v.clone()],
            Op::LRange => vec!["LRANGE".into(), key.into(), "0".into(), "-1".into()],
        }
    }
}

/// A reply, reduced to what the models look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ret {
    Ok,
    Nil,
    Bulk(String),
    Int(i64),
    List(Vec<String>),
    /// Anything else (an error, a reply of the wrong type): no model accepts it.
    Other(String),
}

impl Ret {
    pub fn from_value(v: &Value) -> Ret {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match v {
            Value::Simple(b) if b == b"OK" => Ret::Ok,
            Value::Nil => Ret::Nil,
            Value::Bulk(b) => Ret::Bulk(s(b)),
            Value::Int(i) => Ret::Int(*i),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    match it {
                        Value::Bulk(b) => out.push(s(b)),
                        _ => return Ret::Other(v.render()),
                    }
                }
                Ret::List(out)
            }
            other => Ret::Other(other.render()),
        }
    }
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ret::Ok => write!(f, "OK"),
            Ret::Nil => write!(f, "nil"),
            Ret::Bulk(s) => write!(f, "{s:?}"),
            Ret::Int(i) => write!(f, "{i}"),
            Ret::List(v) => write!(f, "{}", show_list(v.iter().map(String::as_str), v.len())),
            Ret::Other(s) => write!(f, "unexpected reply {s}"),
        }
    }
}

/// `[a, b, c]`, or its first and last items with the length when long.
fn show_list<'a>(items: impl Iterator<Item = &'a str>, len: usize) -> String {
    const SHOWN: usize = 8;
    let items: Vec<&str> = items.collect();
    if len <= SHOWN {
        return format!("[{}]", items.join(", "));
    }
    format!("[{}, ... {}] ({len} items)", items[..SHOWN - 2].join(", "), items[len - 2..].join(", "))
}

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Which client (thread) ran it: operations of one client never overlap.
    pub client: usize,
    pub key: String,
    pub op: Op,
    /// When the command was sent (time since the history's start).
    pub invoke: Duration,
    /// When its reply arrived and what it was; `None`: unknown outcome.
    pub done: Option<(Duration, Ret)>,
    /// Free text for reports (which node served it, why the outcome is unknown).
    pub note: String,
}

impl Entry {
    pub fn completed(&self) -> bool {
        self.done.is_some()
    }

    fn complete_time(&self) -> Option<Duration> {
        self.done.as_ref().map(|d| d.0)
    }

    /// `c3 [12.345 .. 12.349] INCR c0 -> 42  (n2)`.
    pub fn line(&self) -> String {
        let t = |d: Duration| format!("{:.4}", d.as_secs_f64());
        let argv = self.op.argv(&self.key).join(" ");
        let mut s = match &self.done {
            Some((at, ret)) => format!("c{} [{} .. {}] {argv} -> {ret}", self.client, t(self.invoke), t(*at)),
            None => format!("c{} [{} .. ?] {argv} -> unknown outcome", self.client, t(self.invoke)),
        };
        if !self.note.is_empty() {
            let _ = write!(s, "  ({})", self.note);
        }
        s
    }
}

// ---------------------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------------------

/// The model a key is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Register,
    Counter,
    List,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Register => "register",
            Kind::Counter => "counter",
            Kind::List => "list",
        })
    }
}

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash;
    fn init() -> Self::State;
    /// The state after `op` ran on `s` and replied `ret` (`None`: any reply, the outcome is
    /// unknown), or `None` when the model cannot give that reply in that state.
    fn step(s: &Self::State, op: &Op, ret: Option<&Ret>) -> Option<Self::State>;
    fn show(s: &Self::State) -> String;
}

/// `SET k v` / `GET k`, starting from a missing key.
pub struct Register;

impl Model for Register {
    type State = Option<Arc<str>>;

    fn init() -> Self::State {
        None
    }

    fn step(s: &Self::State, op: &Op, ret: Option<&Ret>) -> Option<Self::State> {
        match (op, ret) {
            (Op::Set(v), None | Some(Ret::Ok)) => Some(Some(Arc::from(v.as_str()))),
            (Op::Get, None) => Some(s.clone()),
            (Op::Get, Some(Ret::Nil)) => s.is_none().then(|| s.clone()),
            (Op::Get, Some(Ret::Bulk(b))) => (s.as_deref() == Some(b.as_str())).then(|| s.clone()),
            _ => None,
        }
    }

    fn show(s: &Self::State) -> String {
        match s {
            None => "nil".into(),
            Some(v) => format!("{v:?}"),
        }
    }
}

/// `INCR k` / `GET k`, starting from a missing key (0).
pub struct Counter;

impl Model for Counter {
    type State = i64;

    fn init() -> i64 {
        0
    }

    fn step(s: &i64, op: &Op, ret: Option<&Ret>) -> Option<i64> {
        match (op, ret) {
            (Op::Incr, None) => Some(s + 1),
            (Op::Incr, Some(Ret::Int(n))) => (*n == s + 1).then_some(*n),
            (Op::Get, None) => Some(*s),
            // INCR never leaves 0 behind, so a missing key and 0 are the same state.
            (Op::Get, Some(Ret::Nil)) => (*s == 0).then_some(0),
            (Op::Get, Some(Ret::Bulk(b))) => (b.parse::<i64>().ok() == Some(*s)).then_some(*s),
            _ => None,
        }
    }

    fn show(s: &i64) -> String {
        s.to_string()
    }
}

/// `LPUSH k v` / `LRANGE k 0 -1`, starting from a missing key (empty).
pub struct List;

/// An immutable list that shares its tail: every state of the search is one `LPUSH` away
/// from another, so a push is one allocation and comparing two states mostly stops at a
/// shared tail. The length and a hash of the whole list are kept in each cell.
#[derive(Clone, Default)]
pub struct PList(Option<Arc<Cell>>);

pub struct Cell {
    v: Arc<str>,
    next: PList,
    len: usize,
    hash: u64,
}

impl PList {
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |c| c.len)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    fn hash64(&self) -> u64 {
        self.0.as_ref().map_or(0, |c| c.hash)
    }

    fn push(&self, v: &str) -> PList {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (v, self.hash64()).hash(&mut h);
        PList(Some(Arc::new(Cell { v: Arc::from(v), next: self.clone(), len: self.len() + 1, hash: h.finish() })))
    }

    /// Head first, as LRANGE returns them.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut cur = self.0.as_deref();
        std::iter::from_fn(move || {
            let c = cur?;
            cur = c.next.0.as_deref();
            Some(&*c.v)
        })
    }
}

impl PartialEq for PList {
    fn eq(&self, other: &PList) -> bool {
        let (mut a, mut b) = (self.0.as_ref(), other.0.as_ref());
        loop {
            match (a, b) {
                (None, None) => return true,
                (Some(x), Some(y)) => {
                    if Arc::ptr_eq(x, y) {
                        return true;
                    }
                    if x.len != y.len || x.hash != y.hash || x.v != y.v {
                        return false;
                    }
                    (a, b) = (x.next.0.as_ref(), y.next.0.as_ref());
                }
                _ => return false,
            }
        }
    }
}

impl Eq for PList {}

impl Hash for PList {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (self.len(), self.hash64()).hash(h)
    }
}

impl Model for List {
    type State = PList;

    fn init() -> PList {
        PList::default()
    }

    fn step(s: &PList, op: &Op, ret: Option<&Ret>) -> Option<PList> {
        match (op, ret) {
            (Op::LPush(v), None) => Some(s.push(v)),
            (Op::LPush(v), Some(Ret::Int(n))) => (*n == s.len() as i64 + 1).then(|| s.push(v)),
            (Op::LRange, None) => Some(s.clone()),
            (Op::LRange, Some(Ret::List(items))) => {
                (items.len() == s.len() && s.iter().zip(items).all(|(a, b)| a == b)).then(|| s.clone())
            }
            _ => None,
        }
    }

    fn show(s: &PList) -> String {
        show_list(s.iter(), s.len())
    }
}

// ---------------------------------------------------------------------------------------
// checking
// ---------------------------------------------------------------------------------------

/// Knobs of a check.
#[derive(Clone, Debug)]
pub struct Options {
    /// Search steps allowed per key before giving up (the problem is NP-complete; a
    /// history of a few thousand operations from a handful of clients needs about as many
    /// steps as it has operations).
    pub max_steps: u64,
    /// Operations linearized just before the anomaly to show for context.
    pub context: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options { max_steps: 20_000_000, context: 6 }
    }
}

/// What the search concluded for one key.
#[derive(Debug)]
pub enum Verdict {
    Linearizable,
    Anomaly(Box<Anomaly>),
    /// The step budget ran out: neither a linearization nor a proof there is none.
    GaveUp,
}

/// A history that is not linearizable, explained.
#[derive(Debug, Clone)]
pub struct Anomaly {
    pub key: String,
    pub kind: Kind,
    /// The operation whose reply no order could explain (in the deepest configuration).
    pub blocker: Entry,
    /// Model states the search could be in just before it (a few).
    pub states: Vec<String>,
    /// The history around it, rendered, one operation a line.
    pub window: Vec<String>,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "key {} ({}) is not linearizable: no order of its operations explains", self.key, self.kind)?;
        writeln!(f, "    {}", self.blocker.line())?;
        writeln!(f, "  model state(s) when it is next to be ordered: {}", self.states.join(" | "))?;
        writeln!(f, "  window (seconds since the start; `<`: linearized before it, `>>`: it, ` `: could go first):")?;
        for l in &self.window {
            writeln!(f, "    {l}")?;
        }
        Ok(())
    }
}

/// The result of checking one key.
#[derive(Debug)]
pub struct KeyResult {
    pub key: String,
    pub kind: Kind,
    /// Operations searched (after the reductions).
    pub ops: usize,
    /// Of those, of unknown outcome.
    pub unknown: usize,
    /// Operations of unknown outcome left out by the reductions.
    pub dropped: usize,
    pub steps: u64,
    pub elapsed: Duration,
    pub verdict: Verdict,
}

/// Checks every key of `entries` against the model `kind_of(key)` names, the keys in
/// parallel. Results in key order.
pub fn check(entries: &[Entry], kind_of: impl Fn(&str) -> Kind + Sync, opts: &Options) -> Vec<KeyResult> {
    let mut by_key: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for e in entries {
        by_key.entry(e.key.as_str()).or_default().push(e);
    }
    let mut keys: Vec<&str> = by_key.keys().copied().collect();
    keys.sort_unstable();
    std::thread::scope(|scope| {
        let handles: Vec<_> = keys
            .iter()
            .map(|k| {
                let ops = &by_key[k];
                let kind = kind_of(k);
                scope.spawn(move || check_key(k, kind, ops, opts))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("checker thread")).collect()
    })
}

/// Checks the operations of one key against one model.
pub fn check_key(key: &str, kind: Kind, ops: &[&Entry], opts: &Options) -> KeyResult {
    match kind {
        Kind::Register => check_model::<Register>(key, kind, ops, opts),
        Kind::Counter => check_model::<Counter>(key, kind, ops, opts),
        Kind::List => check_model::<List>(key, kind, ops, opts),
    }
}

/// Drops the operations of unknown outcome that cannot matter (see the module docs).
fn reduce<'a>(kind: Kind, ops: &[&'a Entry]) -> Vec<&'a Entry> {
    let read_values: HashSet<&str> = ops
        .iter()
        .filter_map(|e| match &e.done {
            Some((_, Ret::Bulk(b))) if e.op == Op::Get => Some(b.as_str()),
            _ => None,
        })
        .collect();
    // A completed LRANGE invoked after every other operation completed (strictly: touching
    // intervals count as concurrent) sees every LPUSH
    // that will ever be ordered before a reply: one missing from it can go last.
    let last_done = |skip: &Entry| {
        ops.iter().filter(|e| !std::ptr::eq(**e, skip)).filter_map(|e| e.complete_time()).max().unwrap_or_default()
    };
    let final_list: Option<HashSet<&str>> = (kind == Kind::List)
        .then(|| {
            ops.iter().rev().find_map(|e| match &e.done {
                Some((_, Ret::List(items))) if e.op == Op::LRange && e.invoke > last_done(e) => {
                    Some(items.iter().map(String::as_str).collect())
                }
                _ => None,
            })
        })
        .flatten();
    ops.iter()
        .copied()
        .filter(|e| {
            if e.completed() {
                return true;
            }
            match &e.op {
                Op::Get | Op::LRange => false,
                Op::Set(v) => read_values.contains(v.as_str()),
                Op::LPush(v) => final_list.as_ref().is_none_or(|f| f.contains(v.as_str())),
                Op::Incr => true,
            }
        })
        .collect()
}

const NIL: usize = usize::MAX;

/// A node of the event list: the invocation or the reply of operation `op`.
#[derive(Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    op: usize,
    is_call: bool,
}

struct Events {
    nodes: Vec<Node>,
    call: Vec<usize>,
    ret: Vec<usize>,
}

impl Events {
    /// Node 0 is the head; then every invocation and reply in time order (at equal times
    /// invocations first: two operations that touch are taken as concurrent). Operations of
    /// unknown outcome have no reply node: nothing forces them to be ordered.
    fn new(ops: &[&Entry]) -> Events {
        let mut ev: Vec<(Duration, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, e) in ops.iter().enumerate() {
            ev.push((e.invoke, false, i));
            if let Some(t) = e.complete_time() {
                ev.push((t, true, i));
            }
        }
        ev.sort_unstable();
        let mut nodes = vec![Node { prev: NIL, next: NIL, op: NIL, is_call: false }];
        let (mut call, mut ret) = (vec![NIL; ops.len()], vec![NIL; ops.len()]);
        for (_, is_ret, op) in ev {
            let n = nodes.len();
            nodes[n - 1].next = n;
            nodes.push(Node { prev: n - 1, next: NIL, op, is_call: !is_ret });
            if is_ret {
                ret[op] = n;
            } else {
                call[op] = n;
            }
        }
        Events { nodes, call, ret }
    }

    fn unlink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = n;
        if next != NIL {
            self.nodes[next].prev = n;
        }
    }

    /// Takes an operation out of the list (its invocation and reply).
    fn lift(&mut self, op: usize) {
        self.unlink(self.call[op]);
        if self.ret[op] != NIL {
            self.unlink(self.ret[op]);
        }
    }

    /// Puts back the operation lifted last (dancing links: strictly LIFO).
    fn unlift(&mut self, op: usize) {
        if self.ret[op] != NIL {
            self.relink(self.ret[op]);
        }
        self.relink(self.call[op]);
    }
}

/// The furthest the search got: how many completed operations it had linearized when it
/// met a reply it could not pass.
struct Deepest<S> {
    done: usize,
    blocker: usize,
    states: Vec<S>,
    linearized: Vec<u64>,
}

fn check_model<M: Model>(key: &str, kind: Kind, all: &[&Entry], opts: &Options) -> KeyResult {
    let started = Instant::now();
    let ops = reduce(kind, all);
    let n = ops.len();
    let unknown = ops.iter().filter(|e| !e.completed()).count();
    let mut events = Events::new(&ops);

    // Identical operations of unknown outcome: each may only be linearized after its
    // earlier-invoked twin (any linearization using the later one can use the earlier one
    // in its place: fewer operations must precede it, and neither has a reply to match).
    let mut twin_before = vec![NIL; n];
    {
        let mut order: Vec<usize> = (0..n).filter(|&i| !ops[i].completed()).collect();
        order.sort_by_key(|&i| (ops[i].invoke, i));
        let mut last: HashMap<&Op, usize> = HashMap::new();
        for i in order {
            if let Some(prev) = last.insert(&ops[i].op, i) {
                twin_before[i] = prev;
            }
        }
    }

    let words = n.div_ceil(64);
    let mut bits = vec![0u64; words];
    let is_set = |bits: &[u64], i: usize| bits[i / 64] & (1 << (i % 64)) != 0;
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = M::init();
    let mut remaining = ops.iter().filter(|e| e.completed()).count();
    let total_done = remaining;
    let mut deepest: Option<Deepest<M::State>> = None;
    let mut steps = 0u64;
    let mut cur = events.nodes[0].next;
    // The candidates at a depth are the invocations before the first reply still in the
    // list; they are tried in two passes, operations with a reply first, then those of
    // unknown outcome. The order changes nothing about what is found, but a search that
    // tries a lost write only when nothing else explains the next reply goes straight
    // through most histories instead of first exploring "what if it took effect here".
    let mut unknown_pass = false;

    let verdict = loop {
        if remaining == 0 {
            break Verdict::Linearizable;
        }
        steps += 1;
        if steps > opts.max_steps {
            break Verdict::GaveUp;
        }
        let node = if cur == NIL { None } else { Some(events.nodes[cur]) };
        if let Some(node) = node.filter(|n| n.is_call) {
            let op = node.op;
            let twin = twin_before[op];
            if ops[op].completed() != unknown_pass && (twin == NIL || is_set(&bits, twin)) {
                let ret = ops[op].done.as_ref().map(|d| &d.1);
                if let Some(next) = M::step(&state, &ops[op].op, ret) {
                    bits[op / 64] |= 1 << (op % 64);
                    if cache.insert((bits.clone(), next.clone())) {
                        stack.push((op, std::mem::replace(&mut state, next)));
                        events.lift(op);
                        if ops[op].completed() {
                            remaining -= 1;
                        }
                        cur = events.nodes[0].next;
                        unknown_pass = false;
                        continue;
                    }
                    bits[op / 64] &= !(1 << (op % 64));
                }
            }
            cur = node.next;
        } else if !unknown_pass && unknown > 0 {
            unknown_pass = true;
            cur = events.nodes[0].next;
        } else {
            // A reply whose operation is not linearized yet: nothing left to try at this
            // depth; undo the latest choice and try the next candidate after it.
            // (The end of the list cannot come first while a completed operation is left:
            // its reply is in the list. Backtrack all the same rather than trust that.)
            let done = total_done - remaining;
            if let Some(node) = node {
                match &mut deepest {
                    Some(d) if d.done > done => {}
                    Some(d) if d.done == done && d.blocker == node.op => {
                        if d.states.len() < 4 && !d.states.contains(&state) {
                            d.states.push(state.clone());
                        }
                    }
                    _ => {
                        let (states, linearized) = (vec![state.clone()], bits.clone());
                        deepest = Some(Deepest { done, blocker: node.op, states, linearized });
                    }
                }
            }
            let Some((op, prev)) = stack.pop() else {
                let d = deepest.take().expect("a blocked reply was recorded");
                break Verdict::Anomaly(Box::new(explain::<M>(key, kind, &ops, d, opts)));
            };
            state = prev;
            bits[op / 64] &= !(1 << (op % 64));
            events.unlift(op);
            if ops[op].completed() {
                remaining += 1;
            }
            unknown_pass = !ops[op].completed();
            cur = events.nodes[events.call[op]].next;
        }
    };
    KeyResult {
        key: key.to_string(),
        kind,
        ops: n,
        unknown,
        dropped: all.len() - n,
        steps,
        elapsed: started.elapsed(),
        verdict,
    }
}

/// Renders the deepest failure: the operations still unordered that were invoked before
/// the blocking reply (the candidates for going first), and the last few that had been
/// linearized before it.
fn explain<M: Model>(key: &str, kind: Kind, ops: &[&Entry], d: Deepest<M::State>, opts: &Options) -> Anomaly {
    let is_set = |i: usize| d.linearized[i / 64] & (1 << (i % 64)) != 0;
    let blocker = ops[d.blocker];
    let until = blocker.complete_time().unwrap_or(blocker.invoke);
    let mut before: Vec<usize> = (0..ops.len()).filter(|&i| is_set(i) && ops[i].completed()).collect();
    before.sort_by_key(|&i| ops[i].complete_time());
    let before = &before[before.len().saturating_sub(opts.context)..];
    const MAX_CANDIDATES: usize = 24;
    let mut candidates: Vec<usize> = (0..ops.len()).filter(|&i| !is_set(i) && ops[i].invoke <= until).collect();
    // Keep the latest-invoked ones (the blocker is always among them: it was invoked
    // before its own reply), the older ones of unknown outcome are summarised.
    candidates.sort_by_key(|&i| (ops[i].invoke, i));
    let skipped = candidates.len().saturating_sub(MAX_CANDIDATES);
    let mut window: Vec<String> = before.iter().map(|&i| format!("<  {}", ops[i].line())).collect();
    if skipped > 0 {
        window.push(format!("   ... {skipped} earlier operations, not ordered yet, left out"));
    }
    for &i in &candidates[skipped..] {
        let mark = if i == d.blocker { ">>" } else { "  " };
        window.push(format!("{mark} {}", ops[i].line()));
    }
    Anomaly {
        key: key.to_string(),
        kind,
        blocker: blocker.clone(),
        states: d.states.iter().map(M::show).collect(),
        window,
    }
}

/// A one-paragraph account of a check for failure messages: every anomaly in full, and the
/// keys the checker gave up on.
pub fn describe_failures(results: &[KeyResult]) -> String {
    let mut s = String::new();
    for r in results {
        match &r.verdict {
            Verdict::Linearizable => {}
            Verdict::Anomaly(a) => {
                let _ = writeln!(s, "{a}");
            }
            Verdict::GaveUp => {
                let _ = writeln!(
                    s,
                    "key {} ({}): the checker gave up after {} steps ({} ops, {} of unknown outcome)",
                    r.key, r.kind, r.steps, r.ops, r.unknown
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn ms(t: u64) -> Duration {
        Duration::from_millis(t)
    }

    /// A completed operation on key "k" by client `c` over [a, b] ms.
    fn done(c: usize, op: Op, a: u64, b: u64, ret: Ret) -> Entry {
        Entry { client: c, key: "k".into(), op, invoke: ms(a), done: Some((ms(b), ret)), note: String::new() }
    }

    /// An operation of unknown outcome invoked at `a` ms.
    fn lost(c: usize, op: Op, a: u64) -> Entry {
        Entry { client: c, key: "k".into(), op, invoke: ms(a), done: None, note: String::new() }
    }

    fn set(v: &str) -> Op {
        Op::Set(v.into())
    }
    fn push(v: &str) -> Op {
        Op::LPush(v.into())
    }
    fn bulk(v: &str) -> Ret {
        Ret::Bulk(v.into())
    }
    fn list(v: &[&str]) -> Ret {
        Ret::List(v.iter().map(|s| s.to_string()).collect())
    }

    fn verdict(kind: Kind, h: &[Entry]) -> Verdict {
        let ops: Vec<&Entry> = h.iter().collect();
        check_key("k", kind, &ops, &Options::default()).verdict
    }

    #[track_caller]
    fn ok(kind: Kind, h: &[Entry]) {
        match verdict(kind, h) {
            Verdict::Linearizable => {}
            v => panic!("expected linearizable, got {v:?}"),
        }
    }

    /// Not linearizable; returns the report.
    #[track_caller]
    fn bad(kind: Kind, h: &[Entry]) -> Anomaly {
        match verdict(kind, h) {
            Verdict::Anomaly(a) => *a,
            v => panic!("expected an anomaly, got {v:?}"),
        }
    }

    // --- register ---

    #[test]
    fn register_sequential_and_concurrent_reads() {
        ok(
            Kind::Register,
            &[
                done(0, Op::Get, 0, 1, Ret::Nil),
                done(0, set("a"), 2, 3, Ret::Ok),
                done(1, Op::Get, 4, 5, bulk("a")),
                // concurrent with a write: either value
                done(0, set("b"), 6, 20, Ret::Ok),
                done(1, Op::Get, 7, 8, bulk("a")),
                done(2, Op::Get, 9, 10, bulk("b")),
                done(1, Op::Get, 11, 12, bulk("b")),
            ],
        );
    }

    #[test]
    fn register_stale_read_is_caught() {
        let a = bad(
            Kind::Register,
            &[done(0, set("a"), 0, 1, Ret::Ok), done(0, set("b"), 2, 3, Ret::Ok), done(1, Op::Get, 4, 5, bulk("a"))],
        );
        assert_eq!(a.blocker.op, Op::Get);
        assert_eq!(a.states, vec!["\"b\"".to_string()]);
        let text = a.to_string();
        assert!(text.contains(">> c1 [0.0040 .. 0.0050] GET k -> \"a\""), "{text}");
    }

    #[test]
    fn register_new_then_old_read_is_caught() {
        // Both reads overlap the write, but once one saw the new value a later one may not
        // see the old one.
        bad(
            Kind::Register,
            &[
                done(0, set("x"), 0, 100, Ret::Ok),
                done(1, Op::Get, 10, 20, bulk("x")),
                done(2, Op::Get, 30, 40, Ret::Nil),
            ],
        );
    }

    #[test]
    fn register_lost_write_is_caught() {
        bad(Kind::Register, &[done(0, set("a"), 0, 1, Ret::Ok), done(1, Op::Get, 2, 3, Ret::Nil)]);
    }

    #[test]
    fn register_read_of_a_value_never_written_is_caught() {
        bad(Kind::Register, &[done(0, set("a"), 0, 1, Ret::Ok), done(1, Op::Get, 2, 3, bulk("zz"))]);
    }

    #[test]
    fn register_unknown_write_that_did_or_did_not_take_effect() {
        // took effect, late
        ok(
            Kind::Register,
            &[lost(0, set("a"), 0), done(1, Op::Get, 5, 6, Ret::Nil), done(1, Op::Get, 7, 8, bulk("a"))],
        );
        // never took effect
        ok(Kind::Register, &[lost(0, set("a"), 0), done(1, Op::Get, 5, 6, Ret::Nil), done(1, set("b"), 7, 8, Ret::Ok)]);
        // cannot take effect twice, nor be undone
        bad(
            Kind::Register,
            &[
                lost(0, set("a"), 0),
                done(1, Op::Get, 5, 6, bulk("a")),
                done(1, set("b"), 7, 8, Ret::Ok),
                done(1, Op::Get, 9, 10, bulk("a")),
            ],
        );
        // nor before it was sent
        bad(Kind::Register, &[done(1, Op::Get, 0, 1, bulk("a")), lost(0, set("a"), 2)]);
    }

    // --- counter ---

    #[test]
    fn counter_in_order_and_concurrent() {
        ok(
            Kind::Counter,
            &[
                done(0, Op::Get, 0, 1, Ret::Nil),
                done(0, Op::Incr, 2, 3, Ret::Int(1)),
                // two concurrent INCRs may take effect in either order
                done(0, Op::Incr, 4, 20, Ret::Int(3)),
                done(1, Op::Incr, 5, 19, Ret::Int(2)),
                done(2, Op::Get, 21, 22, bulk("3")),
            ],
        );
    }

    #[test]
    fn counter_lost_increment_is_caught() {
        bad(
            Kind::Counter,
            &[
                done(0, Op::Incr, 0, 1, Ret::Int(1)),
                done(0, Op::Incr, 2, 3, Ret::Int(2)),
                done(1, Op::Get, 4, 5, bulk("1")),
            ],
        );
    }

    #[test]
    fn counter_duplicated_increment_is_caught() {
        // A forward retried behind the client's back: one acknowledged INCR counted twice.
        bad(Kind::Counter, &[done(0, Op::Incr, 0, 1, Ret::Int(1)), done(1, Op::Get, 2, 3, bulk("2"))]);
        bad(Kind::Counter, &[done(0, Op::Incr, 0, 10, Ret::Int(1)), done(1, Op::Incr, 1, 9, Ret::Int(1))]);
    }

    #[test]
    fn counter_unknown_increments() {
        // Two of three lost INCRs took effect.
        ok(
            Kind::Counter,
            &[
                lost(0, Op::Incr, 0),
                lost(1, Op::Incr, 1),
                lost(2, Op::Incr, 2),
                done(3, Op::Incr, 10, 11, Ret::Int(2)),
                done(3, Op::Get, 12, 13, bulk("3")),
            ],
        );
        // Four is one more than there were.
        bad(
            Kind::Counter,
            &[lost(0, Op::Incr, 0), lost(1, Op::Incr, 1), lost(2, Op::Incr, 2), done(3, Op::Get, 12, 13, bulk("4"))],
        );
        // A lost INCR invoked after a read cannot explain that read.
        bad(Kind::Counter, &[done(3, Op::Get, 0, 1, bulk("1")), lost(0, Op::Incr, 2)]);
    }

    // --- list ---

    #[test]
    fn list_pushes_and_ranges() {
        ok(
            Kind::List,
            &[
                done(0, Op::LRange, 0, 1, list(&[])),
                done(0, push("a"), 2, 3, Ret::Int(1)),
                done(0, push("b"), 4, 10, Ret::Int(3)),
                done(1, push("c"), 5, 9, Ret::Int(2)),
                done(2, Op::LRange, 11, 12, list(&["b", "c", "a"])),
            ],
        );
    }

    #[test]
    fn list_duplicated_push_is_caught() {
        bad(Kind::List, &[done(0, push("a"), 0, 1, Ret::Int(1)), done(1, Op::LRange, 2, 3, list(&["a", "a"]))]);
        // A push counted twice in the length.
        bad(Kind::List, &[done(0, push("a"), 0, 1, Ret::Int(1)), done(0, push("b"), 2, 3, Ret::Int(3))]);
    }

    #[test]
    fn list_lost_push_is_caught() {
        bad(
            Kind::List,
            &[
                done(0, push("a"), 0, 1, Ret::Int(1)),
                done(0, push("b"), 2, 3, Ret::Int(2)),
                done(1, Op::LRange, 4, 5, list(&["b"])),
            ],
        );
    }

    #[test]
    fn list_reordered_pushes_are_caught() {
        bad(
            Kind::List,
            &[
                done(0, push("a"), 0, 1, Ret::Int(1)),
                done(0, push("b"), 2, 3, Ret::Int(2)),
                done(1, Op::LRange, 4, 5, list(&["a", "b"])),
            ],
        );
    }

    #[test]
    fn list_unknown_pushes() {
        // took effect (before b)
        ok(
            Kind::List,
            &[
                lost(0, push("a"), 0),
                done(1, push("b"), 1, 2, Ret::Int(2)),
                done(1, Op::LRange, 3, 4, list(&["b", "a"])),
            ],
        );
        // did not
        ok(
            Kind::List,
            &[lost(0, push("a"), 0), done(1, push("b"), 1, 2, Ret::Int(1)), done(1, Op::LRange, 3, 4, list(&["b"]))],
        );
        // took effect later, after a read that missed it
        ok(
            Kind::List,
            &[
                lost(0, push("a"), 0),
                done(1, Op::LRange, 1, 2, list(&[])),
                done(1, push("b"), 3, 4, Ret::Int(2)),
                done(1, Op::LRange, 5, 6, list(&["b", "a"])),
            ],
        );
        // counted by a push's length, then missing from the final read
        bad(
            Kind::List,
            &[lost(0, push("a"), 0), done(1, push("b"), 1, 2, Ret::Int(2)), done(1, Op::LRange, 3, 4, list(&["b"]))],
        );
        // appears twice
        bad(Kind::List, &[lost(0, push("a"), 0), done(1, Op::LRange, 3, 4, list(&["a", "a"]))]);
    }

    #[test]
    fn unexpected_replies_are_anomalies() {
        let a = bad(Kind::Counter, &[done(0, Op::Incr, 0, 1, Ret::Other("-ERR boom".into()))]);
        assert!(a.to_string().contains("unexpected reply -ERR boom"), "{a}");
    }

    #[test]
    fn keys_are_checked_separately() {
        let mut h = vec![done(0, set("a"), 0, 1, Ret::Ok), done(1, Op::Get, 2, 3, bulk("a"))];
        h.push(Entry { key: "c".into(), ..done(0, Op::Incr, 0, 1, Ret::Int(1)) });
        h.push(Entry { key: "c".into(), ..done(1, Op::Get, 2, 3, bulk("1")) });
        let r = check(&h, |k| if k == "c" { Kind::Counter } else { Kind::Register }, &Options::default());
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| matches!(r.verdict, Verdict::Linearizable)), "{r:?}");
    }

    // --- against brute force ---

    /// Every order that respects real time, with every subset of the operations of unknown
    /// outcome left out: linearizable by definition when one of them replays.
    fn brute<M: Model>(h: &[Entry]) -> bool {
        fn go<M: Model>(h: &[Entry], used: &mut Vec<bool>, s: M::State) -> bool {
            if h.iter().zip(used.iter()).all(|(e, u)| *u || !e.completed()) {
                return true;
            }
            for i in 0..h.len() {
                if used[i] {
                    continue;
                }
                // i may go next only if no unused completed op finished before i began.
                let blocked = h
                    .iter()
                    .enumerate()
                    .any(|(j, e)| !used[j] && j != i && e.complete_time().is_some_and(|t| t < h[i].invoke));
                if blocked {
                    continue;
                }
                if let Some(next) = M::step(&s, &h[i].op, h[i].done.as_ref().map(|d| &d.1)) {
                    used[i] = true;
                    if go::<M>(h, used, next) {
                        return true;
                    }
                    used[i] = false;
                }
            }
            false
        }
        go::<M>(h, &mut vec![false; h.len()], M::init())
    }

    /// A small random history whose replies are drawn from a narrow range, so that about
    /// half are linearizable.
    fn random_history(rng: &mut SmallRng, kind: Kind) -> Vec<Entry> {
        let n = rng.gen_range(1..=7);
        (0..n)
            .map(|i| {
                let a = rng.gen_range(0..20);
                let b = a + rng.gen_range(0..8);
                let v = ["x", "y", "z"][rng.gen_range(0..3)];
                let (op, ret) = match (kind, rng.gen_bool(0.5)) {
                    (Kind::Register, true) => (set(&format!("{v}{i}")), Ret::Ok),
                    (Kind::Register, false) => {
                        let r = rng.gen_range(0..n + 1);
                        (Op::Get, if r == n { Ret::Nil } else { bulk(&format!("{}{r}", ["x", "y", "z"][r % 3])) })
                    }
                    (Kind::Counter, true) => (Op::Incr, Ret::Int(rng.gen_range(1..4))),
                    (Kind::Counter, false) => {
                        (Op::Get, [Ret::Nil, bulk("1"), bulk("2"), bulk("3")][rng.gen_range(0..4)].clone())
                    }
                    (Kind::List, true) => (push(&format!("v{i}")), Ret::Int(rng.gen_range(1..4))),
                    (Kind::List, false) => {
                        let items: Vec<String> =
                            (0..rng.gen_range(0..3)).map(|_| format!("v{}", rng.gen_range(0..n))).collect();
                        (Op::LRange, Ret::List(items))
                    }
                };
                let mut e = done(i, op, a, b, ret);
                if rng.gen_bool(0.2) {
                    e.done = None;
                }
                e
            })
            .collect()
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut rng = SmallRng::seed_from_u64(7);
        for kind in [Kind::Register, Kind::Counter, Kind::List] {
            let (mut yes, mut no) = (0, 0);
            for _ in 0..3000 {
                let h = random_history(&mut rng, kind);
                let want = match kind {
                    Kind::Register => brute::<Register>(&h),
                    Kind::Counter => brute::<Counter>(&h),
                    Kind::List => brute::<List>(&h),
                };
                let got = matches!(verdict(kind, &h), Verdict::Linearizable);
                assert_eq!(got, want, "{kind} history:\n{}", h.iter().map(|e| e.line() + "\n").collect::<String>());
                if want {
                    yes += 1
                } else {
                    no += 1
                }
            }
            assert!(yes > 300 && no > 300, "{kind}: {yes} linearizable, {no} not: the generator is lopsided");
        }
    }

    // --- scale ---

    /// A linearizable history of `n` operations by `clients` concurrent clients: each
    /// client's operations take effect at a random instant inside their interval, in a
    /// shared sequential model; some lose their reply (and half of those never ran).
    fn simulated(rng: &mut SmallRng, kind: Kind, n: usize, clients: usize) -> Vec<Entry> {
        let mut free_at = vec![0u64; clients];
        let mut out = Vec::with_capacity(n);
        // (linearization point, entry index, applied?) filled after the intervals are drawn
        let mut points = Vec::with_capacity(n);
        for i in 0..n {
            let c = rng.gen_range(0..clients);
            let a = free_at[c] + rng.gen_range(0..50);
            let b = a + rng.gen_range(1..400);
            free_at[c] = b;
            let op = match (kind, rng.gen_bool(0.5)) {
                (Kind::Register, true) => set(&format!("c{c}-{i}")),
                (Kind::Counter, true) => Op::Incr,
                (Kind::List, true) => push(&format!("c{c}-{i}")),
                (Kind::List, false) => Op::LRange,
                (_, false) => Op::Get,
            };
            points.push((rng.gen_range(a..=b), out.len()));
            let (invoke, done) = (Duration::from_micros(a), Some((Duration::from_micros(b), Ret::Ok)));
            out.push(Entry { client: c, key: "k".into(), op, invoke, done, note: String::new() });
        }
        points.sort_unstable();
        let (mut reg, mut ctr, mut lst): (Option<String>, i64, PList) = (None, 0, PList::default());
        for (_, i) in points {
            let e: &mut Entry = &mut out[i];
            let lose = rng.gen_bool(0.02);
            if lose && rng.gen_bool(0.5) {
                e.done = None; // never ran
                continue;
            }
            let ret = match &e.op {
                Op::Set(v) => {
                    reg = Some(v.clone());
                    Ret::Ok
                }
                Op::Get if kind == Kind::Register => reg.clone().map_or(Ret::Nil, Ret::Bulk),
                Op::Get if ctr > 0 => Ret::Bulk(ctr.to_string()),
                Op::Get => Ret::Nil,
                Op::Incr => {
                    ctr += 1;
                    Ret::Int(ctr)
                }
                Op::LPush(v) => {
                    lst = lst.push(v);
                    Ret::Int(lst.len() as i64)
                }
                Op::LRange => Ret::List(lst.iter().map(String::from).collect()),
            };
            e.done = if lose { None } else { e.done.take().map(|(t, _)| (t, ret)) };
        }
        out
    }

    #[test]
    fn thousands_of_operations_per_key_check_quickly() {
        let mut rng = SmallRng::seed_from_u64(42);
        for (kind, n) in [(Kind::Register, 4000), (Kind::Counter, 4000), (Kind::List, 1500)] {
            let h = simulated(&mut rng, kind, n, 6);
            let ops: Vec<&Entry> = h.iter().collect();
            let r = check_key("k", kind, &ops, &Options::default());
            assert!(matches!(r.verdict, Verdict::Linearizable), "{kind}: {:?}", r.verdict);
            assert!(r.elapsed < Duration::from_secs(20), "{kind}: {n} ops took {:?}", r.elapsed);
            println!(
                "{kind}: {n} ops ({} unknown, {} dropped), {} steps, {:?}",
                r.unknown, r.dropped, r.steps, r.elapsed
            );

            // One stale read in the middle is found, and pointed at.
            let mut h = h;
            let i = (n / 2..n)
                .find(|&i| {
                    let read = match &h[i].done {
                        Some((_, Ret::Bulk(_))) => true,
                        Some((_, Ret::List(l))) => l.len() >= 2,
                        _ => false,
                    };
                    read && {
                        let t = h[i].invoke;
                        // a write that completed well before it, so the old value is stale
                        h[..i].iter().filter(|e| !e.op.is_read() && e.complete_time().is_some_and(|c| c < t)).count()
                            > 2
                    }
                })
                .expect("a read to corrupt");
            let stale = match &h[i].done.as_ref().unwrap().1 {
                Ret::Bulk(_) if kind == Kind::Register => Ret::Nil,
                Ret::Bulk(_) => bulk("1"),
                // without its oldest item: no list the model ever holds
                Ret::List(v) => Ret::List(v[..v.len() - 1].to_vec()),
                _ => unreachable!(),
            };
            h[i].done.as_mut().unwrap().1 = stale;
            let ops: Vec<&Entry> = h.iter().collect();
            let r = check_key("k", kind, &ops, &Options::default());
            match r.verdict {
                Verdict::Anomaly(a) => assert!(a.window.iter().any(|l| l.contains(&h[i].line())), "{kind}: {a}"),
                v => panic!("{kind}: corrupted read not caught: {v:?}"),
            }
        }
    }
}
