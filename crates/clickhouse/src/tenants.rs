//! The tenant registry in ClickHouse: `overwatch.tenants`, a
//! `ReplacingMergeTree(revision)` where every change is a new row and the
//! highest revision wins (read with `FINAL`). A tenant's keys and allowed
//! origins are arrays in its row, so one revision holds its whole state. Keys
//! are never stored, only their SHA-256 and a label (prefix and 8 hex digits)
//! to name them by.

use std::time::{SystemTime, UNIX_EPOCH};

use engine_core::origin::AllowedOrigins;
use engine_core::tenant::{hash_key_hex, key_label, new_key, parse_key_hash, ApiKey, KeyKind};
use engine_core::{Tenant, Tier};
use uuid::Uuid;

use crate::native::{put_str, put_uuid, put_varuint, tier_code};
use crate::rowbinary::Rows;
use crate::transport::Client;
use crate::Error;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// The key's prefix and first hex digits (`pk_1a2b3c4d`).
    pub label: String,
    pub kind: KeyKind,
    pub sha256: String,
    /// Seconds since the Unix epoch.
    pub created_at: u32,
}

/// A tenant row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    pub id: Uuid,
    pub name: String,
    pub tier: Tier,
    pub retention_days: u32,
    /// A secret key from before key kinds; empty when none.
    pub legacy_key_sha256: String,
    pub keys: Vec<KeyRow>,
    pub allowed_origins: Vec<String>,
    /// `0`: the tier's default.
    pub rate_limit_eps: u32,
    pub disabled: bool,
}

/// The label shown for a legacy key.
pub const LEGACY_KEY_LABEL: &str = "(legacy api key)";

impl TenantRow {
    /// Every key: the legacy one first (as a secret key), then the listed.
    pub fn all_keys(&self) -> impl Iterator<Item = KeyRow> + '_ {
        let legacy = (!self.legacy_key_sha256.is_empty()).then(|| KeyRow {
            label: LEGACY_KEY_LABEL.into(),
            kind: KeyKind::Secret,
            sha256: self.legacy_key_sha256.clone(),
            created_at: 0,
        });
        legacy.into_iter().chain(self.keys.iter().cloned())
    }

    /// Adds a new key of `kind`; returns the key (shown once, never stored).
    pub fn add_key(&mut self, kind: KeyKind) -> String {
        let key = new_key(kind);
        self.keys.push(KeyRow {
            label: key_label(&key).to_string(),
            kind,
            sha256: hash_key_hex(&key),
            created_at: now_secs(),
        });
        key
    }

    /// Removes the keys whose label starts with `prefix` (the legacy key
    /// answers to its label); errors unless exactly one matches.
    pub fn revoke_key(&mut self, prefix: &str) -> Result<KeyRow, String> {
        if prefix.is_empty() {
            return Err("give the key's label (see `tenant keys`)".into());
        }
        let legacy = !self.legacy_key_sha256.is_empty() && LEGACY_KEY_LABEL.starts_with(prefix);
        let matching: Vec<usize> = self
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| k.label.starts_with(prefix))
            .map(|(i, _)| i)
            .collect();
        match (legacy, matching.as_slice()) {
            (true, []) => {
                let k = self.all_keys().next().ok_or("no legacy key")?;
                self.legacy_key_sha256.clear();
                Ok(k)
            }
            (false, [i]) => Ok(self.keys.remove(*i)),
            (false, []) => Err(format!(
                "no key of tenant {} starts with {prefix:?}",
                self.id
            )),
            _ => Err(format!(
                "more than one key of tenant {} starts with {prefix:?}; give more of it",
                self.id
            )),
        }
    }

    /// Revokes every key of `kind` (the legacy key counts as secret) and adds
    /// a new one; returns the new key.
    pub fn rotate_key(&mut self, kind: KeyKind) -> String {
        if kind == KeyKind::Secret {
            self.legacy_key_sha256.clear();
        }
        self.keys.retain(|k| k.kind != kind);
        self.add_key(kind)
    }
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
            "SELECT id, name, toString(tier), retention_days, api_key_sha256, rate_limit_eps, disabled, \
             key_label, key_kind, key_sha256, key_created_at, allowed_origins \
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
        let retention_days = u32::from(rows.u16()?);
        let legacy_key_sha256 = rows.string()?.to_string();
        let rate_limit_eps = rows.u32()?;
        let disabled = rows.u8()? != 0;
        let owned = |r: &mut Rows<'_>| r.string().map(str::to_string);
        let labels = rows.array_of(owned)?;
        let kinds = rows.array_of(owned)?;
        let hashes = rows.array_of(owned)?;
        let created = rows.array_of(Rows::u32)?;
        let allowed_origins = rows.array_of(owned)?;
        if [kinds.len(), hashes.len(), created.len()] != [labels.len(); 3] {
            return Err(Error::Protocol(format!(
                "tenant {id}: key arrays of different lengths"
            )));
        }
        let keys = labels
            .into_iter()
            .zip(kinds)
            .zip(hashes.into_iter().zip(created))
            .map(|((label, kind), (sha256, created_at))| {
                let kind = KeyKind::parse(&kind).ok_or_else(|| {
                    Error::Protocol(format!("tenant {id}: unknown key kind {kind:?}"))
                })?;
                Ok(KeyRow {
                    label,
                    kind,
                    sha256,
                    created_at,
                })
            })
            .collect::<Result<_, Error>>()?;
        out.push(TenantRow {
            id,
            name,
            tier,
            retention_days,
            legacy_key_sha256,
            keys,
            allowed_origins,
            rate_limit_eps,
            disabled,
        });
    }
    Ok(out)
}

