//! The local stack: `lis up`, `lis down`, `lis serve`, `lis migrate`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::stack::{self, Roles, Shutdown};
use anyhow::{bail, Context};
use command_handler::admin;
use domain::access::{IdSet, Permission, Scope};
use platform::config::Config;
use platform::db;
use platform::keyfile::write_private;
use platform::token::TokenSigner;

const BROKER_PID: &str = "broker.pid";
const SERVICES_PID: &str = "services.pid";
const DEMO_FILE: &str = "demo-partner.json";

fn data_dir(cfg: &Config) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            cfg.data_dir.display()
        )
    })?;
    Ok(cfg.data_dir.canonicalize()?)
}

/// The pids in a pid file, one a line.
fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn first_broker(cfg: &Config) -> String {
    cfg.kafka_brokers
        .split(',')
        .next()
        .unwrap_or("127.0.0.1:9092")
        .trim()
        .to_string()
}

async fn reachable(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

fn tansu_binary() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("tansu")).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(home).join("bin/tansu"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/tansu"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Installs the Kafka-compatible broker used on development machines.
pub fn install_broker() -> anyhow::Result<PathBuf> {
    if let Some(b) = tansu_binary() {
        return Ok(b);
    }
    eprintln!("lis: installing the tansu broker with cargo (about 10 minutes, once)…");
    let status = Command::new("cargo")
        .args([
            "install",
            "tansu",
            "--version",
            "0.6.0",
            "--locked",
            "--features",
            "libsql,dynostore",
        ])
        .status()
        .context("cannot run cargo to install the broker")?;
    if !status.success() {
        bail!("installing the broker failed");
    }
    tansu_binary().context("the broker was installed but is not on PATH or in ~/.cargo/bin")
}

fn spawn_detached(
    program: &Path,
    args: &[String],
    cwd: &Path,
    log: &Path,
    env: &[(&str, String)],
) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    Ok(child.id())
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut ok: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{what} did not come up within {timeout:?}")
}

async fn ensure_broker(cfg: &Config, dir: &Path) -> anyhow::Result<()> {
    let addr = first_broker(cfg);
    let store = dir.join("tansu").join(crate::broker::STORE);
    if reachable(&addr).await {
        // A broker this command started earlier: make sure its store has
        // the index (stacks from before `crate::broker` lack it).
        if store.exists() {
            crate::broker::index_store(&store)?;
        }
        return Ok(());
    }
    let tansu = install_broker()?;
    std::fs::create_dir_all(dir.join("tansu"))?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let args = crate::broker::args(&addr);
    let pid = spawn_detached(
        &tansu,
        &args,
        &dir.join("tansu"),
        &dir.join("logs/broker.log"),
        &[],
    )?;
    std::fs::write(dir.join(BROKER_PID), pid.to_string())?;
    wait_until("the broker", Duration::from_secs(30), async || {
        reachable(&addr).await
    })
    .await?;
    crate::broker::index_store(&store)
}

/// Creates the database, applies both schemas' migrations, and creates the
/// topics.
pub async fn migrate(cfg: &Config) -> anyhow::Result<()> {
    db::ensure_database(&cfg.database_url)
        .await
        .context("cannot reach Postgres (LIS_DATABASE_URL)")?;
    db::migrate(
        &cfg.database_url,
        &cfg.write_schema,
        command_handler::migrations(),
    )
    .await?;
    let write = db::pool(&cfg.database_url, &cfg.write_schema, 1)?;
    for schema in crate::replay::schemas_in_use(cfg, &write).await? {
        db::migrate(&cfg.database_url, &schema, projector::migrations()).await?;
    }
    let active = platform::read_models::active(&write, &cfg.read_schema).await?;
    let read = db::pool(&cfg.database_url, &active, 1)?;
    let without_history: bool = read
        .get()
        .await?
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM patients UNION ALL SELECT 1 FROM orders) \
             AND NOT EXISTS (SELECT 1 FROM history)",
            &[],
        )
        .await?
        .get(0);
    if without_history {
        eprintln!(
            "lis: the read models in {active} were built before they kept history: run \
             `lis replay` to rebuild them with it (history and as-of reads of records \
             projected before then answer from nothing until you do)"
        );
    }
    platform::kafka::ensure_topics(cfg)
        .await
        .context("cannot create the topics (is the broker at LIS_KAFKA_BROKERS up?)")?;
    Ok(())
}

