//! What the speaker reports: route events and peer status.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use ipnetwork::IpNetwork;

use crate::fsm::State;

/// Something the daemon must do to its routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEvent {
    pub peer: IpAddr,
    pub kind: RouteEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEventKind {
    /// A new route, or a new next hop for a route learned before.
    Learned {
        prefix: IpNetwork,
        next_hop: IpAddr,
    },
    Withdrawn {
        prefix: IpNetwork,
    },
    /// The peer has sent its whole table: End-of-RIB (RFC 4724) for every family of the
    /// session. Once per session; a route not learned again by now is not coming.
    EndOfRib,
    /// Every route learned from the peer is gone (the session dropped and no
    /// graceful-restart window is pending, or the window passed, or the peer was
    /// removed). No `Withdrawn` events follow for them.
    PeerDown,
}

/// One peer as the CLI and the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub remote_as: u32,
    pub state: State,
    /// Time since the session reached Established; `None` when it is not.
    pub uptime: Option<Duration>,
    pub prefixes_sent: usize,
    pub prefixes_received: usize,
    /// Times the session left Established.
    pub flaps: u32,
    /// The last NOTIFICATION sent or received (kept until the next Established, so a
    /// later connection error does not hide it), else the last connection error.
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// The negotiated hold time in seconds, while Established.
    pub hold_time: Option<u16>,
}
