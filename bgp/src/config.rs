//! What a speaker is told: its own identity, timers and peers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::IpNetwork;

/// A hold time a speaker may propose: 0 (no keepalives) or at least 3 s (RFC 4271 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HoldTime(u16);

impl HoldTime {
    pub const NONE: HoldTime = HoldTime(0);

    /// `None` for 1 and 2 seconds, which RFC 4271 forbids.
    pub const fn new(secs: u16) -> Option<HoldTime> {
        match secs {
            1 | 2 => None,
            s => Some(HoldTime(s)),
        }
    }
    pub const fn secs(self) -> u16 {
        self.0
    }
    /// The hold time both sides use: the smaller proposal (§4.2). `None` when the peer
    /// proposed a forbidden value.
    pub fn negotiate(self, remote: u16) -> Option<HoldTime> {
        HoldTime::new(remote).map(|r| self.min(r))
    }
    /// How long silence may last before the session is dropped; `None`: forever.
    pub fn timeout(self) -> Option<Duration> {
        (self.0 > 0).then(|| Duration::from_secs(u64::from(self.0)))
    }
    /// One third of the hold time (§10), never below one second.
    pub fn keepalive_interval(self) -> Option<Duration> {
        (self.0 > 0).then(|| Duration::from_secs(u64::from(self.0 / 3).max(1)))
    }
}

impl Default for HoldTime {
    fn default() -> Self {
        HoldTime(90)
    }
}

/// Decides whether a route learned from `peer` may be used (the daemon checks the pool).
/// Rejected routes are treated as never received.
#[derive(Clone)]
pub struct ImportFilter(Arc<FilterFn>);

type FilterFn = dyn Fn(IpAddr, &IpNetwork, IpAddr) -> bool + Send + Sync;

impl ImportFilter {
    /// `f(peer, prefix, next_hop)` returns whether to accept.
    pub fn new(f: impl Fn(IpAddr, &IpNetwork, IpAddr) -> bool + Send + Sync + 'static) -> Self {
        ImportFilter(Arc::new(f))
    }
    pub fn accept_all() -> Self {
        ImportFilter::new(|_, _, _| true)
    }
    pub(crate) fn accepts(&self, peer: IpAddr, prefix: &IpNetwork, next_hop: IpAddr) -> bool {
        (self.0)(peer, prefix, next_hop)
    }
}

impl Default for ImportFilter {
    fn default() -> Self {
        ImportFilter::accept_all()
    }
}

impl std::fmt::Debug for ImportFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImportFilter")
    }
}

/// Timers of the finite state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Proposed in our OPEN.
    pub hold_time: HoldTime,
    /// How long a TCP connect may take, and the wait between attempts (ConnectRetryTimer).
    pub connect_retry: Duration,
    /// Back-off after a session failed: doubles from `connect_retry` up to this.
    pub max_backoff: Duration,
    /// Hold timer while waiting for the peer's OPEN (§8: "a large value", 4 minutes).
    pub open_hold: Duration,
    /// Restart time we announce in our graceful restart capability (0 = do not announce).
    pub graceful_restart: u16,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            hold_time: HoldTime::default(),
            connect_retry: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            open_hold: Duration::from_secs(240),
            graceful_restart: 120,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    /// TCP port of the peer (179 unless testing).
    pub port: u16,
    pub remote_as: u32,
    /// TCP MD5 signature (RFC 2385) key, at most 80 octets.
    pub password: Option<String>,
    /// Never connect; only accept the peer's connection.
    pub passive: bool,
}

impl PeerConfig {
    pub fn new(address: IpAddr, remote_as: u32) -> Self {
        PeerConfig {
            address,
            port: 179,
            remote_as,
            password: None,
            passive: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// Where to accept connections; a specific address is also the source of our own
    /// connections. `[::]` accepts IPv4 too.
    pub listen: SocketAddr,
    /// The source of our own connections, one address per family: the address the peers
    /// are configured with for us (FRR's `update-source`). A peer refuses a connection
    /// from any other address of ours. Without one for a family, the `listen` address
    /// when it is specific and of that family; else the kernel chooses, and on an IPv6
    /// link it may choose a SLAAC address that appeared after a router advertisement.
    pub sources: Vec<IpAddr>,
    pub timers: Timers,
    pub peers: Vec<PeerConfig>,
    pub import_filter: ImportFilter,
    /// Our forwarding survives our restart (the daemon leaves its kernel routes): the
    /// graceful restart capability lists IPv4 and IPv6 unicast with the forwarding bit,
    /// so a helper keeps our routes while we restart ([`crate::Speaker::shutdown_for_restart`]).
    pub forwarding_survives_restart: bool,
}

impl SpeakerConfig {
    pub const DEFAULT_AS: u32 = 64512;

    pub fn new(router_id: Ipv4Addr) -> Self {
        SpeakerConfig {
            local_as: Self::DEFAULT_AS,
            router_id,
            listen: SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 179),
            sources: Vec::new(),
            timers: Timers::default(),
            peers: Vec::new(),
            import_filter: ImportFilter::default(),
            forwarding_survives_restart: false,
        }
    }
}
