//! t10: the wire protocol, byte for byte.
//!
//! Every scenario runs twice: against redoubt (`<scenario>::redoubt`) and against the real
//! redis-server (`<scenario>::redis`), so each expectation written here is itself checked
//! against Redis 7. Scenarios speak raw bytes over TCP: inline commands, pipelining,
//! protocol errors with Redis's exact texts followed by a close, limits enforced before
//! memory is reserved, stalled half-frames that must not block other clients, RESP3.

mod common;

use std::time::{Duration, Instant};

use common::{mbulk, Raw, Target};
use redoubt_tests::Value;

// ---------------------------------------------------------------------------------------
// inline commands
// ---------------------------------------------------------------------------------------

fn inline_commands(t: &Target) {
    let mut c = t.raw();
    c.send(b"PING\r\n").expect(b"+PONG\r\n");
    // A bare \n ends an inline command too, and blanks around words do not matter.
    c.send(b"PING\n").expect(b"+PONG\r\n");
    c.send(b"   PING    hello   \r\n").expect(b"$5\r\nhello\r\n");
    // Empty lines are skipped.
    c.send(b"\r\n\r\n\nPING\r\n").expect(b"+PONG\r\n");
    // Quoting and escapes as in sdssplitargs.
    c.send(b"SET inline \"a b\"\r\nGET inline\r\n").expect(b"+OK\r\n$3\r\na b\r\n");
    c.send(b"SET inline 'it''s'\r\n").expect(b"-ERR Protocol error: unbalanced quotes in request\r\n");
}
both!(inline_commands);

fn inline_escapes(t: &Target) {
    let mut c = t.raw();
    c.send(b"ECHO \"\\x41\\n\\t\"\r\n").expect(b"$3\r\nA\n\t\r\n");
    c.send(b"ECHO 'single \\' quoted'\r\n").expect(b"$15\r\nsingle ' quoted\r\n");
    c.send(b"echo \"\"\r\n").expect(b"$0\r\n\r\n");
    // Case-insensitive command names.
    c.send(b"pInG\r\n").expect(b"+PONG\r\n");
}
both!(inline_escapes);

fn inline_and_multibulk_mixed(t: &Target) {
    let mut c = t.raw();
    let mut req = b"SET a 1\r\n".to_vec();
    req.extend(mbulk(&["INCR", "a"]));
    req.extend(b"INCR a\r\n");
    req.extend(mbulk(&["GET", "a"]));
    c.send(&req).expect(b"+OK\r\n:2\r\n:3\r\n$1\r\n3\r\n");
}
both!(inline_and_multibulk_mixed);

// ---------------------------------------------------------------------------------------
// pipelining
// ---------------------------------------------------------------------------------------

fn pipeline_in_one_write(t: &Target) {
    let mut c = t.raw();
    let n = 2000;
    let mut req = Vec::new();
    let mut want = Vec::new();
    for i in 0..n {
        req.extend(mbulk(&["SET", &format!("key:{i}"), &format!("value-{i}")]));
        want.extend(b"+OK\r\n");
    }
    for i in 0..n {
        req.extend(mbulk(&["GET", &format!("key:{i}")]));
        let v = format!("value-{i}");
        want.extend(format!("${}\r\n{v}\r\n", v.len()).as_bytes());
    }
    for _ in 0..n {
        req.extend(mbulk(&["INCR", "counter"]));
    }
    for i in 1..=n {
        want.extend(format!(":{i}\r\n").as_bytes());
    }
    c.send(&req).expect(&want);
}
both!(pipeline_in_one_write);

fn pipeline_byte_by_byte(t: &Target) {
    // The same requests, delivered one byte per write: frames cut at every position.
    let mut c = t.raw();
    let mut req = mbulk(&["SET", "k", "hello\r\nworld"]);
    req.extend(b"GET k\r\n");
    req.extend(mbulk(&["APPEND", "k", "!"]));
    req.extend(mbulk(&["GET", "k"]));
    for b in &req {
        c.send(std::slice::from_ref(b));
    }
    c.expect(b"+OK\r\n$12\r\nhello\r\nworld\r\n:13\r\n$13\r\nhello\r\nworld!\r\n");
}
both!(pipeline_byte_by_byte);

fn empty_and_null_multibulks_are_ignored(t: &Target) {
    let mut c = t.raw();
    c.send(b"*0\r\n*-1\r\n*-5\r\nPING\r\n").expect(b"+PONG\r\n");
}
both!(empty_and_null_multibulks_are_ignored);

