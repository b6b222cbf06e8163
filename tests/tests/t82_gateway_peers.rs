//! The gateway between real third-party SMPP peers: customers on PyPI `smpplib`, a vendor
//! SMSC on npm `smpp` (`tests/smpp/`), two gateway pods, redoubt underneath (one node, a
//! three-node cluster, or embedded in the pods).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redoubt_tests::cluster::Cluster;
use redoubt_tests::gateway::Pod;
use redoubt_tests::smpp::{customer, peers_available, read_run, spawn_customer, Vendor};
use redoubt_tests::{Node, TempDir};

const CUSTOMER: &str = "acme";
const PASSWORD: &str = "pw";

/// A customer, one vendor per port (ids v1, v2, ...) and a default route over them in order.
fn configure(pod: &Pod, vendor_ports: &[u16], window: u32) {
    let (code, body) = pod.http(
        "PUT",
        &format!("/api/v1/customers/{CUSTOMER}"),
        Some(&format!(r#"{{"password":"{PASSWORD}","max_tps":0,"max_binds":16}}"#)),
    );
    assert_eq!(code, 200, "{body}");
    let mut ids = Vec::new();
    for (i, port) in vendor_ports.iter().enumerate() {
        let id = format!("v{}", i + 1);
        let v = format!(
            r#"{{"host":"127.0.0.1","port":{port},"system_id":"vendor","password":"vpw","bind":"transceiver","max_tps":0,"window":{window},"enabled":true}}"#
        );
        let (code, body) = pod.http("PUT", &format!("/api/v1/vendors/{id}"), Some(&v));
        assert_eq!(code, 200, "{body}");
        ids.push(format!("\"{id}\""));
    }
    let (code, body) =
        pod.http("PUT", "/api/v1/routes/default", Some(&format!(r#"{{"vendors":[{}]}}"#, ids.join(","))));
    assert_eq!(code, 200, "{body}");
}

fn args(port: u16, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["--port", &port.to_string(), "--system-id", CUSTOMER, "--password", PASSWORD]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every acked id got exactly one receipt (on failure, the first offender's trail is shown).
fn exactly_once(pod: &Pod, acked: &[String], receipts: &HashMap<String, Vec<String>>) {
    let missing: Vec<&String> = acked.iter().filter(|id| !receipts.contains_key(*id)).collect();
    let twice: Vec<(&String, &Vec<String>)> = receipts.iter().filter(|(_, s)| s.len() != 1).collect();
    if let Some(id) = missing.first().copied().or(twice.first().map(|t| t.0)) {
        let trail = pod.http("GET", &format!("/api/v1/messages/{id}"), None).1;
        panic!(
            "{} of {} acked messages without a receipt {:?}; {} delivered more than once {:?}\ntrail of {id}: {trail}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)],
            twice.len(),
            &twice[..twice.len().min(5)]
        );
    }
}

#[test]
fn receipts_reach_a_receiver_bound_on_another_pod_exactly_once() {
    if !peers_available() {
        return;
    }
    let dir = TempDir::new("gw-peers-xpod");
    let node = Node::start(dir.path(), &[]);
    // Hex ids in submit_sm_resp, decimal ones in receipts that name the id only in their text
    // (matched by normalisation after the exact grace period), and some receipts sent twice.
    let vendor = Vendor::start(
        dir.path(),
        "v1",
        &["--accounts", "vendor:vpw", "--dlr-id", "dec", "--no-tlv", "--dlr-repeat", "0.2"],
    );
    let a = Pod::start(dir.path(), "a", &[node.addr], &[]);
    let b = Pod::start(dir.path(), "b", &[node.addr], &[]);
    configure(&a, &[vendor.port], 50);
    a.wait_bound(&["v1"], Duration::from_secs(20));
    b.wait_bound(&["v1"], Duration::from_secs(20));
    let rx = b.smpp.to_string();
    let run = customer(
        dir.path(),
        "xpod",
        &refs(&args(
            a.smpp,
            &["--bind", "tx+rx", "--rx-port", &rx, "--count", "400", "--window", "20", "--wait-dlr", "30"],
        )),
        Duration::from_secs(90),
    );
    assert!(run.ok, "{}\n{}", run.output, a.log_text());
    assert_eq!(run.n("acked"), 400);
    exactly_once(&b, &run.acked_ids(), &run.receipts());
    assert_eq!(run.n("unmatched"), 0);
    assert_eq!(vendor.stat("duplicates"), 0, "{}", vendor.stats());
    // The message's story is in the store and the API.
    let id = &run.acked_ids()[0];
    let (code, body) = b.http("GET", &format!("/api/v1/messages/{id}"), None);
    assert_eq!(code, 200);
    for event in ["accepted", "queued", "submitted v1", "receipt DELIVRD from v1", "delivered to acme"] {
        assert!(body.contains(event), "{event} missing from {body}");
    }
    // Every receipt named its message only in another base: all were held, then matched.
    let early = a.metric("gateway_receipts_early_total") + b.metric("gateway_receipts_early_total");
    assert!(early >= 400.0, "{early} receipts went through the normalisation path");
    let dups = a.metric("gateway_receipts_duplicate_total") + b.metric("gateway_receipts_duplicate_total");
    assert!(dups > 0.0, "the vendor repeated receipts; the gateway should have dropped some");
}

#[test]
fn a_pod_killed_mid_run_loses_no_acknowledged_message() {
    if !peers_available() {
        return;
    }
    let dir = TempDir::new("gw-peers-kill");
    let node = Node::start(dir.path(), &[]);
    let vendor = Vendor::start(dir.path(), "v1", &["--accounts", "vendor:vpw", "--dlr-delay-ms", "20"]);
    let a = Pod::start(dir.path(), "a", &[node.addr], &[]);
    let b = Pod::start(dir.path(), "b", &[node.addr], &[]);
    configure(&a, &[vendor.port], 20);
    a.wait_bound(&["v1"], Duration::from_secs(20));
    b.wait_bound(&["v1"], Duration::from_secs(20));
    // Submits through pod A at a steady rate, receipts on pod B; A dies half-way.
    let rx = b.smpp.to_string();
    let (mut child, out) = spawn_customer(
        dir.path(),
        "killed",
        &refs(&args(
            a.smpp,
            &[
                "--bind",
                "tx+rx",
                "--rx-port",
                &rx,
                "--count",
                "3000",
                "--window",
                "20",
                "--rate",
                "800",
                "--wait-dlr",
                "0",
            ],
        )),
    );
    std::thread::sleep(Duration::from_millis(1500));
    a.kill9();
    let _ = child.wait();
    let first = read_run(&out);
    let acked = first.acked_ids();
    assert!(acked.len() > 100 && acked.len() < 3000, "the kill should land mid-run: {} acked", acked.len());
    // Everything acknowledged is delivered: pod B takes over A's leases and the queue.
    let mut receipts = first.receipts();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.iter().any(|id| !receipts.contains_key(id)) {
        assert!(
            Instant::now() < deadline,
            "acked messages never receipted: {} of {}",
            acked.iter().filter(|id| !receipts.contains_key(*id)).count(),
            acked.len()
        );
        let more = customer(
            dir.path(),
            "listen",
            &refs(&args(b.smpp, &["--bind", "rx", "--listen-only", "3"])),
            Duration::from_secs(30),
        );
        for (id, states) in more.receipts() {
            receipts.entry(id).or_default().extend(states);
        }
    }
    // Duplicates can only come from messages in flight at the crash: at most a window's worth.
    let dups = vendor.stat("duplicates");
    eprintln!("pod kill: {} acked, {} vendor duplicates", acked.len(), dups);
    assert!(dups <= 20, "{dups} duplicates > the vendor window");
}

#[test]
fn vendor_throttling_refusals_and_dropped_connections_are_survived() {
    if !peers_available() {
        return;
    }
    let dir = TempDir::new("gw-peers-faults");
    let node = Node::start(dir.path(), &[]);
    // v1 refuses destinations starting 4670000002 (messages 20-29, before its first drop) (permanent error: fail over to v2), throttles
    // 10% and drops its connection every 150 submits; v2 is well behaved.
    let v1 = Vendor::start(
        dir.path(),
        "v1",
        &["--accounts", "vendor:vpw", "--reject-rate", "0.1", "--drop-after", "150", "--refuse-dest", "4670000002"],
    );
    let v2 = Vendor::start(dir.path(), "v2", &["--accounts", "vendor:vpw"]);
    let a = Pod::start(dir.path(), "a", &[node.addr], &[]);
    configure(&a, &[v1.port, v2.port], 10);
    a.wait_bound(&["v1", "v2"], Duration::from_secs(20));
    let run = customer(
        dir.path(),
        "faults",
        &refs(&args(a.smpp, &["--count", "600", "--window", "10", "--wait-dlr", "60"])),
        Duration::from_secs(120),
    );
    assert!(run.ok, "{}\n{}", run.output, a.log_text());
    exactly_once(&a, &run.acked_ids(), &run.receipts());
    assert!(v1.stat("throttled") > 0 && v1.stat("dropped") > 0 && v1.stat("refused") > 0, "{}", v1.stats());
    assert!(v2.stat("acked") >= v1.stat("refused"), "refused messages went to v2: {} {}", v1.stats(), v2.stats());
    assert!(a.metric("gateway_vendor_throttled_total") > 0.0);
    // A destination no vendor takes: the customer gets a failure receipt.
    let v2_refuses = Vendor::start(dir.path(), "v3", &["--accounts", "vendor:vpw", "--refuse-dest", "99"]);
    let (code, _) = a.http(
        "PUT",
        "/api/v1/vendors/v3",
        Some(&format!(r#"{{"host":"127.0.0.1","port":{},"system_id":"vendor","password":"vpw","bind":"transceiver","max_tps":0,"window":5,"enabled":true}}"#, v2_refuses.port)),
    );
    assert_eq!(code, 200);
    assert_eq!(a.http("PUT", "/api/v1/routes/99", Some(r#"{"vendors":["v3"]}"#)).0, 200);
    a.wait_bound(&["v3"], Duration::from_secs(20));
    let run = customer(
        dir.path(),
        "undeliverable",
        &refs(&args(a.smpp, &["--count", "3", "--destination", "9900{i}", "--wait-dlr", "20"])),
        Duration::from_secs(60),
    );
    assert!(run.ok, "{}", run.output);
    for (_, states) in run.receipts() {
        assert_eq!(states, vec!["UNDELIV".to_string()]);
    }
}

#[test]
fn the_redoubt_leader_dies_mid_run_and_nothing_acknowledged_is_lost() {
    if !peers_available() {
        return;
    }
    let mut cluster = Cluster::start("gw-peers-leader");
    let leader = cluster.leader(Duration::from_secs(20));
    let nodes: Vec<std::net::SocketAddr> = cluster.nodes.iter().flatten().map(|n| n.addr).collect();
    let dir = TempDir::new("gw-peers-leader-pods");
    let vendor = Vendor::start(dir.path(), "v1", &["--accounts", "vendor:vpw", "--dlr-delay-ms", "20"]);
    // Each pod lists the nodes starting with a different one, as pods spread over a cluster.
    let a = Pod::start(dir.path(), "a", &nodes, &[]);
    let mut rev = nodes.clone();
    rev.reverse();
    let b = Pod::start(dir.path(), "b", &rev, &[]);
    configure(&a, &[vendor.port], 50);
    a.wait_bound(&["v1"], Duration::from_secs(30));
    b.wait_bound(&["v1"], Duration::from_secs(30));
    let rx = b.smpp.to_string();
    let (mut child, out) = spawn_customer(
        dir.path(),
        "leader",
        &refs(&args(
            a.smpp,
            &[
                "--bind",
                "tx+rx",
                "--rx-port",
                &rx,
                "--count",
                "1500",
                "--window",
                "20",
                "--rate",
                "500",
                "--wait-dlr",
                "60",
            ],
        )),
    );
    std::thread::sleep(Duration::from_millis(1200));
    let killed = Instant::now();
    cluster.nodes[leader].take().unwrap().kill9();
    let status = child.wait().unwrap();
    let run = read_run(&out);
    eprintln!(
        "leader kill: customer finished {:?} after the kill, {} acked, errors {}",
        killed.elapsed(),
        run.n("acked"),
        run.json["errors"]
    );
    assert!(status.success(), "customer run failed: {}\n{}", run.json, a.log_text());
    exactly_once(&b, &run.acked_ids(), &run.receipts());
}

#[test]
fn embedded_pods_are_their_own_store() {
    if !peers_available() {
        return;
    }
    let dir = TempDir::new("gw-peers-embed");
    let vendor = Vendor::start(dir.path(), "v1", &["--accounts", "vendor:vpw"]);
    let port = redoubt_tests::free_port().to_string();
    let a = Pod::spawn(
        dir.path(),
        "a",
        &["--embed".into(), "--port".into(), port.clone(), "--dir".into(), dir.path().display().to_string()],
    );
    configure(&a, &[vendor.port], 20);
    a.wait_bound(&["v1"], Duration::from_secs(20));
    let run = customer(
        dir.path(),
        "embed",
        &refs(&args(a.smpp, &["--count", "200", "--wait-dlr", "30"])),
        Duration::from_secs(60),
    );
    assert!(run.ok, "{}\n{}", run.output, a.log_text());
    exactly_once(&a, &run.acked_ids(), &run.receipts());
    // The embedded node is a redoubt server like any other.
    let mut c = redoubt_tests::Conn::connect(format!("127.0.0.1:{port}").parse().unwrap());
    assert!(c.cmd(&["HLEN", "gw:customers"]).as_int() == Some(1));
}

#[test]
fn mobile_originated_messages_and_webhook_receipts() {
    if !peers_available() {
        return;
    }
    let dir = TempDir::new("gw-peers-mo");
    let node = Node::start(dir.path(), &[]);
    let mo_file = dir.path().join("mo.txt");
    let mo_arg = mo_file.display().to_string();
    let vendor = Vendor::start(dir.path(), "v1", &["--accounts", "vendor:vpw", "--mo-file", &mo_arg]);
    let a = Pod::start(dir.path(), "a", &[node.addr], &[]);
    let b = Pod::start(dir.path(), "b", &[node.addr], &[]);
    configure(&a, &[vendor.port], 20);
    // The customer owns 1800555...: messages from phones to those numbers are theirs.
    let body = format!(r#"{{"password":"{PASSWORD}","max_tps":0,"max_binds":16,"numbers":["1800555"]}}"#);
    assert_eq!(a.http("PUT", &format!("/api/v1/customers/{CUSTOMER}"), Some(&body)).0, 200);
    a.wait_bound(&["v1"], Duration::from_secs(20));
    b.wait_bound(&["v1"], Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&mo_file, "vendor 46701111111 18005550100 STOP\nvendor 46702222222 19990000000 nobody owns this\n")
        .unwrap();
    let run = customer(
        dir.path(),
        "mo",
        &refs(&args(b.smpp, &["--bind", "rx", "--listen-only", "3"])),
        Duration::from_secs(30),
    );
    let mo = run.json["mo"].as_array().cloned().unwrap_or_default();
    assert_eq!(mo.len(), 1, "{}", run.json);
    assert_eq!(
        (mo[0]["source"].as_str(), mo[0]["destination"].as_str(), mo[0]["text"].as_str()),
        (Some("46701111111"), Some("18005550100"), Some("STOP"))
    );
    let mut c = node.conn();
    let unrouted = c.cmd(&["LRANGE", "gw:mo:unrouted", "0", "-1"]);
    assert!(unrouted.render().contains("nobody owns this"), "{}", unrouted.render());

    // Receipts by webhook: a customer with a webhook_url gets each receipt POSTed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = listener.local_addr().unwrap().port();
    let posts = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = posts.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for (n, s) in listener.incoming().enumerate() {
            let Ok(mut s) = s else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then Content-Length bytes of body.
            while let Ok(k) = s.read(&mut chunk) {
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if body.len() >= len.unwrap_or(0) {
                        break;
                    }
                }
            }
            // The first POST fails: the gateway must retry it.
            let status = if n == 0 { "500 Internal Server Error" } else { "200 OK" };
            if n > 0 {
                let text = String::from_utf8_lossy(&buf).to_string();
                seen.lock().unwrap().push(text.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default());
            }
            let _ =
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
        }
    });
    let body = format!(r#"{{"password":"hpw","max_tps":0,"max_binds":4,"webhook_url":"http://127.0.0.1:{hook}/dlr"}}"#);
    assert_eq!(a.http("PUT", "/api/v1/customers/hooked", Some(&body)).0, 200);
    std::thread::sleep(Duration::from_millis(500));
    let run = customer(
        dir.path(),
        "hooked",
        &[
            "--port",
            &a.smpp.to_string(),
            "--system-id",
            "hooked",
            "--password",
            "hpw",
            "--bind",
            "tx",
            "--count",
            "20",
            "--wait-dlr",
            "0",
        ],
        Duration::from_secs(30),
    );
    assert!(run.ok, "{}", run.output);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = posts.lock().unwrap().clone();
        let ids: std::collections::HashSet<String> = got
            .iter()
            .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .filter(|j| j["type"] == "receipt" && j["state"] == "DELIVRD")
            .filter_map(|j| j["message_id"].as_str().map(String::from))
            .collect();
        if run.acked_ids().iter().all(|id| ids.contains(id)) {
            assert_eq!(got.len(), 20, "each receipt posted once");
            break;
        }
        assert!(Instant::now() < deadline, "webhook got {} of 20 receipts", ids.len());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_embedded_pods_are_a_replicated_store_and_survive_losing_one() {
    if !peers_available() {
        return;
    }
    let dir = TempDir::new("gw-peers-embed3");
    let vendor = Vendor::start(dir.path(), "v1", &["--accounts", "vendor:vpw"]);
    let ports: Vec<String> = (0..3).map(|_| redoubt_tests::free_port().to_string()).collect();
    let raft: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", redoubt_tests::free_port())).collect();
    let members = (0..3).map(|i| format!("{}@{}", i + 1, raft[i])).collect::<Vec<_>>().join(",");
    let pods: Vec<Pod> = (0..3)
        .map(|i| {
            let d = dir.path().join(format!("pod{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let args: Vec<String> = vec![
                "--embed".into(),
                "--port".into(),
                ports[i].clone(),
                "--dir".into(),
                d.display().to_string(),
                "--node-id".into(),
                (i + 1).to_string(),
                "--cluster".into(),
                members.clone(),
            ];
            Pod::spawn(dir.path(), &format!("p{i}"), &args)
        })
        .collect();
    // Configured through one pod; every pod sees it (the embedded nodes replicate it).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _) = pods[1].http("PUT", "/api/v1/routes/default", Some(r#"{"vendors":["v1"]}"#));
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the embedded cluster never took a write");
        std::thread::sleep(Duration::from_millis(200));
    }
    configure(&pods[1], &[vendor.port], 20);
    for p in &pods {
        p.wait_bound(&["v1"], Duration::from_secs(30));
    }
    let rx = pods[2].smpp.to_string();
    let run = customer(
        dir.path(),
        "embed3",
        &refs(&args(pods[0].smpp, &["--bind", "tx+rx", "--rx-port", &rx, "--count", "300", "--wait-dlr", "30"])),
        Duration::from_secs(90),
    );
    assert!(run.ok, "{}\n{}", run.output, pods[0].log_text());
    exactly_once(&pods[2], &run.acked_ids(), &run.receipts());
    // One pod (and its node) dies; the other two keep a majority and keep working.
    let mut pods = pods;
    pods.remove(0).kill9();
    let rx = pods[1].smpp.to_string();
    let run = customer(
        dir.path(),
        "embed3-after",
        &refs(&args(pods[0].smpp, &["--bind", "tx+rx", "--rx-port", &rx, "--count", "200", "--wait-dlr", "30"])),
        Duration::from_secs(90),
    );
    assert!(run.ok, "{}\n{}", run.output, pods[0].log_text());
    exactly_once(&pods[1], &run.acked_ids(), &run.receipts());
}
