//! `smctl assets apply FILE`: registers a catalog's assets on the asset registry topic
//! (`sm.assets.v1`, compacted, key = asset id), one `AssetRegistered` per asset.
//!
//! Applying is idempotent in effect: the topic is compacted by asset id and the registry is
//! "latest wins", so applying the same file twice leaves the same registry (the events are
//! new, their content is not). Removing an asset from the file does not unregister it; there
//! is no such event yet.

use crate::catalog::{Catalog, Fleet};
use anyhow::Context;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sm_domain::{AssetId, Codec, Envelope, TenantId, Timestamp, topics};
use sm_kafka::KafkaConfig;
use std::path::PathBuf;
use std::time::Duration;

/// `smctl assets apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Catalog file (TOML), e.g. deploy/catalog/demo-fleet.toml.
    pub file: PathBuf,
    /// Tenant that owns the assets.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Validate the file and print the table without publishing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `producer` of registry events written by smctl.
const PRODUCER: &str = "smctl";

/// How long one registration may wait for the broker's acknowledgement.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where one asset's registration landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub asset_id: AssetId,
    pub partition: i32,
    pub offset: i64,
}

pub async fn apply(config: &KafkaConfig, args: ApplyArgs) -> anyhow::Result<()> {
    let catalog = Catalog::load(&args.file).with_context(|| format!("loading catalog {}", args.file.display()))?;
    let fleet = catalog.fleet().with_context(|| format!("catalog {}", args.file.display()))?;
    if args.dry_run {
        print_table(&fleet, &[]);
        println!("{} assets valid; nothing published (--dry-run)", fleet.assets.len());
        return Ok(());
    }
    sm_kafka::ensure_topics(config, topics::ALL).await.context("creating topics")?;
    let registered = register(config, &fleet, &TenantId(args.tenant.clone())).await?;
    print_table(&fleet, &registered);
    println!("registered {} assets on {} (tenant {})", registered.len(), topics::ASSETS, args.tenant);
    Ok(())
}

/// Publishes one `AssetRegistered` per asset of `fleet` and waits until the broker has
/// acknowledged every one.
pub async fn register(config: &KafkaConfig, fleet: &Fleet, tenant: &TenantId) -> anyhow::Result<Vec<Registered>> {
    let events = fleet.assets.iter().map(|asset| {
        let event =
            Envelope::origin(tenant.clone(), asset.id.clone(), Timestamp::now(), PRODUCER, asset.registration());
        (asset.id.to_string(), event)
    });
    let landed = publish_events(config, topics::ASSETS, events).await?;
    Ok(landed
        .into_iter()
        .map(|(key, partition, offset)| Registered { asset_id: AssetId(key), partition, offset })
        .collect())
}

/// Publishes `events` to `topic`, each keyed by its key, and waits until the broker has
/// acknowledged every one; returns where each landed (key, partition, offset). All are queued
/// before the first wait, so they travel together.
pub async fn publish_events<T: sm_domain::DomainEvent>(
    config: &KafkaConfig,
    topic: &str,
    events: impl IntoIterator<Item = (String, Envelope<T>)>,
) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let codec = Codec::embedded().context("loading schemas")?;
    let producer: FutureProducer = config.idempotent_producer_config().create().context("creating the producer")?;
    let mut pending = Vec::new();
    for (key, event) in events {
        let bytes = codec.encode(&event).with_context(|| format!("encoding the event of {key}"))?;
        let record = FutureRecord::to(topic).key(key.as_str()).payload(&bytes);
        let delivery = producer
            .send_result(record)
            .map_err(|(error, _)| error)
            .with_context(|| format!("queueing the event of {key}"))?;
        pending.push((key, delivery));
    }
    let mut landed = Vec::with_capacity(pending.len());
    for (key, delivery) in pending {
        let delivered = tokio::time::timeout(DELIVERY_TIMEOUT, delivery)
            .await
            .with_context(|| format!("no acknowledgement for {key} within {DELIVERY_TIMEOUT:?}: is the broker up?"))?
            .with_context(|| format!("the event of {key} was cancelled"))?
            .map_err(|(error, _)| error)
            .with_context(|| format!("publishing the event of {key} to {topic}"))?;
        landed.push((key, delivered.partition, delivered.offset));
    }
    Ok(landed)
}

/// One line per asset; partition and offset once published.
fn print_table(fleet: &Fleet, registered: &[Registered]) {
    let rows: Vec<[String; 6]> = fleet
        .assets
        .iter()
        .map(|asset| {
            let landed = registered.iter().find(|r| r.asset_id == asset.id);
            [
                asset.id.to_string(),
                asset.asset_type.clone(),
                asset.site.clone(),
                asset.sensors.len().to_string(),
                landed.map_or_else(|| "-".to_owned(), |r| r.partition.to_string()),
                landed.map_or_else(|| "-".to_owned(), |r| r.offset.to_string()),
            ]
        })
        .collect();
    print!("{}", table(["ASSET", "TYPE", "SITE", "SENSORS", "PARTITION", "OFFSET"], &rows));
}

/// Left-aligned text columns, numbers right-aligned, two spaces apart.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> =
        (0..N).map(|c| !rows.is_empty() && rows.iter().all(|r| r[c].parse::<f64>().is_ok() || r[c] == "-")).collect();
    let line = |cells: [&str; N]| {
        let formatted: Vec<String> =
            cells
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    if numeric[c] { format!("{cell:>w$}", w = widths[c]) } else { format!("{cell:<w$}", w = widths[c]) }
                })
                .collect();
        format!("{}\n", formatted.join("  ").trim_end())
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_text_left_and_numbers_right() {
        let rows = [
            ["pump-001".to_owned(), "5".to_owned(), "12".to_owned()],
            ["compressor-001".to_owned(), "4".to_owned(), "-".to_owned()],
        ];
        let text = table(["ASSET", "SENSORS", "OFFSET"], &rows);
        assert_eq!(
            text,
            "ASSET           SENSORS  OFFSET\n\
             pump-001              5      12\n\
             compressor-001        4       -\n"
        );
    }
}
