//! A remote node as a datapath sees it, the trait a datapath's node side implements, and
//! the derivations both ends of a tunnel must agree on without talking to each other.

use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Object;
use crate::kernel_error::KernelError;
use crate::netlink::{MacAddr, Netlink, Underlay};

/// The backend key under which a VXLAN node publishes its VTEP MAC.
pub const VTEP_MAC_KEY: &str = "vtepMac";

/// The backend keys under which a node publishes its underlay address of each family
/// (the record's `underlayIp` is one of them): a dual-stack node is reached over IPv4
/// for its IPv4 blocks and over IPv6 for its IPv6 blocks (host-gw, direct routing), and
/// a VXLAN peer picks the address of its own underlay's family for the FDB.
pub const UNDERLAY_V4_KEY: &str = "underlayIPv4";
pub const UNDERLAY_V6_KEY: &str = "underlayIPv6";

/// What a node publishes about its underlay: its address of each family it has
/// ([`UNDERLAY_V4_KEY`], [`UNDERLAY_V6_KEY`]).
pub fn underlay_backend(underlay: &Underlay) -> BTreeMap<String, String> {
    [(false, UNDERLAY_V4_KEY), (true, UNDERLAY_V6_KEY)]
        .into_iter()
        .filter_map(|(v6, key)| Some((key.to_string(), underlay.addr_of(v6)?.to_string())))
        .collect()
}

/// A node of the cluster (this one or a remote one), as published in the cluster store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// The address other nodes reach it at.
    pub underlay: Option<IpAddr>,
    /// Its blocks, sorted.
    pub blocks: Vec<IpNetwork>,
    /// Datapath data it publishes (e.g. [`VTEP_MAC_KEY`]).
    pub backend: BTreeMap<String, String>,
}

impl Peer {
    /// The plain route to `block` via this node's underlay address of the block's family,
    /// when that address is on a directly connected subnet of `underlay` (host-gw, and
    /// directRouting in the tunnelled datapaths); `None` when the block needs encapsulation.
    pub fn direct_route(&self, underlay: &Underlay, block: &IpNetwork) -> Option<Object> {
        let gw = self
            .underlay_of(block.is_ipv6())
            .filter(|ip| underlay.on_link(*ip))?;
        Some(Object::Route {
            dst: *block,
            gw,
            oif: Some(underlay.index),
            onlink: false,
        })
    }

    /// The node's gateway address: the first host address of its lowest IPv4 block.
    /// The VXLAN device carries it as /32 and peers route via it (cluster IPAM reserves it
    /// with `ipam.reserveGateway`).
    pub fn gateway_v4(&self) -> Option<Ipv4Addr> {
        self.lowest_v4()
            .map(|n| Ipv4Addr::from(u32::from(n.network()).wrapping_add(1)))
    }

    /// The address `tunl0` carries: the network address of the node's lowest IPv4 block
    /// (never handed to a pod by cluster IPAM, so it needs no reservation).
    pub fn tunnel_v4(&self) -> Option<Ipv4Addr> {
        self.lowest_v4().map(|n| n.network())
    }

    /// The node's IPv6 gateway: the first host address of its lowest IPv6 block (the
    /// network address plus one: cluster IPAM's `reserveGateway` reserves it as for
    /// IPv4). Its VXLAN device carries it as /128 and peers route its IPv6 blocks via it.
    pub fn gateway_v6(&self) -> Option<Ipv6Addr> {
        self.blocks
            .iter()
            .filter_map(|b| match b {
                IpNetwork::V6(n) => Some(*n),
                IpNetwork::V4(_) => None,
            })
            .min()
            .map(|n| Ipv6Addr::from(u128::from(n.network()).wrapping_add(1)))
    }

    /// The gateway of the family of `v6` ([`Peer::gateway_v4`], [`Peer::gateway_v6`]).
    pub fn gateway(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.gateway_v6().map(IpAddr::V6)
        } else {
            self.gateway_v4().map(IpAddr::V4)
        }
    }

    /// The node's underlay address of the family of `v6`: its record's address when of
    /// that family, else the one it publishes under [`UNDERLAY_V4_KEY`] /
    /// [`UNDERLAY_V6_KEY`] (`None` when it has none, or publishes garbage).
    pub fn underlay_of(&self, v6: bool) -> Option<IpAddr> {
        if let Some(ip) = self.underlay.filter(|ip| ip.is_ipv6() == v6) {
            return Some(ip);
        }
        let key = if v6 { UNDERLAY_V6_KEY } else { UNDERLAY_V4_KEY };
        self.backend
            .get(key)?
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| ip.is_ipv6() == v6)
    }

    fn lowest_v4(&self) -> Option<ipnetwork::Ipv4Network> {
        self.blocks
            .iter()
            .filter_map(|b| match b {
                IpNetwork::V4(n) => Some(*n),
                IpNetwork::V6(_) => None,
            })
            .min()
    }
}

/// A stable VTEP MAC for `node` on VNI `vni`: the same on every restart and reboot with
/// no state kept (a hash of the two), locally administered and unicast.
pub fn vtep_mac_for(node: &str, vni: u32) -> MacAddr {
    let h = crate::hash::stable_hash(&[node, &vni.to_string()]).to_be_bytes();
    MacAddr([(h[0] & 0xfe) | 0x02, h[1], h[2], h[3], h[4], h[5]])
}

