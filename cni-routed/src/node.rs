//! The host-gw node side: a plain route to each block of every other node via its
//! underlay address of the block's family, which must be on a directly connected subnet
//! (one L2 segment): IPv4 blocks via its IPv4 address, IPv6 blocks via its IPv6 address
//! (published as `underlayIPv6`/`underlayIPv4` besides the record's `underlayIp`, see
//! [`underlay_backend`]). A node with a block of a family it has no on-link address of
//! is refused as a whole (logged and counted by `ipamd`), never half programmed.
//! The per-block rule is `cni_core::node::Peer::direct_route`, which `cni-ipip` and
//! `cni-vxlan` also apply for `directRouting` (plain routes to on-link nodes,
//! encapsulation otherwise).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use cni_core::netlink::{Netlink, Underlay};
use cni_core::node::peer::underlay_backend;
use cni_core::node::Refused;
use cni_core::node::{NodeSide, Object, Peer};
use cni_core::KernelError;

/// host-gw: routes only, no device of its own.
#[derive(Clone, Debug)]
pub struct HostGw {
    pub underlay: Underlay,
}

impl HostGw {
    pub fn new(underlay: Underlay) -> HostGw {
        HostGw { underlay }
    }
}

/// Plain routes to each of `peer`'s blocks via its underlay address of the block's
/// family on the underlay interface, when every such address is on a directly connected
/// subnet; `None` when one is not (or `peer` publishes no on-link address at all): such a
/// peer needs encapsulation. See [`off_link_family`] for which family failed.
pub fn direct_routes(underlay: &Underlay, peer: &Peer) -> Option<BTreeSet<Object>> {
    peer.underlay.filter(|ip| underlay.on_link(*ip))?;
    if off_link_family(underlay, peer).is_some() {
        return None;
    }
    peer.blocks
        .iter()
        .map(|b| peer.direct_route(underlay, b))
        .collect()
}

/// The first block of `peer` (in order) whose family it has no on-link underlay address
/// of, with that address if it publishes one off-link.
pub fn off_link_family(
    underlay: &Underlay,
    peer: &Peer,
) -> Option<(ipnetwork::IpNetwork, Option<IpAddr>)> {
    peer.blocks.iter().find_map(|b| {
        let addr = peer.underlay_of(b.is_ipv6());
        match addr {
            Some(ip) if underlay.on_link(ip) => None,
            other => Some((*b, other)),
        }
    })
}

/// The underlay address of `peer`, or why there is none (the peer is refused).
pub fn peer_address(peer: &Peer) -> Result<IpAddr, Refused> {
    peer.underlay.ok_or_else(|| {
        Refused::Peer(format!(
            "node {} publishes no underlay address: its ipamd has not registered one yet",
            peer.name
        ))
    })
}

