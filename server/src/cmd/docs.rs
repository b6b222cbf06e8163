//! `COMMAND DOCS` data: Redis 7.0's documentation of every command (summary, since, group,
//! complexity, history, the argument tree, subcommands).
//!
//! The data is captured from a real `redis-server` by `scripts/gen-command-docs.py` into
//! `docs/commands.txt`, compiled in with `include_str!` and parsed once on first use. It is
//! plain data: clients such as `redis-cli` 7.2+ build their interactive hints from it, so the
//! reply written by [`write_doc`] reproduces Redis's reply byte for byte (see the fixtures in
//! `docs/fixtures/`, also produced by the script).
//!
//! The COMMAND command itself lives in `introspect.rs`; this module only answers "what are
//! the docs of X" ([`docs_for`], [`all`]) and "how does Redis encode them" ([`write_doc`]).

use std::sync::OnceLock;

use redoubt_protocol::ReplyBuf;

use super::Spec;

pub const COMMANDS: &[Spec] = &[];

/// The raw data, in the line format documented in `scripts/gen-command-docs.py`.
const DATA: &str = include_str!("docs/commands.txt");

/// Docs of redoubt's own commands (CL.THROTTLE, RATELIMIT, LOCK.*), in the same format,
/// written by hand and kept apart so regenerating Redis's data cannot drop them.
const NATIVE: &str = include_str!("docs/natives.txt");

/// The docs of one command or subcommand.
#[derive(Debug, Default)]
pub struct CommandDoc {
    /// Full name, lower-case (`set`, `client|kill`).
    pub name: String,
    pub summary: Option<String>,
    pub since: Option<String>,
    pub group: String,
    pub complexity: Option<String>,
    pub module: Option<String>,
    pub doc_flags: Vec<String>,
    pub deprecated_since: Option<String>,
    pub replaced_by: Option<String>,
    /// (since, changes) pairs.
    pub history: Vec<(String, String)>,
    pub arguments: Vec<ArgDoc>,
    /// In the order Redis lists them (its dict order), so replies match byte for byte.
    pub subcommands: Vec<CommandDoc>,
}

/// One argument in a command's argument tree.
#[derive(Debug, Default)]
pub struct ArgDoc {
    pub name: String,
    /// `string`, `integer`, `double`, `key`, `pattern`, `unix-time`, `pure-token`, `oneof`,
    /// `block`.
    pub kind: String,
    pub key_spec_index: Option<i64>,
    pub token: Option<String>,
    pub summary: Option<String>,
    pub since: Option<String>,
    pub deprecated_since: Option<String>,
    /// `optional`, `multiple`, `multiple_token`.
    pub flags: Vec<String>,
    /// Children of `oneof` and `block` arguments.
    pub arguments: Vec<ArgDoc>,
}

impl ArgDoc {
    fn has_children(&self) -> bool {
        self.kind == "oneof" || self.kind == "block"
    }
}

/// Every top-level command's docs, in the order Redis 7.0.15 lists them for `COMMAND DOCS`.
pub fn all() -> &'static [CommandDoc] {
    static DOCS: OnceLock<Vec<CommandDoc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut docs = parse(DATA).unwrap_or_else(|e| panic!("docs/commands.txt: {e}"));
        docs.extend(parse(NATIVE).unwrap_or_else(|e| panic!("docs/natives.txt: {e}")));
        docs
    })
}

/// Docs of a command by name, case-insensitively; `parent|sub` reaches subcommands, as
/// Redis's `lookupCommandBySds` does.
pub fn docs_for(name: &str) -> Option<&'static CommandDoc> {
    let name = name.to_ascii_lowercase();
    let (parent, sub) = match name.split_once('|') {
        Some((p, s)) => (p, Some(s)),
        None => (name.as_str(), None),
    };
    let top = all().iter().find(|d| d.name == parent)?;
    match sub {
        None => Some(top),
        // Redis keeps subcommands' full names (`client|kill`) in their docs.
        Some(_) => top.subcommands.iter().find(|d| d.name == name),
    }
}

/// Writes one command's doc map exactly as Redis's `addReplyCommandDocs` does: a map (flat
/// array in RESP2) whose keys appear only when the field is set, in Redis's fixed order.
pub fn write_doc(out: &mut ReplyBuf, doc: &CommandDoc) {
    let present = [
        doc.summary.is_some(),
        doc.since.is_some(),
        true, // group is always there
        doc.complexity.is_some(),
        doc.module.is_some(),
        !doc.doc_flags.is_empty(),
        doc.deprecated_since.is_some(),
        doc.replaced_by.is_some(),
        !doc.history.is_empty(),
        !doc.arguments.is_empty(),
        !doc.subcommands.is_empty(),
    ];
    out.map(present.iter().filter(|&&p| p).count());
    opt_field(out, "summary", &doc.summary);
    opt_field(out, "since", &doc.since);
    field(out, "group", &doc.group);
    opt_field(out, "complexity", &doc.complexity);
    opt_field(out, "module", &doc.module);
    if !doc.doc_flags.is_empty() {
        out.bulk(b"doc_flags");
        status_set(out, &doc.doc_flags);
    }
    opt_field(out, "deprecated_since", &doc.deprecated_since);
    opt_field(out, "replaced_by", &doc.replaced_by);
    if !doc.history.is_empty() {
        out.bulk(b"history");
        out.set(doc.history.len());
        for (since, changes) in &doc.history {
            out.array(2);
            out.bulk(since.as_bytes());
            out.bulk(changes.as_bytes());
        }
    }
    if !doc.arguments.is_empty() {
        out.bulk(b"arguments");
        write_args(out, &doc.arguments);
    }
    if !doc.subcommands.is_empty() {
        out.bulk(b"subcommands");
        out.map(doc.subcommands.len());
        for sub in &doc.subcommands {
            out.bulk(sub.name.as_bytes());
            write_doc(out, sub);
        }
    }
}

