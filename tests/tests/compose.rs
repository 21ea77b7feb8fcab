//! `docker-compose.yml` stays in step with the code: it passes only settings
//! the code reads, gives every `lis serve` process what it needs to reach its
//! dependencies (and each only the keys its roles load), runs three Kafka
//! brokers in KRaft mode with every topic replicated, two replicas of every
//! service and a Postgres standby, and serves the whole partner API under
//! one origin on port 8080. Also checks that `Config::VARIABLES` lists
//! exactly the variables `Config::from_env` reads.
//!
//! Docker does not run on the test machines, so these checks read the file.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use lis::stack::Roles;
use platform::config::Config;
use serde_yaml::{Mapping, Value};

/// Settings every `lis serve` process must be given, whatever its roles,
/// because the defaults point at the local stack (127.0.0.1, `.lis/`), not at
/// other containers:
/// - `LIS_DATABASE_URL`: every role uses Postgres (write side or read models);
/// - `LIS_KAFKA_BROKERS`: the relay, projector and mailer use Kafka, and the
///   API's `/readyz` asks the broker.
const REQUIRED_FOR_SERVE: &[&str] = &["LIS_DATABASE_URL", "LIS_KAFKA_BROKERS"];

/// Whether a process with these roles loads a key.
type LoadsKey = fn(&Roles) -> bool;

/// The key files `lis serve` loads, and whether roles load each: a service
/// gets a key exactly when one of its roles uses it (the token signing key
/// only where tokens are minted: a process that verifies cannot mint).
const KEY_FILES: &[(&str, LoadsKey)] = &[
    ("LIS_TOKEN_KEY_FILE", |r| r.commands),
    ("LIS_CHAIN_KEY_FILE", |r| r.relay),
    ("LIS_ANALYTICS_KEY_FILE", |r| r.analytics),
];

/// Settings `lis migrate` needs: it creates the database and the topics.
const REQUIRED_FOR_MIGRATE: &[&str] = &["LIS_DATABASE_URL", "LIS_KAFKA_BROKERS"];

/// The port the partner API is published on (the contract's one origin).
const API_PORT: u16 = 8080;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn compose() -> Value {
    let path = repo_root().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut doc: Value = serde_yaml::from_str(&text).expect("docker-compose.yml is valid YAML");
    // Compose applies `<<: *anchor` merge keys; so must we.
    doc.apply_merge().expect("merge keys apply");
    doc
}

fn services(doc: &Value) -> Vec<(String, &Mapping)> {
    let services = doc
        .get("services")
        .and_then(Value::as_mapping)
        .expect("docker-compose.yml has a `services` mapping");
    services
        .iter()
        .map(|(k, v)| {
            let name = k.as_str().expect("service names are strings").to_string();
            let body = v
                .as_mapping()
                .unwrap_or_else(|| panic!("service {name} is a mapping"));
            (name, body)
        })
        .collect()
}

/// A scalar as Compose reads it (`8080`, `true` and `"x"` are all strings to it).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The service's `environment`, in either of Compose's forms: a mapping
/// (`KEY: value`) or a list (`- KEY=value`). A variable without a value
/// (`KEY:` or `- KEY`) is passed through from the host and maps to `None`.
fn environment(svc: &Mapping) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    match svc.get("environment") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let k = scalar(k).expect("environment keys are scalars");
                env.insert(k, scalar(v));
            }
        }
        Some(Value::Sequence(items)) => {
            for item in items {
                let item = scalar(item).expect("environment list items are strings");
                match item.split_once('=') {
                    Some((k, v)) => env.insert(k.to_string(), Some(v.to_string())),
                    None => env.insert(item, None),
                };
            }
        }
        Some(other) => panic!("unexpected environment form: {other:?}"),
    }
    env
}

/// The words of the service's `command` (list form, or a string split on
/// whitespace), without a leading `lis` (the image's entrypoint).
fn command(svc: &Mapping) -> Vec<String> {
    let mut words: Vec<String> = match svc.get("command") {
        Some(Value::Sequence(items)) => items.iter().filter_map(scalar).collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    };
    if words
        .first()
        .is_some_and(|w| w == "lis" || w.ends_with("/lis"))
    {
        words.remove(0);
    }
    words
}