impl NodeSide for HostGw {
    fn name(&self) -> &'static str {
        "host-gw"
    }

    fn set_underlay(&mut self, underlay: Underlay) {
        self.underlay = underlay;
    }

    fn backend(&self) -> BTreeMap<String, String> {
        underlay_backend(&self.underlay)
    }

    async fn ensure(&mut self, _nl: &Netlink, _me: &Peer) -> Result<bool, KernelError> {
        // Nothing to create: the underlay interface is the operator's.
        Ok(false)
    }

    fn objects(&self, peer: &Peer) -> Result<BTreeSet<Object>, Refused> {
        let ip = peer_address(peer)?;
        let nets = || {
            let nets: Vec<String> = self
                .underlay
                .networks
                .iter()
                .map(ToString::to_string)
                .collect();
            nets.join(", ")
        };
        if let Some((block, addr)) = off_link_family(&self.underlay, peer) {
            let family = if block.is_ipv6() { "IPv6" } else { "IPv4" };
            if block.is_ipv6() != ip.is_ipv6() && addr.is_none() {
                return Err(Refused::Peer(format!(
                    "node {} has the {family} block {block} but publishes no {family} \
                     underlay address: host-gw routes a block via the node's address of its \
                     family; give its underlay interface an {family} address on {} ({}), \
                     or carry {family} with vxlan (or BGP)",
                    peer.name,
                    self.underlay.name,
                    nets()
                )));
            }
            return Err(Refused::Peer(format!(
                "node {} at {} is not on a directly connected subnet of {} ({}): host-gw \
                 needs one L2 segment; use vxlan/ipip or BGP",
                peer.name,
                addr.unwrap_or(ip),
                self.underlay.name,
                nets()
            )));
        }
        direct_routes(&self.underlay, peer).ok_or_else(|| {
            Refused::Peer(format!(
                "node {} at {ip} is not on a directly connected subnet of {} ({}): host-gw \
                 needs one L2 segment; use vxlan/ipip or BGP",
                peer.name,
                self.underlay.name,
                nets()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_core::node::peer::{UNDERLAY_V4_KEY, UNDERLAY_V6_KEY};

    fn underlay() -> Underlay {
        Underlay {
            index: 7,
            name: "eth0".into(),
            addr: "192.0.2.2".parse().unwrap(),
            networks: vec![
                "192.0.2.2/24".parse().unwrap(),
                "fe80::1/64".parse().unwrap(),
                "2001:db8:7::2/64".parse().unwrap(),
            ],
            mtu: 1500,
        }
    }

    fn peer(ip: Option<&str>, blocks: &[&str]) -> Peer {
        Peer {
            name: "n2".into(),
            underlay: ip.map(|i| i.parse().unwrap()),
            blocks: blocks.iter().map(|b| b.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    fn route(dst: &str, gw: &str) -> Object {
        Object::Route {
            dst: dst.parse().unwrap(),
            gw: gw.parse().unwrap(),
            oif: Some(7),
            onlink: false,
        }
    }

    #[test]
    fn a_route_per_block_via_the_address_of_its_family() {
        let h = HostGw::new(underlay());
        let p = peer(Some("192.0.2.3"), &["10.0.0.64/26", "10.0.1.0/26"]);
        let got = h.objects(&p).unwrap();
        let want: BTreeSet<Object> = [
            route("10.0.0.64/26", "192.0.2.3"),
            route("10.0.1.0/26", "192.0.2.3"),
        ]
        .into();
        assert_eq!(got, want);
        assert!(h.objects(&peer(Some("192.0.2.3"), &[])).unwrap().is_empty());
        // Dual-stack: IPv6 blocks via the IPv6 address the node publishes.
        let mut p = peer(Some("192.0.2.3"), &["10.0.0.64/26", "fd00:1::/122"]);
        p.backend
            .insert(UNDERLAY_V6_KEY.into(), "2001:db8:7::3".into());
        let want: BTreeSet<Object> = [
            route("10.0.0.64/26", "192.0.2.3"),
            route("fd00:1::/122", "2001:db8:7::3"),
        ]
        .into();
        assert_eq!(h.objects(&p).unwrap(), want);
        // IPv6-only underlay: the record's address is the IPv6 one.
        let p = peer(Some("2001:db8:7::4"), &["fd00:1::40/122"]);
        let want: BTreeSet<Object> = [route("fd00:1::40/122", "2001:db8:7::4")].into();
        assert_eq!(h.objects(&p).unwrap(), want);
        assert_eq!(
            h.backend().get(UNDERLAY_V6_KEY).map(String::as_str),
            Some("2001:db8:7::2")
        );
        assert_eq!(
            h.backend().get(UNDERLAY_V4_KEY).map(String::as_str),
            Some("192.0.2.2")
        );
    }

    #[test]
    fn a_block_of_a_family_without_an_address_refuses_the_node() {
        let h = HostGw::new(underlay());
        let p = peer(Some("192.0.2.3"), &["10.0.0.64/26", "fd00:1::/122"]);
        let e = h.objects(&p).unwrap_err();
        assert!(matches!(e, Refused::Peer(_)));
        for word in ["n2", "fd00:1::/122", "IPv6", "eth0", "vxlan"] {
            assert!(e.to_string().contains(word), "{e} lacks {word}");
        }
        assert!(direct_routes(&h.underlay, &p).is_none());
        // An IPv6 address that is not on the link: refused the same way as for IPv4.
        let mut p = p;
        p.backend
            .insert(UNDERLAY_V6_KEY.into(), "2001:db8:99::3".into());
        let e = h.objects(&p).unwrap_err();
        assert!(
            e.to_string().contains("2001:db8:99::3")
                && e.to_string().contains("directly connected"),
            "{e}"
        );
    }

    #[test]
    fn off_link_peer_is_refused_with_a_hint() {
        let h = HostGw::new(underlay());
        let e = h
            .objects(&peer(Some("198.51.100.7"), &["10.0.0.64/26"]))
            .unwrap_err();
        assert!(matches!(e, Refused::Peer(_)));
        for word in ["n2", "198.51.100.7", "eth0", "192.0.2.2/24", "vxlan"] {
            assert!(e.to_string().contains(word), "{e} lacks {word}");
        }
        assert!(direct_routes(&h.underlay, &peer(Some("198.51.100.7"), &[])).is_none());
    }

    #[test]
    fn peer_without_address_is_refused() {
        let h = HostGw::new(underlay());
        let e = h.objects(&peer(None, &["10.0.0.64/26"])).unwrap_err();
        assert!(matches!(e, Refused::Peer(_)));
        assert!(e.to_string().contains("n2"), "{e}");
        assert!(direct_routes(&h.underlay, &peer(None, &[])).is_none());
    }
}
