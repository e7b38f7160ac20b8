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
//! nothing). Every `X-Forwarded-For` line counts, as one list (RFC 9110
//! §5.3); a request with more lines than the head keeps is the peer's.
//!
//! A client is counted by its key ([`ClientTable::client_key`]): an IPv4
//! address, or an IPv6 address cut to `clients.ipv6_prefix_len` bits (a
//! `/64` by default), so rotating through the addresses of one's own `/64`
//! neither escapes the limits nor fills the table.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use engine_core::config::ClientsConfig;

use crate::http::head::ForwardedFor;

/// The mask of an IPv6 prefix of `len` bits (all bits from 128 up).
fn prefix_mask(len: u8) -> u128 {
    let host_bits = 128u32.saturating_sub(u32::from(len));
    u128::MAX.checked_shl(host_bits).unwrap_or(0)
}

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
    /// The leading `clients.ipv6_prefix_len` bits of an IPv6 address.
    v6_mask: u128,
}

/// An open connection of a tracked address; closing it (drop) frees it.
#[derive(Debug)]
pub struct ClientConn {
    table: Arc<ClientTable>,
    /// The client's key.
    key: IpAddr,
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        let mut stripe = self.table.stripe(self.key);
        if let Some(e) = stripe.get_mut(&self.key) {
            e.conns = e.conns.saturating_sub(1);
        }
    }
}

impl ClientTable {
    pub fn new(cfg: ClientsConfig) -> Self {
        Self {
            per_stripe: cfg.max_tracked.div_ceil(STRIPES).max(1),
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            epoch: Instant::now(),
            v6_mask: prefix_mask(cfg.ipv6_prefix_len),
            cfg,
        }
    }

