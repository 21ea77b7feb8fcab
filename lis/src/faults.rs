//! `lis faults`: the fault suite.

use clap::Args;
use platform::config::Config;

/// `lis faults` options.
#[derive(Args, Debug)]
pub struct FaultArgs {
    /// The CI subset: a few faults, well inside the CI time limit.
    #[arg(long)]
    pub short: bool,
    /// Seed of the load generator and the fault schedule.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Runs the fault suite.
pub async fn run(_cfg: &Config, _args: FaultArgs) -> anyhow::Result<()> {
    anyhow::bail!("lis faults is not implemented yet")
}
