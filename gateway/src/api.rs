//! The management API (JSON over HTTP) plus `/health` and `/metrics`.
//!
//! Everything the API writes goes to redoubt (`crate::store`), so a change made through any
//! pod reaches every pod through the configuration version they all follow, and survives
//! restarts. `/api/...` requires an `X-API-Key` header naming one of the configured keys.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use redoubt_client::Value;
use serde::Deserialize;
use serde_json::{json, Map};

use crate::messages::{msg_key, strings, trail_key, QUEUE};
use crate::store::{BindMode, Campaign, Customer, Kind, Route, StoreError, Vendor};
use crate::Gateway;

type Gw = State<Arc<Gateway>>;

pub fn router(gw: Arc<Gateway>) -> Router {
    let api = Router::new()
        .route("/customers", get(list_customers))
        .route("/customers/{id}", get(get_customer).put(put_customer).delete(delete::<Customer>))
        .route("/vendors", get(list_vendors))
        .route("/vendors/{id}", get(get_vendor).put(put_vendor).delete(delete::<Vendor>))
        .route("/routes", get(list::<Route>))
        .route("/routes/{prefix}", get(get_one::<Route>).put(put_route).delete(delete::<Route>))
        .route("/campaigns", get(list::<Campaign>))
        .route("/campaigns/{source}", get(get_one::<Campaign>).put(put_campaign).delete(delete::<Campaign>))
        .route("/messages/{id}", get(get_message))
        .route("/sessions", get(list_sessions))
        .layer(middleware::from_fn_with_state(gw.clone(), require_key));
    Router::new().nest("/api/v1", api).route("/health", get(health)).route("/metrics", get(metrics)).with_state(gw)
}

/// An API error: a status and a JSON `{"error": ...}` body.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "not found".into())
}

async fn require_key(State(gw): Gw, headers: HeaderMap, req: Request, next: Next) -> Response {
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")));
    match given {
        Some(k) if gw.settings.api_keys.iter().any(|key| constant_time_eq(key.as_bytes(), k.as_bytes())) => {
            next.run(req).await
        }
        _ => ApiError(StatusCode::UNAUTHORIZED, "missing or wrong X-API-Key".into()).into_response(),
    }
}

/// Compares without stopping at the first difference (no timing hint about the key).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Which configuration hash an entity type lives in.
trait Entity: serde::Serialize + for<'de> Deserialize<'de> {
    const KIND: Kind;
}
impl Entity for Customer {
    const KIND: Kind = Kind::Customers;
}
impl Entity for Vendor {
    const KIND: Kind = Kind::Vendors;
}
impl Entity for Route {
    const KIND: Kind = Kind::Routes;
}
impl Entity for Campaign {
    const KIND: Kind = Kind::Campaigns;
}

async fn put<T: Entity>(gw: &Gateway, id: &str, value: &T) -> Result<(), ApiError> {
    let json = serde_json::to_string(value).map_err(|e| bad(e.to_string()))?;
    gw.store.write_one(T::KIND, id, Some(json)).await?;
    Ok(())
}

async fn delete<T: Entity>(State(gw): Gw, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if gw.store.write_one(T::KIND, &id, None).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

async fn get_one<T: Entity>(State(gw): Gw, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let v: T = gw.store.read_one(T::KIND, &id).await?.ok_or_else(not_found)?;
    let mut j = serde_json::to_value(v).map_err(|e| bad(e.to_string()))?;
    j["id"] = json!(id);
    Ok(Json(j))
}

async fn list<T: Entity>(State(gw): Gw) -> Result<Json<serde_json::Value>, ApiError> {
    let all = gw.store.read_all::<T>(T::KIND).await?;
    let mut out: Vec<serde_json::Value> = all
        .into_iter()
        .filter_map(|(id, v)| {
            let mut j = serde_json::to_value(v).ok()?;
            j["id"] = json!(id);
            Some(j)
        })
        .collect();
    out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Json(json!(out)))
}

// --- customers ----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerIn {
    password: Option<String>,
    max_tps: u32,
    burst: Option<u32>,
    max_binds: u32,
    webhook_url: Option<String>,
    #[serde(default)]
    numbers: Vec<String>,
}

fn customer_out(id: &str, c: &Customer) -> serde_json::Value {
    json!({ "system_id": id, "max_tps": c.max_tps, "burst": c.burst, "max_binds": c.max_binds, "webhook_url": c.webhook_url, "numbers": c.numbers })
}

