//! A cheap stopwatch for per-command timing (INFO commandstats, SLOWLOG).
//!
//! Every command is timed, so the clock read is on the hot path. On x86_64 with an
//! invariant TSC (every machine this runs on in practice) the stopwatch reads the cycle
//! counter, which costs a few nanoseconds against ~20-40 for `clock_gettime` through the
//! vDSO; elsewhere it falls back to `Instant`. Ticks become microseconds with a rate
//! measured against the monotonic clock at start and refined by the server cron.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// A point in time in stopwatch ticks.
#[derive(Clone, Copy, Debug)]
pub struct Ticks(u64);

impl Ticks {
    pub fn now() -> Ticks {
        Ticks(raw())
    }

    /// Ticks since `self`. Sums of these are exact; convert with [`ticks_to_us`] at the end
    /// (truncating each short duration to whole µs would report ~0 for fast commands).
    pub fn elapsed(self) -> u64 {
        raw().saturating_sub(self.0)
    }
}

/// Microseconds in a number of ticks (a duration or a sum of durations).
pub fn ticks_to_us(ticks: u64) -> u64 {
    (ticks as u128 * 1024 / ticks_per_1024us() as u128) as u64
}

#[cfg(target_arch = "x86_64")]
fn tsc_usable() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        // Invariant TSC: CPUID leaf 0x8000_0007, EDX bit 8. Without it the counter may
        // change rate with frequency scaling, so Instant is used instead.
        let max_ext = std::arch::x86_64::__cpuid(0x8000_0000).eax;
        max_ext >= 0x8000_0007 && std::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0
    })
}

fn raw() -> u64 {
    #[cfg(target_arch = "x86_64")]
    if tsc_usable() {
        // SAFETY: rdtsc has no preconditions.
        return unsafe { std::arch::x86_64::_rdtsc() };
    }
    epoch().0.elapsed().as_nanos() as u64
}

/// The first reading of both clocks, the reference for measuring the tick rate.
fn epoch() -> &'static (Instant, u64) {
    static EPOCH: OnceLock<(Instant, u64)> = OnceLock::new();
    EPOCH.get_or_init(|| {
        let now = Instant::now();
        #[cfg(target_arch = "x86_64")]
        if tsc_usable() {
            // SAFETY: as above.
            return (now, unsafe { std::arch::x86_64::_rdtsc() });
        }
        (now, 0)
    })
}

static RATE: AtomicU64 = AtomicU64::new(0);

/// Ticks per 1024 µs (integer math, enough precision for µs statistics).
fn ticks_per_1024us() -> u64 {
    match RATE.load(Ordering::Relaxed) {
        // Before init: assume 1 tick per ns (exact for the Instant fallback).
        0 => 1024 * 1000,
        r => r,
    }
}

/// Measures the tick rate over the span since the first reading. Called at start (after a
/// short wait) and then by the server cron, so the rate sharpens as the span grows; once
/// the span is long (minutes) further calls change nothing measurable.
pub fn recalibrate() {
    let (t0, c0) = *epoch();
    let us = t0.elapsed().as_micros() as u64;
    if us == 0 || (us > 600_000_000 && RATE.load(Ordering::Relaxed) != 0) {
        return;
    }
    let measured = ((raw().saturating_sub(c0) as u128 * 1024) / us as u128).max(1) as u64;
    RATE.store(measured, Ordering::Relaxed);
}

/// Takes the first reading and a first rate over a few milliseconds (server start).
pub fn init() {
    let _ = epoch();
    std::thread::sleep(std::time::Duration::from_millis(5));
    recalibrate();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_sleep_in_microseconds() {
        init();
        let t = Ticks::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let us = ticks_to_us(t.elapsed());
        assert!((19_000..200_000).contains(&us), "{us} µs for a 20 ms sleep");
    }
}
