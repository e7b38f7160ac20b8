//! Limits per client address (`[clients]`): open connections and requests
//! per second, over all shards, for abusive clients.
//!
//! One table shared by the shards, split into stripes by address so two
//! shards rarely take the same lock; nothing here runs unless a limit is set.
//! Memory is bounded: a stripe holds at most `max_tracked / STRIPES`
//! addresses, forgets idle ones when full, and serves an address it cannot
//! track unlimited rather than refusing it (the caller counts that).
//!
//! The client is the peer, unless the peer is a trusted proxy: then it is the
//! right-most address of `X-Forwarded-For` that is not itself a trusted
//! proxy (the addresses to its left were written by the client and prove
//! nothing).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use engine_core::config::ClientsConfig;

/// Stripes of the table (a power of two).
const STRIPES: usize = 64;
/// An address with no connection and no request for this long may be
/// forgotten when its stripe is full.
const IDLE_FORGET_MS: u64 = 2_000;

#[derive(Debug)]
struct Entry {
    conns: u32,
    /// Requests that may be sent now (a token bucket, one second's worth).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled_ms: u64,
    /// When the address last connected or sent a request.
    seen_ms: u64,
}

/// What became of a new connection.
#[derive(Debug)]
pub enum Connect {
    /// Served; the guard (when the address is tracked) counts it open.
    Admitted(Option<ClientConn>),
    /// The address holds its limit of connections.
    OverLimit,
    /// Served, but the table had no room to track the address.
    Untracked,
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Allowed,
    OverLimit,
    Untracked,
}

/// The per-client table.
#[derive(Debug)]
pub struct ClientTable {
    cfg: ClientsConfig,
    per_stripe: usize,
    stripes: Vec<Mutex<HashMap<IpAddr, Entry>>>,
    hasher: std::collections::hash_map::RandomState,
    epoch: Instant,
}

/// An open connection of a tracked address; closing it (drop) frees it.
#[derive(Debug)]
pub struct ClientConn {
    table: Arc<ClientTable>,
    ip: IpAddr,
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        let mut stripe = self.table.stripe(self.ip);
        if let Some(e) = stripe.get_mut(&self.ip) {
            e.conns = e.conns.saturating_sub(1);
        }
    }
}

