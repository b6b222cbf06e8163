//! Counters and histograms for `GET /metrics`, in Prometheus's text format.
//!
//! Plain atomics: every increment is one instruction on the hot path, and the exposition is
//! rendered by hand (a handful of families does not justify a metrics framework).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; 12],
    inf: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        match BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.counts[i].fetch_add(1, Relaxed),
            None => self.inf.fetch_add(1, Relaxed),
        };
        self.sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cum += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        cum += self.inf.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {cum}");
    }
}

#[derive(Default)]
pub struct Metrics {
    pub submits: AtomicU64,
    pub submits_rejected: AtomicU64,
    pub throttled: AtomicU64,
    pub campaign_capped: AtomicU64,
    pub store_errors: AtomicU64,
    pub generic_nacks: AtomicU64,
    pub binds: AtomicU64,
    pub bind_failures: AtomicU64,
    pub vendor_submits: AtomicU64,
    pub vendor_errors: AtomicU64,
    pub vendor_throttled: AtomicU64,
    pub receipts_in: AtomicU64,
    pub receipts_duplicate: AtomicU64,
    pub receipts_early: AtomicU64,
    pub receipts_delivered: AtomicU64,
    pub failure_receipts: AtomicU64,
    pub submit_latency: Histogram,
    pub vendor_latency: Histogram,
    receipts_by_state: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Metrics {
    pub fn receipt_state(&self, state: &str) {
        *self.receipts_by_state.lock().unwrap_or_else(|e| e.into_inner()).entry(state.to_string()).or_default() += 1;
    }

    /// The exposition; `gauges` are the values read at scrape time (queue depth, binds...).
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [(&str, &str, &AtomicU64); 15] = [
            ("gateway_submits_total", "submit_sm accepted and queued", &self.submits),
            ("gateway_submits_rejected_total", "submit_sm refused (validation, bind state)", &self.submits_rejected),
            ("gateway_throttled_total", "submit_sm refused over the customer's rate", &self.throttled),
            ("gateway_campaign_capped_total", "submit_sm refused over a sender's campaign cap", &self.campaign_capped),
            ("gateway_store_errors_total", "state store calls that failed after retries", &self.store_errors),
            ("gateway_generic_nacks_total", "generic_nack sent for bad PDUs", &self.generic_nacks),
            ("gateway_binds_total", "customer binds accepted", &self.binds),
            ("gateway_bind_failures_total", "customer binds refused", &self.bind_failures),
            ("gateway_vendor_submits_total", "submit_sm accepted by a vendor", &self.vendor_submits),
            ("gateway_vendor_errors_total", "submit_sm refused by a vendor", &self.vendor_errors),
            ("gateway_vendor_throttled_total", "ESME_RTHROTTLED from a vendor", &self.vendor_throttled),
            ("gateway_receipts_in_total", "receipts received from vendors", &self.receipts_in),
            ("gateway_receipts_duplicate_total", "repeated receipts dropped", &self.receipts_duplicate),
            ("gateway_receipts_delivered_total", "receipts delivered to customers", &self.receipts_delivered),
            ("gateway_failure_receipts_total", "failure receipts made by the gateway", &self.failure_receipts),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", c.load(Relaxed));
        }
        let _ = writeln!(out, "# HELP gateway_receipts_early_total receipts that arrived before their submit_sm_resp");
        let _ = writeln!(out, "# TYPE gateway_receipts_early_total counter");
        let _ = writeln!(out, "gateway_receipts_early_total {}", self.receipts_early.load(Relaxed));
        let _ = writeln!(out, "# HELP gateway_receipts_by_state_total receipts received, by state");
        let _ = writeln!(out, "# TYPE gateway_receipts_by_state_total counter");
        for (state, n) in self.receipts_by_state.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "gateway_receipts_by_state_total{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP gateway_submit_latency_seconds submit_sm to submit_sm_resp");
        let _ = writeln!(out, "# TYPE gateway_submit_latency_seconds histogram");
        self.submit_latency.render(&mut out, "gateway_submit_latency_seconds", "");
        let _ = writeln!(out, "# HELP gateway_vendor_latency_seconds submit_sm to a vendor until its resp");
        let _ = writeln!(out, "# TYPE gateway_vendor_latency_seconds histogram");
        self.vendor_latency.render(&mut out, "gateway_vendor_latency_seconds", "");
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}
