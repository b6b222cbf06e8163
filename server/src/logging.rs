//! Log setup shared by the `redoubt` binary and embedders such as `redoubt-gateway --embed`.
//!
//! openraft reports some conditions once per occurrence: while a voter is down, every
//! leadership round of a linearizable read logs an ERROR naming it, which under read load is
//! thousands of lines a second. [`Flood`] lets each openraft message site through at most
//! [`PER_SECOND`] times a second, so a node that lost a peer keeps a readable log and its disk.
//! Our own events are never dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use tracing::callsite::Identifier;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Lines per second let through from one openraft message site.
pub const PER_SECOND: u32 = 5;

/// Drops repeats of the same openraft message site beyond [`PER_SECOND`] a second.
pub struct Flood {
    start: Instant,
    /// Per message site: (second it counts in, events seen in it). Bounded by the number of
    /// sites compiled into openraft.
    seen: Mutex<HashMap<Identifier, (u64, u32)>>,
}

impl Default for Flood {
    fn default() -> Flood {
        Flood { start: Instant::now(), seen: Mutex::new(HashMap::new()) }
    }
}

impl<S: Subscriber> Layer<S> for Flood {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if !meta.target().starts_with("openraft") {
            return true;
        }
        let now = self.start.elapsed().as_secs();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen.entry(meta.callsite()).or_insert((now, 0));
        if entry.0 != now {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= PER_SECOND
    }
}

/// Installs the global subscriber: `filter`, the flood guard, text to stderr.
pub fn init(filter: EnvFilter) {
    tracing_subscriber::registry()
        .with(filter)
        .with(Flood::default())
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Count(Arc<AtomicUsize>);
    impl<S: Subscriber> Layer<S> for Count {
        fn on_event(&self, _e: &Event<'_>, _c: Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn repeats_of_an_openraft_site_are_capped_and_ours_are_not() {
        let n = Arc::new(AtomicUsize::new(0));
        let sub = tracing_subscriber::registry().with(Flood::default()).with(Count(n.clone()));
        tracing::subscriber::with_default(sub, || {
            for _ in 0..100 {
                tracing::error!(target: "openraft::core::raft_core", "timeout while confirming leadership");
            }
            assert_eq!(n.load(Ordering::Relaxed), PER_SECOND as usize);
            for _ in 0..100 {
                tracing::error!(target: "redoubt_server", "ours");
            }
            assert_eq!(n.load(Ordering::Relaxed), PER_SECOND as usize + 100);
        });
    }
}
