//! Tenants, tiers and API-key verification.
//!
//! A tenant's API key is never stored: only its SHA-256 (hex). Verification
//! hashes the presented key and compares in constant time.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Billing tier, which sets default retention and rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Paid,
    Enterprise,
}

impl Tier {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Paid => "paid",
            Tier::Enterprise => "enterprise",
        }
    }

    /// Retention when the tenant sets none: free 1 day, paid 90 days,
    /// enterprise 365 days.
    pub fn default_retention_days(self) -> u32 {
        match self {
            Tier::Free => 1,
            Tier::Paid => 90,
            Tier::Enterprise => 365,
        }
    }
}

/// A tenant as the edge needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub tier: Tier,
    pub retention_days: u32,
    /// SHA-256 of the API key.
    pub key_sha256: [u8; 32],
    pub disabled: bool,
    /// Events per second allowed; `0` means no limit.
    pub rate_limit_eps: u32,
}

/// SHA-256 of an API key, as lowercase hex (what config files store).
pub fn hash_key_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Tenant {
    /// Whether `key` is this tenant's API key (constant-time compare of hashes).
    pub fn verify_key(&self, key: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        digest.ct_eq(&self.key_sha256).into()
    }
}

/// Tenants by id.
#[derive(Debug, Default, Clone)]
pub struct TenantRegistry {
    by_id: HashMap<Uuid, Tenant>,
}

/// The outcome of authenticating a request.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header, or not `Bearer <tenant_id>:<api_key>`.
    Malformed,
    /// Unknown tenant or wrong key (deliberately not told apart).
    BadCredentials,
    /// The tenant exists and the key matches, but the tenant is disabled.
    Disabled,
}

impl TenantRegistry {
    /// Builds a registry from tenants.
    pub fn new(tenants: impl IntoIterator<Item = Tenant>) -> Self {
        Self {
            by_id: tenants.into_iter().map(|t| (t.id, t)).collect(),
        }
    }

    /// Number of tenants.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are no tenants.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Looks a tenant up by id.
    pub fn get(&self, id: &Uuid) -> Option<&Tenant> {
        self.by_id.get(id)
    }

    /// Authenticates an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<&Tenant, AuthError> {
        let header = header.ok_or(AuthError::Malformed)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
        let (scheme, cred) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let (id, key) = cred.trim().split_once(':').ok_or(AuthError::Malformed)?;
        let id = Uuid::try_parse(id).map_err(|_| AuthError::Malformed)?;
        let tenant = self.by_id.get(&id).ok_or(AuthError::BadCredentials)?;
        if !tenant.verify_key(key) {
            return Err(AuthError::BadCredentials);
        }
        if tenant.disabled {
            return Err(AuthError::Disabled);
        }
        Ok(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(disabled: bool) -> Tenant {
        let mut key_sha256 = [0u8; 32];
        hex::decode_to_slice(hash_key_hex("secret"), &mut key_sha256).unwrap();
        Tenant {
            id: Uuid::nil(),
            name: "dev".into(),
            tier: Tier::Enterprise,
            retention_days: 3650,
            key_sha256,
            disabled,
            rate_limit_eps: 0,
        }
    }

    #[test]
    fn known_hash_of_secret() {
        assert_eq!(
            hash_key_hex("secret"),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }

    #[test]
    fn authenticates() {
        let reg = TenantRegistry::new([tenant(false)]);
        let nil = "00000000-0000-0000-0000-000000000000";
        let ok = format!("Bearer {nil}:secret");
        assert_eq!(reg.authenticate(Some(ok.as_bytes())).unwrap().name, "dev");
        let wrong = format!("Bearer {nil}:nope");
        assert_eq!(
            reg.authenticate(Some(wrong.as_bytes())),
            Err(AuthError::BadCredentials)
        );
        let other = "Bearer 11111111-1111-1111-1111-111111111111:secret";
        assert_eq!(
            reg.authenticate(Some(other.as_bytes())),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(reg.authenticate(None), Err(AuthError::Malformed));
        assert_eq!(
            reg.authenticate(Some(b"Basic abc")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            reg.authenticate(Some(b"Bearer nocolon")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            reg.authenticate(Some(b"Bearer x:y")),
            Err(AuthError::Malformed)
        );
        let reg = TenantRegistry::new([tenant(true)]);
        assert_eq!(
            reg.authenticate(Some(ok.as_bytes())),
            Err(AuthError::Disabled)
        );
    }
}