/// One tenant by id.
pub fn get(client: &Client, db: &str, id: Uuid) -> Result<Option<TenantRow>, Error> {
    Ok(list(client, db)?.into_iter().find(|t| t.id == id))
}

fn now_secs() -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u32::try_from(now.as_secs()).unwrap_or(u32::MAX)
}

fn put_array<T>(row: &mut Vec<u8>, items: &[T], mut put: impl FnMut(&mut Vec<u8>, &T)) {
    put_varuint(row, items.len() as u64);
    for i in items {
        put(row, i);
    }
}

/// Writes a new revision of a tenant, as `RowBinary`: no quoting rules
/// between a name and what is stored.
pub fn put(client: &Client, db: &str, t: &TenantRow) -> Result<(), Error> {
    if t.id == crate::receipts::RECEIPT_TENANT {
        return Err(Error::Protocol(format!(
            "tenant id {} is reserved for the sink's insert receipts",
            t.id
        )));
    }
    let mut row = Vec::with_capacity(256 + t.name.len() + t.keys.len() * 96);
    put_uuid(&mut row, t.id.as_bytes());
    put_str(&mut row, &t.name);
    row.push(tier_code(t.tier) as u8);
    row.extend_from_slice(
        &u16::try_from(t.retention_days)
            .unwrap_or(u16::MAX)
            .to_le_bytes(),
    );
    put_str(&mut row, &t.legacy_key_sha256);
    row.extend_from_slice(&t.rate_limit_eps.to_le_bytes());
    row.push(u8::from(t.disabled));
    row.extend_from_slice(&now_secs().to_le_bytes());
    row.extend_from_slice(&revision().to_le_bytes());
    put_array(&mut row, &t.keys, |r, k| put_str(r, &k.label));
    put_array(&mut row, &t.keys, |r, k| put_str(r, k.kind.as_str()));
    put_array(&mut row, &t.keys, |r, k| put_str(r, &k.sha256));
    put_array(&mut row, &t.keys, |r, k| {
        r.extend_from_slice(&k.created_at.to_le_bytes())
    });
    put_array(&mut row, &t.allowed_origins, |r, o| put_str(r, o));
    client.query_with_body(
        &format!(
            "INSERT INTO {db}.tenants (id, name, tier, retention_days, api_key_sha256, rate_limit_eps, disabled, \
             updated_at, revision, key_label, key_kind, key_sha256, key_created_at, allowed_origins) FORMAT RowBinary"
        ),
        &row,
    )?;
    Ok(())
}