async fn put_customer(
    State(gw): Gw,
    Path(id): Path<String>,
    Json(body): Json<CustomerIn>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if id.is_empty() || id.len() > 15 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("system_id must be 1-15 printable ASCII characters (SMPP's limit)"));
    }
    if body.max_binds == 0 {
        return Err(bad("max_binds must be at least 1"));
    }
    if body.numbers.iter().any(|n| {
        let d = n.strip_prefix('+').unwrap_or(n);
        d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit())
    }) {
        return Err(bad("numbers are digit prefixes (optionally after '+')"));
    }
    if let Some(url) = &body.webhook_url {
        if !url.starts_with("http://") {
            return Err(bad("webhook_url must be an http:// URL"));
        }
    }
    let password_hash = match (&body.password, gw.store.read_one::<Customer>(Kind::Customers, &id).await?) {
        (Some(p), _) => {
            if p.is_empty() || p.len() > 8 {
                return Err(bad("password must be 1-8 characters (SMPP's limit)"));
            }
            crate::passwords::hash(p)
        }
        (None, Some(old)) => old.password_hash,
        (None, None) => return Err(bad("password is required for a new customer")),
    };
    let c = Customer {
        password_hash,
        max_tps: body.max_tps,
        burst: body.burst.unwrap_or(body.max_tps),
        max_binds: body.max_binds,
        webhook_url: body.webhook_url,
        numbers: body.numbers,
    };
    put(&gw, &id, &c).await?;
    Ok(Json(customer_out(&id, &c)))
}

async fn get_customer(State(gw): Gw, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let c: Customer = gw.store.read_one(Kind::Customers, &id).await?.ok_or_else(not_found)?;
    Ok(Json(customer_out(&id, &c)))
}

async fn list_customers(State(gw): Gw) -> Result<Json<serde_json::Value>, ApiError> {
    let mut all: Vec<(String, Customer)> = gw.store.read_all(Kind::Customers).await?.into_iter().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Json(json!(all.iter().map(|(id, c)| customer_out(id, c)).collect::<Vec<_>>())))
}

// --- vendors ------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VendorIn {
    host: String,
    port: u16,
    system_id: String,
    password: String,
    bind: BindMode,
    max_tps: u32,
    window: u32,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

async fn vendor_out(gw: &Gateway, id: &str, v: &Vendor) -> serde_json::Value {
    // Live bind state: this pod's connector, and every pod's as they last reported it.
    let mut pods = Map::new();
    if let Ok(keys) = gw.store.scan("gw:vendorstate:*").await {
        for key in keys {
            if let Ok(Value::Bulk(s)) = gw.store.call(&["HGET", &key, id]).await {
                pods.insert(key["gw:vendorstate:".len()..].to_string(), json!(String::from_utf8_lossy(&s)));
            }
        }
    }
    let here = gw.vendors.get(id);
    json!({
        "id": id, "host": v.host, "port": v.port, "system_id": v.system_id, "bind": v.bind,
        "max_tps": v.max_tps, "window": v.window, "enabled": v.enabled,
        "state": here.as_ref().map(|c| c.state()).unwrap_or(if v.enabled { "starting" } else { "disabled" }),
        "last_error": here.and_then(|c| c.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()),
        "pods": pods,
    })
}

async fn put_vendor(
    State(gw): Gw,
    Path(id): Path<String>,
    Json(b): Json<VendorIn>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if b.host.is_empty() || b.port == 0 {
        return Err(bad("host and port are required"));
    }
    if b.system_id.is_empty() || b.system_id.len() > 15 || b.password.len() > 8 {
        return Err(bad("system_id must be 1-15 characters and password at most 8 (SMPP's limits)"));
    }
    if b.window == 0 {
        return Err(bad("window must be at least 1"));
    }
    let v = Vendor {
        host: b.host,
        port: b.port,
        system_id: b.system_id,
        password: b.password,
        bind: b.bind,
        max_tps: b.max_tps,
        window: b.window,
        enabled: b.enabled,
    };
    put(&gw, &id, &v).await?;
    Ok(Json(vendor_out(&gw, &id, &v).await))
}

async fn get_vendor(State(gw): Gw, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let v: Vendor = gw.store.read_one(Kind::Vendors, &id).await?.ok_or_else(not_found)?;
    Ok(Json(vendor_out(&gw, &id, &v).await))
}

async fn list_vendors(State(gw): Gw) -> Result<Json<serde_json::Value>, ApiError> {
    let mut all: Vec<(String, Vendor)> = gw.store.read_all(Kind::Vendors).await?.into_iter().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (id, v) in &all {
        out.push(vendor_out(&gw, id, v).await);
    }
    Ok(Json(json!(out)))
}

// --- routes and campaigns --------------------------------------------------------------

async fn put_route(
    State(gw): Gw,
    Path(prefix): Path<String>,
    Json(r): Json<Route>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let digits = prefix.strip_prefix('+').unwrap_or(&prefix);
    if prefix != "default" && (digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad("a route prefix is digits (optionally after '+') or \"default\""));
    }
    if r.vendors.is_empty() {
        return Err(bad("vendors must list at least one vendor id"));
    }
    put(&gw, &prefix, &r).await?;
    Ok(Json(json!({ "id": prefix, "vendors": r.vendors })))
}

