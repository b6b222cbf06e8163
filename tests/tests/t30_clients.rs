//! t30: real clients against redoubt.
//!
//! * `redis-cli`: plain commands in raw, formatted and RESP3 (`-3`) output, `--scan`,
//!   `--bigkeys`, `--pipe` with a generated protocol file;
//! * `redis-benchmark`: the default suite, small (`-n 2000 -q`), with no error line;
//! * redis-py 8 (RESP3 by default): every `tests/py/test_*.py` (the commands, the native
//!   commands, `redis.lock.Lock` and other script-based clients) run by pytest, with the
//!   port of an in-process redoubt (and of the oracle) in the environment.
//!
//! Each check runs against redoubt and, when it is installed, against redis-server too: the
//! expectations written here are Redis's own. Missing tools skip a test with a note, and
//! fail it under `CI=true`.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{redis, redoubt, Target};
use redoubt_tests::{in_ci, redis_tool, require, run_with_deadline, workspace_root, Value};

const TOOL_DEADLINE: Duration = Duration::from_secs(120);

/// redoubt, then the oracle when available (under CI the oracle is required).
fn targets() -> Vec<Target> {
    let mut v = vec![redoubt(&[]).unwrap()];
    if let Some(o) = redis(&[]) {
        v.push(o);
    }
    v
}

fn tool(name: &str) -> Option<std::path::PathBuf> {
    let p = redis_tool(name);
    if require(p.is_some(), &format!("{name} (Debian package redis-tools)")) {
        p
    } else {
        None
    }
}

/// Runs redis-cli against `t` and returns (success, stdout, stderr).
fn cli(t: &Target, args: &[&str], stdin: Option<Vec<u8>>) -> (bool, String, String) {
    let mut c = Command::new(tool("redis-cli").expect("redis-cli"));
    c.args(["-h", "127.0.0.1", "-p", &t.addr().port().to_string()]).args(args);
    run_with_deadline(c, stdin, TOOL_DEADLINE)
}

fn flush(t: &Target) {
    let mut c = t.conn();
    assert_eq!(c.cmd(&["FLUSHALL"]), Value::Simple(b"OK".to_vec()), "FLUSHALL on {}", t.name());
}

#[test]
fn redis_cli_plain_commands() {
    if tool("redis-cli").is_none() {
        return;
    }
    let script: &[&[&str]] = &[
        &["PING"],
        &["SET", "a", "b"],
        &["GET", "a"],
        &["GET", "missing"],
        &["INCR", "n"],
        &["INCRBYFLOAT", "f", "1.5"],
        &["RPUSH", "l", "x", "y z"],
        &["LRANGE", "l", "0", "-1"],
        &["LRANGE", "nolist", "0", "-1"],
        &["HSET", "h", "f", "v"],
        &["HGETALL", "h"],
        &["SADD", "s", "m"],
        &["SMEMBERS", "s"],
        &["ZADD", "z", "1.5", "m"],
        &["ZSCORE", "z", "m"],
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["LPUSH", "a", "x"],
        &["EXISTS", "a", "n", "zz"],
        &["TYPE", "l"],
        &["ECHO", "hi there"],
        &["DBSIZE"],
        &["NOSUCHCOMMAND", "x"],
    ];
    let modes: &[&[&str]] = &[&[], &["--no-raw"], &["-3"], &["-3", "--no-raw"]];
    let mut transcripts = Vec::new();
    for t in targets() {
        flush(&t);
        let mut out = String::new();
        for mode in modes {
            for cmd in script {
                let mut args = mode.to_vec();
                args.extend_from_slice(cmd);
                let (ok, so, se) = cli(&t, &args, None);
                out.push_str(&format!(
                    "$ redis-cli {}\n{so}{se}[{}]\n",
                    args.join(" "),
                    if ok { "ok" } else { "exit!=0" }
                ));
            }
        }
        // A few expectations that hold whatever the oracle says.
        assert!(out.contains("$ redis-cli SET a b\nOK\n"), "{}:\n{out}", t.name());
        assert!(out.contains("$ redis-cli --no-raw GET missing\n(nil)\n"), "{}:\n{out}", t.name());
        assert!(out.contains("$ redis-cli -3 --no-raw HGETALL h\n1# \"f\" => \"v\"\n"), "{}:\n{out}", t.name());
        assert!(out.contains("$ redis-cli -3 --no-raw ZSCORE z m\n(double) 1.5\n"), "{}:\n{out}", t.name());
        transcripts.push((t.name(), out));
    }
    if let [(_, ours), (_, theirs)] = transcripts.as_slice() {
        if ours != theirs {
            let diff: Vec<String> = ours
                .split("$ redis-cli ")
                .zip(theirs.split("$ redis-cli "))
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("redoubt:\n$ redis-cli {a}redis-server:\n$ redis-cli {b}"))
                .collect();
            panic!("redis-cli output differs from redis-server's:\n{}", diff.join("\n"));
        }
    }
}