fn big_value_round_trip(t: &Target) {
    let mut c = t.conn();
    let v: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(c.cmd(&[b"SET".as_slice(), b"big", &v]), Value::Simple(b"OK".to_vec()));
    assert_eq!(c.cmd(&["STRLEN", "big"]), Value::Int(5_000_000));
    assert_eq!(c.cmd(&["GET", "big"]), Value::Bulk(v));
}
both!(big_value_round_trip);

fn unknown_command_and_arity_keep_the_connection(t: &Target) {
    let mut c = t.raw();
    c.send(b"FOO a b\r\n").expect(b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n");
    c.send(&mbulk(&["nosuchcmd"])).expect(b"-ERR unknown command 'nosuchcmd', with args beginning with: \r\n");
    c.send(b"GET\r\n").expect(b"-ERR wrong number of arguments for 'get' command\r\n");
    c.send(&mbulk(&["SET", "x"])).expect(b"-ERR wrong number of arguments for 'set' command\r\n");
    c.send(b"PING\r\n").expect(b"+PONG\r\n");
}
both!(unknown_command_and_arity_keep_the_connection);

fn quit_replies_then_closes(t: &Target) {
    let mut c = t.raw();
    c.send(b"PING\r\nQUIT\r\nPING\r\n").expect_then_close(b"+PONG\r\n+OK\r\n");
}
both!(quit_replies_then_closes);

// ---------------------------------------------------------------------------------------
// protocol errors: Redis's text, then the connection is closed
// ---------------------------------------------------------------------------------------

fn protocol_error(t: &Target, input: &[u8], text: &str) {
    let mut c = t.raw();
    // Commands before the bad frame in the same write still run.
    let mut req = b"PING\r\n".to_vec();
    req.extend_from_slice(input);
    c.send(&req);
    let want = format!("+PONG\r\n-ERR Protocol error: {text}\r\n");
    c.expect_then_close(want.as_bytes());
}

fn protocol_errors(t: &Target) {
    let cases: &[(&[u8], &str)] = &[
        (b"*x\r\n", "invalid multibulk length"),
        (b"*3000000000\r\n", "invalid multibulk length"),
        (b"*1\r\nx\r\n", "expected '$', got 'x'"),
        (b"*2\r\n$3\r\nGET\r\n*1\r\n", "expected '$', got '*'"),
        (b"*1\r\n$abc\r\n", "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$600000000\r\n", "invalid bulk length"),
        (b"SET k \"abc\r\n", "unbalanced quotes in request"),
        (b"SET k 'abc\"\r\n", "unbalanced quotes in request"),
        (b"ECHO \"a\"b\r\n", "unbalanced quotes in request"),
    ];
    for (input, text) in cases {
        protocol_error(t, input, text);
    }
}
both!(protocol_errors);

fn protocol_errors_on_long_lines(t: &Target) {
    // No newline within 64 KB: inline, multibulk count and bulk count lines.
    let long = vec![b'a'; 70_000];
    protocol_error(t, &long, "too big inline request");
    let mut m = b"*".to_vec();
    m.extend(vec![b'1'; 70_000]);
    protocol_error(t, &m, "too big mbulk count string");
    let mut b = b"*1\r\n$".to_vec();
    b.extend(vec![b'1'; 70_000]);
    protocol_error(t, &b, "too big bulk count string");
}
both!(protocol_errors_on_long_lines);

fn oversize_bulk_refused_before_the_body(t: &Target) {
    // The error must come from the header alone: nothing of the 600 MB is ever sent, so a
    // server that waited for (or reserved) the body would time out here.
    let mut c = t.raw();
    let start = Instant::now();
    c.send(b"*1\r\n$600000000\r\n").expect_then_close(b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(start.elapsed() < Duration::from_secs(5));
}
both!(oversize_bulk_refused_before_the_body);

fn proto_max_bulk_len_is_enforced(t: &Target) {
    let mut c = t.raw();
    c.send(&mbulk(&["SET", "k", &"x".repeat(1000)])).expect(b"+OK\r\n");
    c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048577\r\n")
        .expect_then_close(b"-ERR Protocol error: invalid bulk length\r\n");
    // Exactly the limit is fine.
    let mut c = t.raw();
    let v = vec![b'y'; 1048576];
    c.send(&mbulk(&[b"SET".as_slice(), b"k", &v])).expect(b"+OK\r\n");
    c.send(b"STRLEN k\r\n").expect(b":1048576\r\n");
}
both!(proto_max_bulk_len_is_enforced, ["--proto-max-bulk-len", "1mb"]);

fn unauthenticated_limits(t: &Target) {
    // Before AUTH, Redis refuses big multibulks and bulks (CVE-2021-32675).
    let mut c = t.raw();
    c.send(b"*11\r\n").expect_then_close(b"-ERR Protocol error: unauthenticated multibulk length\r\n");
    let mut c = t.raw();
    c.send(b"*1\r\n$20000\r\n").expect_then_close(b"-ERR Protocol error: unauthenticated bulk length\r\n");
    let mut c = t.raw();
    c.send(b"GET k\r\n").expect(b"-NOAUTH Authentication required.\r\n");
    c.send(b"AUTH wrong\r\n").expect(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    c.send(b"AUTH s3cret\r\n").expect(b"+OK\r\n");
    // After AUTH the limits are the normal ones.
    let mut req = vec![b"RPUSH".to_vec(), b"l".to_vec()];
    req.extend((0..20).map(|i| i.to_string().into_bytes()));
    c.send(&mbulk(&req)).expect(b":20\r\n");
}
both!(unauthenticated_limits, ["--requirepass", "s3cret"]);

// ---------------------------------------------------------------------------------------
// stalled clients do not block others
// ---------------------------------------------------------------------------------------

fn half_frames_do_not_block_others(t: &Target) {
    let mut stalled = Vec::new();
    // A half multibulk header, a half bulk, and most of a big bulk.
    for part in [b"*3\r\n$3\r\nSET\r\n$1\r\nk".to_vec(), b"*2\r\n$4\r\nEC".to_vec(), {
        let mut v = b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$2000000\r\n".to_vec();
        v.extend(vec![b'z'; 1_500_000]);
        v
    }] {
        let mut c = t.raw();
        c.send(&part);
        stalled.push(c);
    }
    let mut half_inline = t.raw();
    half_inline.send(b"SET inl");
    // Everyone else is served promptly.
    let start = Instant::now();
    for i in 0..50 {
        let mut c = t.raw();
        c.send(format!("SET other{i} {i}\r\nGET other{i}\r\n").as_bytes());
        c.expect(format!("+OK\r\n${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
    }
    assert!(start.elapsed() < Duration::from_secs(5), "other clients were slowed down: {:?}", start.elapsed());
    // Nothing was answered to the stalled ones...
    for c in stalled.iter_mut() {
        assert_eq!(c.read_for(Duration::from_millis(50)), b"");
    }
    // ...and each completes normally.
    stalled[0].send(b"\r\n$1\r\nv\r\n").expect(b"+OK\r\n");
    stalled[1].send(b"HO\r\n$2\r\nhi\r\n").expect(b"$2\r\nhi\r\n");
    let mut rest = vec![b'z'; 500_000];
    rest.extend(b"\r\n");
    stalled[2].send(&rest).expect(b"+OK\r\n");
    half_inline.send(b"ine 1\r\nGET inline\r\n").expect(b"+OK\r\n$1\r\n1\r\n");
    let mut c = t.raw();
    c.send(b"STRLEN big\r\nGET k\r\n").expect(b":2000000\r\n$1\r\nv\r\n");
}
both!(half_frames_do_not_block_others);

fn client_vanishing_mid_frame_is_harmless(t: &Target) {
    for _ in 0..20 {
        let mut c = t.raw();
        c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc");
        drop(c);
    }
    let mut c = t.raw();
    c.send(b"EXISTS k\r\nPING\r\n").expect(b":0\r\n+PONG\r\n");
}
both!(client_vanishing_mid_frame_is_harmless);

// ---------------------------------------------------------------------------------------
// RESP3
// ---------------------------------------------------------------------------------------

fn hello3(t: &Target) {
    let mut c = t.conn();
    let v = c.hello3().expect("HELLO 3");
    let Value::Map(m) = &v else { panic!("HELLO 3 should reply with a map, got {}", v.render()) };
    let mut keys: Vec<String> =
        m.iter().map(|(k, _)| String::from_utf8_lossy(k.as_bytes().unwrap_or(b"?")).into_owned()).collect();
    keys.sort();
    assert_eq!(keys, ["id", "mode", "modules", "proto", "role", "server", "version"]);
    // The order on the wire (the decoder's map does not keep it).
    let mut r = t.raw();
    r.send(b"HELLO 3\r\n").expect(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n");
    let get =
        |name: &str| m.iter().find(|(k, _)| k.as_bytes() == Some(name.as_bytes())).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(get("server"), Value::Bulk(b"redis".to_vec()));
    assert_eq!(get("proto"), Value::Int(3));
    assert!(matches!(get("id"), Value::Int(_)));
    assert_eq!(get("mode"), Value::Bulk(b"standalone".to_vec()));
    assert_eq!(get("role"), Value::Bulk(b"master".to_vec()));
    assert_eq!(get("modules"), Value::Array(vec![]));
    assert!(get("version").as_bytes().is_some_and(|v| v.starts_with(b"7.")));
}
both!(hello3);

fn hello_versions(t: &Target) {
    let mut c = t.raw();
    c.send(b"HELLO 4\r\n").expect(b"-NOPROTO unsupported protocol version\r\n");
    c.send(b"HELLO 1\r\n").expect(b"-NOPROTO unsupported protocol version\r\n");
    c.send(b"HELLO abc\r\n").expect(b"-ERR Protocol version is not an integer or out of range\r\n");
    // HELLO 2 answers with a flat array of 14 items.
    c.send(b"HELLO 2\r\n").expect(b"*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n");
}
both!(hello_versions);

fn resp3_wire_types(t: &Target) {
    let mut c = t.raw();
    c.send(b"HSET h f v\r\nSADD s m\r\nZADD z 1.5 a\r\nSET n 1\r\n").expect(b":1\r\n:1\r\n:1\r\n+OK\r\n");
    // RESP2 first.
    c.send(b"GET missing\r\nHGETALL h\r\nSMEMBERS s\r\nZSCORE z a\r\nBLPOP nolist 0.01\r\n")
        .expect(b"$-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n*1\r\n$1\r\nm\r\n$3\r\n1.5\r\n*-1\r\n");
    c.send(b"HELLO 3\r\n");
    let _ = c.read_for(Duration::from_millis(300));
    c.send(b"GET missing\r\nHGETALL h\r\nSMEMBERS s\r\nZSCORE z a\r\nBLPOP nolist 0.01\r\n")
        .expect(b"_\r\n%1\r\n$1\r\nf\r\n$1\r\nv\r\n~1\r\n$1\r\nm\r\n,1.5\r\n_\r\n");
    c.send(b"ZINCRBY z +inf a\r\nEXISTS n\r\nSISMEMBER s m\r\n").expect(b",inf\r\n:1\r\n:1\r\n");
}
both!(resp3_wire_types);

fn resp3_connection_switch_back(t: &Target) {
    let mut c = t.conn();
    c.hello3().unwrap();
    c.cmd(&["SET", "k", "v"]);
    assert_eq!(c.cmd(&["GET", "nope"]), Value::Nil);
    // HELLO switches first, then replies: HELLO 2's reply is already a RESP2 array.
    let mut r = t.raw();
    r.send(b"HELLO 3\r\n");
    let _ = r.read_for(Duration::from_millis(300));
    r.send(b"HELLO 2\r\n").expect(b"*14\r\n");
    let _ = r.read_for(Duration::from_millis(300));
    r.send(b"GET nope\r\n").expect(b"$-1\r\n");
}
both!(resp3_connection_switch_back);

// ---------------------------------------------------------------------------------------
// robustness
// ---------------------------------------------------------------------------------------

fn many_connections(t: &Target) {
    let mut conns: Vec<Raw> = (0..200).map(|_| t.raw()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(format!("SET c{i} {i}\r\n").as_bytes());
    }
    for c in conns.iter_mut() {
        c.expect(b"+OK\r\n");
    }
    let mut c = t.raw();
    c.send(b"DBSIZE\r\n").expect(b":200\r\n");
}
both!(many_connections);

fn binary_safe_arguments(t: &Target) {
    let mut c = t.raw();
    let key: Vec<u8> = vec![0, 1, 2, b'\r', b'\n', 255];
    let val: Vec<u8> = (0..=255u8).collect();
    c.send(&mbulk(&[b"SET".as_slice(), &key, &val])).expect(b"+OK\r\n");
    let mut want = b"$256\r\n".to_vec();
    want.extend(&val);
    want.extend(b"\r\n");
    c.send(&mbulk(&[b"GET".as_slice(), &key])).expect(&want);
}
both!(binary_safe_arguments);
