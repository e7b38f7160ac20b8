//! Tenants, tiers, keys with roles, and request authentication.
//!
//! A tenant holds one or more keys of two kinds: **write keys** (`pk_…`,
//! public, ingest only, embedded in web pages) and **secret keys** (`sk_…`,
//! server side: ingest and the read API). A key is never stored: only its
//! SHA-256. Verification hashes the presented key once and compares it with
//! every key of the tenant in constant time, so timing tells neither which
//! key matched nor how much of it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::origin::AllowedOrigins;

/// Reserved for the sink's insert receipts in ClickHouse (a row per insert
/// that says it landed): no tenant may have this id.
pub const RECEIPT_TENANT_ID: Uuid = Uuid::from_u128(u128::MAX);

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

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Public (`pk_`): ingest only; may travel in a URL.
    Write,
    /// Server side (`sk_`): ingest and reads; never in a URL.
    Secret,
}

impl KeyKind {
    /// Lowercase name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Write => "write",
            KeyKind::Secret => "secret",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "write" => Some(KeyKind::Write),
            "secret" => Some(KeyKind::Secret),
            _ => None,
        }
    }

    /// The prefix of generated keys of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Write => "pk_",
            KeyKind::Secret => "sk_",
        }
    }
}

/// One key of a tenant, as the edge checks it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub kind: KeyKind,
    pub sha256: [u8; 32],
}

/// Key hashes stay out of debug output and logs, like the keys.
impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("kind", &self.kind)
            .field("sha256", &"<redacted>")
            .finish()
    }
}

/// A tenant as the edge needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub tier: Tier,
    pub retention_days: u32,
    /// Every valid key; a revoked key is simply absent.
    pub keys: Vec<ApiKey>,
    /// Origins whose pages may send events; empty allows any.
    pub allowed_origins: AllowedOrigins,
    pub disabled: bool,
    /// Events per second allowed; `0` means no limit.
    pub rate_limit_eps: u32,
}

/// SHA-256 of an API key, as lowercase hex (what config files store).
pub fn hash_key_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Characters of a key kept to name it (`tenant keys`, `revoke-key`): the
/// kind's prefix and 8 hex digits, never enough to use it.
pub const KEY_LABEL_CHARS: usize = 11;

/// A new random key of `kind`: its prefix and 64 hex digits (244 random bits).
pub fn new_key(kind: KeyKind) -> String {
    format!(
        "{}{}{}",
        kind.prefix(),
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

/// The part of a key that names it.
pub fn key_label(key: &str) -> &str {
    engine_text::clip(key, KEY_LABEL_CHARS)
}

/// SHA-256 hex (64 characters) into bytes; `None` when malformed.
pub fn parse_key_hash(hex_str: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str.trim(), &mut out).ok()?;
    Some(out)
}

impl Tenant {
    /// The kind of `key` when it is one of this tenant's keys. Every key is
    /// compared (constant time each), whichever matches.
    pub fn verify_key(&self, key: &str) -> Option<KeyKind> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for k in &self.keys {
            if bool::from(digest.ct_eq(&k.sha256)) {
                found = Some(k.kind);
            }
        }
        found
    }
}

/// Tenants by id, and by the hash of each key.
#[derive(Debug, Default, Clone)]
pub struct TenantRegistry {
    by_id: HashMap<Uuid, Tenant>,
    /// Each key's SHA-256, to the tenant holding it; `None` for a hash two
    /// tenants hold (a configuration error: such a key names no tenant
    /// alone, so it only works with its tenant id).
    by_key: HashMap<[u8; 32], Option<(Uuid, KeyKind)>>,
}

/// Why a request is not authenticated.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials, or not `Bearer <tenant_id>:<key>` / `key=<tenant_id>:<key>`.
    Malformed,
    /// Unknown tenant or wrong key (deliberately not told apart).
    BadCredentials,
    /// A secret key in the query string: refused even though it is valid,
    /// so that callers learn before the key spreads through access logs.
    SecretInQuery,
    /// The tenant exists and the key matches, but the tenant is disabled.
    Disabled,
}

/// The credentials a request presents. Its debug output shows whether each
/// is there, never its text (a key).
#[derive(Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header value.
    pub header: Option<&'a [u8]>,
    /// The query string's `key` parameter, percent-decoded.
    pub query_key: Option<&'a str>,
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |present: bool| if present { "<redacted>" } else { "none" };
        f.debug_struct("Credentials")
            .field("header", &shown(self.header.is_some()))
            .field("query_key", &shown(self.query_key.is_some()))
            .finish()
    }
}

/// An authenticated request: its tenant and the kind of key it showed.
#[derive(Debug, PartialEq, Eq)]
pub struct Authenticated<'r> {
    pub tenant: &'r Tenant,
    pub kind: KeyKind,
}

/// `<tenant_id>:<key>`, split.
fn split_credential(cred: &str) -> Result<(Uuid, &str), AuthError> {
    let (id, key) = cred.trim().split_once(':').ok_or(AuthError::Malformed)?;
    let id = Uuid::try_parse(id).map_err(|_| AuthError::Malformed)?;
    Ok((id, key))
}

