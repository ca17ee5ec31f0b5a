//! `smctl keys`: API keys through `KeyService` (admins), and `generate` for a bootstrap key.

use anyhow::Context;
use clap::{Args, Subcommand};
use sm_proto::KeyServiceClient;
use sm_proto::v1;

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Creates a key and prints it once (`smk_<id>_<secret>`): store it now.
    Create(CreateArgs),
    /// The tenant's keys, newest first (never their secrets).
    List(ListArgs),
    /// Refuses a key from now on (within seconds on every query instance).
    Revoke(RevokeArgs),
    /// Prints a new random key without storing it anywhere: a value for
    /// SM_AUTH__BOOTSTRAP_KEY (the query service's admin key of every tenant).
    Generate,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// What the key is for ("line 3 gateway").
    #[arg(long)]
    pub name: String,
    /// viewer, operator, planner, admin or service (repeat for several).
    #[arg(long = "role", required = true)]
    pub roles: Vec<String>,
    /// The key's tenant; only an admin of every tenant names one (`*`: every tenant).
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// When the key stops working (RFC 3339, e.g. 2027-01-01T00:00:00Z); default: never.
    #[arg(long)]
    pub expires: Option<String>,
    #[command(flatten)]
    pub endpoint: crate::query::Endpoint,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only for an admin of every tenant: one tenant's keys.
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Revoked keys too.
    #[arg(long)]
    pub include_revoked: bool,
    #[command(flatten)]
    pub endpoint: crate::query::Endpoint,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The key's id (the part after `smk_`, as `keys list` shows it).
    pub key_id: String,
    /// Why; recorded on the revocation.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub endpoint: crate::query::Endpoint,
}

pub async fn run(action: KeysAction) -> anyhow::Result<()> {
    match action {
        KeysAction::Generate => {
            println!("{}", sm_identity::ApiKey::generate().reveal());
            Ok(())
        }
        KeysAction::Create(args) => {
            let expires_at = match &args.expires {
                None => None,
                Some(text) => Some(sm_proto::convert::to_timestamp(
                    sm_domain::rfc3339::parse(text)
                        .map_err(|e| anyhow::anyhow!("--expires {text}: {e}; use RFC 3339 (2027-01-01T00:00:00Z)"))?,
                )),
            };
            let mut client = KeyServiceClient::new(args.endpoint.channel().await?);
            let created = client
                .create_key(v1::CreateKeyRequest {
                    name: args.name,
                    roles: args.roles,
                    tenant_id: args.tenant,
                    expires_at,
                })
                .await
                .context("CreateKey")?
                .into_inner();
            let key = created.key.unwrap_or_default();
            eprintln!(
                "key {} of tenant {} ({}): shown once, store it now",
                key.key_id,
                key.tenant_id,
                key.roles.join(", ")
            );
            println!("{}", created.api_key);
            Ok(())
        }
        KeysAction::List(args) => {
            let mut client = KeyServiceClient::new(args.endpoint.channel().await?);
            let listed = client
                .list_keys(v1::ListKeysRequest { tenant_id: args.tenant, include_revoked: args.include_revoked })
                .await
                .context("ListKeys")?
                .into_inner();
            let time = |t: &Option<prost_types::Timestamp>| {
                t.as_ref()
                    .and_then(sm_proto::convert::from_timestamp)
                    .map(sm_domain::rfc3339::format)
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "{:<17} {:<12} {:<20} {:<24} {:<27} {:<27} revoked",
                "key_id", "tenant", "roles", "name", "created", "expires"
            );
            for k in &listed.keys {
                println!(
                    "{:<17} {:<12} {:<20} {:<24} {:<27} {:<27} {}",
                    k.key_id,
                    k.tenant_id,
                    k.roles.join(","),
                    k.name,
                    time(&k.created_at),
                    time(&k.expires_at),
                    time(&k.revoked_at)
                );
            }
            Ok(())
        }
        KeysAction::Revoke(args) => {
            let mut client = KeyServiceClient::new(args.endpoint.channel().await?);
            let revoked = client
                .revoke_key(v1::RevokeKeyRequest { key_id: args.key_id.clone(), reason: args.reason })
                .await
                .context("RevokeKey")?
                .into_inner();
            println!("revoked {} (event {})", args.key_id, revoked.event_id);
            Ok(())
        }
    }
}
