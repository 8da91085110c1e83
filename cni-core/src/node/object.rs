//! One kernel entry the daemon owns.

use ipnetwork::IpNetwork;
use std::net::IpAddr;

use crate::netlink::MacAddr;

/// A route, neighbour or FDB entry toward a remote node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Object {
    /// `dst via gw [dev oif] [onlink] proto RTPROT_IPAMD` in the main table. `gw` may
    /// be IPv6 for an IPv4 `dst` (`via inet6`, RTA_VIA: RFC 8950 routes over BGP).
    Route {
        dst: IpNetwork,
        gw: IpAddr,
        oif: Option<u32>,
        onlink: bool,
    },
    /// A permanent neighbour entry on `dev`: `ip lladdr mac nud permanent`.
    Neigh { dev: u32, ip: IpAddr, mac: MacAddr },
    /// A permanent FDB entry on the VXLAN device `dev`: frames for `mac` are sent to
    /// `dst` (`bridge fdb replace mac dev <dev> dst <dst> self permanent`).
    Fdb { dev: u32, mac: MacAddr, dst: IpAddr },
}

/// What identifies an entry in the kernel: two objects with the same key are one entry
/// in two versions, changed with one replace request instead of a delete and an add.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKey {
    Route(IpNetwork),
    Neigh(u32, IpAddr),
    Fdb(u32, MacAddr),
}

impl Object {
    pub fn key(&self) -> ObjectKey {
        match self {
            Object::Route { dst, .. } => ObjectKey::Route(*dst),
            Object::Neigh { dev, ip, .. } => ObjectKey::Neigh(*dev, *ip),
            Object::Fdb { dev, mac, .. } => ObjectKey::Fdb(*dev, *mac),
        }
    }

    /// The metric label of this kind of entry.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Route { .. } => "route",
            Object::Neigh { .. } => "neigh",
            Object::Fdb { .. } => "fdb",
        }
    }
}
