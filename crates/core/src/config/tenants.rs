//! Tenants defined in the config file (development and small installs):
//! `[[tenants]]` tables with their key hashes and allowed origins. Tenants
//! created with `ingestion-engine tenant create` live in ClickHouse instead.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{invalid, Config, ConfigError};
use crate::origin::AllowedOrigins;
use crate::tenant::{parse_key_hash, ApiKey, KeyKind, Tenant, Tier};

/// One hash or a list of them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum KeyHashes {
    One(String),
    Many(Vec<String>),
}

impl KeyHashes {
    fn iter(&self) -> impl Iterator<Item = &String> {
        match self {
            KeyHashes::One(h) => std::slice::from_ref(h).iter(),
            KeyHashes::Many(v) => v.iter(),
        }
    }

    fn mask(&mut self) {
        let masked = |h: &String| {
            let head: String = h.chars().take(8).collect();
            format!("{head}… (masked)")
        };
        *self = KeyHashes::Many(self.iter().map(masked).collect());
    }
}

/// A tenant defined in the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    pub name: String,
    pub tier: Tier,
    /// Defaults to the tier's retention.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// SHA-256 (hex) of one or more secret keys: ingest and the read API,
    /// server side only. `ingestion-engine hash-key KEY` prints a hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_sha256: Option<KeyHashes>,
    /// SHA-256 (hex) of one or more write keys: ingest only, safe to embed in
    /// web pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key_sha256: Option<KeyHashes>,
    /// The single key of configs written before key kinds; a secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_sha256: Option<String>,
    /// Origins whose pages may send events (`https://shop.example`,
    /// `https://*.shop.example`); empty allows any origin.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub disabled: bool,
    /// Overrides the tier's rate limit, in events per second (`0` = unlimited).
    #[serde(default)]
    pub rate_limit_eps: Option<u32>,
}

impl TenantConfig {
    /// Hides every key hash (for `check-config`).
    pub fn mask(&mut self) {
        for h in [&mut self.secret_key_sha256, &mut self.write_key_sha256]
            .into_iter()
            .flatten()
        {
            h.mask();
        }
        if let Some(h) = &mut self.api_key_sha256 {
            let head: String = h.chars().take(8).collect();
            *h = format!("{head}… (masked)");
        }
    }

    /// Every key, checked; errors name the field.
    fn keys(&self, i: usize) -> Result<Vec<ApiKey>, ConfigError> {
        let fields = [
            (
                "secret_key_sha256",
                KeyKind::Secret,
                &self.secret_key_sha256,
            ),
            ("write_key_sha256", KeyKind::Write, &self.write_key_sha256),
        ];
        let legacy = self
            .api_key_sha256
            .iter()
            .map(|h| ("api_key_sha256", KeyKind::Secret, h));
        let listed = fields.into_iter().flat_map(|(field, kind, h)| {
            h.iter()
                .flat_map(KeyHashes::iter)
                .map(move |h| (field, kind, h))
        });
        let keys = legacy
            .chain(listed)
            .map(|(field, kind, h)| {
                let sha256 = parse_key_hash(h).ok_or_else(|| {
                    invalid(
                        &format!("tenants[{i}].{field}"),
                        "must be 64 hex characters (see `ingestion-engine hash-key`)",
                    )
                })?;
                Ok(ApiKey { kind, sha256 })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        if keys.is_empty() {
            return Err(invalid(
                &format!("tenants[{i}].secret_key_sha256"),
                "a tenant needs at least one key (secret_key_sha256 or write_key_sha256)",
            ));
        }
        Ok(keys)
    }
}

impl Config {
    /// The tenants of the file, checked.
    pub fn tenants(&self) -> Result<Vec<Tenant>, ConfigError> {
        self.tenants
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let id = Uuid::try_parse(&t.id)
                    .map_err(|_| invalid(&format!("tenants[{i}].id"), "must be a UUID"))?;
                if id == crate::tenant::RECEIPT_TENANT_ID {
                    return Err(invalid(
                        &format!("tenants[{i}].id"),
                        "is reserved for the sink's insert receipts; pick another id",
                    ));
                }
                let retention_days = t.retention_days.unwrap_or(t.tier.default_retention_days());
                if retention_days == 0 {
                    return Err(invalid(
                        &format!("tenants[{i}].retention_days"),
                        "must be at least 1",
                    ));
                }
                let allowed_origins = AllowedOrigins::parse(&t.allowed_origins).map_err(|e| {
                    invalid(&format!("tenants[{i}].allowed_origins"), e.to_string())
                })?;
                Ok(Tenant {
                    id,
                    name: t.name.clone(),
                    tier: t.tier,
                    retention_days,
                    keys: t.keys(i)?,
                    allowed_origins,
                    disabled: t.disabled,
                    rate_limit_eps: t.rate_limit_eps.unwrap_or(self.tier_rate_limit(t.tier)),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = r#"
[[tenants]]
id = "00000000-0000-0000-0000-000000000000"
name = "dev"
tier = "enterprise"
retention_days = 3650
api_key_sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
"#;

    #[test]
    fn legacy_key_is_a_secret_key_and_masked() {
        let c = Config::load(Some(DEV), []).unwrap();
        let t = &c.tenants().unwrap()[0];
        assert_eq!(t.verify_key("secret"), Some(KeyKind::Secret));
        assert_eq!(t.retention_days, 3650);
        assert!(t.allowed_origins.is_any());
        assert_eq!(t.rate_limit_eps, c.rate_limits.enterprise_eps);
        let shown = c.to_masked_toml();
        assert!(
            !shown.contains("2bb80d537b1da3e38bd30361aa855686"),
            "{shown}"
        );
        let bad = DEV.replace("2bb80d", "zz");
        let err = Config::load(Some(&bad), []).unwrap_err();
        assert!(
            err.to_string().contains("tenants[0].api_key_sha256"),
            "{err}"
        );
    }

    #[test]
    fn key_kinds_lists_and_origins() {
        let pk = crate::tenant::hash_key_hex("pk_a");
        let pk2 = crate::tenant::hash_key_hex("pk_b");
        let sk = crate::tenant::hash_key_hex("sk_a");
        let file = format!(
            r#"
[[tenants]]
id = "00000000-0000-0000-0000-000000000001"
name = "shop"
tier = "paid"
secret_key_sha256 = "{sk}"
write_key_sha256 = ["{pk}", "{pk2}"]
allowed_origins = ["https://shop.example", "https://*.shop.example"]
"#
        );
        let c = Config::load(Some(&file), []).unwrap();
        let t = &c.tenants().unwrap()[0];
        assert_eq!(t.verify_key("sk_a"), Some(KeyKind::Secret));
        assert_eq!(t.verify_key("pk_b"), Some(KeyKind::Write));
        assert_eq!(t.verify_key("secret"), None);
        assert!(t.allowed_origins.allows(b"https://www.shop.example"));
        assert!(!t.allowed_origins.allows(b"https://evil.example"));
        let shown = c.to_masked_toml();
        assert!(
            !shown.contains(pk2.get(..20).unwrap()) && !shown.contains(sk.get(..20).unwrap()),
            "{shown}"
        );

        let err =
            Config::load(Some(&file.replace("https://shop.example\"", "shop\"")), []).unwrap_err();
        assert!(
            err.to_string().contains("tenants[0].allowed_origins"),
            "{err}"
        );
        let none = file
            .lines()
            .filter(|l| !l.contains("_key_sha256"))
            .collect::<Vec<_>>()
            .join("\n");
        let err = Config::load(Some(&none), []).unwrap_err();
        assert!(err.to_string().contains("at least one key"), "{err}");
    }
}
