//! The SMS gateway as processes: `redoubt-gateway` pods against `redoubt` nodes, spoken to
//! over raw SMPP and HTTP. (The flows with third-party SMPP peers are in t82.)

use std::time::{Duration, Instant};

use redoubt_tests::gateway::{http, Pod, RawSmpp, API_KEY};
use redoubt_tests::{Node, TempDir};

const BIND_TX: u32 = 0x2;
const BIND_RX: u32 = 0x1;
const BIND_TRX: u32 = 0x9;
const ESME_RBINDFAIL: u32 = 0x0D;

fn customer(pod: &Pod, id: &str, password: &str, max_binds: u32) {
    let body = format!(r#"{{"password":"{password}","max_tps":0,"max_binds":{max_binds}}}"#);
    let (code, text) = pod.http("PUT", &format!("/api/v1/customers/{id}"), Some(&body));
    assert_eq!(code, 200, "{text}");
}

/// Binds until the pod has seen the configuration (changes reach pods within ~250 ms).
fn bind_eventually(pod: &Pod, kind: u32, id: &str, pw: &str) -> RawSmpp {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = RawSmpp::connect(pod.smpp);
        let st = c.bind(kind, id, pw);
        if st == 0 {
            return c;
        }
        assert!(Instant::now() < deadline, "bind of {id} on pod {} still refused: {st:#x}", pod.name);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_api_needs_a_key_validates_input_and_never_returns_passwords() {
    let dir = TempDir::new("gw-api");
    let node = Node::start(dir.path(), &[]);
    let pod = Pod::start(dir.path(), "a", &[node.addr], &[]);
    assert_eq!(http(pod.http, "GET", "/api/v1/customers", None, None).0, 401);
    assert_eq!(http(pod.http, "GET", "/api/v1/customers", None, Some("wrong")).0, 401);
    assert_eq!(pod.http("GET", "/api/v1/customers", None), (200, "[]".to_string()));
    // A new customer needs a password, within SMPP's 8 characters.
    assert_eq!(pod.http("PUT", "/api/v1/customers/acme", Some(r#"{"max_tps":5,"max_binds":1}"#)).0, 400);
    assert_eq!(
        pod.http("PUT", "/api/v1/customers/acme", Some(r#"{"password":"123456789","max_tps":5,"max_binds":1}"#)).0,
        400
    );
    assert_eq!(
        pod.http("PUT", "/api/v1/customers/acme", Some(r#"{"password":"pw","max_tps":5,"max_bindz":1}"#)).0,
        422
    );
    customer(&pod, "acme", "pw", 2);
    let (code, body) = pod.http("GET", "/api/v1/customers/acme", None);
    assert_eq!(code, 200);
    assert!(body.contains(r#""max_binds":2"#) && !body.contains("pw") && !body.contains("argon"), "{body}");
    // The stored record is a hash, visible to redis-cli, never the password.
    let stored = redoubt_tests::cluster::get(&mut node.conn(), "gw:config:version");
    assert_eq!(stored.as_deref(), Some("1"));
    let mut c = node.conn();
    let v = c.cmd(&["HGET", "gw:customers", "acme"]);
    let json = String::from_utf8_lossy(v.as_bytes().unwrap()).into_owned();
    assert!(json.contains("$argon2id$") && !json.contains("\"pw\""), "{json}");
    // An update may leave the password out.
    let (code, _) = pod.http("PUT", "/api/v1/customers/acme", Some(r#"{"max_tps":7,"max_binds":2}"#));
    assert_eq!(code, 200);
    bind_eventually(&pod, BIND_TX, "acme", "pw");
    // Routes, vendors, campaigns.
    assert_eq!(pod.http("PUT", "/api/v1/routes/44x", Some(r#"{"vendors":["v1"]}"#)).0, 400);
    assert_eq!(pod.http("PUT", "/api/v1/routes/44", Some(r#"{"vendors":[]}"#)).0, 400);
    assert_eq!(pod.http("PUT", "/api/v1/routes/44", Some(r#"{"vendors":["v1","v2"]}"#)).0, 200);
    assert_eq!(pod.http("GET", "/api/v1/routes/44", None), (200, r#"{"id":"44","vendors":["v1","v2"]}"#.to_string()));
    assert_eq!(pod.http("DELETE", "/api/v1/routes/44", None).0, 204);
    assert_eq!(pod.http("DELETE", "/api/v1/routes/44", None).0, 404);
    assert_eq!(pod.http("GET", "/api/v1/routes/44", None).0, 404);
    let v = r#"{"host":"127.0.0.1","port":1,"system_id":"x","password":"y","bind":"sideways","max_tps":1,"window":1,"enabled":false}"#;
    assert_eq!(pod.http("PUT", "/api/v1/vendors/v1", Some(v)).0, 422);
    let v = v.replace("sideways", "transmitter+receiver");
    let (code, body) = pod.http("PUT", "/api/v1/vendors/v1", Some(&v));
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("\"password\"") && body.contains(r#""state":"disabled""#), "{body}");
    let c = r#"{"campaign_id":"C1","hourly_limit":10,"daily_limit":100}"#;
    assert_eq!(pod.http("PUT", "/api/v1/campaigns/18005550100", Some(c)).0, 200);
    assert!(pod.http("GET", "/api/v1/campaigns", None).1.contains("C1"));
    assert_eq!(pod.http("GET", "/api/v1/messages/nope", None).0, 404);
    // Health: the store answers and no enabled vendor is down.
    let (code, body) = http(pod.http, "GET", "/health", None, None);
    assert_eq!(code, 200, "{body}");
    assert!(http(pod.http, "GET", "/metrics", None, None).1.contains("gateway_binds_total 1"));
    let _ = API_KEY;
}

#[test]
fn binds_are_checked_and_counted_across_pods() {
    let dir = TempDir::new("gw-binds");
    let node = Node::start(dir.path(), &[]);
    let a = Pod::start(dir.path(), "a", &[node.addr], &[]);
    let b = Pod::start(dir.path(), "b", &[node.addr], &[]);
    customer(&a, "acme", "s3cret", 2);
    let _one = bind_eventually(&a, BIND_TX, "acme", "s3cret");
    let two = bind_eventually(&b, BIND_RX, "acme", "s3cret");
    // The third bind, on either pod, is over max_binds.
    assert_eq!(RawSmpp::connect(a.smpp).bind(BIND_TRX, "acme", "s3cret"), ESME_RBINDFAIL);
    assert_eq!(RawSmpp::connect(b.smpp).bind(BIND_TRX, "acme", "s3cret"), ESME_RBINDFAIL);
    // Wrong password, unknown system_id.
    assert_eq!(RawSmpp::connect(a.smpp).bind(BIND_TX, "acme", "wrong"), ESME_RBINDFAIL);
    assert_eq!(RawSmpp::connect(a.smpp).bind(BIND_TX, "nobody", "s3cret"), ESME_RBINDFAIL);
    // A session that ends frees its slot at once.
    drop(two);
    let _three = bind_eventually(&a, BIND_TRX, "acme", "s3cret");
    // Sessions are visible in the store and through the API.
    let (code, body) = a.http("GET", "/api/v1/sessions", None);
    assert_eq!(code, 200);
    assert!(body.contains(r#""customer":"acme""#) && body.contains(r#""pod":"a""#), "{body}");
    // The slots in the store: one per live session, named by pod and session.
    let mut c = node.conn();
    assert_eq!(c.cmd(&["ZCARD", "gw:binds:acme"]).as_int(), Some(2));
}

#[test]
fn malformed_pdus_get_generic_nack_and_the_session_survives() {
    let dir = TempDir::new("gw-nack");
    let node = Node::start(dir.path(), &[]);
    let pod = Pod::start(dir.path(), "a", &[node.addr], &[]);
    customer(&pod, "acme", "pw", 4);
    let mut s = bind_eventually(&pod, BIND_TRX, "acme", "pw");
    // An unknown command id.
    let seq = s.send(0x0012_3456, &[1, 2, 3]);
    assert_eq!(s.read().map(|p| (p.0, p.1, p.2)), Some((0x8000_0000, 0x03, seq)));
    // A submit_sm whose body stops half-way.
    let seq = s.send(0x4, &[0, 1, 1, b'1', b'2']);
    assert_eq!(s.read().map(|p| (p.0, p.1, p.2)), Some((0x8000_0000, 0x02, seq)));
    // A command length far beyond any PDU: refused, skipped, not buffered.
    let mut huge = Vec::new();
    huge.extend_from_slice(&(1u32 << 20).to_be_bytes());
    huge.extend_from_slice(&4u32.to_be_bytes());
    huge.extend_from_slice(&0u32.to_be_bytes());
    huge.extend_from_slice(&77u32.to_be_bytes());
    s.send_bytes(&huge);
    s.send_bytes(&vec![0u8; (1 << 20) - 16]);
    assert_eq!(s.read().map(|p| (p.0, p.1, p.2)), Some((0x8000_0000, 0x02, 77)));
    assert!(s.alive(), "the session must survive bad PDUs");
    // Validation errors are submit_sm_resp statuses: a bad destination, an unknown coding.
    let seq = s.send(0x4, &RawSmpp::submit_body("ACME", "not-a-number", 0, b"hi"));
    assert_eq!(s.read().map(|p| (p.0, p.1, p.2)), Some((0x8000_0004, 0x0B, seq)));
    // A submit before bind gets ESME_RINVBNDSTS.
    let mut fresh = RawSmpp::connect(pod.smpp);
    let seq = fresh.send(0x4, &RawSmpp::submit_body("ACME", "15551234567", 0, b"hi"));
    assert_eq!(fresh.read().map(|p| (p.0, p.1, p.2)), Some((0x8000_0004, 0x04, seq)));
    assert!(fresh.alive());
    // unbind ends the session cleanly.
    let seq = s.send(0x6, &[]);
    assert_eq!(s.read().map(|p| (p.0, p.1, p.2)), Some((0x8000_0006, 0, seq)));
    assert!(s.read().is_none());
    assert!(pod.metric("gateway_generic_nacks_total") >= 3.0);
}

#[test]
fn a_config_change_through_one_pod_takes_effect_on_the_other() {
    let dir = TempDir::new("gw-config");
    let node = Node::start(dir.path(), &[]);
    let a = Pod::start(dir.path(), "a", &[node.addr], &[]);
    let b = Pod::start(dir.path(), "b", &[node.addr], &[]);
    customer(&a, "acme", "first", 4);
    bind_eventually(&b, BIND_TX, "acme", "first");
    // A password change through pod B applies on pod A without a restart.
    customer(&b, "acme", "second", 4);
    bind_eventually(&a, BIND_TX, "acme", "second");
    assert_eq!(RawSmpp::connect(a.smpp).bind(BIND_TX, "acme", "first"), ESME_RBINDFAIL);
    // A customer deleted through A cannot bind on B.
    assert_eq!(a.http("DELETE", "/api/v1/customers/acme", None).0, 204);
    let deadline = Instant::now() + Duration::from_secs(5);
    while RawSmpp::connect(b.smpp).bind(BIND_TX, "acme", "second") == 0 {
        assert!(Instant::now() < deadline, "a deleted customer still binds");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Rate limits: max_tps 1 with burst 1 admits two at once and throttles the third (0x58).
    let (code, _) =
        a.http("PUT", "/api/v1/customers/slow", Some(r#"{"password":"pw","max_tps":1,"burst":1,"max_binds":2}"#));
    assert_eq!(code, 200);
    let mut s = bind_eventually(&b, BIND_TX, "slow", "pw");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let seq = s.send(0x4, &RawSmpp::submit_body("ACME", "15551234567", 0, b"hi"));
        let p = s.read().unwrap();
        assert_eq!((p.0, p.2), (0x8000_0004, seq));
        statuses.push(p.1);
    }
    assert_eq!(statuses, vec![0, 0, 0x58]);
}