async fn ready(url: &str) -> bool {
    let client = reqwest::Client::new();
    matches!(
        client.get(format!("{url}/readyz")).timeout(Duration::from_secs(3)).send().await,
        Ok(r) if r.status().is_success()
    )
}

/// The roles of the processes `lis up` starts: every role in one, or with
/// `replicas` above one, the API roles in that many processes sharing the
/// port and the others in one beside them (the relay, mailer and analytics
/// publisher work alone anyway, under their leases).
fn service_processes(replicas: usize) -> Vec<(Vec<String>, String)> {
    let serve = |roles: &str, share: bool| {
        let mut args = vec![
            "serve".to_string(),
            "--roles".to_string(),
            roles.to_string(),
        ];
        if share {
            args.push("--share-port".to_string());
        }
        args
    };
    if replicas <= 1 {
        return vec![(serve("all", false), "services.log".to_string())];
    }
    let mut procs = vec![(
        serve("relay,projector,mailer,analytics", false),
        "services.log".to_string(),
    )];
    for i in 1..=replicas {
        procs.push((
            serve("command-handler,query-api,portal", true),
            format!("api-{i}.log"),
        ));
    }
    procs
}

async fn ensure_services(
    cfg: &Config,
    dir: &Path,
    base: &str,
    replicas: usize,
) -> anyhow::Result<()> {
    let running = read_pids(&dir.join(SERVICES_PID));
    if !running.is_empty() && running.iter().all(|p| alive(*p)) && ready(base).await {
        if running.len() != service_processes(replicas).len() {
            eprintln!(
                "lis: the services are up already ({} processes); `lis down` first to change --replicas",
                running.len()
            );
        }
        return Ok(());
    }
    // Whatever is left of an earlier start (a process that died, say).
    stop(&dir.join(SERVICES_PID), "services");
    let exe = std::env::current_exe()?;
    let mut env = vec![
        ("LIS_DATA_DIR", dir.display().to_string()),
        (
            "LIS_TOKEN_KEY_FILE",
            cfg.token_key_file.canonicalize()?.display().to_string(),
        ),
        (
            "LIS_CHAIN_KEY_FILE",
            cfg.chain_key_file.canonicalize()?.display().to_string(),
        ),
        (
            "LIS_ANALYTICS_KEY_FILE",
            cfg.analytics_key_file.canonicalize()?.display().to_string(),
        ),
    ];
    if cfg.smtp_url.is_none() && cfg.mail_outbox.is_none() {
        let outbox = dir.join("outbox");
        std::fs::create_dir_all(&outbox)?;
        env.push((
            "LIS_MAIL_OUTBOX",
            outbox.canonicalize()?.display().to_string(),
        ));
    }
    let cwd = std::env::current_dir()?;
    let mut pids = Vec::new();
    for (args, log) in service_processes(replicas) {
        let pid = spawn_detached(&exe, &args, &cwd, &dir.join("logs").join(log), &env)?;
        pids.push(pid.to_string());
        // Written as each starts, so `lis down` finds every one.
        std::fs::write(dir.join(SERVICES_PID), pids.join("\n"))?;
    }
    wait_until("the services", Duration::from_secs(60), async || {
        ready(base).await
    })
    .await
    .with_context(|| format!("see {}", dir.join("logs").display()))
}

async fn ensure_demo(cfg: &Config, dir: &Path, base: &str) -> anyhow::Result<PathBuf> {
    let file = dir.join(DEMO_FILE);
    if file.exists() {
        return Ok(file);
    }
    let pool = db::pool(&cfg.database_url, &cfg.write_schema, 2)?;
    let actor = crate::admin_cli::operator();
    admin::create_client(&pool, &actor, "DEMO", "Demo Clinic").await?;
    admin::create_location(&pool, &actor, "DEMO-MAIN", "DEMO", "Demo Clinic, main site").await?;
    let permissions = Permission::RECORDS.into();
    let scope = Scope {
        clients: IdSet::parse("DEMO").map_err(anyhow::Error::msg)?,
        locations: IdSet::all(),
    };
    let creds = admin::create_partner(&pool, &actor, "Demo partner", permissions, scope).await?;
    let body = serde_json::json!({
        "partnerID": creds.partner_id,
        "client_id": creds.client_id,
        "client_secret": creds.client_secret,
        "token_url": format!("{base}/oauth/token"),
        "base_url": base,
        "clientID": "DEMO",
        "locationID": "DEMO-MAIN",
    });
    write_private(&file, serde_json::to_string_pretty(&body)?.as_bytes())?;
    Ok(file)
}

