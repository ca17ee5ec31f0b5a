//! `smctl readings` and `smctl latest`: the gRPC read API from a terminal, as tables.

use anyhow::Context;
use clap::Args;
use sm_domain::Timestamp;
use sm_proto::v1::{LatestRequest, ListReadingsRequest, Reading};

/// Where the query service listens.
#[derive(Debug, Args)]
pub struct Endpoint {
    /// gRPC address of the query service; https:// for a server with TLS.
    #[arg(long, env = "SM_QUERY_URL", default_value = "http://127.0.0.1:50051")]
    pub query_url: String,
    /// CA certificate(s), PEM, to trust for an https:// URL instead of the system's roots
    /// (the CA that signed the server's SM_QUERY__TLS__CERT_FILE).
    #[arg(long, env = "SM_QUERY_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<String>,
    /// Client certificate, PEM, for a server with mutual TLS (SM_QUERY__TLS__CLIENT_CA_FILE).
    #[arg(long, env = "SM_QUERY_CLIENT_CERT", value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<String>,
    /// The private key of --client-cert, PEM.
    #[arg(long, env = "SM_QUERY_CLIENT_KEY", value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<String>,
    /// API key (smk_...) to call with; the local stack's env file holds an admin key.
    #[arg(long, env = "SM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// OIDC bearer token to call with, instead of an API key.
    #[arg(long, env = "SM_TOKEN", hide_env_values = true, conflicts_with = "api_key")]
    pub token: Option<String>,
}

impl Endpoint {
    /// A channel to the query service whose every call carries the credentials.
    pub async fn channel(&self) -> anyhow::Result<sm_proto::auth::AuthChannel> {
        let credential = self.api_key.as_deref().or(self.token.as_deref()).unwrap_or_default();
        let credentials = sm_proto::auth::Credentials::bearer(credential)?;
        let client_identity = self.client_cert.as_deref().zip(self.client_key.as_deref());
        sm_proto::auth::connect(&self.query_url, self.ca_file.as_deref(), client_identity, credentials)
            .await
            .with_context(|| format!("connecting to the query service at {} (SM_QUERY_URL)", self.query_url))
    }
}

/// `smctl readings`.
#[derive(Debug, Args)]
pub struct ReadingsArgs {
    /// Readings of this asset (all its sensors)...
    #[arg(long, conflicts_with = "sensor", required_unless_present = "sensor")]
    pub asset: Option<String>,
    /// ...or of this sensor.
    #[arg(long)]
    pub sensor: Option<String>,
    /// Only readings of the last this many seconds.
    #[arg(long, value_name = "SECS")]
    pub since_secs: Option<u64>,
    /// At most this many readings, newest first (paged through as needed).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

/// `smctl latest`.
#[derive(Debug, Args)]
pub struct LatestArgs {
    /// The asset whose sensors to show.
    #[arg(long)]
    pub asset: String,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

pub async fn readings(args: ReadingsArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.endpoint).await?;
    let start =
        args.since_secs.map(|s| sm_proto::convert::to_timestamp(Timestamp(Timestamp::now().0 - s as i64 * 1_000_000)));
    let mut rows = Vec::new();
    let mut token = String::new();
    while rows.len() < args.limit {
        let page = client
            .list_readings(ListReadingsRequest {
                asset_id: args.asset.clone().unwrap_or_default(),
                sensor_id: args.sensor.clone().unwrap_or_default(),
                start,
                end: None,
                page_size: (args.limit - rows.len()).min(1000) as i32,
                page_token: token,
            })
            .await
            .context("ListReadings")?
            .into_inner();
        rows.extend(page.readings);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    print_table(&rows);
    Ok(())
}

pub async fn latest(args: LatestArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.endpoint).await?;
    let latest = client.latest(LatestRequest { asset_id: args.asset.clone() }).await.context("Latest")?.into_inner();
    print_table(&latest.readings);
    Ok(())
}

pub async fn connect(
    endpoint: &Endpoint,
) -> anyhow::Result<sm_proto::ReadingServiceClient<sm_proto::auth::AuthChannel>> {
    Ok(sm_proto::ReadingServiceClient::new(endpoint.channel().await?))
}

/// One line per reading: event time, sensor, value and unit, flags.
pub fn print_table(rows: &[Reading]) {
    println!("{:<27} {:<36} {:>12} {:<6} flags", "occurred_at (UTC)", "sensor", "value", "unit");
    for r in rows {
        let at = r
            .occurred_at
            .as_ref()
            .and_then(sm_proto::convert::from_timestamp)
            .map(sm_domain::rfc3339::format)
            .unwrap_or_default();
        println!("{at:<27} {:<36} {:>12.3} {:<6} {}", r.sensor_id, r.value, r.unit, r.quality_flags.join(","));
    }
    println!("({} readings)", rows.len());
}
