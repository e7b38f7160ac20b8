//! Tenants stored in ClickHouse: the `tenant` commands, and the edge's
//! refresh thread that reloads them live.
//!
//! Every command writes a whole new revision of the tenant's row (keys and
//! origins included); the edge picks it up within
//! `clickhouse.tenants_refresh_ms`. Keys are printed once, when made, as
//! `write_key: pk_…` / `secret_key: sk_…` lines that scripts can parse.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use clickhouse_client::tenants::{self, TenantRow};
use engine_core::config::Config;
use engine_core::origin::AllowedOrigins;
use engine_core::{KeyKind, Tier};
use tracing::{info, warn};

/// The long help's end of each `tenant` command: an example and the docs.
/// `ID` is the tenant's UUID (`tenant create` prints it, `tenant list` lists it).
const CREATE_HELP: &str = "\
Examples:
  ingestion-engine --config /etc/ingestion-engine/config.toml tenant create --name shop --tier paid
  ingestion-engine tenant create --name acme --tier enterprise --retention-days 730 --rate-limit-eps 50000

Docs: docs/tenants-and-keys.md (\"Managing tenants and keys\")";

const LIST_HELP: &str = "\
Example:
  ingestion-engine --config /etc/ingestion-engine/config.toml tenant list

Docs: docs/tenants-and-keys.md (\"Managing tenants and keys\")";

const DISABLE_HELP: &str = "\
Example:
  ingestion-engine tenant disable 6f1c2b9e-0d4a-4e8b-9c3f-1a2b3c4d5e6f

Docs: docs/tenants-and-keys.md (\"Managing tenants and keys\")";

const ENABLE_HELP: &str = "\
Example:
  ingestion-engine tenant enable 6f1c2b9e-0d4a-4e8b-9c3f-1a2b3c4d5e6f

Docs: docs/tenants-and-keys.md (\"Managing tenants and keys\")";

const KEYS_HELP: &str = "\
Example:
  ingestion-engine tenant keys 6f1c2b9e-0d4a-4e8b-9c3f-1a2b3c4d5e6f

Docs: docs/tenants-and-keys.md (\"Rotating or revoking a key\")";

const ADD_KEY_HELP: &str = "\
Example:
  ingestion-engine tenant add-key 6f1c2b9e-0d4a-4e8b-9c3f-1a2b3c4d5e6f --kind write

Docs: docs/tenants-and-keys.md (\"Rotating or revoking a key\")";

const REVOKE_KEY_HELP: &str = "\
Example:
  ingestion-engine tenant revoke-key 6f1c2b9e-0d4a-4e8b-9c3f-1a2b3c4d5e6f pk_1a2b3c4d

Docs: docs/tenants-and-keys.md (\"Rotating or revoking a key\")";

const ROTATE_KEY_HELP: &str = "\
Examples:
  ingestion-engine tenant rotate-key 6f1c2b9e-0d4a-4e8b-9c3f-1a2b3c4d5e6f
  ingestion-engine tenant rotate-key 6f1c2b9e-0d4a-4e8b-9c3f-1a2b3c4d5e6f --kind write

Docs: docs/tenants-and-keys.md (\"Rotating or revoking a key\")";

const SET_ORIGINS_HELP: &str = "\
Examples:
  ingestion-engine tenant set-origins 6f1c2b9e-0d4a-4e8b-9c3f-1a2b3c4d5e6f https://shop.example 'https://*.shop.example'
  ingestion-engine tenant set-origins 6f1c2b9e-0d4a-4e8b-9c3f-1a2b3c4d5e6f   # none: any origin

Docs: docs/tenants-and-keys.md (\"Allowed origins\")";

#[derive(Subcommand)]
pub enum TenantAction {
    /// Create a tenant; prints its id, a write key and a secret key, once.
    ///
    /// Only the keys' SHA-256 is stored: save them now.
    #[command(after_long_help = CREATE_HELP)]
    Create {
        /// The tenant's name, as `tenant list` shows it.
        #[arg(long)]
        name: String,
        /// free, paid or enterprise.
        #[arg(long)]
        tier: String,
        /// Default by tier: free 1, paid 90, enterprise 365.
        #[arg(long)]
        retention_days: Option<u32>,
        /// Events per second; default by tier.
        #[arg(long)]
        rate_limit_eps: Option<u32>,
    },
    /// List tenants: id, tier, retention, rate limit, state, key and origin
    /// counts, name (never keys).
    #[command(after_long_help = LIST_HELP)]
    List,
    /// Disable a tenant: its requests get 403.
    ///
    /// `tenant enable` undoes it.
    #[command(after_long_help = DISABLE_HELP)]
    Disable {
        /// The tenant's id (a UUID, as `tenant list` shows it).
        id: String,
    },
    /// Enable a disabled tenant again.
    #[command(after_long_help = ENABLE_HELP)]
    Enable {
        /// The tenant's id (a UUID, as `tenant list` shows it).
        id: String,
    },
    /// List a tenant's keys: label (prefix), kind and creation date, never the key.
    ///
    /// Also prints the tenant's allowed origins.
    #[command(after_long_help = KEYS_HELP)]
    Keys {
        /// The tenant's id (a UUID, as `tenant list` shows it).
        id: String,
    },
    /// Add a key; prints it, once.
    ///
    /// The tenant's other keys keep working: add the new key, deploy it,
    /// then `tenant revoke-key` the old one.
    #[command(after_long_help = ADD_KEY_HELP)]
    AddKey {
        /// The tenant's id (a UUID, as `tenant list` shows it).
        id: String,
        #[arg(long, value_enum)]
        kind: Kind,
    },
    /// Revoke the key whose label starts with PREFIX (see `tenant keys`).
    #[command(after_long_help = REVOKE_KEY_HELP)]
    RevokeKey {
        /// The tenant's id (a UUID, as `tenant list` shows it).
        id: String,
        /// The start of the key's label, as `tenant keys` lists it (`pk_1a2b3c4d`).
        prefix: String,
    },
    /// Replace every key of a kind (default: secret) with one new key; prints it, once.
    ///
    /// Clients still sending an old key of that kind get 401 once the edges
    /// reloaded the tenant; `tenant add-key` then `tenant revoke-key`
    /// changes keys without that gap.
    #[command(after_long_help = ROTATE_KEY_HELP)]
    RotateKey {
        /// The tenant's id (a UUID, as `tenant list` shows it).
        id: String,
        #[arg(long, value_enum, default_value = "secret")]
        kind: Kind,
    },
    /// Set the origins whose pages may send events (`https://shop.example`,
    /// `https://*.shop.example`); none allows any origin.
    ///
    /// A request whose `Origin` matches no entry gets 403; requests without
    /// `Origin` (servers, curl) are not affected.
    #[command(after_long_help = SET_ORIGINS_HELP)]
    SetOrigins {
        /// The tenant's id (a UUID, as `tenant list` shows it).
        id: String,
        /// Exact origins or subdomain wildcards; none: any origin.
        origins: Vec<String>,
    },
}

/// A key kind on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// Public `pk_` key: ingest only, for web pages and apps.
    Write,
    /// Server-side `sk_` key: ingest and the read API.
    Secret,
}

impl From<Kind> for KeyKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Write => KeyKind::Write,
            Kind::Secret => KeyKind::Secret,
        }
    }
}

fn key_line(kind: KeyKind, key: &str) -> String {
    format!("{}_key: {key}", kind.as_str())
}

fn date(secs: u32) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::from(secs)).map_or_else(
        |_| "?".into(),
        |t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]Z"
            ))
            .unwrap_or_default()
        },
    )
}