impl ClientTable {
    pub fn new(cfg: ClientsConfig) -> Self {
        Self {
            per_stripe: cfg.max_tracked.div_ceil(STRIPES).max(1),
            cfg,
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// Whether any limit is set (nothing else here runs otherwise).
    pub fn enabled(&self) -> bool {
        self.cfg.enabled()
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.cfg.trusted_proxies.contains(&ip)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn stripe(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        let i = self.hasher.hash_one(ip) as usize & (STRIPES - 1);
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The request's client: `peer`, or what a trusted proxy says it is.
    pub fn client_of(&self, peer: IpAddr, forwarded_for: Option<&[u8]>) -> IpAddr {
        let Some(header) = forwarded_for.filter(|_| self.trusted(peer)) else {
            return peer;
        };
        let Ok(header) = std::str::from_utf8(header) else {
            return peer;
        };
        for part in header.rsplit(',') {
            let part = part.trim();
            let ip = part
                .parse::<IpAddr>()
                .ok()
                .or_else(|| part.parse::<SocketAddr>().ok().map(|s| s.ip()));
            match ip {
                Some(ip) if self.trusted(ip) => continue,
                Some(ip) => return ip,
                // A malformed hop: nothing to its left can be trusted.
                None => return peer,
            }
        }
        peer
    }

    /// Finds or makes `ip`'s entry; `None` when the stripe has no room.
    fn entry<'m>(
        &self,
        map: &'m mut HashMap<IpAddr, Entry>,
        ip: IpAddr,
        now: u64,
    ) -> Option<&'m mut Entry> {
        if !map.contains_key(&ip) {
            if map.len() >= self.per_stripe {
                map.retain(|_, e| e.conns > 0 || now.saturating_sub(e.seen_ms) < IDLE_FORGET_MS);
                if map.len() >= self.per_stripe {
                    return None;
                }
            }
            map.insert(
                ip,
                Entry {
                    conns: 0,
                    tokens: f64::from(self.cfg.max_requests_per_sec),
                    refilled_ms: now,
                    seen_ms: now,
                },
            );
        }
        map.get_mut(&ip)
    }

    /// A new connection from `peer`.
    pub fn connect(self: &Arc<Self>, peer: IpAddr) -> Connect {
        let max = self.cfg.max_connections;
        if max == 0 || self.trusted(peer) {
            return Connect::Admitted(None);
        }
        let now = self.now_ms();
        let mut stripe = self.stripe(peer);
        let Some(e) = self.entry(&mut stripe, peer, now) else {
            return Connect::Untracked;
        };
        if e.conns >= max {
            return Connect::OverLimit;
        }
        e.conns += 1;
        e.seen_ms = now;
        Connect::Admitted(Some(ClientConn {
            table: self.clone(),
            ip: peer,
        }))
    }

    /// A request from `client`.
    pub fn request(&self, client: IpAddr) -> Request {
        let rate = self.cfg.max_requests_per_sec;
        if rate == 0 {
            return Request::Allowed;
        }
        let now = self.now_ms();
        let mut stripe = self.stripe(client);
        let Some(e) = self.entry(&mut stripe, client, now) else {
            return Request::Untracked;
        };
        let rate = f64::from(rate);
        let elapsed = now.saturating_sub(e.refilled_ms) as f64 / 1000.0;
        e.tokens = (e.tokens + elapsed * rate).min(rate);
        e.refilled_ms = now;
        e.seen_ms = now;
        if e.tokens >= 1.0 {
            e.tokens -= 1.0;
            Request::Allowed
        } else {
            Request::OverLimit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(conns: u32, rps: u32, proxies: &[&str], tracked: usize) -> Arc<ClientTable> {
        Arc::new(ClientTable::new(ClientsConfig {
            max_connections: conns,
            max_requests_per_sec: rps,
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
            max_tracked: tracked,
        }))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_are_limited_per_address_and_freed_on_close() {
        let t = table(2, 0, &["10.0.0.1"], 1024);
        let a = t.connect(ip("192.0.2.1"));
        let b = t.connect(ip("192.0.2.1"));
        assert!(matches!(t.connect(ip("192.0.2.1")), Connect::OverLimit));
        assert!(matches!(
            t.connect(ip("192.0.2.2")),
            Connect::Admitted(Some(_))
        ));
        // A trusted proxy carries many clients: not counted.
        for _ in 0..5 {
            assert!(matches!(t.connect(ip("10.0.0.1")), Connect::Admitted(None)));
        }
        drop(a);
        assert!(matches!(
            t.connect(ip("192.0.2.1")),
            Connect::Admitted(Some(_))
        ));
        drop(b);
    }

    #[test]
    fn requests_are_limited_per_second_per_client() {
        let t = table(0, 5, &[], 1024);
        let allowed = (0..20)
            .filter(|_| t.request(ip("192.0.2.1")) == Request::Allowed)
            .count();
        assert_eq!(allowed, 5, "a burst of one second's worth");
        assert_eq!(
            t.request(ip("192.0.2.9")),
            Request::Allowed,
            "others unaffected"
        );
        std::thread::sleep(std::time::Duration::from_millis(450));
        // New connections in between do not hold the refill back.
        let t2 = table(1, 5, &[], 1024);
        for _ in 0..5 {
            t2.request(ip("192.0.2.1"));
        }
        std::thread::sleep(std::time::Duration::from_millis(450));
        drop(t2.connect(ip("192.0.2.1")));
        assert_eq!(t2.request(ip("192.0.2.1")), Request::Allowed, "refilled");
        assert_eq!(t.request(ip("192.0.2.1")), Request::Allowed, "refilled");
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let t = table(0, 1, &["10.0.0.1", "10.0.0.2"], 1024);
        let client = |peer: &str, xff: &str| t.client_of(ip(peer), Some(xff.as_bytes()));
        // From a client directly: its header proves nothing.
        assert_eq!(client("192.0.2.7", "203.0.113.5"), ip("192.0.2.7"));
        // Through two trusted proxies: the right-most untrusted address.
        assert_eq!(
            client("10.0.0.1", "6.6.6.6, 203.0.113.5, 10.0.0.2"),
            ip("203.0.113.5")
        );
        assert_eq!(client("10.0.0.1", "[2001:db8::1]:443"), ip("2001:db8::1"));
        assert_eq!(client("10.0.0.1", "203.0.113.5:8080"), ip("203.0.113.5"));
        // Garbage in the chain: the proxy itself is the client.
        assert_eq!(client("10.0.0.1", "203.0.113.5, nonsense"), ip("10.0.0.1"));
        assert_eq!(client("10.0.0.1", "10.0.0.2"), ip("10.0.0.1"));
        assert_eq!(t.client_of(ip("10.0.0.1"), None), ip("10.0.0.1"));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_idle_addresses_first() {
        // One address per stripe at most.
        let t = table(1, 0, &[], STRIPES);
        let held: Vec<_> = (0..=255u8)
            .map(|i| t.connect(IpAddr::from([192, 0, 2, i])))
            .collect();
        let tracked = held
            .iter()
            .filter(|c| matches!(c, Connect::Admitted(Some(_))))
            .count();
        let untracked = held
            .iter()
            .filter(|c| matches!(c, Connect::Untracked))
            .count();
        assert!(tracked <= STRIPES, "{tracked}");
        assert_eq!(tracked + untracked, 256, "never refused for want of room");
        let total: usize = t.stripes.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= STRIPES, "{total}");
    }
}
