//! Memory accounting for `maxmemory` and `INFO memory`.
//!
//! The `redoubt` binary installs [`CountingAlloc`] as its global allocator, so `used_memory`
//! is the exact number of live heap bytes, as Redis reports from its allocator. A process
//! that embeds the server without it falls back to the resident set size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The system allocator plus a live-bytes counter.
pub struct CountingAlloc;

// SAFETY: defers every operation to `System`, only adding relaxed counter updates.
unsafe impl GlobalAlloc for CountingAlloc {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            ALLOCATED.fetch_add(l.size(), Ordering::Relaxed);
        }
        p
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        ALLOCATED.fetch_sub(l.size(), Ordering::Relaxed);
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            ALLOCATED.fetch_add(l.size(), Ordering::Relaxed);
        }
        p
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            if new > l.size() {
                ALLOCATED.fetch_add(new - l.size(), Ordering::Relaxed);
            } else {
                ALLOCATED.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

/// Marks the counting allocator as installed (called by the binary at startup).
pub fn mark_installed() {
    INSTALLED.store(true, Ordering::Relaxed);
}

/// Live heap bytes (or RSS when the counting allocator is not installed).
pub fn used_memory() -> u64 {
    let v = if INSTALLED.load(Ordering::Relaxed) { ALLOCATED.load(Ordering::Relaxed) } else { rss() as usize };
    PEAK.fetch_max(v, Ordering::Relaxed);
    v as u64
}

pub fn peak_memory() -> u64 {
    PEAK.load(Ordering::Relaxed).max(used_memory() as usize) as u64
}

/// Resident set size in bytes, from /proc.
pub fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// Total system memory in bytes.
pub fn total_system_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Redis's human-readable byte counts (`1.50M`).
pub fn human(n: u64) -> String {
    let n = n as f64;
    if n < 1024.0 {
        format!("{}B", n as u64)
    } else if n < 1024.0 * 1024.0 {
        format!("{:.2}K", n / 1024.0)
    } else if n < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}M", n / (1024.0 * 1024.0))
    } else if n < 1024.0 * 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}G", n / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.2}T", n / (1024.0 * 1024.0 * 1024.0 * 1024.0))
    }
}
