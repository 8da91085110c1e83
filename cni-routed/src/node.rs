//! The host-gw node side: a plain route to each block of every other node via its
//! underlay address, which must be on a directly connected subnet (one L2 segment).
//! [`direct_routes`] is also the `directRouting` rule of the encapsulating datapaths
//! (`cni-ipip`, `cni-vxlan`): plain routes to on-link nodes, encapsulation otherwise.

use std::collections::BTreeSet;
use std::net::IpAddr;

use cni_core::netlink::{Netlink, Underlay};
use cni_core::node::{NodeSide, Object, Peer};
use cni_core::CniError;

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

/// Plain routes to `peer`'s blocks of its underlay address's family, via that address
/// on the underlay interface, when it is on a directly connected subnet; `None` when it
/// is not (or publishes no address): such a peer needs encapsulation.
pub fn direct_routes(underlay: &Underlay, peer: &Peer) -> Option<BTreeSet<Object>> {
    let gw = peer.underlay.filter(|ip| underlay.on_link(*ip))?;
    Some(
        peer.blocks
            .iter()
            .filter(|b| b.is_ipv6() == gw.is_ipv6())
            .map(|b| Object::Route {
                dst: *b,
                gw,
                oif: Some(underlay.index),
                onlink: false,
            })
            .collect(),
    )
}

/// The underlay address of `peer`, or why there is none (the peer is refused).
pub fn peer_address(peer: &Peer) -> Result<IpAddr, CniError> {
    peer.underlay.ok_or_else(|| {
        CniError::invalid_config(format!(
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

    async fn ensure(&mut self, _nl: &Netlink, _me: &Peer) -> Result<bool, CniError> {
        // Nothing to create: the underlay interface is the operator's.
        Ok(false)
    }

    fn objects(&self, peer: &Peer) -> Result<BTreeSet<Object>, CniError> {
        let ip = peer_address(peer)?;
        direct_routes(&self.underlay, peer).ok_or_else(|| {
            let nets: Vec<String> = self
                .underlay
                .networks
                .iter()
                .map(ToString::to_string)
                .collect();
            CniError::invalid_config(format!(
                "node {} at {ip} is not on a directly connected subnet of {} ({}): host-gw \
                 needs one L2 segment; use vxlan/ipip or BGP",
                peer.name,
                self.underlay.name,
                nets.join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn underlay() -> Underlay {
        Underlay {
            index: 7,
            name: "eth0".into(),
            addr: "192.0.2.2".parse().unwrap(),
            networks: vec![
                "192.0.2.2/24".parse().unwrap(),
                "fe80::1/64".parse().unwrap(),
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
    fn a_route_per_block_of_the_underlay_family() {
        let h = HostGw::new(underlay());
        let p = peer(
            Some("192.0.2.3"),
            &["10.0.0.64/26", "10.0.1.0/26", "fd00:1::/122"],
        );
        let got = h.objects(&p).unwrap();
        let want: BTreeSet<Object> = [
            route("10.0.0.64/26", "192.0.2.3"),
            route("10.0.1.0/26", "192.0.2.3"),
        ]
        .into();
        assert_eq!(got, want);
        assert!(h.objects(&peer(Some("192.0.2.3"), &[])).unwrap().is_empty());
    }

    #[test]
    fn off_link_peer_is_refused_with_a_hint() {
        let h = HostGw::new(underlay());
        let e = h
            .objects(&peer(Some("198.51.100.7"), &["10.0.0.64/26"]))
            .unwrap_err();
        assert_eq!(e.code, 7);
        for word in ["n2", "198.51.100.7", "eth0", "192.0.2.2/24", "vxlan"] {
            assert!(e.msg.contains(word), "{e} lacks {word}");
        }
        assert!(direct_routes(&h.underlay, &peer(Some("198.51.100.7"), &[])).is_none());
    }

    #[test]
    fn peer_without_address_is_refused() {
        let h = HostGw::new(underlay());
        let e = h.objects(&peer(None, &["10.0.0.64/26"])).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("n2"), "{e}");
        assert!(direct_routes(&h.underlay, &peer(None, &[])).is_none());
    }
}