/// The `--roles` value when the service runs `lis serve` (default `all`).
fn serve_roles(svc: &Mapping) -> Option<String> {
    let words = command(svc);
    if words.first().map(String::as_str) != Some("serve") {
        return None;
    }
    let mut roles = "all".to_string();
    let mut it = words.iter().skip(1);
    while let Some(w) = it.next() {
        if w == "--roles" {
            roles = it.next().expect("--roles has a value").clone();
        } else if let Some(v) = w.strip_prefix("--roles=") {
            roles = v.to_string();
        }
    }
    Some(roles)
}

fn runs_migrate(svc: &Mapping) -> bool {
    command(svc).first().map(String::as_str) == Some("migrate")
}

/// `(published host port, container port)` of every entry of `ports`, in the
/// short (`"[ip:]host:container[/proto]"`, `"container"`) or long form.
fn ports(svc: &Mapping) -> Vec<(Option<String>, String)> {
    let Some(Value::Sequence(items)) = svc.get("ports") else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| match item {
            Value::Mapping(m) => (
                m.get("published").and_then(scalar),
                m.get("target")
                    .and_then(scalar)
                    .expect("long-form ports have a target"),
            ),
            other => {
                let s = scalar(other).expect("short-form ports are scalars");
                let s = s.split('/').next().unwrap_or_default().to_string();
                let parts: Vec<&str> = s.split(':').collect();
                let target = parts[parts.len() - 1].to_string();
                let published = (parts.len() >= 2).then(|| parts[parts.len() - 2].to_string());
                (published, target)
            }
        })
        .collect()
}

fn names(v: Option<&Value>) -> BTreeSet<String> {
    match v {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| match i {
                Value::Mapping(m) => m.get("source").and_then(scalar),
                other => scalar(other),
            })
            .collect(),
        Some(Value::Mapping(m)) => m.keys().filter_map(scalar).collect(),
        _ => BTreeSet::new(),
    }
}

