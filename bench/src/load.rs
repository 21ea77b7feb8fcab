//! The load generator's two models and what they record.
//!
//! - Closed model ([`closed`]): a fixed number of workers, each sending its
//!   next request when the previous one answered.
//! - Open model ([`open`]): requests are scheduled at a fixed arrival rate
//!   whatever the answers do; each latency is measured from the request's
//!   *scheduled* send time, so a stalled server is not hidden by the load
//!   generator waiting for it (no coordinated omission).
//!
//! Both exclude a warm-up period: only requests that complete (closed) or
//! are scheduled (open) inside the measured window count.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

/// Status recorded for a request that got no HTTP answer (connection error,
/// timeout).
pub const NO_ANSWER: u16 = 0;

/// Latencies (in microseconds) and answers by status.
#[derive(Clone)]
pub struct Recorder {
    hist: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            hist: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            statuses: BTreeMap::new(),
        }
    }
}

impl Recorder {
    /// Records one answer.
    pub fn record(&mut self, latency: Duration, status: u16) {
        let us = (latency.as_micros() as u64).clamp(1, 600_000_000);
        self.hist.saturating_record(us);
        *self.statuses.entry(status).or_default() += 1;
    }

    /// Adds another recorder's samples.
    pub fn merge(&mut self, other: &Recorder) {
        let _ = self.hist.add(&other.hist);
        for (s, n) in &other.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
    }

    /// Number of answers.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Percentiles in milliseconds.
    pub fn latency(&self) -> Latency {
        let ms = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        if self.hist.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: ms(0.50),
            p90: ms(0.90),
            p99: ms(0.99),
            p999: ms(0.999),
            max: self.hist.max() as f64 / 1000.0,
            mean: self.hist.mean() / 1000.0,
        }
    }

    /// Answers by status (`0`: no answer).
    pub fn statuses(&self) -> &BTreeMap<u16, u64> {
        &self.statuses
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Warm-up and measured window of a run.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Excluded from the figures.
    pub warmup: Duration,
    /// Measured.
    pub measure: Duration,
}

/// What a run measured.
pub struct Measured {
    /// Latencies and statuses inside the window.
    pub rec: Recorder,
    /// The measured window's length.
    pub window: Duration,
    /// The rate offered (open model only).
    pub offered: Option<f64>,
}

impl Measured {
    /// Answers per second inside the window.
    pub fn throughput(&self) -> f64 {
        self.rec.count() as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// Runs `concurrency` workers for the warm-up and the measured window; each
/// calls `op(worker)` in a loop. `op` returns the answer's status.
pub async fn closed<F, Fut>(concurrency: usize, window: Window, op: F) -> Measured
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = u16> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let from = start + window.warmup;
    let until = from + window.measure;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let op = op.clone();
        tasks.spawn(async move {
            let mut rec = Recorder::default();
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                let status = op(w).await;
                let t1 = Instant::now();
                if t1 >= from && t1 < until {
                    rec.record(t1 - t0, status);
                }
            }
            rec
        });
    }
    let mut rec = Recorder::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(r) = r {
            rec.merge(&r);
        }
    }
    Measured {
        rec,
        window: window.measure,
        offered: None,
    }
}

/// Sends requests at `rate` per second for the warm-up and the measured
/// window; `op(n)` sends the n-th. At most `max_in_flight` run at once
/// (later ones start late, and their lateness counts in their latency).
pub async fn open<F, Fut>(rate: f64, window: Window, max_in_flight: usize, op: F) -> Measured
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = u16> + Send + 'static,
{
    let op = Arc::new(op);
    let rec = Arc::new(Mutex::new(Recorder::default()));
    let gate = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let start = Instant::now();
    let from = start + window.warmup;
    let until = from + window.measure;
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tasks = tokio::task::JoinSet::new();
    let mut n: u64 = 0;
    loop {
        let scheduled = start + interval.mul_f64(n as f64);
        if scheduled >= until {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        let permit = gate.clone().acquire_owned().await.expect("open gate");
        let (op, rec) = (op.clone(), rec.clone());
        let i = n;
        tasks.spawn(async move {
            let status = op(i).await;
            let done = Instant::now();
            drop(permit);
            if scheduled >= from {
                rec.lock()
                    .expect("recorder")
                    .record(done - scheduled, status);
            }
        });
        n += 1;
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(60), drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    let rec = rec.lock().expect("recorder").clone();
    Measured {
        rec,
        window: window.measure,
        offered: Some(rate),
    }
}