/// Runs one `tenant` command against the registry in ClickHouse.
pub fn command(config: &Config, action: TenantAction) -> Result<()> {
    let ch = clickhouse_client::Client::from_config(&config.clickhouse, Duration::from_secs(30));
    let db = &config.clickhouse.database;
    clickhouse_client::schema::migrate_configured(&ch, &config.clickhouse, &|| false)
        .context("preparing the tenants table")?;
    let find = |id: &str| -> Result<TenantRow> {
        let id = uuid::Uuid::parse_str(id).context("tenant id must be a UUID")?;
        tenants::get(&ch, db, id)?.with_context(|| format!("no tenant {id}"))
    };
    let save = |t: &TenantRow| -> Result<()> { Ok(tenants::put(&ch, db, t)?) };
    match action {
        TenantAction::Create {
            name,
            tier,
            retention_days,
            rate_limit_eps,
        } => {
            let tier = match tier.as_str() {
                "free" => Tier::Free,
                "paid" => Tier::Paid,
                "enterprise" => Tier::Enterprise,
                other => anyhow::bail!("--tier must be free, paid or enterprise, not {other:?}"),
            };
            let (row, write, secret) =
                tenants::create(&ch, db, &name, tier, retention_days, rate_limit_eps)?;
            println!(
                "tenant_id: {}\n{}\n{}\n(the keys are shown only now; only their hashes are stored)",
                row.id,
                key_line(KeyKind::Write, &write),
                key_line(KeyKind::Secret, &secret)
            );
        }
        TenantAction::List => {
            println!(
                "{:<36}  {:<10}  {:>9}  {:>10}  {:<8}  {:>4}  {:<7}  name",
                "id", "tier", "retention", "rate_eps", "state", "keys", "origins"
            );
            for t in tenants::list(&ch, db)? {
                let rate = if t.rate_limit_eps > 0 {
                    t.rate_limit_eps
                } else {
                    config.tier_rate_limit(t.tier)
                };
                let state = if t.disabled { "disabled" } else { "active" };
                let origins = if t.allowed_origins.is_empty() {
                    "any".to_string()
                } else {
                    t.allowed_origins.len().to_string()
                };
                println!(
                    "{:<36}  {:<10}  {:>8}d  {:>10}  {:<8}  {:>4}  {:<7}  {}",
                    t.id,
                    t.tier.as_str(),
                    t.retention_days,
                    rate,
                    state,
                    t.all_keys().count(),
                    origins,
                    t.name
                );
            }
        }
        TenantAction::Disable { id } => {
            let mut t = find(&id)?;
            t.disabled = true;
            save(&t)?;
            println!("tenant {} disabled", t.id);
        }
        TenantAction::Enable { id } => {
            let mut t = find(&id)?;
            t.disabled = false;
            save(&t)?;
            println!("tenant {} enabled", t.id);
        }
        TenantAction::Keys { id } => {
            let t = find(&id)?;
            println!("{:<18}  {:<6}  created", "label", "kind");
            for k in t.all_keys() {
                let created = if k.created_at == 0 {
                    "-".to_string()
                } else {
                    date(k.created_at)
                };
                println!("{:<18}  {:<6}  {created}", k.label, k.kind.as_str());
            }
            if t.allowed_origins.is_empty() {
                println!("allowed origins: any");
            } else {
                println!("allowed origins: {}", t.allowed_origins.join(" "));
            }
        }
        TenantAction::AddKey { id, kind } => {
            let mut t = find(&id)?;
            let key = t.add_key(kind.into());
            save(&t)?;
            println!("tenant_id: {}\n{}", t.id, key_line(kind.into(), &key));
        }
        TenantAction::RevokeKey { id, prefix } => {
            let mut t = find(&id)?;
            let gone = t.revoke_key(&prefix).map_err(anyhow::Error::msg)?;
            save(&t)?;
            println!(
                "revoked {} key {} of tenant {}",
                gone.kind.as_str(),
                gone.label,
                t.id
            );
            if t.all_keys().next().is_none() {
                println!("warning: the tenant has no key left; add one with `tenant add-key`");
            }
        }
        TenantAction::RotateKey { id, kind } => {
            let mut t = find(&id)?;
            let key = t.rotate_key(kind.into());
            save(&t)?;
            println!(
                "tenant_id: {}\n{}\n(the tenant's other {} keys no longer work)",
                t.id,
                key_line(kind.into(), &key),
                KeyKind::from(kind).as_str()
            );
        }
        TenantAction::SetOrigins { id, origins } => {
            let parsed = AllowedOrigins::parse(&origins)?;
            let mut t = find(&id)?;
            t.allowed_origins = parsed.rules().iter().map(ToString::to_string).collect();
            save(&t)?;
            if parsed.is_any() {
                println!("tenant {}: any origin may send events", t.id);
            } else {
                println!(
                    "tenant {}: allowed origins {}",
                    t.id,
                    t.allowed_origins.join(" ")
                );
            }
        }
    }
    Ok(())
}

