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

/// Why something failed, for a log line: every cause in the chain, outermost
/// first, with a database error in the database's own words (see
/// [`db_words`]) and a JSON error as its kind and place only (serde's
/// message quotes the value it could not read, which may be personal data).
/// The one way a failure's cause reaches a log.
pub fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(db) = err.downcast_ref::<tokio_postgres::error::DbError>() {
            parts.push(db_words(db));
            break;
        }
        if let Some(db) = err
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
        {
            parts.push(format!("db error: {}", db_words(db)));
            break;
        }
        if let Some(json) = err.downcast_ref::<serde_json::Error>() {
            parts.push(format!(
                "JSON {:?} error at line {} column {}",
                json.classify(),
                json.line(),
                json.column()
            ));
            break;
        }
        let text = err.to_string();
        // A wrapper that already prints its source adds nothing new.
        if !parts.last().is_some_and(|p| p.ends_with(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// A database error as severity, SQLSTATE, message and the objects it
/// names. Never the DETAIL or HINT, which may quote row values; and for a
/// data exception (SQLSTATE class 22, such as an invalid date) not the
/// message either, which quotes the value it refused.
fn db_words(db: &tokio_postgres::error::DbError) -> String {
    let code = db.code().code();
    let mut out = format!("{} {code}", db.severity());
    if code.starts_with("22") {
        out.push_str(
            ": a value was refused (data exception; the message, which quotes it, is withheld)",
        );
    } else {
        out.push_str(": ");
        out.push_str(db.message());
    }
    let named = [
        ("schema", db.schema()),
        ("table", db.table()),
        ("column", db.column()),
        ("type", db.datatype()),
        ("constraint", db.constraint()),
    ];
    for (what, name) in named {
        if let Some(name) = name {
            out.push_str(&format!(" [{what} {name}]"));
        }
    }
    out
}
