//! `lis admin …`: the operator's commands on reference data.

use anyhow::Context;
use clap::{Args, Subcommand};
use command_handler::admin;
use domain::access::{parse_permissions, Actor, IdSet, Scope};
use platform::config::Config;
use serde::Serialize;
use uuid::Uuid;

/// `lis admin`.
#[derive(Args)]
pub struct Admin {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Lab clients.
    Client {
        #[command(subcommand)]
        cmd: ClientCmd,
    },
    /// Locations of clients.
    Location {
        #[command(subcommand)]
        cmd: LocationCmd,
    },
    /// Partner integrations and their credentials.
    Partner {
        #[command(subcommand)]
        cmd: PartnerCmd,
    },
    /// The test catalog: tests, panels, analytes, units, reference ranges.
    Catalog {
        #[command(subcommand)]
        cmd: CatalogCmd,
    },
    /// Patients' portal accounts, by their login email.
    Account {
        #[command(subcommand)]
        cmd: AccountCmd,
    },
    /// The key that signs partner access tokens (`LIS_TOKEN_KEY_FILE`).
    TokenKey {
        #[command(subcommand)]
        cmd: TokenKeyCmd,
    },
}

#[derive(Subcommand)]
enum TokenKeyCmd {
    /// Replace the signing key: publish a new key, retire the others, then
    /// write it to `LIS_TOKEN_KEY_FILE` (run it where that file is; the
    /// processes that mint tokens pick the new file up at their next
    /// token). Tokens signed by the old key stay valid until they expire.
    Rotate,
    /// List the published keys that verify tokens now (the JWKS).
    List,
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Unlock an account locked after repeated failed logins.
    Unlock {
        /// The account's login email.
        email: String,
    },
    /// Disable an account for good (its sessions end at once).
    Disable {
        /// The account's login email.
        email: String,
    },
}

impl AccountCmd {
    fn parts(self) -> (String, domain::account::AccountAction) {
        use domain::account::AccountAction;
        match self {
            AccountCmd::Unlock { email } => (email, AccountAction::Unlock),
            AccountCmd::Disable { email } => (email, AccountAction::Disable),
        }
    }
}