    /// The key `ip` is counted by, for every per-client limit: an IPv4
    /// address itself (an IPv4-mapped IPv6 address as that IPv4 address),
    /// an IPv6 address with all but its leading `clients.ipv6_prefix_len`
    /// bits cleared.
    pub fn client_key(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & self.v6_mask)),
            },
        }
    }

    /// Whether any limit is set (nothing else here runs otherwise).
    pub fn enabled(&self) -> bool {
        self.cfg.enabled()
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 address as its
    /// IPv4 address, as a dual-stack listener reports IPv4 peers).
    fn trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.cfg
            .trusted_proxies
            .iter()
            .any(|p| p.to_canonical() == ip)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn stripe(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        let i = self.hasher.hash_one(ip) as usize & (STRIPES - 1);
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The request's client from one `X-Forwarded-For` line (the tests'
    /// shorthand for [`ClientTable::client_of_request`]).
    #[cfg(test)]
    fn client_of(&self, peer: IpAddr, forwarded_for: Option<&[u8]>) -> IpAddr {
        let Some(line) = forwarded_for.filter(|_| self.trusted(peer)) else {
            return peer;
        };
        let hops = line
            .rsplit(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|hop| !hop.is_empty());
        self.rightmost_untrusted(peer, hops)
    }

    /// The request's client: `peer`, or, when `peer` is a trusted proxy,
    /// the right-most address of all its `X-Forwarded-For` lines (one list)
    /// that is not itself a trusted proxy. More lines than the head keeps,
    /// or a malformed hop before such an address: the proxy is the client.
    pub fn client_of_request(&self, peer: IpAddr, forwarded: &ForwardedFor, buf: &[u8]) -> IpAddr {
        if forwarded.is_empty() || !self.trusted(peer) {
            return peer;
        }
        match forwarded.hops_from_right(buf) {
            Some(hops) => self.rightmost_untrusted(peer, hops),
            None => peer,
        }
    }

    /// The key of a request's client ([`ClientTable::client_of_request`],
    /// then [`ClientTable::client_key`]): what its limits and its share of
    /// a shard's budget are counted by.
    pub fn client_for(&self, peer: IpAddr, forwarded: &ForwardedFor, buf: &[u8]) -> IpAddr {
        self.client_key(self.client_of_request(peer, forwarded, buf))
    }

    /// The first of `hops` (right to left) that is not a trusted proxy;
    /// `peer` when there is none or a hop before it is malformed (nothing
    /// to its left can be trusted).
    fn rightmost_untrusted<'b>(
        &self,
        peer: IpAddr,
        hops: impl Iterator<Item = &'b [u8]>,
    ) -> IpAddr {
        for hop in hops {
            let ip = std::str::from_utf8(hop).ok().and_then(|part| {
                part.parse::<IpAddr>()
                    .ok()
                    .or_else(|| part.parse::<SocketAddr>().ok().map(|s| s.ip()))
            });
            match ip {
                Some(ip) if self.trusted(ip) => continue,
                Some(ip) => return ip,
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
        let key = self.client_key(peer);
        let now = self.now_ms();
        let mut stripe = self.stripe(key);
        let Some(e) = self.entry(&mut stripe, key, now) else {
            return Connect::Untracked;
        };
        if e.conns >= max {
            return Connect::OverLimit;
        }
        e.conns = e.conns.saturating_add(1);
        e.seen_ms = now;
        Connect::Admitted(Some(ClientConn {
            table: self.clone(),
            key,
        }))
    }

    /// A request from `client`.
    pub fn request(&self, client: IpAddr) -> Request {
        let rate = self.cfg.max_requests_per_sec;
        if rate == 0 {
            return Request::Allowed;
        }
        let key = self.client_key(client);
        let now = self.now_ms();
        let mut stripe = self.stripe(key);
        let Some(e) = self.entry(&mut stripe, key, now) else {
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
    use crate::http::head::MAX_FORWARDED_FOR_LINES;

    fn table(conns: u32, rps: u32, proxies: &[&str], tracked: usize) -> Arc<ClientTable> {
        Arc::new(ClientTable::new(ClientsConfig {
            max_connections: conns,
            max_requests_per_sec: rps,
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
            max_tracked: tracked,
            ..ClientsConfig::default()
        }))
    }

    fn table_v6(conns: u32, rps: u32, prefix: u8) -> Arc<ClientTable> {
        Arc::new(ClientTable::new(ClientsConfig {
            max_connections: conns,
            max_requests_per_sec: rps,
            ipv6_prefix_len: prefix,
            ..ClientsConfig::default()
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
    fn a_client_key_is_an_ipv4_address_or_an_ipv6_prefix() {
        let t = table_v6(1, 0, 64);
        assert_eq!(t.client_key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(
            t.client_key(ip("2001:db8:1:2:3:4:5:6")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(t.client_key(ip("2001:db8:1:2::")), ip("2001:db8:1:2::"));
        assert_eq!(t.client_key(ip("::ffff:192.0.2.9")), ip("192.0.2.9"));
        assert_eq!(t.client_key(ip("::1")), ip("::"));
        let t = table_v6(1, 0, 48);
        assert_eq!(t.client_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1::"));
        let t = table_v6(1, 0, 128);
        assert_eq!(t.client_key(ip("2001:db8::7")), ip("2001:db8::7"));
        let t = table_v6(1, 0, 57);
        assert_eq!(
            t.client_key(ip("2001:db8:0:ffff::1")),
            ip("2001:db8:0:ff80::")
        );
        // Even an unchecked configuration cannot overflow the shift.
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(200), u128::MAX);
    }

    #[test]
    fn a_client_rotating_through_its_ipv6_64_is_one_client() {
        let t = table_v6(2, 3, 64);
        let in_64 = |i: u16| IpAddr::from([0x2001, 0xdb8, 0, 7, i, 0, 0, i]);
        let held: Vec<_> = (1..=5).map(|i| t.connect(in_64(i))).collect();
        let admitted = held
            .iter()
            .filter(|c| matches!(c, Connect::Admitted(Some(_))))
            .count();
        assert_eq!(admitted, 2, "{held:?}");
        assert!(matches!(held[4], Connect::OverLimit));
        // The next /64 is someone else.
        let other = IpAddr::from([0x2001, 0xdb8, 0, 8, 0, 0, 0, 1]);
        assert!(matches!(t.connect(other), Connect::Admitted(Some(_))));
        // Closing one from any address of the /64 frees its place.
        drop(held);
        assert!(matches!(t.connect(in_64(99)), Connect::Admitted(Some(_))));
        // Requests: one bucket for the /64.
        let allowed = (1..=20)
            .filter(|&i| t.request(in_64(i)) == Request::Allowed)
            .count();
        assert_eq!(allowed, 3);
        assert_eq!(t.request(other), Request::Allowed);
        // One entry for the whole /64, however many addresses it used.
        let total: usize = t.stripes.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(total, 2, "{total}");
        // With /128, every address is a client of its own.
        let t = table_v6(0, 1, 128);
        for i in 1..=5 {
            assert_eq!(t.request(in_64(i)), Request::Allowed);
        }
    }

    #[test]
    fn every_forwarded_for_line_counts_from_the_right() {
        let t = table(0, 1, &["10.0.0.1", "10.0.0.2", "10.0.0.3"], 1024);
        let client = |peer: &str, lines: &[&str]| {
            let xff: String = lines
                .iter()
                .map(|l| format!("X-Forwarded-For: {l}\r\n"))
                .collect();
            let raw = format!("GET /metrics HTTP/1.1\r\nHost: a\r\n{xff}\r\n");
            let head = crate::http::parse_head(raw.as_bytes()).unwrap().unwrap();
            t.client_of_request(ip(peer), &head.forwarded, raw.as_bytes())
        };
        // A proxy that adds its own line after the client's.
        assert_eq!(
            client("10.0.0.1", &["203.0.113.5", "10.0.0.2"]),
            ip("203.0.113.5")
        );
        assert_eq!(
            client("10.0.0.1", &["6.6.6.6, 203.0.113.5", "10.0.0.3, 10.0.0.2"]),
            ip("203.0.113.5")
        );
        // The right-most untrusted address wins, whichever line holds it.
        assert_eq!(
            client("10.0.0.1", &["6.6.6.6", "203.0.113.5, 10.0.0.2"]),
            ip("203.0.113.5")
        );
        // A client's own lines from an untrusted peer prove nothing.
        assert_eq!(
            client("192.0.2.7", &["203.0.113.5", "10.0.0.2"]),
            ip("192.0.2.7")
        );
        // A malformed hop in an earlier line, before any untrusted address.
        assert_eq!(
            client("10.0.0.1", &["nonsense", "10.0.0.2"]),
            ip("10.0.0.1")
        );
        assert_eq!(
            client("10.0.0.1", &["6.6.6.6, nonsense", "10.0.0.2"]),
            ip("10.0.0.1")
        );
        // Empty elements and lines are skipped (RFC 9110 §5.6.1).
        assert_eq!(
            client("10.0.0.1", &["203.0.113.5,", "", " , 10.0.0.2"]),
            ip("203.0.113.5")
        );
        // None at all, all trusted, or more lines than are kept: the proxy.
        assert_eq!(client("10.0.0.1", &[]), ip("10.0.0.1"));
        assert_eq!(
            client("10.0.0.1", &["10.0.0.3", "10.0.0.2"]),
            ip("10.0.0.1")
        );
        let mut many = vec!["10.0.0.2"; MAX_FORWARDED_FOR_LINES];
        many[0] = "203.0.113.5";
        assert_eq!(client("10.0.0.1", &many), ip("203.0.113.5"));
        many.insert(0, "203.0.113.6");
        assert_eq!(client("10.0.0.1", &many), ip("10.0.0.1"));
        // An IPv4-mapped peer is the trusted IPv4 proxy it names.
        assert_eq!(
            client("::ffff:10.0.0.1", &["203.0.113.5", "::ffff:10.0.0.2"]),
            ip("203.0.113.5")
        );
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