/// Creates a tenant with one write key and one secret key; returns it and
/// the keys `(write, secret)` (shown once, never stored).
pub fn create(
    client: &Client,
    db: &str,
    name: &str,
    tier: Tier,
    retention_days: Option<u32>,
    rate_limit_eps: Option<u32>,
) -> Result<(TenantRow, String, String), Error> {
    let mut row = TenantRow {
        id: Uuid::new_v4(),
        name: name.to_string(),
        tier,
        retention_days: retention_days.unwrap_or(tier.default_retention_days()),
        legacy_key_sha256: String::new(),
        keys: Vec::new(),
        allowed_origins: Vec::new(),
        rate_limit_eps: rate_limit_eps.unwrap_or(0),
        disabled: false,
    };
    let write = row.add_key(KeyKind::Write);
    let secret = row.add_key(KeyKind::Secret);
    put(client, db, &row)?;
    Ok((row, write, secret))
}

/// Why a stored row cannot serve requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("key {0} has a malformed hash")]
    KeyHash(String),
    #[error("{0}")]
    Origin(#[from] engine_core::origin::OriginError),
}

/// Converts a stored row into the edge's tenant; `tier_default_eps` gives the
/// rate limit of a tier when the row sets none.
pub fn to_tenant(
    row: &TenantRow,
    tier_default_eps: impl Fn(Tier) -> u32,
) -> Result<Tenant, RowError> {
    let keys = row
        .all_keys()
        .map(|k| match parse_key_hash(&k.sha256) {
            Some(sha256) => Ok(ApiKey {
                kind: k.kind,
                sha256,
            }),
            None => Err(RowError::KeyHash(k.label)),
        })
        .collect::<Result<_, _>>()?;
    Ok(Tenant {
        id: row.id,
        name: row.name.clone(),
        tier: row.tier,
        retention_days: row.retention_days,
        keys,
        allowed_origins: AllowedOrigins::parse(&row.allowed_origins)?,
        disabled: row.disabled,
        rate_limit_eps: if row.rate_limit_eps > 0 {
            row.rate_limit_eps
        } else {
            tier_default_eps(row.tier)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> TenantRow {
        TenantRow {
            id: Uuid::nil(),
            name: "dev".into(),
            tier: Tier::Free,
            retention_days: 1,
            legacy_key_sha256: hash_key_hex("secret"),
            keys: Vec::new(),
            allowed_origins: vec!["https://*.shop.example".into()],
            rate_limit_eps: 0,
            disabled: false,
        }
    }

    #[test]
    fn keys_add_revoke_rotate() {
        let mut r = row();
        let pk = r.add_key(KeyKind::Write);
        let sk = r.add_key(KeyKind::Secret);
        let t = to_tenant(&r, |_| 77).unwrap();
        assert_eq!(t.verify_key("secret"), Some(KeyKind::Secret));
        assert_eq!(t.verify_key(&pk), Some(KeyKind::Write));
        assert_eq!(t.verify_key(&sk), Some(KeyKind::Secret));
        assert_eq!(t.rate_limit_eps, 77);
        assert!(t.allowed_origins.allows(b"https://a.shop.example"));

        assert!(r.revoke_key("pk_").is_ok(), "one write key");
        assert!(r.revoke_key("pk_").is_err(), "none left");
        assert!(r.revoke_key("").is_err());
        let legacy = r.revoke_key("(legacy").unwrap();
        assert_eq!(legacy.label, LEGACY_KEY_LABEL);
        let t = to_tenant(&r, |_| 0).unwrap();
        assert_eq!(t.verify_key("secret"), None);
        assert_eq!(t.verify_key(&sk), Some(KeyKind::Secret));

        r.legacy_key_sha256 = hash_key_hex("secret");
        let new = r.rotate_key(KeyKind::Secret);
        let t = to_tenant(&r, |_| 0).unwrap();
        assert_eq!(t.verify_key("secret"), None);
        assert_eq!(t.verify_key(&sk), None);
        assert_eq!(t.verify_key(&new), Some(KeyKind::Secret));
        assert_eq!(t.keys.len(), 1);
    }

    #[test]
    fn malformed_rows_are_errors() {
        let mut r = row();
        r.legacy_key_sha256 = "zz".into();
        assert!(matches!(to_tenant(&r, |_| 0), Err(RowError::KeyHash(_))));
        let mut r = row();
        r.allowed_origins = vec!["shop".into()];
        assert!(matches!(to_tenant(&r, |_| 0), Err(RowError::Origin(_))));
    }
}
