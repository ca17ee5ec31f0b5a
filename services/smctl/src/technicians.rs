//! `smctl technicians apply FILE`: registers a roster's technicians on `sm.technicians.v1`
//! (compacted, key = technician id), one `TechnicianRegistered` each. The file is checked
//! whole first (skills, levels, shifts, time zones, leave), so a bad entry publishes nothing.
//! Like the asset registry, "latest wins": applying again replaces a technician's entry, and
//! `active = false` takes them off every plan.

use crate::assets::{publish_events, table};
use anyhow::Context;
use sm_domain::{AssetId, Envelope, TenantId, Timestamp, topics};
use sm_kafka::KafkaConfig;
use sm_workorders::roster::RosterFile;
use std::path::PathBuf;

/// `smctl technicians apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Roster file (TOML), e.g. deploy/catalog/technicians.toml.
    pub file: PathBuf,
    /// Tenant the technicians work for.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Who applies the roster (recorded on every entry).
    #[arg(long, env = "SM_PRINCIPAL", default_value = "user:smctl")]
    pub principal: String,
    /// Validate the file and print the table without publishing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn apply(config: &KafkaConfig, args: ApplyArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let registrations = RosterFile::parse(&text)
        .and_then(|roster| roster.registrations(&args.principal))
        .with_context(|| format!("roster {}", args.file.display()))?;
    let rows: Vec<[String; 6]> = registrations
        .iter()
        .map(|t| {
            let skills: Vec<String> = t.skills.iter().map(|s| format!("{} {}", s.skill, s.level)).collect();
            [
                t.technician_id.clone(),
                t.site.clone(),
                t.time_zone.clone(),
                skills.join(", "),
                t.shifts.len().to_string(),
                t.leave.len().to_string(),
            ]
        })
        .collect();
    print!("{}", table(["TECHNICIAN", "SITE", "TIME ZONE", "SKILLS", "SHIFTS/WEEK", "LEAVE"], &rows));
    if args.dry_run {
        println!("{} technicians valid; nothing published (--dry-run)", registrations.len());
        return Ok(());
    }
    sm_kafka::ensure_topics(config, topics::ALL).await.context("creating topics")?;
    let tenant = TenantId(args.tenant.clone());
    let events = registrations.into_iter().map(|t| {
        let key = t.technician_id.clone();
        (key.clone(), Envelope::origin(tenant.clone(), AssetId(key), Timestamp::now(), "smctl", t))
    });
    let landed = publish_events(config, topics::TECHNICIANS, events).await?;
    println!("registered {} technicians on {} (tenant {})", landed.len(), topics::TECHNICIANS, args.tenant);
    Ok(())
}