#[derive(Subcommand)]
enum CatalogCmd {
    /// List the catalog's tests.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one test with its analytes and ranges.
    Show {
        /// The test code (`CBC`).
        code: String,
        /// Print JSON (the definition format `define` reads).
        #[arg(long)]
        json: bool,
    },
    /// Define a test, or revise it, from a JSON definition file (the format
    /// `show --json` prints).
    Define {
        /// The definition file.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Add the built-in starter catalog's tests that are missing.
    Seed,
}

#[derive(Subcommand)]
enum ClientCmd {
    /// Register a client.
    Create {
        /// The client id (1-64 of A-Z a-z 0-9 . _ -).
        #[arg(long)]
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// List clients.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum LocationCmd {
    /// Register a location of a client.
    Create {
        /// The location id.
        #[arg(long)]
        id: String,
        /// The owning client id.
        #[arg(long)]
        client: String,
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// List locations.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PartnerCmd {
    /// Create a partner; prints its client_id and secret (shown once).
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Comma-separated permissions (patients:read,tests:read,…).
        #[arg(long)]
        permissions: String,
        /// Client ids, comma-separated, or `*`.
        #[arg(long)]
        clients: String,
        /// Location ids, comma-separated, or `*`.
        #[arg(long)]
        locations: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List partners.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one partner.
    Show {
        /// The partner id.
        id: Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a partner's permissions and/or scope.
    Update {
        /// The partner id.
        id: Uuid,
        /// New permissions.
        #[arg(long)]
        permissions: Option<String>,
        /// New client scope.
        #[arg(long)]
        clients: Option<String>,
        /// New location scope.
        #[arg(long)]
        locations: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a partner's secret; prints the new one (shown once).
    RotateSecret {
        /// The partner id.
        id: Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disable a partner: its tokens stop working on the next request.
    Disable {
        /// The partner id.
        id: Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The operator running the command, recorded in events.
pub fn operator() -> Actor {
    let id = std::env::var("LIS_OPERATOR")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "operator".into());
    Actor::Operator { id }
}

fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("serializes")
        );
    } else {
        println!("{}", text(value));
    }
}

fn id_set(s: &str, what: &str) -> anyhow::Result<IdSet> {
    IdSet::parse(s).map_err(|e| anyhow::anyhow!("--{what}: {e}"))
}

fn partner_text(p: &admin::PartnerRow) -> String {
    format!(
        "{}  {}  client_id={}  permissions={}  clients={}  locations={}{}",
        p.partner_id,
        p.name,
        p.client_id,
        p.permissions
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(","),
        p.scope.clients,
        p.scope.locations,
        if p.disabled { "  DISABLED" } else { "" }
    )
}

fn credentials_text(c: &admin::Credentials) -> String {
    format!(
        "partnerID:     {}\nclient_id:     {}\nclient_secret: {}\n(the secret is shown only now; store it safely)",
        c.partner_id, c.client_id, c.client_secret
    )
}

/// Runs an admin command.
pub async fn run(cfg: &Config, a: Admin) -> anyhow::Result<()> {
    let pool = platform::db::pool(&cfg.database_url, &cfg.write_schema, 2)?;
    let _probe = pool
        .get()
        .await
        .with_context(|| "cannot reach Postgres (LIS_DATABASE_URL); is the stack up?")?;
    let actor = operator();
    match a.what {
        What::Client { cmd } => match cmd {
            ClientCmd::Create { id, name } => {
                let created = admin::create_client(&pool, &actor, &id, &name).await?;
                println!(
                    "{}",
                    if created {
                        format!("client {id} created")
                    } else {
                        format!("client {id} already exists")
                    }
                );
            }
            ClientCmd::List { json } => {
                let rows = admin::list_clients(&pool).await?;
                print(json, &rows, |rows| {
                    rows.iter()
                        .map(|c| format!("{}  {}", c.client_id, c.name))
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            }
        },
        What::Location { cmd } => match cmd {
            LocationCmd::Create { id, client, name } => {
                let created = admin::create_location(&pool, &actor, &id, &client, &name).await?;
                println!(
                    "{}",
                    if created {
                        format!("location {id} created")
                    } else {
                        format!("location {id} already exists")
                    }
                );
            }
            LocationCmd::List { json } => {
                let rows = admin::list_locations(&pool).await?;
                print(json, &rows, |rows| {
                    rows.iter()
                        .map(|l| format!("{}  client={}  {}", l.location_id, l.client_id, l.name))
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            }
        },
        What::Catalog { cmd } => match cmd {
            CatalogCmd::List { json } => {
                let tests = admin::list_catalog(&pool).await?;
                print(json, &tests, |tests| {
                    tests
                        .iter()
                        .map(|t| {
                            let analytes: Vec<&str> =
                                t.analytes.iter().map(|a| a.code.as_str()).collect();
                            format!(
                                "{:<8} {}  ({}; {})",
                                t.code,
                                t.name,
                                t.specimen_type,
                                analytes.join(", ")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            }
            CatalogCmd::Show { code, json } => {
                let test = admin::list_catalog(&pool)
                    .await?
                    .into_iter()
                    .find(|t| t.code == code)
                    .ok_or_else(|| anyhow::anyhow!("no catalog test {code}"))?;
                print(json, &test, |t| {
                    serde_json::to_string_pretty(t).expect("serializes")
                });
            }
            CatalogCmd::Define { file } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let def: domain::catalog::CatalogTest = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a test definition", file.display()))?;
                let code = def.code.clone();
                let outcome = admin::define_catalog_test(&pool, &actor, def).await?;
                println!(
                    "catalog test {code}: {}",
                    serde_json::to_value(outcome)?.as_str().unwrap_or("")
                );
            }
            CatalogCmd::Seed => {
                let added = admin::seed_catalog(&pool, &actor).await?;
                println!("{added} catalog tests added");
            }
        },
        What::TokenKey { cmd } => match cmd {
            TokenKeyCmd::Rotate => {
                let mut db = pool.get().await?;
                let key = platform::token::rotate(&mut db, &cfg.token_key_file).await?;
                println!(
                    "token signing key {} published and written to {}; the previous keys verify their tokens until they expire",
                    key.kid(),
                    cfg.token_key_file.display()
                );
            }
            TokenKeyCmd::List => {
                let keys = platform::token::published(&**pool.get().await?, cfg.token_ttl).await?;
                for k in keys {
                    println!("{}", k.kid());
                }
            }
        },
        What::Account { cmd } => {
            use command_handler::accounts::{AccountError, AccountKey, ChangeAccount};
            let (email, action) = cmd.parts();
            let change = ChangeAccount {
                key: AccountKey::Login(email),
                action,
            };
            match command_handler::pipeline::run(&pool, &actor, &change).await {
                Ok(account) => println!("account {}: {}", account.id, account.status.as_str()),
                Err(AccountError::Unknown) => anyhow::bail!("no portal account has that login"),
                Err(AccountError::Rejected(domain::account::AccountRejection::Status(s))) => {
                    anyhow::bail!("the account is {}: nothing to {action:?}", s.as_str())
                }
                Err(e) => return Err(e.into()),
            }
        }
        What::Partner { cmd } => match cmd {
            PartnerCmd::Create {
                name,
                permissions,
                clients,
                locations,
                json,
            } => {
                let permissions = parse_permissions(&permissions)?;
                let scope = Scope {
                    clients: id_set(&clients, "clients")?,
                    locations: id_set(&locations, "locations")?,
                };
                let creds = admin::create_partner(&pool, &actor, &name, permissions, scope).await?;
                print(json, &creds, credentials_text);
            }
            PartnerCmd::List { json } => {
                let rows = admin::list_partners(&pool).await?;
                print(json, &rows, |rows| {
                    rows.iter().map(partner_text).collect::<Vec<_>>().join("\n")
                });
            }
            PartnerCmd::Show { id, json } => {
                let p = admin::show_partner(&pool, id).await?;
                print(json, &p, partner_text);
            }
            PartnerCmd::Update {
                id,
                permissions,
                clients,
                locations,
                json,
            } => {
                let permissions = permissions.map(|p| parse_permissions(&p)).transpose()?;
                let clients = clients.map(|c| id_set(&c, "clients")).transpose()?;
                let locations = locations.map(|l| id_set(&l, "locations")).transpose()?;
                let p = admin::update_partner(&pool, &actor, id, permissions, clients, locations)
                    .await?;
                print(json, &p, partner_text);
            }
            PartnerCmd::RotateSecret { id, json } => {
                let creds = admin::rotate_secret(&pool, &actor, id).await?;
                print(json, &creds, credentials_text);
            }
            PartnerCmd::Disable { id, json } => {
                let p = admin::disable_partner(&pool, &actor, id).await?;
                print(json, &p, partner_text);
            }
        },
    }
    Ok(())
}