/// The key files the relay (chain signing) and the analytics publisher
/// (pseudonyms) load, each generated once per installation.
fn service_keys(cfg: &Config) -> [(PathBuf, platform::keyfile::KeyKind); 2] {
    [
        (cfg.chain_key_file.clone(), platform::chain::CHAIN_KEY),
        (
            cfg.analytics_key_file.clone(),
            platform::pseudonym::ANALYTICS_KEY,
        ),
    ]
}

/// Creates the relay's and the analytics publisher's key files in `dir`
/// (their default places under `LIS_DATA_DIR`) unless they exist.
pub fn create_service_keys(dir: &Path) -> anyhow::Result<()> {
    let mut cfg = Config::from_env()?;
    cfg.chain_key_file = dir.join("chain-signing.key");
    cfg.analytics_key_file = dir.join("analytics-pseudonym.key");
    for (path, kind) in service_keys(&cfg) {
        platform::keyfile::create(&path, kind)?;
    }
    Ok(())
}

/// `lis up`, with `replicas` API processes.
pub async fn up(cfg: &Config, replicas: usize) -> anyhow::Result<()> {
    let dir = data_dir(cfg)?;
    std::fs::create_dir_all(dir.join("logs"))?;
    ensure_broker(cfg, &dir).await?;
    migrate(cfg).await?;
    if TokenSigner::create_file(&cfg.token_key_file)? {
        eprintln!(
            "lis: generated a token signing key at {}",
            cfg.token_key_file.display()
        );
    }
    for (path, kind) in service_keys(cfg) {
        if platform::keyfile::create(&path, kind)? {
            eprintln!("lis: generated the {} at {}", kind.what, path.display());
        }
    }
    let base = format!("http://{}", cfg.http_addr);
    ensure_services(cfg, &dir, &base, replicas).await?;
    let demo = ensure_demo(cfg, &dir, &base).await?;
    let pool = db::pool(&cfg.database_url, &cfg.write_schema, 2)?;
    admin::seed_catalog(&pool, &crate::admin_cli::operator()).await?;
    println!("LIS is up.");
    println!("  base URL:             {base}");
    if replicas > 1 {
        println!("  API processes:        {replicas}, sharing the base URL's port");
    }
    println!("  demo credentials:     {}", demo.display());
    println!("  patient portal:       {base}/portal");
    match (&cfg.smtp_url, &cfg.mail_outbox) {
        (Some(url), _) => println!("  account emails:       {url}"),
        (None, Some(outbox)) => println!("  account emails:       {}", outbox.display()),
        (None, None) => println!(
            "  account emails:       {} (.eml files)",
            dir.join("outbox").display()
        ),
    }
    println!("  logs:                 {}", dir.join("logs").display());
    println!("  stop with:            cargo run --release -p lis -- down");
    Ok(())
}

/// Stops the processes of a pid file (SIGTERM, then SIGKILL after 15 s).
fn stop(path: &Path, what: &str) {
    let pids: Vec<i32> = read_pids(path).into_iter().filter(|p| alive(*p)).collect();
    for pid in &pids {
        // SAFETY: plain signal to a process this command started.
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for pid in &pids {
        if alive(*pid) {
            // SAFETY: as above.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        println!("stopped the {what} (pid {pid})");
    }
    let _ = std::fs::remove_file(path);
}

/// `lis down`.
pub fn down(cfg: &Config) -> anyhow::Result<()> {
    let dir = data_dir(cfg)?;
    stop(&dir.join(SERVICES_PID), "services");
    stop(&dir.join(BROKER_PID), "broker");
    println!("LIS is down; data kept in {}", dir.display());
    Ok(())
}

/// `lis serve`: runs roles in the foreground until SIGTERM or Ctrl-C;
/// with `share_port`, on a port other processes may share (`SO_REUSEPORT`).
pub async fn serve(cfg: Config, roles: &str, share_port: bool) -> anyhow::Result<()> {
    let roles = Roles::parse(roles).map_err(anyhow::Error::msg)?;
    let listener = if share_port && roles.http() {
        let socket = if cfg.http_addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(cfg.http_addr)?;
        Some(socket.listen(1024)?)
    } else {
        None
    };
    let (fire, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = fire.send(true);
    });
    stack::serve(cfg, listener, roles, shutdown).await
}
