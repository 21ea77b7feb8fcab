//! Logging: structured `tracing` output filtered by `LIS_LOG`. Log lines
//! carry ids and counts, never personal data.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init(filter: &str) {
    let json = std::env::var("LIS_LOG_FORMAT").is_ok_and(|v| v == "json");
    let filter = EnvFilter::try_new(format!("{filter},rdkafka=warn,refinery_core=warn"))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr: stdout belongs to command output (`lis admin … --json`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}