#[test]
fn compose_passes_only_settings_the_code_reads() {
    let doc = compose();
    let known: BTreeSet<&str> = Config::VARIABLES.iter().copied().collect();
    let mut unknown = Vec::new();
    for (name, svc) in services(&doc) {
        for key in environment(svc).keys() {
            if key.starts_with("LIS_") && !known.contains(key.as_str()) {
                unknown.push(format!("{name}: {key}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "docker-compose.yml sets LIS_* variables the code does not read \
         (not in Config::VARIABLES): {unknown:?}"
    );
}

#[test]
fn every_lis_service_can_reach_its_dependencies() {
    let doc = compose();
    let top_secrets = names(doc.get("secrets"));
    let mut all_roles = Vec::new();
    let mut migrate = None;
    for (name, svc) in services(&doc) {
        let env = environment(svc);
        let value = |k: &str| env.get(k).cloned().flatten().filter(|v| !v.is_empty());
        if runs_migrate(svc) {
            for k in REQUIRED_FOR_MIGRATE {
                assert!(value(k).is_some(), "service {name} (lis migrate) needs {k}");
            }
            migrate = Some(name.clone());
        }
        let Some(roles_arg) = serve_roles(svc) else {
            continue;
        };
        let roles = Roles::parse(&roles_arg)
            .unwrap_or_else(|e| panic!("service {name}: `--roles {roles_arg}`: {e}"));
        all_roles.push(roles_arg.clone());
        for k in REQUIRED_FOR_SERVE {
            assert!(value(k).is_some(), "service {name} (lis serve) needs {k}");
        }
        // Each key its roles load is mounted (as a Docker secret declared
        // at the top level and granted to the service, or through a
        // volume); no other key is granted.
        let granted = names(svc.get("secrets"));
        let mut needed = BTreeSet::new();
        for (var, loads) in KEY_FILES {
            if !loads(&roles) {
                continue;
            }
            let key_file = value(var)
                .unwrap_or_else(|| panic!("service {name} (--roles {roles_arg}) needs {var}"));
            if let Some(secret) = key_file.strip_prefix("/run/secrets/") {
                assert!(
                    granted.contains(secret),
                    "service {name} reads the secret {secret} but is not granted it"
                );
                assert!(
                    top_secrets.contains(secret),
                    "the secret {secret} is not declared under top-level `secrets`"
                );
                needed.insert(secret.to_string());
            } else {
                let mounted = match svc.get("volumes") {
                    Some(Value::Sequence(v)) => v.iter().any(|m| {
                        let m = match m {
                            Value::Mapping(m) => m.get("target").and_then(scalar),
                            other => scalar(other),
                        };
                        m.is_some_and(|m| m.contains(key_file.as_str()))
                    }),
                    _ => false,
                };
                assert!(
                    mounted,
                    "service {name}: {key_file} is neither a secret nor mounted"
                );
            }
        }
        let extra: Vec<_> = granted.iter().filter(|g| !needed.contains(*g)).collect();
        assert!(
            extra.is_empty(),
            "service {name} (--roles {roles_arg}) is granted keys its roles do not use: {extra:?}"
        );
        if roles.commands || roles.queries {
            // The default, 127.0.0.1:8080, is unreachable from outside the container.
            let addr: SocketAddr = value("LIS_HTTP_ADDR")
                .unwrap_or_else(|| panic!("service {name} serves HTTP and needs LIS_HTTP_ADDR"))
                .parse()
                .unwrap_or_else(|e| panic!("service {name}: LIS_HTTP_ADDR: {e}"));
            assert!(
                addr.ip().is_unspecified(),
                "service {name} must listen on all interfaces, not {addr}"
            );
        }
        // Services start only after the schema and the topics exist.
        let after_migrate = svc
            .get("depends_on")
            .and_then(Value::as_mapping)
            .and_then(|d| d.get("migrate"))
            .and_then(|m| m.get("condition"))
            .and_then(scalar);
        assert_eq!(
            after_migrate.as_deref(),
            Some("service_completed_successfully"),
            "service {name} must wait for migrate to complete"
        );
    }
    assert_eq!(
        migrate.as_deref(),
        Some("migrate"),
        "a `migrate` service runs `lis migrate`"
    );
    assert!(!all_roles.is_empty(), "no service runs `lis serve`");
    // Together, the services run every role (the union of their --roles).
    assert_eq!(
        Roles::parse(&all_roles.join(",")).expect("parsed above"),
        Roles::ALL,
        "some role runs in no service; roles run: {all_roles:?}"
    );
}

#[test]
fn kafka_runs_in_kraft_mode_and_postgres_16_is_checked() {
    let doc = compose();
    let all = services(&doc);
    let brokers = kafka_services(&all);
    assert!(!brokers.is_empty(), "a service runs the apache/kafka image");
    let kafka = &brokers[0].1;
    let get = |k: &str| kafka.get(k).cloned().flatten().unwrap_or_default();
    let process_roles = get("KAFKA_PROCESS_ROLES");
    assert!(
        process_roles.contains("broker") && process_roles.contains("controller"),
        "KAFKA_PROCESS_ROLES configures KRaft (broker,controller), got {process_roles:?}"
    );
    for k in [
        "KAFKA_NODE_ID",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
    ] {
        assert!(!get(k).is_empty(), "the kafka service needs {k}");
    }
    assert_eq!(
        get("KAFKA_AUTO_CREATE_TOPICS_ENABLE"),
        "false",
        "`lis migrate` creates the topics (with unlimited retention)"
    );
    // Every broker the LIS services are given is one a broker advertises.
    let advertised: String = brokers
        .iter()
        .map(|(_, env)| {
            env.get("KAFKA_ADVERTISED_LISTENERS")
                .cloned()
                .flatten()
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(",");
    for (name, svc) in &all {
        if let Some(Some(brokers)) = environment(svc).get("LIS_KAFKA_BROKERS") {
            for b in brokers.split(',').map(str::trim) {
                assert!(
                    advertised.contains(&format!("//{b}")),
                    "service {name}: broker {b} is not in {advertised:?}"
                );
            }
        }
    }

    let (_, pg) = all
        .iter()
        .find(|(_, s)| {
            s.get("image")
                .and_then(scalar)
                .is_some_and(|i| i.starts_with("postgres:16"))
        })
        .expect("a service runs postgres:16");
    assert!(
        pg.get("healthcheck").is_some(),
        "postgres has a healthcheck"
    );
}

/// The services running the apache/kafka image, with their environments.
fn kafka_services(all: &[(String, &Mapping)]) -> Vec<(String, BTreeMap<String, Option<String>>)> {
    all.iter()
        .filter(|(_, s)| {
            s.get("image")
                .and_then(scalar)
                .is_some_and(|i| i.starts_with("apache/kafka"))
        })
        .map(|(n, s)| (n.clone(), environment(s)))
        .collect()
}

/// Issue 13's production topology: three KRaft brokers that form one
/// quorum, every topic with 3 copies and 2 in sync before an `acks=all`
/// write counts (the brokers' defaults and internal topics, and the topics
/// `lis migrate` creates), every LIS service told of every broker and run
/// twice, and a Postgres standby streaming from the primary.
#[test]
fn the_production_topology_replicates_every_part() {
    let doc = compose();
    let all = services(&doc);
    let brokers = kafka_services(&all);
    assert!(
        brokers.len() >= 3,
        "three Kafka brokers, not {}",
        brokers.len()
    );
    let mut ids = BTreeSet::new();
    for (name, env) in &brokers {
        let get = |k: &str| env.get(k).cloned().flatten().unwrap_or_default();
        assert!(
            ids.insert(get("KAFKA_NODE_ID")),
            "{name}: a node id of its own"
        );
        let voters = get("KAFKA_CONTROLLER_QUORUM_VOTERS");
        assert_eq!(
            voters.split(',').count(),
            brokers.len(),
            "{name}: every broker votes in the controller quorum ({voters})"
        );
        for (k, v) in [
            ("KAFKA_DEFAULT_REPLICATION_FACTOR", "3"),
            ("KAFKA_MIN_INSYNC_REPLICAS", "2"),
            ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3"),
            ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "3"),
            ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "2"),
            ("KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE", "false"),
        ] {
            assert_eq!(get(k), v, "{name}: {k}");
        }
    }
    let hosts: BTreeSet<String> = brokers
        .iter()
        .map(|(_, env)| {
            let l = env["KAFKA_ADVERTISED_LISTENERS"]
                .clone()
                .unwrap_or_default();
            l.rsplit("//").next().unwrap_or_default().to_string()
        })
        .collect();
    for (name, svc) in &all {
        let env = environment(svc);
        if let Some(Some(listed)) = env.get("LIS_KAFKA_BROKERS") {
            let listed: BTreeSet<String> =
                listed.split(',').map(|b| b.trim().to_string()).collect();
            assert_eq!(listed, hosts, "{name} is told of every broker");
        }
        if runs_migrate(svc) {
            let get = |k: &str| env.get(k).cloned().flatten().unwrap_or_default();
            assert_eq!(
                get("LIS_KAFKA_REPLICATION_FACTOR"),
                "3",
                "{name}: topics with 3 copies"
            );
            assert_eq!(
                get("LIS_KAFKA_MIN_INSYNC_REPLICAS"),
                "2",
                "{name}: 2 in sync"
            );
        }
        if serve_roles(svc).is_some() {
            let replicas = svc
                .get("deploy")
                .and_then(|d| d.get("replicas"))
                .and_then(Value::as_u64)
                .unwrap_or(1);
            assert!(
                replicas >= 2,
                "service {name} runs {replicas} replica(s), not 2"
            );
        }
    }
    // A standby streaming from the primary: a second postgres:16 service
    // whose start copies the primary with pg_basebackup -R, after it.
    let postgres: Vec<&(String, &Mapping)> = all
        .iter()
        .filter(|(_, s)| {
            s.get("image")
                .and_then(scalar)
                .is_some_and(|i| i.starts_with("postgres:16"))
        })
        .collect();
    assert_eq!(postgres.len(), 2, "a primary and a standby");
    let (standby, svc) = postgres
        .iter()
        .find(|(_, s)| s.get("depends_on").is_some())
        .expect("the standby starts after the primary");
    let script = mounted_files(svc)
        .into_iter()
        .map(|f| std::fs::read_to_string(repo_root().join(f)).unwrap_or_default())
        .find(|t| t.contains("pg_basebackup"))
        .unwrap_or_else(|| panic!("{standby} mounts a script that runs pg_basebackup"));
    assert!(
        script.contains(" -R"),
        "{standby}: pg_basebackup -R makes it a standby"
    );
    let (primary, svc) = postgres.iter().find(|(n, _)| n != standby).unwrap();
    assert!(
        command(svc).join(" ").contains("wal_level=replica"),
        "{primary} keeps the WAL a standby needs"
    );
}

/// The host files a service mounts (`./x:/y[:ro]`).
fn mounted_files(svc: &Mapping) -> Vec<String> {
    match svc.get("volumes") {
        Some(Value::Sequence(v)) => v
            .iter()
            .filter_map(scalar)
            .filter_map(|m| {
                let host = m.split(':').next()?;
                host.starts_with("./")
                    .then(|| host.trim_start_matches("./").to_string())
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn one_origin_serves_the_partner_api_on_8080() {
    let doc = compose();
    let port = API_PORT.to_string();
    let publishing: Vec<(String, &Mapping, String)> = services(&doc)
        .into_iter()
        .filter_map(|(name, svc)| {
            ports(svc)
                .into_iter()
                .find(|(published, _)| published.as_deref() == Some(port.as_str()))
                .map(|(_, target)| (name, svc, target))
        })
        .collect();
    assert_eq!(
        publishing.len(),
        1,
        "exactly one service publishes port {port}: {:?}",
        publishing.iter().map(|(n, ..)| n).collect::<Vec<_>>()
    );
    let (name, svc, target) = &publishing[0];
    // A reverse proxy in front: the service its Caddyfile sends requests to.
    let (name, svc, target) = if serve_roles(svc).is_none() {
        let caddyfile = mounted_files(svc)
            .into_iter()
            .find(|f| f.ends_with("Caddyfile"))
            .unwrap_or_else(|| panic!("service {name} publishes {port}: lis serve or a Caddyfile"));
        let text = std::fs::read_to_string(repo_root().join(&caddyfile)).expect("the Caddyfile");
        let word_after = |key: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("{caddyfile}: no `{key}` line"))
        };
        let (upstream, upstream_port) = (word_after("name "), word_after("port "));
        let (_, up) = services(&doc)
            .into_iter()
            .find(|(n, _)| *n == upstream)
            .unwrap_or_else(|| panic!("{caddyfile} sends requests to {upstream}, not a service"));
        (upstream, up, upstream_port)
    } else {
        (name.clone(), *svc, target.clone())
    };
    let roles_arg = serve_roles(svc)
        .unwrap_or_else(|| panic!("service {name} serves {port} but does not run `lis serve`"));
    let roles = Roles::parse(&roles_arg).expect("valid roles");
    assert!(
        roles.commands && roles.queries,
        "service {name} behind port {port} serves every partner endpoint \
         (command-handler and query-api), not only `{roles_arg}`"
    );
    let addr: SocketAddr = environment(svc)
        .get("LIS_HTTP_ADDR")
        .cloned()
        .flatten()
        .expect("LIS_HTTP_ADDR is set")
        .parse()
        .expect("LIS_HTTP_ADDR is an address");
    assert_eq!(
        target,
        addr.port().to_string(),
        "service {name} is reached on the port it listens on"
    );
}

/// The string literals naming `LIS_*` variables in `text`.
fn lis_literals(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("\"LIS_") {
        rest = &rest[i + 1..];
        let end = rest.find('"').expect("string literal is closed");
        found.insert(rest[..end].to_string());
        rest = &rest[end + 1..];
    }
    found
}

#[test]
fn config_variables_list_what_from_env_reads() {
    let path = repo_root().join("platform/src/config.rs");
    let src = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let start = src.find("pub fn from_env").expect("config.rs has from_env");
    let end = src[start..]
        .find("pub const VARIABLES")
        .map(|e| start + e)
        .expect("VARIABLES follows from_env in config.rs");
    let read = lis_literals(&src[start..end]);

    let listed: BTreeSet<String> = Config::VARIABLES.iter().map(|v| v.to_string()).collect();
    assert_eq!(
        listed.len(),
        Config::VARIABLES.len(),
        "Config::VARIABLES has duplicates"
    );
    let missing_from_list: Vec<_> = read.difference(&listed).collect();
    let not_read: Vec<_> = listed.difference(&read).collect();
    assert!(
        missing_from_list.is_empty(),
        "from_env reads variables missing from Config::VARIABLES: {missing_from_list:?}"
    );
    assert!(
        not_read.is_empty(),
        "Config::VARIABLES lists variables from_env does not read: {not_read:?}"
    );
}
