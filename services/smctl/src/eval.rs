//! `smctl eval`: the platform's models and detectors scored on public benchmark data, with
//! the same code the agents run.

/// `smctl eval anomaly --nab DIR`.
#[derive(Debug, clap::Args)]
pub struct AnomalyArgs {
    /// A folder in NAB's layout: `data/<category>/<series>.csv` (or the CSVs anywhere below it)
    /// and `labels/combined_windows.json` (or `combined_windows.json` at its top).
    #[arg(long, value_name = "DIR")]
    pub nab: std::path::PathBuf,
}

pub fn anomaly(_args: AnomalyArgs) -> anyhow::Result<()> {
    anyhow::bail!("smctl eval anomaly is not built yet")
}
