//! Background work, `hz` times a second (Redis's `serverCron`): active expiry with a
//! bounded budget, eviction towards `maxmemory`, the ops/sec sampler and keyspace
//! notifications for keys that expired in the background.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::keyspace::now_ms;
use crate::shared::Shared;

/// Keys sampled per database per cycle, scaled by `active-expire-effort` (Redis: 20 keys per
/// loop, about 25% of a cycle's time budget).
const EXPIRE_SAMPLES: usize = 200;

pub async fn run(shared: Arc<Shared>) {
    loop {
        let hz = shared.config.read().hz.clamp(1, 500);
        tokio::time::sleep(Duration::from_millis(1000 / hz as u64)).await;
        tick(&shared);
    }
}

/// One cron cycle.
pub fn tick(shared: &Shared) {
    crate::clock::recalibrate();
    let (effort, maxmemory) = {
        let c = shared.config.read();
        (c.active_expire_effort.clamp(1, 10) as usize, c.maxmemory)
    };
    let events = {
        // A script past its time limit holds the keyspace: skip this cycle.
        let Some(mut st) = shared.lock_unless_busy() else { return };
        st.ks.now_ms = now_ms();
        let dbs = st.ks.dbs.len();
        for db in 0..dbs {
            if st.ks.dbs[db].expires > 0 && !st.ks.replica {
                st.ks.active_expire(db, EXPIRE_SAMPLES * effort);
            }
        }
        if maxmemory > 0 && !st.ks.replica {
            let _ = crate::conn::oom_check(shared, &mut st.ks);
        }
        // The leader drops forwarding sessions past their time, through the log as expiry.
        if st.repl.leader_epoch != 0 && !st.ks.replica && !st.repl.sessions.is_empty() {
            let now = st.ks.now_ms;
            if let Some(op) = st.repl.sessions.expire_due(now) {
                if let Some(fx) = st.ks.effects.as_mut() {
                    fx.push(op);
                }
            }
        }
        if !st.ks.ready.is_empty() {
            crate::conn::serve_ready(shared, &mut st);
        }
        std::mem::take(&mut st.ks.events)
    };
    if !events.is_empty() {
        let flags = shared.config.read().notify_keyspace_events;
        shared.publish_events(events, flags);
    }
    sample_ops(shared);
}

/// Keeps the last 16 ops/sec samples for `instantaneous_ops_per_sec`.
fn sample_ops(shared: &Shared) {
    let now = now_ms();
    let total = shared.counters.total_commands_processed.load(Ordering::Relaxed);
    let mut s = shared.ops_samples.lock();
    let dt = now - s.0;
    if dt >= 100 {
        // CONFIG RESETSTAT can move the counter backwards.
        let ops = total.saturating_sub(s.1) as f64 * 1000.0 / dt as f64;
        s.2.push_back(ops);
        if s.2.len() > 16 {
            s.2.pop_front();
        }
        s.0 = now;
        s.1 = total;
    }
}
