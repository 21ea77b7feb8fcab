//! The development broker: tansu 0.6 with sqlite storage, as `lis up`,
//! `lis-faults`, `scripts/test` and the tests start it. Production uses
//! Apache Kafka; nothing here is needed there.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The index tansu 0.6's sqlite schema lacks: it looks up each fetched
/// record's headers by `(topition, offset_id)` with no index, so a fetch
/// scans every header of the store once per record. Every event carries
/// nine headers (CloudEvents and `lis_position`), so reading a partition
/// became quadratic: 7,898 records took 22.8 s to read from offset 0 (and a
/// store of some 10k records stopped answering fetches in time); with this
/// index the same read took 0.3 s.
const INDEX: &str = "CREATE INDEX IF NOT EXISTS lis_header_record ON header (topition, offset_id)";

/// Adds the missing header index to the broker's sqlite store at `db` (the
/// broker creates its tables as it starts; this waits for them). Needs the
/// `sqlite3` command line tool. Safe to run while the broker runs, and
/// again on every start.
pub fn index_store(db: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("sqlite3")
            .arg(db)
            .args([".timeout 10000", INDEX])
            .output()
            .context("running sqlite3 (the SQLite command line tool, Debian package sqlite3) to index the broker's store")?;
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "cannot index the broker's store {}: {}",
                db.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The broker's store, in its working directory.
pub const STORE: &str = "tansu.db";

/// The arguments that run the broker on `addr` (`host:port`) with its
/// sqlite store in its working directory (tansu reads the path after
/// `sqlite://` as relative; an absolute one gets mangled).
pub fn args(addr: &str) -> Vec<String> {
    let url = format!("tcp://{addr}");
    [
        "broker",
        "--storage-engine",
        "sqlite://tansu.db",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
    ]
    .map(String::from)
    .to_vec()
}

/// Starts the broker `bin` as a child process working in `dir` (its store
/// there, its output appended to `log`), waits until `addr` accepts
/// connections, and indexes its store. Used by `lis-faults` and the tests;
/// `lis up` starts it detached with the same [`args`].
pub fn spawn(bin: &Path, dir: &Path, addr: &str, log: &Path) -> anyhow::Result<Child> {
    std::fs::create_dir_all(dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut child = Command::new(bin)
        .args(args(addr))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting the broker {}", bin.display()))?;
    if let Err(e) = wait_listening(addr, Duration::from_secs(30)) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.context("starting the broker"));
    }
    index_store(&dir.join(STORE))?;
    Ok(child)
}

/// Waits until something accepts connections on `addr` (`host:port`): a
/// process this crate launched (the broker, the fault suite's services).
pub fn wait_listening(addr: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
