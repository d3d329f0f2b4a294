//! Shared counters and histograms. Clients record a whole frame at once into one of
//! a few mutex-guarded shards (one uncontended lock per frame, no atomics per
//! message); the run's phase decides whether anything is counted at all.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::frame::Tally;

/// Where the run is. Only `Measure` counts deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Ramp = 0,
    Warmup = 1,
    Measure = 2,
    Done = 3,
}

/// Highest latency or duration tracked: 60 s in µs (larger values saturate).
const HIST_MAX_US: u64 = 60_000_000;
const SHARDS: usize = 16;

/// A histogram of microseconds, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    // unwrap: constant, valid bounds (1 <= low, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).unwrap()
}

/// Deliveries counted in the measured window, per shard.
pub struct Shard {
    pub latency_us: Histogram<u64>,
    pub updates: u64,
    pub snapshots: u64,
    pub error_msgs: u64,
    pub frames: u64,
    pub bytes: u64,
}

/// Everything the clients report, shared by all of them.
pub struct Stats {
    phase: AtomicU8,
    shards: Vec<Mutex<Shard>>,
    /// Connections open right now.
    pub open: AtomicU64,
    /// Open connections that have received all their snapshots.
    pub subscribed: AtomicU64,
    /// Successful handshakes, over the whole run.
    pub connects: AtomicU64,
    /// Successful handshakes inside the measured window.
    pub connects_measured: AtomicU64,
    /// Churn: connect–subscribe–snapshots–close cycles completed in the window.
    pub cycles_measured: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    closes: Mutex<BTreeMap<String, u64>>,
    connect_us: Mutex<Histogram<u64>>,
    snapshots_us: Mutex<Histogram<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A client task that panicked while holding a shard leaves plain counters
    // behind; they are still worth reporting.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    latency_us: new_hist(),
                    updates: 0,
                    snapshots: 0,
                    error_msgs: 0,
                    frames: 0,
                    bytes: 0,
                })
            })
            .collect();
        Stats {
            phase: AtomicU8::new(Phase::Ramp as u8),
            shards,
            open: AtomicU64::new(0),
            subscribed: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connects_measured: AtomicU64::new(0),
            cycles_measured: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            closes: Mutex::new(BTreeMap::new()),
            connect_us: Mutex::new(new_hist()),
            snapshots_us: Mutex::new(new_hist()),
        }
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
    }

    pub fn measuring(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == Phase::Measure as u8
    }

    pub fn done(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == Phase::Done as u8
    }

    /// Counts one received frame of `bytes` bytes, if measuring.
    pub fn record_frame(&self, client: usize, bytes: usize, tally: &Tally) {
        if !self.measuring() {
            return;
        }
        let mut s = lock(&self.shards[client % SHARDS]);
        s.frames += 1;
        s.bytes += bytes as u64;
        s.updates += tally.updates;
        s.snapshots += tally.snapshots;
        s.error_msgs += tally.errors;
        for &l in &tally.latencies_us {
            s.latency_us.saturating_record(l.max(1));
        }
    }

    pub fn record_connect(&self, micros: u64) {
        self.connects.fetch_add(1, Ordering::Relaxed);
        if self.measuring() {
            self.connects_measured.fetch_add(1, Ordering::Relaxed);
        }
        lock(&self.connect_us).saturating_record(micros.max(1));
    }

    pub fn record_all_snapshots(&self, micros: u64) {
        lock(&self.snapshots_us).saturating_record(micros.max(1));
    }

    pub fn error(&self, what: impl Into<String>) {
        *lock(&self.errors).entry(what.into()).or_default() += 1;
    }

    pub fn close(&self, code: impl Into<String>) {
        *lock(&self.closes).entry(code.into()).or_default() += 1;
    }

    /// Updates delivered so far in the measured window.
    pub fn updates_so_far(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).updates).sum()
    }

    /// The measured figures as JSON (`secs` is the measured window's length).
    pub fn report(&self, secs: f64) -> Value {
        let mut lat = new_hist();
        let (mut updates, mut snapshots, mut error_msgs, mut frames, mut bytes) = (0, 0, 0, 0, 0);
        for s in &self.shards {
            let s = lock(s);
            // unwrap: every shard histogram has the same bounds as `lat`.
            lat.add(&s.latency_us).unwrap();
            updates += s.updates;
            snapshots += s.snapshots;
            error_msgs += s.error_msgs;
            frames += s.frames;
            bytes += s.bytes;
        }
        let rate = |n: u64| n as f64 / secs;
        json!({
            "updates": updates,
            "snapshots": snapshots,
            "error_msgs": error_msgs,
            "frames": frames,
            "bytes": bytes,
            "updates_per_sec": rate(updates),
            "frames_per_sec": rate(frames),
            "bytes_per_sec": rate(bytes),
            "latency_ms": hist_json(&lat),
            "connect_ms": hist_json(&lock(&self.connect_us)),
            "all_snapshots_ms": hist_json(&lock(&self.snapshots_us)),
            "connects": self.connects.load(Ordering::Relaxed),
            "connects_measured": self.connects_measured.load(Ordering::Relaxed),
            "connects_per_sec": rate(self.connects_measured.load(Ordering::Relaxed)),
            "cycles_measured": self.cycles_measured.load(Ordering::Relaxed),
            "cycles_per_sec": rate(self.cycles_measured.load(Ordering::Relaxed)),
            "errors": *lock(&self.errors),
            "closes": *lock(&self.closes),
        })
    }
}

/// Percentiles in ms, plus the raw `[value_us, count]` buckets so several
/// processes' histograms can be merged exactly by a driver.
pub fn hist_json(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let buckets: Vec<[u64; 2]> = h
        .iter_recorded()
        .map(|v| {
            [
                h.highest_equivalent(v.value_iterated_to()),
                v.count_at_value(),
            ]
        })
        .collect();
    json!({
        "count": h.len(),
        "p50": ms(0.5),
        "p90": ms(0.9),
        "p99": ms(0.99),
        "p999": ms(0.999),
        "max": h.max() as f64 / 1000.0,
        "mean": h.mean() / 1000.0,
        "buckets_us": buckets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_while_measuring() {
        let stats = Stats::new();
        let tally = Tally {
            updates: 2,
            snapshots: 1,
            latencies_us: vec![1500, 2500],
            ..Tally::default()
        };
        stats.record_frame(0, 100, &tally);
        assert_eq!(stats.updates_so_far(), 0);
        stats.set_phase(Phase::Measure);
        stats.record_frame(3, 100, &tally);
        stats.record_frame(20, 50, &tally);
        let r = stats.report(2.0);
        assert_eq!(r["updates"], 4);
        assert_eq!(r["bytes"], 150);
        assert_eq!(r["updates_per_sec"], 2.0);
        assert_eq!(r["latency_ms"]["count"], 4);
        let p50 = r["latency_ms"]["p50"].as_f64().unwrap();
        assert!((1.49..1.51).contains(&p50), "{p50}");
        let total: u64 = r["latency_ms"]["buckets_us"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[1].as_u64().unwrap())
            .sum();
        assert_eq!(total, 4);
    }
}