fn populate(t: &Target, n: usize) {
    let mut c = t.conn();
    let mut cmds: Vec<Vec<String>> = (0..n).map(|i| vec!["SET".into(), format!("user:{i}"), i.to_string()]).collect();
    cmds.extend((0..50).map(|i| vec!["SET".into(), format!("other:{i}"), "x".into()]));
    let replies = c.pipeline(&cmds).expect("pipeline");
    assert!(replies.iter().all(|r| *r == Value::Simple(b"OK".to_vec())), "{}: SET failed", t.name());
}

#[test]
fn redis_cli_scan() {
    if tool("redis-cli").is_none() {
        return;
    }
    for t in targets() {
        flush(&t);
        populate(&t, 1000);
        let (ok, so, se) = cli(&t, &["--scan", "--pattern", "user:*"], None);
        assert!(ok, "{}: redis-cli --scan failed: {se}", t.name());
        let got: BTreeSet<&str> = so.lines().collect();
        let want: BTreeSet<String> = (0..1000).map(|i| format!("user:{i}")).collect();
        assert_eq!(got.len(), so.lines().count(), "{}: --scan returned duplicates", t.name());
        assert_eq!(got, want.iter().map(String::as_str).collect(), "{}", t.name());
        let (ok, so, se) = cli(&t, &["--scan"], None);
        assert!(ok, "{}: redis-cli --scan failed: {se}", t.name());
        assert_eq!(so.lines().collect::<BTreeSet<_>>().len(), 1050, "{}", t.name());
        let (ok, so, se) = cli(&t, &["--scan", "--quoted-pattern", "\"other:1*\""], None);
        assert!(ok, "{}: redis-cli --scan --quoted-pattern failed: {se}", t.name());
        assert_eq!(so.lines().collect::<BTreeSet<_>>().len(), 11, "{}: {so}", t.name());
    }
}

#[test]
fn redis_cli_bigkeys() {
    if tool("redis-cli").is_none() {
        return;
    }
    let want = "\
Sampled 6 keys in the keyspace!
Total key length in bytes is 8 (avg len 1.33)

Biggest   list found '\"l\"' has 3 items
Biggest   hash found '\"h\"' has 2 fields
Biggest string found '\"s\"' has 5 bytes
Biggest    set found '\"st\"' has 4 members
Biggest   zset found '\"z\"' has 1 members

1 lists with 3 items (16.67% of keys, avg size 3.00)
1 hashs with 2 fields (16.67% of keys, avg size 2.00)
2 strings with 7 bytes (33.33% of keys, avg size 3.50)
0 streams with 0 entries (00.00% of keys, avg size 0.00)
1 sets with 4 members (16.67% of keys, avg size 4.00)
1 zsets with 1 members (16.67% of keys, avg size 1.00)";
    for t in targets() {
        flush(&t);
        let mut c = t.conn();
        for cmd in [
            &["RPUSH", "l", "a", "b", "c"][..],
            &["SET", "s", "hello"],
            &["SET", "s2", "hi"],
            &["HSET", "h", "a", "1", "b", "2"],
            &["ZADD", "z", "1", "a"],
            &["SADD", "st", "a", "b", "c", "d"],
        ] {
            assert!(!c.cmd(cmd).is_error(), "{}: {cmd:?}", t.name());
        }
        let (ok, so, se) = cli(&t, &["--bigkeys"], None);
        assert!(ok, "{}: --bigkeys failed: {so}{se}", t.name());
        // Only the summary: the "found so far" lines depend on the SCAN order.
        let summary = so.split("-------- summary -------").nth(1).unwrap_or("").trim();
        assert_eq!(summary, want, "{}: --bigkeys summary\n{so}{se}", t.name());
    }
}