/// Reloads tenants from ClickHouse every `clickhouse.tenants_refresh_ms`,
/// or at once when a `SIGHUP` wakes it. The edge knows the config file's
/// tenants and the registry's rows; a row wins on the same id. While
/// ClickHouse cannot be reached, the last rows it gave are kept, so a reload
/// of the file still applies.
pub fn spawn_refresh(state: Arc<api::AppState>) -> Result<()> {
    let cfg = state.config.clone();
    let interval = cfg
        .clickhouse
        .tenants_refresh_ms
        .max(Duration::from_millis(100));
    let thread = std::thread::Builder::new()
        .name("tenant-refresh".into())
        .spawn({
            let state = state.clone();
            move || {
                let ch = clickhouse_client::Client::from_config(
                    &cfg.clickhouse,
                    Duration::from_secs(10),
                );
                let mut rows = Vec::new();
                let mut failing = false;
                loop {
                    match tenants::list(&ch, &cfg.clickhouse.database) {
                        Ok(r) => {
                            if failing {
                                info!(tenants = r.len(), "tenant registry reachable again");
                            }
                            rows = r;
                            failing = false;
                        }
                        Err(e) => {
                            if !failing {
                                warn!(%e, "cannot load tenants from ClickHouse; keeping the ones known");
                            }
                            failing = true;
                        }
                    }
                    let live = state.reloadable.load();
                    let mut all: std::collections::HashMap<uuid::Uuid, engine_core::Tenant> = live
                        .file_tenants
                        .iter()
                        .map(|t| (t.id, t.clone()))
                        .collect();
                    for row in &rows {
                        match tenants::to_tenant(row, |t| live.rate_limits.for_tier(t)) {
                            Ok(t) => {
                                all.insert(t.id, t);
                            }
                            Err(e) => warn!(tenant = %row.id, %e, "tenant row ignored"),
                        }
                    }
                    state.set_tenants(all.into_values().collect());
                    std::thread::park_timeout(interval);
                }
            }
        })?;
    let _ = state.tenant_refresh.set(thread.thread().clone());
    Ok(())
}