/// The node side of a datapath: its devices, and what it programs for each remote node.
/// `ipamd` owns the loop; see `ipamd::datapath`.
pub trait NodeSide: Send + 'static {
    /// The datapath's name in logs and metrics ("vxlan", "ipip", "host-gw").
    fn name(&self) -> &'static str;

    /// What this node publishes in its record's backend map (e.g. [`VTEP_MAC_KEY`]).
    fn backend(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Creates or repairs this node's devices (VXLAN device, `tunl0`) and their
    /// addresses for this node's current record `me`. Called at start, when this node's
    /// record changes and on every resync: must send nothing when nothing is wrong.
    /// Returns whether a device was (re)created: every object on it must then be
    /// programmed again.
    fn ensure(
        &mut self,
        nl: &Netlink,
        me: &Peer,
    ) -> impl Future<Output = Result<bool, KernelError>> + Send;

    /// The underlay interface now has another address (or other subnets): use `underlay`
    /// from now on; the next [`NodeSide::ensure`] applies it (e.g. the VXLAN device's
    /// local address). Default: the datapath keeps nothing of the underlay.
    fn set_underlay(&mut self, _underlay: Underlay) {}

    /// Devices whose permanent neighbour and FDB entries this datapath owns (a resync
    /// removes any it did not ask for).
    fn devices(&self) -> Vec<u32> {
        Vec::new()
    }

    /// What to program toward `peer`. `Err`: the peer is refused (e.g. host-gw and it is
    /// not on a directly connected subnet): logged and counted, nothing programmed.
    fn objects(&self, peer: &Peer) -> Result<BTreeSet<Object>, Refused>;
}

/// Why a datapath programs nothing toward a peer: a verdict on the peer's record or on
/// this node's own readiness, not a kernel failure and not a CNI error (the daemon logs
/// it, counts the peer as refused and tries again when either side changes).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// This datapath cannot reach the peer as it is published (no address of the family
    /// it needs, not on a directly connected subnet, a missing or bad VTEP MAC, a block
    /// of a family this node does not carry): the message says what to change.
    #[error("{0}")]
    Peer(String),
    /// This node's own side is not set up yet (its device does not exist before
    /// `ensure`).
    #[error("{0}")]
    NotReady(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(blocks: &[&str]) -> Peer {
        Peer {
            name: "n".into(),
            blocks: blocks.iter().map(|b| b.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn gateway_and_tunnel_come_from_the_lowest_v4_block() {
        let p = peer(&["fd00::/122", "10.0.1.64/26", "10.0.0.128/26"]);
        assert_eq!(p.gateway_v4(), Some("10.0.0.129".parse().unwrap()));
        assert_eq!(p.tunnel_v4(), Some("10.0.0.128".parse().unwrap()));
        assert_eq!(peer(&["fd00::/122"]).gateway_v4(), None);
        let p = peer(&["fd00:1::80/122", "10.0.0.128/26", "fd00:1::40/122"]);
        assert_eq!(p.gateway_v6(), Some("fd00:1::41".parse().unwrap()));
        assert_eq!(p.gateway(true), Some("fd00:1::41".parse().unwrap()));
        assert_eq!(p.gateway(false), Some("10.0.0.129".parse().unwrap()));
        assert_eq!(peer(&["10.0.0.0/26"]).gateway_v6(), None);
    }

    #[test]
    fn underlay_of_a_family_from_the_record_or_the_backend() {
        let mut p = peer(&[]);
        p.underlay = Some("192.0.2.3".parse().unwrap());
        assert_eq!(p.underlay_of(false), p.underlay);
        assert_eq!(p.underlay_of(true), None);
        p.backend
            .insert(UNDERLAY_V6_KEY.into(), "2001:db8::3".into());
        assert_eq!(p.underlay_of(true), Some("2001:db8::3".parse().unwrap()));
        // A value of the wrong family is no address of that family.
        p.backend.insert(UNDERLAY_V6_KEY.into(), "192.0.2.9".into());
        assert_eq!(p.underlay_of(true), None);
        // An IPv6 record address wins over the backend's.
        p.underlay = Some("2001:db8::7".parse().unwrap());
        assert_eq!(p.underlay_of(true), p.underlay);
        assert_eq!(p.underlay_of(false), None);
        let u = Underlay {
            index: 2,
            name: "eth0".into(),
            addr: "192.0.2.2".parse().unwrap(),
            networks: vec![
                "fe80::1/64".parse().unwrap(),
                "192.0.2.2/24".parse().unwrap(),
                "2001:db8::2/64".parse().unwrap(),
            ],
            mtu: 1500,
        };
        let b = underlay_backend(&u);
        assert_eq!(
            b.get(UNDERLAY_V4_KEY).map(String::as_str),
            Some("192.0.2.2")
        );
        assert_eq!(
            b.get(UNDERLAY_V6_KEY).map(String::as_str),
            Some("2001:db8::2")
        );
    }

    #[test]
    fn vtep_mac_is_stable_unicast_and_local() {
        let a = vtep_mac_for("node-a", 1);
        assert_eq!(a, vtep_mac_for("node-a", 1));
        assert_ne!(a, vtep_mac_for("node-b", 1));
        assert_ne!(a, vtep_mac_for("node-a", 2));
        assert_eq!(a.0[0] & 0x03, 0x02);
    }
}