#[test]
fn redis_cli_pipe() {
    if tool("redis-cli").is_none() {
        return;
    }
    // A protocol file as the mass-insertion docs describe: 20000 SETs, 1000 RPUSHes.
    let mut proto = Vec::new();
    for i in 0..20_000 {
        redoubt_protocol::client_codec::encode_command(
            &["SET", &format!("key:{i:06}"), &format!("value-{i}")],
            &mut proto,
        );
    }
    for i in 0..1000 {
        redoubt_protocol::client_codec::encode_command(&["RPUSH", "list", &i.to_string()], &mut proto);
    }
    for t in targets() {
        flush(&t);
        let (ok, so, se) = cli(&t, &["--pipe"], Some(proto.clone()));
        assert!(ok, "{}: redis-cli --pipe failed:\n{so}{se}", t.name());
        assert!(so.contains("errors: 0, replies: 21000"), "{}: {so}{se}", t.name());
        let mut c = t.conn();
        assert_eq!(c.cmd(&["DBSIZE"]), Value::Int(20_001), "{}", t.name());
        assert_eq!(c.cmd(&["LLEN", "list"]), Value::Int(1000), "{}", t.name());
        assert_eq!(c.cmd(&["GET", "key:012345"]), Value::Bulk(b"value-12345".to_vec()), "{}", t.name());
    }
}

fn error_lines(out: &str) -> Vec<String> {
    out.split(['\r', '\n'])
        .filter(|l| {
            let u = l.to_ascii_uppercase();
            u.contains("ERR") || u.contains("WARNING") || u.contains("COULD NOT")
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn redis_benchmark_default_suite() {
    let Some(rb) = tool("redis-benchmark") else { return };
    for t in targets() {
        let port = t.addr().port().to_string();
        for extra in [&[][..], &["-P", "16", "-t", "set,get,incr,lpush,lpop,sadd,hset,zadd,mset"][..]] {
            let mut c = Command::new(&rb);
            c.args(["-h", "127.0.0.1", "-p", &port, "-n", "2000", "-q"]).args(extra);
            let (ok, so, se) = run_with_deadline(c, None, TOOL_DEADLINE);
            let all = format!("{so}{se}");
            let errors = error_lines(&all);
            assert!(
                ok && errors.is_empty(),
                "{}: redis-benchmark {extra:?} reported errors: {errors:#?}\n{all}",
                t.name()
            );
            let results = all.split(['\r', '\n']).filter(|l| l.contains("requests per second")).count();
            let want = if extra.is_empty() { 15 } else { 9 };
            assert!(results >= want, "{}: only {results} results from redis-benchmark:\n{all}", t.name());
        }
    }
}

#[test]
fn redis_py() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python).args(["-c", "import redis, pytest; print(redis.__version__)"]).output();
    let version = match &probe {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => String::new(),
    };
    if !require(!version.is_empty(), "python3 with redis-py and pytest (pip install 'redis>=5' pytest)") {
        return;
    }
    if in_ci() && !version.starts_with('8') {
        eprintln!("note: redis-py {version} is installed; the suite targets redis-py 8 (RESP3 by default)");
    }
    let server = redoubt_tests::start_redoubt(&[]);
    let oracle = redoubt_tests::Oracle::start();
    let mut c = Command::new(&python);
    c.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "console_output_style=classic", "tests/py"])
        .current_dir(workspace_root())
        .env("REDOUBT_HOST", "127.0.0.1")
        .env("REDOUBT_PORT", server.port().to_string())
        .env_remove("REDIS_PY_TARGETS");
    match &oracle {
        Some(o) => {
            c.env("ORACLE_PORT", o.port().to_string());
        }
        None => {
            c.env("REDIS_PY_TARGETS", "redoubt");
        }
    }
    let (ok, so, se) = run_with_deadline(c, None, Duration::from_secs(300));
    println!("{so}{se}");
    // pytest exits 5 when it collected nothing: that is a failure too.
    assert!(ok, "pytest failed (redis-py {version}):\n{so}{se}");
    assert!(so.contains(" passed"), "pytest ran no test:\n{so}{se}");
}