/// The credential of a `Bearer <tenant_id>:<key>` header.
fn bearer(header: &[u8]) -> Result<&str, AuthError> {
    let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
    let (scheme, cred) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    Ok(cred)
}

impl TenantRegistry {
    /// Builds a registry from tenants.
    pub fn new(tenants: impl IntoIterator<Item = Tenant>) -> Self {
        let by_id: HashMap<Uuid, Tenant> = tenants.into_iter().map(|t| (t.id, t)).collect();
        let mut by_key = HashMap::new();
        for t in by_id.values() {
            for k in &t.keys {
                by_key
                    .entry(k.sha256)
                    .and_modify(|e: &mut Option<(Uuid, KeyKind)>| {
                        if e.is_some_and(|(id, _)| id != t.id) {
                            *e = None;
                        }
                    })
                    .or_insert(Some((t.id, k.kind)));
            }
        }
        Self { by_id, by_key }
    }

    /// Authenticates a key that travels without its tenant id, as the
    /// Segment write key and the PostHog project key do: keys are unique
    /// random strings (`new_key`), so the key alone names its tenant,
    /// looked up by its hash. `<tenant_id>:<key>` works too. Only for
    /// public paths, so a valid secret key is refused (`SecretInQuery`: it
    /// travelled where anyone may read it).
    ///
    /// The lookup is by SHA-256, so its timing tells nothing of a key but
    /// what its hash already hides.
    pub fn authenticate_public_key(&self, key: &str) -> Result<Authenticated<'_>, AuthError> {
        let key = key.trim();
        let authed = if key.contains(':') {
            self.verify(key)?
        } else {
            let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            let (id, kind) = self
                .by_key
                .get(&digest)
                .copied()
                .flatten()
                .ok_or(AuthError::BadCredentials)?;
            let tenant = self.by_id.get(&id).ok_or(AuthError::BadCredentials)?;
            Authenticated { tenant, kind }
        };
        if authed.kind == KeyKind::Secret {
            return Err(AuthError::SecretInQuery);
        }
        if authed.tenant.disabled {
            return Err(AuthError::Disabled);
        }
        Ok(authed)
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

