//! Receipts by HTTP: customers with a `webhook_url` get each receipt POSTed as JSON.
//!
//! Every pod runs a webhook loop per such customer. The loops share the customer's receipt
//! queue with its SMPP receivers through the same leases (`crate::delivery`), so each receipt
//! goes out once, by whichever path takes it first. A POST that fails or answers anything but
//! 2xx is retried with backoff (the receipt goes back to the head of the queue), for as long
//! as the queue lives (the message TTL).
//!
//! The body: `{"type": "receipt", "message_id", "state", "err", "source", "destination",
//! "submitted_at_ms", "done_at_ms"}`, or for a mobile-originated message `{"type": "mo",
//! "source", "destination", "data_coding", "message_hex", "message"}`. Only `http://` URLs (a gateway inside the customer's network or behind a
//! TLS-terminating proxy); `https` is refused by the API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use crate::receipts::{CustomerReceipt, MobileOriginated};
use crate::Gateway;

const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps one webhook loop per customer that has a `webhook_url`, following the configuration.
pub async fn supervise(gw: Arc<Gateway>) {
    let mut running: HashMap<String, (String, JoinHandle<()>)> = HashMap::new();
    loop {
        let config = gw.config.get();
        running.retain(|customer, (url, task)| {
            let keep = config.customers.get(customer).and_then(|c| c.webhook_url.as_ref()) == Some(url);
            if !keep {
                task.abort();
            }
            keep
        });
        for (customer, c) in &config.customers {
            if let Some(url) = &c.webhook_url {
                if !running.contains_key(customer) {
                    let task = tokio::spawn(run(gw.clone(), customer.clone(), url.clone()));
                    running.insert(customer.clone(), (url.clone(), task));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn run(gw: Arc<Gateway>, customer: String, url: String) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let batch = match gw.store.take_receipts(&gw.pod, &customer, 16, &crate::messages::memo_key(&gw.ids)).await {
            Ok(b) => b,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let mut failed = false;
        for raw in batch {
            if failed {
                let _ = gw.store.receipt_back(&gw.pod, &customer, &raw).await;
                continue;
            }
            let (body, id, detail) = if let Some(r) = CustomerReceipt::decode(&raw) {
                (receipt_json(&r), r.id.clone(), format!("receipt {} posted to webhook", r.state))
            } else if let Some(mo) = MobileOriginated::decode(&raw) {
                (mo_json(&mo), "-".to_string(), "mo".to_string())
            } else {
                let _ = gw.store.receipt_delivered(&gw.pod, &customer, &raw, "-", "dropped").await;
                continue;
            };
            match post(&url, body).await {
                Ok(()) => {
                    gw.metrics.receipts_delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = gw.store.receipt_delivered(&gw.pod, &customer, &raw, &id, &detail).await;
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::warn!(%customer, %url, error = %e, "webhook failed; retrying");
                    let _ = gw.store.receipt_back(&gw.pod, &customer, &raw).await;
                    failed = true;
                }
            }
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

pub fn receipt_json(r: &CustomerReceipt) -> serde_json::Value {
    serde_json::json!({
        "type": "receipt", "message_id": r.id, "state": r.state, "err": r.err, "source": r.source,
        "destination": r.destination, "submitted_at_ms": r.submitted_ms, "done_at_ms": r.done_ms,
    })
}

pub fn mo_json(m: &MobileOriginated) -> serde_json::Value {
    let hex: String = m.message.iter().map(|b| format!("{b:02x}")).collect();
    serde_json::json!({
        "type": "mo", "source": m.source, "destination": m.destination, "data_coding": m.data_coding,
        "message_hex": hex, "message": String::from_utf8_lossy(&m.message),
    })
}

/// One POST of a JSON body; Ok on a 2xx answer.
pub async fn post(url: &str, body: serde_json::Value) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// webhooks are supported".into());
    }
    let host = uri.host().ok_or("url without a host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let body = body.to_string();
    let fut = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let req = hyper::Request::post(path)
            .header("host", format!("{host}:{port}"))
            .header("content-type", "application/json")
            .header("user-agent", "redoubt-gateway")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    tokio::time::timeout(POST_TIMEOUT, fut).await.map_err(|_| "timed out".to_string())?
}
