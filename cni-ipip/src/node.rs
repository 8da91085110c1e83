//! The IPIP node side: `tunl0` up, with this node's tunnel address and MTU, and for every
//! other node a route to each of its IPv4 blocks `via <its underlay IP> dev tunl0
//! onlink`; with `directRouting`, plain routes to nodes on a directly connected subnet
//! (Calico's CrossSubnet), decided per family.
//!
//! IPv6 (dual-stack pools): `tunl0` is IPv4-in-IPv4, so IPv6 blocks go through `sit0`,
//! the fallback device of the `sit` module (IPv6-in-IPv4, protocol 41), `via
//! ::<its underlay IPv4> dev sit0 onlink`: the IPv4-compatible next hop tells `sit0`
//! where to send the packet, as the `onlink` next hop tells `tunl0`. Both ride the IPv4
//! underlay. Without `sit` (or without an IPv4 underlay) `ipamd` refuses an IPv6 pool
//! at start; an IPv6-only pool is refused too (nothing would use `tunl0`: choose
//! vxlan). A node holding an IPv6 block when IPv6 is not carried is refused here
//! (logged and counted), never silently left without a route.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use cni_core::netlink::{Netlink, Underlay};
use cni_core::node::Refused;
use cni_core::node::{NodeSide, Object, Peer};
use cni_core::KernelError;
use cni_routed::node::peer_address;
use ipnetwork::IpNetwork;
use tracing::{debug, info};

use crate::OVERHEAD;

/// The fallback device of the `ipip` module: one per namespace, created by the kernel.
pub const TUNNEL: &str = "tunl0";
/// The fallback device of the `sit` module (IPv6-in-IPv4): one per namespace.
pub const SIT: &str = "sit0";

#[derive(Clone, Debug)]
pub struct Ipip {
    pub underlay: Underlay,
    /// MTU of `tunl0`: configured, else the underlay's minus [`OVERHEAD`].
    pub mtu: u32,
    /// Plain routes to nodes on a directly connected subnet.
    pub direct_routing: bool,
    /// `tunl0`'s index, known once [`NodeSide::ensure`] has found it.
    pub tunnel: Option<u32>,
    /// Carry IPv6 blocks through [`SIT`] (the pool has IPv6).
    pub carry_v6: bool,
    /// `sit0`'s index, known once [`NodeSide::ensure`] has found it (with `carry_v6`).
    pub sit: Option<u32>,
}

impl Ipip {
    pub fn new(underlay: Underlay, mtu: Option<u32>, direct_routing: bool) -> Ipip {
        let mtu = mtu.unwrap_or_else(|| underlay.mtu.saturating_sub(OVERHEAD));
        Ipip {
            underlay,
            mtu,
            direct_routing,
            tunnel: None,
            carry_v6: false,
            sit: None,
        }
    }

    /// Also carry IPv6 blocks, through [`SIT`].
    pub fn with_ipv6(mut self) -> Ipip {
        self.carry_v6 = true;
        self
    }

    /// `sit0` up with the tunnel MTU; whether its index changed (module reloaded).
    async fn ensure_sit(&mut self, nl: &Netlink) -> Result<bool, KernelError> {
        let link = nl.link_by_name(SIT).await?.ok_or_else(|| {
            KernelError::other(
                format!("setting up {SIT}"),
                format!(
                    "there is no {SIT}: this kernel has no sit module loaded, which carries \
                     the IPv6 pool over IPIP: load it (modprobe sit), or choose the vxlan \
                     datapath"
                ),
            )
        })?;
        if link.mtu != self.mtu {
            nl.set_mtu(link.index, self.mtu).await?;
        }
        if !link.up {
            nl.set_up(link.index).await?;
        }
        let recreated = self.sit.is_some_and(|old| old != link.index);
        self.sit = Some(link.index);
        Ok(recreated)
    }
}