/// Redis's `addReplyCommandArgList`.
fn write_args(out: &mut ReplyBuf, args: &[ArgDoc]) {
    out.array(args.len());
    for a in args {
        let optional = [
            a.key_spec_index.is_some(),
            a.token.is_some(),
            a.summary.is_some(),
            a.since.is_some(),
            a.deprecated_since.is_some(),
            !a.flags.is_empty(),
            a.has_children(),
        ];
        out.map(2 + optional.iter().filter(|&&p| p).count());
        field(out, "name", &a.name);
        field(out, "type", &a.kind);
        if let Some(i) = a.key_spec_index {
            out.bulk(b"key_spec_index");
            out.int(i);
        }
        opt_field(out, "token", &a.token);
        opt_field(out, "summary", &a.summary);
        opt_field(out, "since", &a.since);
        opt_field(out, "deprecated_since", &a.deprecated_since);
        if !a.flags.is_empty() {
            out.bulk(b"flags");
            status_set(out, &a.flags);
        }
        if a.has_children() {
            out.bulk(b"arguments");
            write_args(out, &a.arguments);
        }
    }
}

fn field(out: &mut ReplyBuf, key: &str, v: &str) {
    out.bulk(key.as_bytes());
    out.bulk(v.as_bytes());
}

fn opt_field(out: &mut ReplyBuf, key: &str, v: &Option<String>) {
    if let Some(v) = v {
        field(out, key, v);
    }
}

/// Flags are a set of status strings (`addReplyCommandFlags`).
fn status_set(out: &mut ReplyBuf, flags: &[String]) {
    out.set(flags.len());
    for f in flags {
        out.simple(f);
    }
}

// ---------------------------------------------------------------------------------------
// Parsing the data file
// ---------------------------------------------------------------------------------------

/// Undoes the script's escaping; `\N` alone means "absent".
fn unescape(f: &str) -> Option<String> {
    if f == "\\N" {
        return None;
    }
    if !f.contains('\\') {
        return Some(f.to_string());
    }
    let mut s = String::with_capacity(f.len());
    let mut it = f.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            s.push(c);
            continue;
        }
        s.push(match it.next() {
            Some('t') => '\t',
            Some('n') => '\n',
            Some('r') => '\r',
            Some(other) => other,
            None => '\\',
        });
    }
    Some(s)
}

fn required(f: Option<&str>, what: &str, line: usize) -> Result<String, String> {
    f.and_then(unescape).ok_or_else(|| format!("line {line}: missing {what}"))
}

/// Parses the whole file into top-level commands.
fn parse(data: &str) -> Result<Vec<CommandDoc>, String> {
    let mut top = Vec::new();
    // Commands being read, innermost last, each with its flat (depth, arg) list.
    let mut stack: Vec<(CommandDoc, Vec<(usize, ArgDoc)>)> = Vec::new();
    for (i, line) in data.lines().enumerate() {
        let n = i + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split('\t');
        let tag = f.next().unwrap_or("");
        if tag == "C" {
            let doc = CommandDoc { name: required(f.next(), "name", n)?, ..Default::default() };
            stack.push((doc, Vec::new()));
            continue;
        }
        if tag == "." {
            let (mut doc, flat) = stack.pop().ok_or(format!("line {n}: unmatched '.'"))?;
            doc.arguments = build_tree(&mut flat.into_iter().peekable(), 0);
            match stack.last_mut() {
                Some((parent, _)) => parent.subcommands.push(doc),
                None => top.push(doc),
            }
            continue;
        }
        let (doc, flat) = stack.last_mut().ok_or(format!("line {n}: field outside a command"))?;
        let mut next = || required(f.next(), tag, n);
        match tag {
            "s" => doc.summary = Some(next()?),
            "v" => doc.since = Some(next()?),
            "g" => doc.group = next()?,
            "x" => doc.complexity = Some(next()?),
            "m" => doc.module = Some(next()?),
            "d" => doc.deprecated_since = Some(next()?),
            "r" => doc.replaced_by = Some(next()?),
            "f" => doc.doc_flags = line.split('\t').skip(1).filter_map(unescape).collect(),
            "h" => doc.history.push((next()?, next()?)),
            "a" => flat.push(parse_arg(line, n)?),
            _ => return Err(format!("line {n}: unknown tag {tag:?}")),
        }
    }
    if !stack.is_empty() {
        return Err("unterminated command at end of file".into());
    }
    Ok(top)
}

