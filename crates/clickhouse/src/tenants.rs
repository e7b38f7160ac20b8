//! The tenant registry in ClickHouse: `overwatch.tenants`, a
//! `ReplacingMergeTree(revision)` where every change is a new row and the
//! highest revision wins (read with `FINAL`). API keys are never stored, only
//! their SHA-256.

use std::time::{SystemTime, UNIX_EPOCH};

use engine_core::tenant::hash_key_hex;
use engine_core::{Tenant, Tier};
use uuid::Uuid;

use crate::native::{put_str, put_uuid, tier_code};
use crate::rowbinary::Rows;
use crate::transport::Client;
use crate::Error;

/// A tenant row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    pub id: Uuid,
    pub name: String,
    pub tier: Tier,
    pub retention_days: u32,
    pub api_key_sha256: String,
    /// `0`: the tier's default.
    pub rate_limit_eps: u32,
    pub disabled: bool,
}

fn parse_tier(s: &str) -> Option<Tier> {
    match s {
        "free" => Some(Tier::Free),
        "paid" => Some(Tier::Paid),
        "enterprise" => Some(Tier::Enterprise),
        _ => None,
    }
}

fn revision() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Most bytes read from the tenant registry (about 200 B per tenant).
const MAX_REGISTRY_BYTES: u64 = 256 << 20;

/// All tenants, latest revision of each. Read as `RowBinary`, so a name holds
/// any character without escaping rules to undo.
pub fn list(client: &Client, db: &str) -> Result<Vec<TenantRow>, Error> {
    let bytes = client.query_binary(
        &format!(
            "SELECT id, name, toString(tier), retention_days, api_key_sha256, rate_limit_eps, disabled \
             FROM {db}.tenants FINAL ORDER BY name FORMAT RowBinary"
        ),
        MAX_REGISTRY_BYTES,
    )?;
    let mut rows = Rows::new(&bytes);
    let mut out = Vec::new();
    while !rows.is_empty() {
        let id = Uuid::from_bytes(rows.uuid()?);
        let name = rows.string()?.to_string();
        let tier = rows.string()?;
        let tier = parse_tier(tier)
            .ok_or_else(|| Error::Protocol(format!("tenant {id}: unknown tier {tier:?}")))?;
        out.push(TenantRow {
            id,
            name,
            tier,
            retention_days: u32::from(rows.u16()?),
            api_key_sha256: rows.string()?.to_string(),
            rate_limit_eps: rows.u32()?,
            disabled: rows.u8()? != 0,
        });
    }
    Ok(out)
}

/// One tenant by id.
pub fn get(client: &Client, db: &str, id: Uuid) -> Result<Option<TenantRow>, Error> {
    Ok(list(client, db)?.into_iter().find(|t| t.id == id))
}

/// Writes a new revision of a tenant, as `RowBinary`: no quoting rules
/// between a name and what is stored.
pub fn put(client: &Client, db: &str, t: &TenantRow) -> Result<(), Error> {
    let mut row = Vec::with_capacity(128 + t.name.len());
    put_uuid(&mut row, t.id.as_bytes());
    put_str(&mut row, &t.name);
    row.push(tier_code(t.tier) as u8);
    row.extend_from_slice(
        &u16::try_from(t.retention_days)
            .unwrap_or(u16::MAX)
            .to_le_bytes(),
    );
    put_str(&mut row, &t.api_key_sha256);
    row.extend_from_slice(&t.rate_limit_eps.to_le_bytes());
    row.push(u8::from(t.disabled));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    row.extend_from_slice(
        &u32::try_from(now.as_secs())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    row.extend_from_slice(&revision().to_le_bytes());
    client.query_with_body(
        &format!(
            "INSERT INTO {db}.tenants (id, name, tier, retention_days, api_key_sha256, rate_limit_eps, disabled, updated_at, revision) FORMAT RowBinary"
        ),
        &row,
    )?;
    Ok(())
}

/// A new random API key (256 bits, hex).
pub fn new_api_key() -> String {
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    format!("ik_{}{}", a.simple(), b.simple())
}

/// Creates a tenant; returns it and its API key (shown once, never stored).
pub fn create(
    client: &Client,
    db: &str,
    name: &str,
    tier: Tier,
    retention_days: Option<u32>,
    rate_limit_eps: Option<u32>,
) -> Result<(TenantRow, String), Error> {
    let key = new_api_key();
    let row = TenantRow {
        id: Uuid::new_v4(),
        name: name.to_string(),
        tier,
        retention_days: retention_days.unwrap_or(tier.default_retention_days()),
        api_key_sha256: hash_key_hex(&key),
        rate_limit_eps: rate_limit_eps.unwrap_or(0),
        disabled: false,
    };
    put(client, db, &row)?;
    Ok((row, key))
}

/// Converts a stored row into the edge's tenant; `tier_default_eps` gives the
/// rate limit of a tier when the row sets none.
pub fn to_tenant(row: &TenantRow, tier_default_eps: impl Fn(Tier) -> u32) -> Option<Tenant> {
    let mut key_sha256 = [0u8; 32];
    hex_decode(&row.api_key_sha256, &mut key_sha256)?;
    Some(Tenant {
        id: row.id,
        name: row.name.clone(),
        tier: row.tier,
        retention_days: row.retention_days,
        key_sha256,
        disabled: row.disabled,
        rate_limit_eps: if row.rate_limit_eps > 0 {
            row.rate_limit_eps
        } else {
            tier_default_eps(row.tier)
        },
    })
}

fn hex_decode(s: &str, out: &mut [u8; 32]) -> Option<()> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_rows() {
        let k = new_api_key();
        assert_eq!(k.len(), 67);
        assert_ne!(k, new_api_key());
        let row = TenantRow {
            id: Uuid::nil(),
            name: "dev".into(),
            tier: Tier::Free,
            retention_days: 1,
            api_key_sha256: hash_key_hex("secret"),
            rate_limit_eps: 0,
            disabled: false,
        };
        let t = to_tenant(&row, |_| 77).unwrap();
        assert!(t.verify_key("secret"));
        assert_eq!(t.rate_limit_eps, 77);
    }
}