impl NodeSide for Ipip {
    fn name(&self) -> &'static str {
        "ipip"
    }

    fn set_underlay(&mut self, underlay: Underlay) {
        self.underlay = underlay;
    }

    async fn ensure(&mut self, nl: &Netlink, me: &Peer) -> Result<bool, KernelError> {
        let link = nl.link_by_name(TUNNEL).await?.ok_or_else(|| {
            KernelError::other(
                format!("setting up {TUNNEL}"),
                format!(
                    "there is no {TUNNEL}: this kernel has no ipip module loaded: load it \
                     (modprobe ipip), or choose the vxlan datapath"
                ),
            )
        })?;
        let idx = link.index;
        if link.mtu != self.mtu {
            nl.set_mtu(idx, self.mtu).await?;
        }
        if let Some(want) = me.tunnel_v4() {
            let want = IpNetwork::V4(want.into());
            let have = nl.addresses(idx).await?;
            // Another /32 is a tunnel address of ours from a block this node no longer
            // holds; other prefixes are someone else's.
            for stale in have
                .iter()
                .filter(|a| a.is_ipv4() && a.prefix() == 32 && **a != want)
            {
                info!(address = %stale, "removing a stale tunnel address from {TUNNEL}");
                nl.del_address(idx, *stale).await?;
            }
            if !have.contains(&want) {
                nl.add_address(idx, want).await?;
            }
        } else {
            debug!(node = %me.name, "no IPv4 block yet: {TUNNEL} gets no address");
        }
        if !link.up {
            nl.set_up(idx).await?;
        }
        // tunl0 is the kernel's, never recreated by us; if its index changed (the
        // module was reloaded), every route on it must go in again.
        let mut recreated = self.tunnel.is_some_and(|old| old != idx);
        self.tunnel = Some(idx);
        if self.carry_v6 {
            recreated |= self.ensure_sit(nl).await?;
        }
        Ok(recreated)
    }

    fn objects(&self, peer: &Peer) -> Result<BTreeSet<Object>, Refused> {
        if let Some(b) = peer.blocks.iter().find(|b| b.is_ipv6() && !self.carry_v6) {
            return Err(Refused::Peer(format!(
                "node {} holds the IPv6 block {b}, and this node carries IPv4 only over \
                 IPIP (no IPv6 pool given, or no sit module): carry IPv6 with --pool and \
                 the sit module, or with --datapath vxlan (or host-gw, bgp)",
                peer.name
            )));
        }
        let published = peer_address(peer)?;
        // directRouting, per family: a block whose family the peer has an on-link
        // underlay address of gets a plain route via it; the others are tunnelled.
        let direct = |b: &IpNetwork| {
            self.direct_routing
                .then(|| peer.direct_route(&self.underlay, b))
                .flatten()
        };
        let mut out: BTreeSet<Object> = peer.blocks.iter().filter_map(direct).collect();
        if peer.blocks.iter().all(|b| direct(b).is_some()) {
            return Ok(out);
        }
        let gw: Ipv4Addr = match peer.underlay_of(false) {
            Some(IpAddr::V4(v4)) => v4,
            _ => {
                return Err(Refused::Peer(format!(
                    "node {} publishes no IPv4 underlay address (only {published}): IPIP \
                     runs over IPv4; give the nodes IPv4 underlay addresses or use vxlan",
                    peer.name
                )))
            }
        };
        let tunnel = self.tunnel.ok_or_else(|| {
            Refused::NotReady(format!("{TUNNEL} is not set up yet: ensure() comes first"))
        })?;
        let sit = || {
            self.sit.ok_or_else(|| {
                Refused::NotReady(format!("{SIT} is not set up yet: ensure() comes first"))
            })
        };
        for b in peer.blocks.iter().filter(|b| direct(b).is_none()) {
            out.insert(if b.is_ipv4() {
                Object::Route {
                    dst: *b,
                    gw: IpAddr::V4(gw),
                    oif: Some(tunnel),
                    onlink: true,
                }
            } else {
                // The IPv4-compatible address ::a.b.c.d: sit0 sends to a.b.c.d.
                Object::Route {
                    dst: *b,
                    gw: IpAddr::V6(gw.to_ipv6_compatible()),
                    oif: Some(sit()?),
                    onlink: true,
                }
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn underlay() -> Underlay {
        Underlay {
            index: 2,
            name: "eth0".into(),
            addr: "192.0.2.2".parse().unwrap(),
            networks: vec!["192.0.2.2/24".parse().unwrap()],
            mtu: 1500,
        }
    }

    fn ipip(direct: bool) -> Ipip {
        Ipip {
            tunnel: Some(9),
            ..Ipip::new(underlay(), None, direct)
        }
    }

    fn peer(ip: &str) -> Peer {
        Peer {
            name: "n2".into(),
            underlay: Some(ip.parse().unwrap()),
            blocks: vec![
                "10.0.0.64/26".parse().unwrap(),
                "10.0.3.0/26".parse().unwrap(),
            ],
            ..Default::default()
        }
    }

    fn route(dst: &str, gw: &str, oif: u32, onlink: bool) -> Object {
        Object::Route {
            dst: dst.parse().unwrap(),
            gw: gw.parse().unwrap(),
            oif: Some(oif),
            onlink,
        }
    }

    #[test]
    fn mtu_follows_the_underlay_unless_configured() {
        assert_eq!(Ipip::new(underlay(), None, false).mtu, 1480);
        assert_eq!(Ipip::new(underlay(), Some(1400), false).mtu, 1400);
    }

    #[test]
    fn tunnel_routes_per_ipv4_block() {
        for ip in ["192.0.2.3", "198.51.100.7"] {
            let got = ipip(false).objects(&peer(ip)).unwrap();
            let want: BTreeSet<Object> = [
                route("10.0.0.64/26", ip, 9, true),
                route("10.0.3.0/26", ip, 9, true),
            ]
            .into();
            assert_eq!(got, want, "{ip}");
        }
    }

    #[test]
    fn ipv6_blocks_through_sit0_via_the_ipv4_compatible_address() {
        let mut i = ipip(false).with_ipv6();
        i.sit = Some(12);
        let mut p = peer("198.51.100.7");
        p.blocks.push("fd00:1::40/122".parse().unwrap());
        let want: BTreeSet<Object> = [
            route("10.0.0.64/26", "198.51.100.7", 9, true),
            route("10.0.3.0/26", "198.51.100.7", 9, true),
            route("fd00:1::40/122", "::198.51.100.7", 12, true),
        ]
        .into();
        assert_eq!(i.objects(&p).unwrap(), want);
        // directRouting with an IPv4-only underlay: IPv4 plain on the link, IPv6 in sit0.
        i.direct_routing = true;
        let mut p = peer("192.0.2.3");
        p.blocks.push("fd00:1::40/122".parse().unwrap());
        let want: BTreeSet<Object> = [
            route("10.0.0.64/26", "192.0.2.3", 2, false),
            route("10.0.3.0/26", "192.0.2.3", 2, false),
            route("fd00:1::40/122", "::192.0.2.3", 12, true),
        ]
        .into();
        assert_eq!(i.objects(&p).unwrap(), want);
    }

    #[test]
    fn direct_routing_uses_plain_routes_on_link_only() {
        let on = ipip(true).objects(&peer("192.0.2.3")).unwrap();
        let want: BTreeSet<Object> = [
            route("10.0.0.64/26", "192.0.2.3", 2, false),
            route("10.0.3.0/26", "192.0.2.3", 2, false),
        ]
        .into();
        assert_eq!(on, want);
        let off = ipip(true).objects(&peer("198.51.100.7")).unwrap();
        assert!(off.iter().all(|o| matches!(
            o,
            Object::Route {
                oif: Some(9),
                onlink: true,
                ..
            }
        )));
        assert_eq!(off.len(), 2);
    }

    #[test]
    fn refused_peers() {
        let e = ipip(false).objects(&peer("fd00::3")).unwrap_err();
        assert!(matches!(e, Refused::Peer(_)));
        assert!(e.to_string().contains("IPv4"), "{e}");
        let mut p = peer("192.0.2.3");
        p.underlay = None;
        assert!(matches!(
            ipip(false).objects(&p).unwrap_err(),
            Refused::Peer(_)
        ));
        let mut v6 = peer("192.0.2.3");
        v6.blocks.push("fd00:1::/122".parse().unwrap());
        let e = ipip(true).objects(&v6).unwrap_err();
        assert!(
            e.to_string().contains("fd00:1::/122") && e.to_string().contains("vxlan"),
            "{e}"
        );
        let not_ready = Ipip::new(underlay(), None, false);
        assert!(matches!(
            not_ready.objects(&peer("192.0.2.3")).unwrap_err(),
            Refused::NotReady(_)
        ));
    }
}
