//! Who may ask now: the per-tenant rate ([`QUERIES_PER_SEC`], every request,
//! cached answers included) and the per-tenant share of the queue
//! ([`TENANT_QUEUE_SHARE`] queries queued or running at once), so that one
//! tenant can neither spin the service on cached answers nor fill the
//! queue the others wait in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

/// Requests a tenant may make per second (429 beyond), answered from the
/// cache or not.
pub const QUERIES_PER_SEC: u32 = 50;
/// Queries one tenant may have queued or running at once (429 beyond): an
/// eighth of [`crate::service::QUERY_QUEUE`], so a tenant's burst leaves
/// the queue to the others.
pub const TENANT_QUEUE_SHARE: usize = 8;
/// Tenants the rate table remembers before it forgets those not seen this
/// second.
const RATE_TENANTS: usize = 10_000;

/// A fixed one-second window per tenant.
#[derive(Debug, Default)]
pub struct Rate(Mutex<HashMap<Uuid, (u64, u32)>>);

impl Rate {
    /// Counts one request of `tenant` in `second`; false beyond the rate.
    pub fn admit(&self, tenant: Uuid, second: u64) -> bool {
        let Ok(mut rates) = self.0.lock() else {
            return false;
        };
        if rates.len() > RATE_TENANTS {
            rates.retain(|_, (s, _)| *s == second);
        }
        let (s, n) = rates.entry(tenant).or_insert((second, 0));
        if *s != second {
            *s = second;
            *n = 0;
        }
        *n = n.saturating_add(1);
        *n <= QUERIES_PER_SEC
    }
}

/// Queries queued or running, per tenant.
#[derive(Debug, Default)]
pub struct Shares(Mutex<HashMap<Uuid, usize>>);

/// One of a tenant's [`TENANT_QUEUE_SHARE`] places; given back when dropped
/// (the query answered, or never queued).
#[derive(Debug)]
pub struct Slot {
    tenant: Uuid,
    shares: Arc<Shares>,
}

impl Shares {
    /// A place for a query of `tenant`, unless it holds its share already.
    pub fn take(self: &Arc<Self>, tenant: Uuid) -> Option<Slot> {
        let mut held = self.0.lock().ok()?;
        let n = held.entry(tenant).or_insert(0);
        if *n >= TENANT_QUEUE_SHARE {
            return None;
        }
        *n += 1;
        Some(Slot {
            tenant,
            shares: self.clone(),
        })
    }

    /// Places `tenant` holds now.
    pub fn held(&self, tenant: Uuid) -> usize {
        self.0
            .lock()
            .map_or(0, |h| h.get(&tenant).copied().unwrap_or(0))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut held) = self.shares.0.lock() {
            if let Some(n) = held.get_mut(&self.tenant) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    held.remove(&self.tenant);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_per_tenant_and_second() {
        let r = Rate::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let admitted = (0..QUERIES_PER_SEC + 10).filter(|_| r.admit(a, 7)).count();
        assert_eq!(admitted, QUERIES_PER_SEC as usize);
        assert!(r.admit(b, 7), "another tenant has its own rate");
        assert!(r.admit(a, 8), "a new second");
    }

    #[test]
    fn a_tenant_holds_at_most_its_share_and_gets_it_back() {
        let s = Arc::new(Shares::default());
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let slots: Vec<Slot> = (0..TENANT_QUEUE_SHARE)
            .map(|_| s.take(a).unwrap())
            .collect();
        assert!(s.take(a).is_none());
        assert!(s.take(b).is_some(), "the others are not held up");
        drop(slots);
        assert_eq!(s.held(a), 0);
        assert!(
            s.0.lock().unwrap().is_empty(),
            "no tenant is remembered idle"
        );
        assert!(s.take(a).is_some());
    }
}
