//! Prometheus metrics of every role, rendered at `GET /metrics`.
//!
//! Labels are route templates (`/v1/patients/{patient_id}`), methods and
//! statuses only: never an id, a name or anything else a partner sent.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry, TextEncoder,
};

/// The process's registry.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<T: prometheus::core::Collector + Clone + 'static>(m: T) -> T {
    REGISTRY
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

/// Partner API requests by method, route template and status.
pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("lis_http_requests_total", "Partner API requests"),
            &["method", "route", "status"],
        )
        .expect("valid metric"),
    )
});

/// Partner API latency by method and route template.
pub static HTTP_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new("lis_http_request_duration_seconds", "Partner API latency").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            ),
            &["method", "route"],
        )
        .expect("valid metric"),
    )
});

/// Partner access checks by where the partner's access was read:
/// `memory` (this process's copy) or `database`.
pub static ACCESS_CHECKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("lis_access_checks_total", "Partner access checks"),
            &["source"],
        )
        .expect("valid metric"),
    )
});

/// Events the relay has published.
pub static RELAY_PUBLISHED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new("lis_relay_published_total", "Events published to Kafka")
            .expect("valid metric"),
    )
});

/// Seconds from an event's commit to its publication, for the latest batch.
pub static RELAY_LAG: LazyLock<Gauge> = LazyLock::new(|| {
    register(
        Gauge::new(
            "lis_relay_lag_seconds",
            "Seconds between the newest published event's acceptance and its publication",
        )
        .expect("valid metric"),
    )
});

/// Events the projector has applied (re-deliveries included).
pub static PROJECTOR_APPLIED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new("lis_projector_events_total", "Events read by the projector")
            .expect("valid metric"),
    )
});

/// Seconds from an event's acceptance to its projection, for the latest batch.
pub static PROJECTOR_LAG: LazyLock<Gauge> = LazyLock::new(|| {
    register(
        Gauge::new(
            "lis_projector_lag_seconds",
            "Seconds between the newest projected event's acceptance and its projection",
        )
        .expect("valid metric"),
    )
});

/// Events the analytics publisher has copied (re-deliveries included).
pub static ANALYTICS_PUBLISHED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "lis_analytics_events_total",
            "Events read by the analytics publisher",
        )
        .expect("valid metric"),
    )
});

/// Invitations mailed.
pub static MAILS_SENT: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new("lis_mailer_sent_total", "Account invitations mailed")
            .expect("valid metric"),
    )
});

/// Events the mailer handled in one batch (one commit for the links' tokens
/// when any is due, one for the marks and the offsets).
pub static MAILER_BATCH: LazyLock<Histogram> = LazyLock::new(|| {
    register(
        Histogram::with_opts(
            HistogramOpts::new(
                "lis_mailer_batch_events",
                "Events the invitation mailer handled in one batch",
            )
            .buckets(vec![1.0, 4.0, 16.0, 64.0, 256.0, 1024.0]),
        )
        .expect("valid metric"),
    )
});

/// Reads committed together by one access log write (group commit).
pub static ACCESS_LOG_BATCH: LazyLock<Histogram> = LazyLock::new(|| {
    register(
        Histogram::with_opts(
            HistogramOpts::new(
                "lis_access_log_batch_reads",
                "Reads whose access log entries one commit wrote",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("valid metric"),
    )
});

/// Seconds since `t`, for lag gauges.
pub fn seconds_since(t: &chrono::DateTime<chrono::Utc>) -> f64 {
    (chrono::Utc::now() - *t).num_microseconds().unwrap_or(0) as f64 / 1e6
}

/// Registers every metric, so `/metrics` lists them before their first use.
pub fn init() {
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_LATENCY);
    LazyLock::force(&RELAY_PUBLISHED);
    LazyLock::force(&RELAY_LAG);
    LazyLock::force(&PROJECTOR_APPLIED);
    LazyLock::force(&PROJECTOR_LAG);
    LazyLock::force(&MAILS_SENT);
    LazyLock::force(&MAILER_BATCH);
    LazyLock::force(&ACCESS_LOG_BATCH);
    LazyLock::force(&ANALYTICS_PUBLISHED);
}

/// The text exposition of every metric.
pub fn render() -> String {
    init();
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut out)
        .expect("text encoding cannot fail");
    String::from_utf8(out).expect("utf-8")
}