    /// Every tenant, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Tenant> {
        self.by_id.values()
    }

    /// The tenant and kind of a `<tenant_id>:<key>` credential.
    fn verify(&self, cred: &str) -> Result<Authenticated<'_>, AuthError> {
        let (id, key) = split_credential(cred)?;
        let tenant = self.by_id.get(&id).ok_or(AuthError::BadCredentials)?;
        let kind = tenant.verify_key(key).ok_or(AuthError::BadCredentials)?;
        Ok(Authenticated { tenant, kind })
    }

    /// Authenticates a request. A `key` in the query string is checked
    /// whenever present, so a secret key there is always refused; otherwise
    /// the `Authorization` header wins, and the query's write key serves
    /// requests that cannot set headers (`navigator.sendBeacon`).
    pub fn authenticate(&self, creds: Credentials<'_>) -> Result<Authenticated<'_>, AuthError> {
        let from_query = creds.query_key.map(|q| self.verify(q));
        if let Some(Ok(a)) = &from_query {
            if a.kind == KeyKind::Secret {
                return Err(AuthError::SecretInQuery);
            }
        }
        let authed = match (creds.header, from_query) {
            (Some(h), _) => self.verify(bearer(h)?)?,
            (None, Some(q)) => q?,
            (None, None) => return Err(AuthError::Malformed),
        };
        if authed.tenant.disabled {
            return Err(AuthError::Disabled);
        }
        Ok(authed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIL: &str = "00000000-0000-0000-0000-000000000000";

    #[test]
    fn debug_output_never_shows_a_key_or_its_hash() {
        let header = format!("Bearer {NIL}:sk_topsecret");
        let creds = Credentials {
            header: Some(header.as_bytes()),
            query_key: Some("pk_alsosecret"),
        };
        let t = tenant(false);
        let hash = hash_key_hex("secret");
        // The hash as a derived Debug would print it: `[43, 187, …]`.
        let bytes = format!("{:?}", t.keys[0].sha256);
        let bytes = bytes.trim_start_matches('[').trim_end_matches(']');
        for shown in [
            format!("{creds:?}"),
            format!("{t:?}"),
            format!("{:#?}", t.keys),
        ] {
            for secret in [
                "sk_topsecret",
                "pk_alsosecret",
                hash.get(..16).unwrap(),
                bytes,
            ] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
        }
        assert!(format!("{creds:?}").contains("<redacted>"));
    }

    fn tenant(disabled: bool) -> Tenant {
        let key = |kind, k: &str| ApiKey {
            kind,
            sha256: parse_key_hash(&hash_key_hex(k)).unwrap(),
        };
        Tenant {
            id: Uuid::nil(),
            name: "dev".into(),
            tier: Tier::Enterprise,
            retention_days: 3650,
            keys: vec![
                key(KeyKind::Secret, "secret"),
                key(KeyKind::Write, "pk_dev"),
                key(KeyKind::Secret, "sk_two"),
            ],
            allowed_origins: AllowedOrigins::default(),
            disabled,
            rate_limit_eps: 0,
        }
    }

    fn header(reg: &TenantRegistry, h: &str) -> Result<KeyKind, AuthError> {
        reg.authenticate(Credentials {
            header: Some(h.as_bytes()),
            query_key: None,
        })
        .map(|a| a.kind)
    }

    fn query(reg: &TenantRegistry, q: &str, h: Option<&str>) -> Result<KeyKind, AuthError> {
        reg.authenticate(Credentials {
            header: h.map(str::as_bytes),
            query_key: Some(q),
        })
        .map(|a| a.kind)
    }

    #[test]
    fn new_keys() {
        let k = new_key(KeyKind::Write);
        assert!(k.starts_with("pk_") && k.len() == 67, "{k}");
        assert_ne!(k, new_key(KeyKind::Write));
        assert!(new_key(KeyKind::Secret).starts_with("sk_"));
        assert_eq!(key_label(&k), k.get(..11).unwrap());
    }

    #[test]
    fn known_hash_of_secret() {
        assert_eq!(
            hash_key_hex("secret"),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        assert!(parse_key_hash("zz").is_none());
    }

    #[test]
    fn header_takes_either_kind() {
        let reg = TenantRegistry::new([tenant(false)]);
        assert_eq!(
            header(&reg, &format!("Bearer {NIL}:secret")),
            Ok(KeyKind::Secret)
        );
        assert_eq!(
            header(&reg, &format!("bearer {NIL}:sk_two")),
            Ok(KeyKind::Secret)
        );
        assert_eq!(
            header(&reg, &format!("Bearer {NIL}:pk_dev")),
            Ok(KeyKind::Write)
        );
        assert_eq!(
            header(&reg, &format!("Bearer {NIL}:nope")),
            Err(AuthError::BadCredentials)
        );
        let other = "Bearer 11111111-1111-1111-1111-111111111111:secret";
        assert_eq!(header(&reg, other), Err(AuthError::BadCredentials));
        assert_eq!(
            reg.authenticate(Credentials::default()),
            Err(AuthError::Malformed)
        );
        for bad in ["Basic abc", "Bearer nocolon", "Bearer x:y"] {
            assert_eq!(header(&reg, bad), Err(AuthError::Malformed), "{bad}");
        }
        let reg = TenantRegistry::new([tenant(true)]);
        assert_eq!(
            header(&reg, &format!("Bearer {NIL}:secret")),
            Err(AuthError::Disabled)
        );
    }

    #[test]
    fn query_takes_write_keys_only() {
        let reg = TenantRegistry::new([tenant(false)]);
        assert_eq!(
            query(&reg, &format!("{NIL}:pk_dev"), None),
            Ok(KeyKind::Write)
        );
        assert_eq!(
            query(&reg, &format!("{NIL}:secret"), None),
            Err(AuthError::SecretInQuery)
        );
        // Refused even beside a valid header.
        let h = format!("Bearer {NIL}:pk_dev");
        assert_eq!(
            query(&reg, &format!("{NIL}:sk_two"), Some(&h)),
            Err(AuthError::SecretInQuery)
        );
        assert_eq!(
            query(&reg, &format!("{NIL}:wrong"), None),
            Err(AuthError::BadCredentials)
        );
        // The header decides when both are given and the query key is no secret.
        assert_eq!(
            query(
                &reg,
                &format!("{NIL}:wrong"),
                Some(&format!("Bearer {NIL}:secret"))
            ),
            Ok(KeyKind::Secret)
        );
        assert_eq!(query(&reg, "garbage", None), Err(AuthError::Malformed));
    }

    #[test]
    fn a_public_key_alone_names_its_tenant_and_a_shared_one_none() {
        let reg = TenantRegistry::new([tenant(false)]);
        let id = |r: Result<Authenticated<'_>, AuthError>| r.map(|a| (a.tenant.id, a.kind));
        assert_eq!(
            id(reg.authenticate_public_key(" pk_dev ")),
            Ok((Uuid::nil(), KeyKind::Write))
        );
        assert_eq!(
            id(reg.authenticate_public_key(&format!("{NIL}:pk_dev"))),
            Ok((Uuid::nil(), KeyKind::Write))
        );
        for secret in ["secret", "sk_two"] {
            assert_eq!(
                id(reg.authenticate_public_key(secret)),
                Err(AuthError::SecretInQuery)
            );
        }
        assert_eq!(
            id(reg.authenticate_public_key("pk_nope")),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            id(reg.authenticate_public_key("")),
            Err(AuthError::BadCredentials)
        );
        let off = TenantRegistry::new([tenant(true)]);
        assert_eq!(
            id(off.authenticate_public_key("pk_dev")),
            Err(AuthError::Disabled)
        );
        // Two tenants holding one key: it names neither alone.
        let mut other = tenant(false);
        other.id = Uuid::from_u128(7);
        let both = TenantRegistry::new([tenant(false), other]);
        assert_eq!(
            id(both.authenticate_public_key("pk_dev")),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            id(both.authenticate_public_key(&format!("{NIL}:pk_dev"))),
            Ok((Uuid::nil(), KeyKind::Write))
        );
    }
}