/// One `a` line: (depth, argument without children).
fn parse_arg(line: &str, n: usize) -> Result<(usize, ArgDoc), String> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != 10 {
        return Err(format!("line {n}: argument needs 10 fields, has {}", f.len()));
    }
    let depth = f[1].parse().map_err(|_| format!("line {n}: bad depth"))?;
    let key_spec_index = match unescape(f[4]) {
        Some(s) => Some(s.parse().map_err(|_| format!("line {n}: bad key_spec_index"))?),
        None => None,
    };
    let arg = ArgDoc {
        name: required(Some(f[2]), "name", n)?,
        kind: required(Some(f[3]), "type", n)?,
        key_spec_index,
        token: unescape(f[5]),
        summary: unescape(f[6]),
        since: unescape(f[7]),
        deprecated_since: unescape(f[8]),
        flags: f[9].split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        arguments: Vec::new(),
    };
    Ok((depth, arg))
}

/// Turns the flat pre-order (depth, arg) list back into a tree.
fn build_tree<I: Iterator<Item = (usize, ArgDoc)>>(it: &mut std::iter::Peekable<I>, depth: usize) -> Vec<ArgDoc> {
    let mut out = Vec::new();
    while let Some((d, _)) = it.peek() {
        if *d < depth {
            break;
        }
        let (_, mut arg) = it.next().expect("peeked");
        arg.arguments = build_tree(it, depth + 1);
        out.push(arg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis's reply to `COMMAND DOCS <name>` for one command, as redoubt writes it.
    fn reply(name: &str, resp3: bool) -> Vec<u8> {
        let doc = docs_for(name).unwrap_or_else(|| panic!("no docs for {name}"));
        let mut out = ReplyBuf::new(resp3);
        out.map(1);
        out.bulk(doc.name.as_bytes());
        write_doc(&mut out, doc);
        out.buf.to_vec()
    }

    macro_rules! fixture {
        ($file:literal) => {
            (
                &include_bytes!(concat!("docs/fixtures/", $file, ".resp2"))[..],
                &include_bytes!(concat!("docs/fixtures/", $file, ".resp3"))[..],
            )
        };
    }

    /// Byte-for-byte against replies captured from redis-server 7.0.15.
    #[test]
    fn matches_redis_byte_for_byte() {
        let cases = [
            ("set", fixture!("set")),
            ("zadd", fixture!("zadd")),
            ("client|kill", fixture!("client_kill")),
            ("client", fixture!("client")),
            ("sort", fixture!("sort")),
            ("bitfield", fixture!("bitfield")),
            ("xadd", fixture!("xadd")),
            ("georadius", fixture!("georadius")),
        ];
        for (name, (resp2, resp3)) in cases {
            assert_eq!(String::from_utf8_lossy(&reply(name, false)), String::from_utf8_lossy(resp2), "{name} RESP2");
            assert_eq!(String::from_utf8_lossy(&reply(name, true)), String::from_utf8_lossy(resp3), "{name} RESP3");
        }
    }

    #[test]
    fn lookups() {
        assert!(all().len() >= 200);
        let set = docs_for("SET").expect("set");
        assert_eq!(set.group, "string");
        assert_eq!(set.arguments[0].name, "key");
        assert_eq!(set.arguments[0].key_spec_index, Some(0));
        let kill = docs_for("Client|Kill").expect("client|kill");
        assert_eq!(kill.name, "client|kill");
        assert!(kill.arguments[0].arguments.len() >= 2, "nested oneof");
        assert!(docs_for("client|nosuch").is_none());
        assert!(docs_for("nosuch").is_none());
        // Deprecated commands carry their replacement.
        let gr = docs_for("georadius").expect("georadius");
        assert!(gr.replaced_by.is_some() && gr.deprecated_since.is_some());
    }

    /// redoubt's own commands have docs (redis-cli's hints), matching their table entries.
    #[test]
    fn native_commands_have_docs() {
        for spec in super::super::limits::COMMANDS.iter().chain(super::super::locks::COMMANDS) {
            let doc = docs_for(spec.name).unwrap_or_else(|| panic!("no docs for {}", spec.name));
            assert_eq!(doc.group, spec.group, "{}", spec.name);
            assert_eq!(doc.arguments[0].key_spec_index, Some(0), "{}", spec.name);
            // Required arguments plus the name make the arity (or its minimum).
            let required = doc.arguments.iter().filter(|a| !a.flags.iter().any(|f| f == "optional")).count();
            assert!(spec.arity == -1 || spec.arity.unsigned_abs() as usize == required + 1, "{}", spec.name);
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape("\\N"), None);
        assert_eq!(unescape("a\\tb\\\\c\\n").as_deref(), Some("a\tb\\c\n"));
        assert_eq!(unescape("").as_deref(), Some(""));
    }
}
