//! `lis`: the operator's command line. See `lis --help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use lis::{admin_cli, up};

/// The LIS operator's command line.
#[derive(Parser)]
#[command(name = "lis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring up the whole local stack (broker, database, migrations, topics,
    /// services, demo partner) and print where it is.
    Up {
        /// API processes (command handler, query API and portal) serving
        /// the one base URL together; the other roles run once beside them.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
        replicas: u16,
    },
    /// Stop what `lis up` started, keeping the data.
    Down,
    /// Run services in the foreground (what `lis up` starts in the background).
    Serve {
        /// Roles: `all`, or a list of command-handler, query-api, relay,
        /// projector, mailer, analytics, portal.
        #[arg(long, default_value = "all")]
        roles: String,
        /// Share `LIS_HTTP_ADDR` with other `lis serve --share-port`
        /// processes (`SO_REUSEPORT`): the kernel spreads new connections
        /// over them, one base URL for all.
        #[arg(long)]
        share_port: bool,
    },
    /// Create the database, apply migrations and create the topics.
    Migrate,
    /// Manage clients, locations, partners and the test catalog.
    Admin(admin_cli::Admin),
    /// Rebuild every read model from offset 0 of the log beside the live
    /// ones, then switch readers to the new copy (`--drop-old` removes the
    /// copy they left).
    Replay(lis::replay::ReplayArgs),
    /// Check the event store against its signed hash chain and the log, and
    /// the read models against the log; print every difference.
    Verify(lis::verify::VerifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lis::main_of("lis", |cfg| async move {
        match cli.command {
            Command::Up { replicas } => up::up(&cfg, replicas.into()).await,
            Command::Down => up::down(&cfg),
            Command::Serve { roles, share_port } => up::serve(cfg, &roles, share_port).await,
            Command::Migrate => up::migrate(&cfg).await,
            Command::Admin(a) => admin_cli::run(&cfg, a).await,
            Command::Verify(a) => lis::verify::run(&cfg, a).await,
            Command::Replay(a) => lis::replay::run(&cfg, a).await,
        }
    })
}
