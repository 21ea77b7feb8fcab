//! `lis bench`: the benchmark suite (see BENCHMARKS.md).

use clap::Args;
use platform::config::Config;

/// `lis bench` options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A few minutes instead of the full tiers.
    #[arg(long)]
    pub quick: bool,
    /// Where to write the Markdown and JSON report.
    #[arg(long, default_value = "bench-report")]
    pub out: std::path::PathBuf,
}

/// Runs the benchmark suite.
pub async fn run(_cfg: &Config, _args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("lis bench is not implemented yet")
}