async fn put_campaign(
    State(gw): Gw,
    Path(source): Path<String>,
    Json(c): Json<Campaign>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if c.campaign_id.is_empty() {
        return Err(bad("campaign_id is required"));
    }
    put(&gw, &source, &c).await?;
    Ok(Json(
        json!({ "id": source, "campaign_id": c.campaign_id, "hourly_limit": c.hourly_limit, "daily_limit": c.daily_limit }),
    ))
}

// --- messages and sessions -------------------------------------------------------------

async fn get_message(State(gw): Gw, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let v = gw.store.call(&["HGETALL", &msg_key(&id)]).await?;
    let Value::Array(fields) = v else { return Err(not_found()) };
    if fields.is_empty() {
        return Err(not_found());
    }
    let mut m = Map::new();
    for pair in fields.chunks(2) {
        let (Some(k), Some(v)) = (pair[0].as_bytes(), pair.get(1).and_then(|v| v.as_bytes())) else { continue };
        let k = String::from_utf8_lossy(k).into_owned();
        if k != "pdu" {
            m.insert(k, json!(String::from_utf8_lossy(v)));
        }
    }
    let trail: Vec<serde_json::Value> = strings(gw.store.call(&["LRANGE", &trail_key(&id), "0", "-1"]).await?)
        .into_iter()
        .map(|line| {
            let (at, event) = line.split_once(' ').unwrap_or(("0", &line));
            json!({ "at_ms": at.parse::<i64>().unwrap_or(0), "event": event })
        })
        .collect();
    m.insert("message_id".into(), json!(id));
    m.insert("trail".into(), json!(trail));
    Ok(Json(serde_json::Value::Object(m)))
}

async fn list_sessions(State(gw): Gw) -> Result<Json<serde_json::Value>, ApiError> {
    let mut out = Vec::new();
    for key in gw.store.scan("gw:session:*").await? {
        let v = gw.store.call(&["HGETALL", &key]).await?;
        let mut m = Map::new();
        if let Value::Array(f) = v {
            for pair in f.chunks(2) {
                if let (Some(k), Some(v)) = (pair[0].as_bytes(), pair.get(1).and_then(|v| v.as_bytes())) {
                    m.insert(String::from_utf8_lossy(k).into_owned(), json!(String::from_utf8_lossy(v)));
                }
            }
        }
        if !m.is_empty() {
            m.insert("key".into(), json!(key));
            out.push(serde_json::Value::Object(m));
        }
    }
    Ok(Json(json!(out)))
}

// --- health and metrics --------------------------------------------------------------

async fn depths(gw: &Gateway) -> Result<(i64, i64), StoreError> {
    let queue = gw.store.call(&["LLEN", QUEUE]).await?.as_int().unwrap_or(0);
    let mut receipts = 0;
    for key in gw.store.scan("gw:dlrq:*").await? {
        receipts += gw.store.call(&["LLEN", &key]).await?.as_int().unwrap_or(0);
    }
    Ok((queue, receipts))
}

async fn health(State(gw): Gw) -> Response {
    let store = tokio::time::timeout(std::time::Duration::from_secs(2), depths(&gw)).await;
    let (store_ok, queue, receipts, store_err) = match store {
        Ok(Ok((q, r))) => (true, q, r, None),
        Ok(Err(e)) => (false, -1, -1, Some(e.to_string())),
        Err(_) => (false, -1, -1, Some("timed out".to_string())),
    };
    let config = gw.config.get();
    let mut vendors = Map::new();
    let mut vendors_ok = true;
    for (id, v) in &config.vendors {
        let state = if !v.enabled { "disabled" } else { gw.vendors.get(id).map(|c| c.state()).unwrap_or("starting") };
        vendors_ok &= !v.enabled || state == "bound";
        vendors.insert(id.clone(), json!(state));
    }
    let ok = store_ok && vendors_ok;
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "pod": gw.pod,
        "components": {
            "state_store": { "ok": store_ok, "error": store_err },
            "vendors": vendors,
            "queue_depth": queue,
            "receipts_pending": receipts,
            "sessions": gw.sessions.count(),
        }
    });
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

async fn metrics(State(gw): Gw) -> Response {
    let (queue, receipts) = depths(&gw).await.unwrap_or((-1, -1));
    let bound = gw.vendors.all().iter().filter(|c| c.state() == "bound").count();
    let gauges = [
        ("gateway_queue_depth", "messages queued, not yet taken by a pod", queue as f64),
        ("gateway_receipts_pending", "receipts waiting for a customer receiver", receipts as f64),
        ("gateway_sessions", "customer sessions bound to this pod", gw.sessions.count() as f64),
        ("gateway_vendors_bound", "vendor connectors of this pod that are bound", bound as f64),
    ];
    let text = gw.metrics.render(&gauges);
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}
