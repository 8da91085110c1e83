//! The node side: this node's VXLAN device, and what is programmed toward each remote
//! node (flannel's vxlan backend). `ipamd` drives it through [`NodeSide`]; the kernel
//! work is the shared reconciler's.
//!
//! Per remote node ("peer"), with its VTEP addresses = its gateways (the first host of
//! its lowest IPv4 block and of its lowest IPv6 block, which its own device carries as
//! /32 and /128; cluster IPAM reserves both with `reserveGateway`):
//! - `Fdb`: its VTEP MAC -> its underlay IP of this node's underlay family (one entry per
//!   node, shared by both families: VXLAN is L2, the frame carries either);
//! - `Neigh`: each VTEP address -> its VTEP MAC (no ARP/ND across the overlay: learning
//!   is off);
//! - `Route`: each of its blocks via its VTEP address of the block's family, `onlink` on
//!   the device.
//!
//! The underlay may be IPv4 or IPv6 (the device then has `local6` and the FDB entries an
//! IPv6 `dst`), whatever the pods' families: dual-stack and IPv6-only pools are carried
//! over either. The device MTU is the underlay's minus 50 (IPv4) or 70 (IPv6).
//!
//! `directRouting` decides per family: a block goes by a plain route via the peer's
//! underlay address of its family when that address is on a directly connected subnet,
//! else through the device (a dual-stack pool on an IPv4-only underlay: IPv4 direct,
//! IPv6 encapsulated).

use std::collections::{BTreeMap, BTreeSet};

use cni_core::netlink::{MacAddr, Netlink, Underlay, VxlanSpec};
use cni_core::node::peer::{underlay_backend, vtep_mac_for, VTEP_MAC_KEY};
use cni_core::node::Refused;
use cni_core::node::{NodeSide, Object, Peer};
use cni_core::{CniError, KernelError};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use tracing::{info, warn};

use crate::config::VxlanOptions;

/// The VXLAN node side of one network.
#[derive(Clone, Debug)]
pub struct Vxlan {
    node: String,
    underlay: Underlay,
    vni: u32,
    port: u16,
    device: String,
    mtu: u32,
    mac: MacAddr,
    direct_routing: bool,
    /// The device's index once [`NodeSide::ensure`] has run.
    index: Option<u32>,
}

impl Vxlan {
    /// The node side of node `node` on `underlay` (see [`VxlanOptions`] for the
    /// defaults). `InvalidConfig` (7) when the underlay is too small for VXLAN.
    pub fn new(
        node: impl Into<String>,
        underlay: Underlay,
        opts: &VxlanOptions,
    ) -> Result<Vxlan, CniError> {
        let node = node.into();
        if node.is_empty() {
            return Err(CniError::invalid_config(
                "VXLAN node side: the node name is empty",
            ));
        }
        let mtu = opts.mtu_for(&underlay)?;
        Ok(Vxlan {
            mac: vtep_mac_for(&node, opts.vni),
            device: opts.device_name(),
            vni: opts.vni,
            port: opts.port,
            direct_routing: opts.direct_routing,
            mtu,
            underlay,
            node,
            index: None,
        })
    }

    /// The device as it must be.
    pub fn spec(&self) -> VxlanSpec {
        VxlanSpec {
            name: self.device.clone(),
            vni: self.vni,
            port: self.port,
            local: self.underlay.addr,
            underlay: self.underlay.index,
            mtu: self.mtu,
            mac: self.mac,
        }
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// The node's name (the VTEP MAC derives from it).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This node's VTEP MAC (stable across restarts: derived from node name and VNI).
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// The device's index, once ensured.
    pub fn index(&self) -> Option<u32> {
        self.index
    }

    pub fn underlay(&self) -> &Underlay {
        &self.underlay
    }

    /// Makes the device carry exactly `want` among its IPv4 and global IPv6 addresses
    /// (it is ours: any other is a gateway of a block this node no longer has first; the
    /// kernel's link-local IPv6 address stays).
    async fn ensure_address(
        &self,
        nl: &Netlink,
        index: u32,
        want: &[IpNetwork],
    ) -> Result<(), KernelError> {
        let dev = &self.device;
        let have = nl
            .addresses(index)
            .await
            .map_err(|e| e.context(format!("listing addresses of {dev}")))?;
        let link_local = |a: &IpNetwork| match a {
            IpNetwork::V6(n) => (n.ip().segments()[0] & 0xffc0) == 0xfe80,
            IpNetwork::V4(_) => false,
        };
        for a in have.iter().filter(|a| !link_local(a) && !want.contains(a)) {
            info!(device = %dev, old = %a, "removing a stale VTEP address");
            nl.del_address(index, *a)
                .await
                .map_err(|e| e.context(format!("removing {a} from {dev}")))?;
        }
        for w in want.iter().filter(|w| !have.contains(w)) {
            info!(device = %dev, addr = %w, "adding the VTEP address");
            nl.add_address(index, *w)
                .await
                .map_err(|e| e.context(format!("adding {w} to {dev}")))?;
        }
        Ok(())
    }
}

/// `vtepMac` of `peer`, or why it is unusable.
fn peer_mac(peer: &Peer) -> Result<MacAddr, Refused> {
    match peer.backend.get(VTEP_MAC_KEY) {
        None => Err(Refused::Peer(format!(
            "node {} publishes no {VTEP_MAC_KEY}: its ipamd does not run the vxlan backend (yet)",
            peer.name
        ))),
        Some(s) => s.parse().map_err(|_| {
            Refused::Peer(format!(
                "node {} publishes {VTEP_MAC_KEY} {s:?}, which is not a MAC address",
                peer.name
            ))
        }),
    }
}

impl NodeSide for Vxlan {
    fn name(&self) -> &'static str {
        "vxlan"
    }

    fn backend(&self) -> BTreeMap<String, String> {
        let mut b = underlay_backend(&self.underlay);
        b.insert(VTEP_MAC_KEY.to_string(), self.mac.to_string());
        b
    }

    async fn ensure(&mut self, nl: &Netlink, me: &Peer) -> Result<bool, KernelError> {
        let (link, created) = nl
            .ensure_vxlan(&self.spec())
            .await
            .map_err(|e| e.context(format!("VXLAN device {}", self.device)))?;
        // A device recreated behind our back has a new index: the objects on the old
        // one are gone as surely as if we had recreated it.
        let replaced = self.index.is_some_and(|i| i != link.index);
        self.index = Some(link.index);
        let want: Vec<IpNetwork> = [
            me.gateway_v4()
                .and_then(|g| Ipv4Network::new(g, 32).ok())
                .map(IpNetwork::V4),
            me.gateway_v6()
                .and_then(|g| Ipv6Network::new(g, 128).ok())
                .map(IpNetwork::V6),
        ]
        .into_iter()
        .flatten()
        .collect();
        if want.is_empty() {
            warn!(node = %me.name, device = %self.device, "this node has no block yet: the VXLAN device carries no address");
        }
        self.ensure_address(nl, link.index, &want).await?;
        if created || replaced {
            info!(node = %self.node, device = %self.device, index = link.index, vni = self.vni, mac = %self.mac, "VXLAN device (re)created");
        }
        Ok(created || replaced)
    }

    fn set_underlay(&mut self, underlay: Underlay) {
        self.underlay = underlay;
    }

    fn devices(&self) -> Vec<u32> {
        self.index.into_iter().collect()
    }

    fn objects(&self, peer: &Peer) -> Result<BTreeSet<Object>, Refused> {
        let v6_underlay = self.underlay.addr.is_ipv6();
        let underlay_ip = match (peer.underlay, peer.underlay_of(v6_underlay)) {
            (_, Some(ip)) => ip,
            (None, None) => {
                return Err(Refused::Peer(format!(
                    "node {} publishes no underlay address: its ipamd has not registered one yet",
                    peer.name
                )))
            }
            (Some(other), None) => {
                return Err(Refused::Peer(format!(
                    "node {} has underlay address {other}, of another family than this \
                     node's {}, and publishes none of this one: choose underlays of one \
                     family (underlayInterface/underlayAddress), or give both nodes' \
                     underlays an address of each family",
                    peer.name, self.underlay.addr
                )))
            }
        };
        // directRouting, per family: a block whose family the peer has an on-link
        // underlay address of gets a plain route via it; the others go through VXLAN.
        let direct = |b: &IpNetwork| {
            self.direct_routing
                .then(|| peer.direct_route(&self.underlay, b))
                .flatten()
        };
        let mut out: BTreeSet<Object> = peer.blocks.iter().filter_map(direct).collect();
        let tunnelled: Vec<&IpNetwork> =
            peer.blocks.iter().filter(|b| direct(b).is_none()).collect();
        // No block left to encapsulate (or none at all: its VTEP addresses do not exist).
        if tunnelled.is_empty() {
            return Ok(out);
        }
        let mac = peer_mac(peer)?;
        let dev = self.index.ok_or_else(|| {
            Refused::NotReady(format!(
                "VXLAN device {} is not set up yet (ensure has not succeeded)",
                self.device
            ))
        })?;
        out.insert(Object::Fdb {
            dev,
            mac,
            dst: underlay_ip,
        });
        for b in tunnelled {
            // Both VTEP addresses exist: the peer has a block of each family it routes.
            let Some(vtep) = peer.gateway(b.is_ipv6()) else {
                continue;
            };
            out.insert(Object::Neigh { dev, ip: vtep, mac });
            out.insert(Object::Route {
                dst: *b,
                gw: vtep,
                oif: Some(dev),
                onlink: true,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_core::node::peer::UNDERLAY_V6_KEY;
    use std::net::IpAddr;

    fn underlay() -> Underlay {
        Underlay {
            index: 3,
            name: "eth0".into(),
            addr: "192.0.2.2".parse().unwrap(),
            networks: vec!["192.0.2.2/24".parse().unwrap()],
            mtu: 1500,
        }
    }

    fn peer(ip: Option<&str>, blocks: &[&str], mac: Option<&str>) -> Peer {
        Peer {
            name: "n2".into(),
            underlay: ip.map(|i| i.parse().unwrap()),
            blocks: blocks.iter().map(|b| b.parse().unwrap()).collect(),
            backend: mac
                .map(|m| BTreeMap::from([(VTEP_MAC_KEY.to_string(), m.to_string())]))
                .unwrap_or_default(),
        }
    }

    fn ensured(opts: &VxlanOptions) -> Vxlan {
        let mut v = Vxlan::new("n1", underlay(), opts).unwrap();
        v.index = Some(9);
        v
    }

    const MAC: &str = "02:11:22:33:44:55";

    #[test]
    fn defaults_and_backend() {
        let v = Vxlan::new("n1", underlay(), &VxlanOptions::default()).unwrap();
        assert_eq!(v.device(), "cni-vx.1");
        assert_eq!(v.mtu(), 1450);
        assert_eq!(v.mac(), vtep_mac_for("n1", 1));
        let s = v.spec();
        assert_eq!((s.vni, s.port, s.underlay), (1, 8472, 3));
        assert_eq!(s.local, "192.0.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            v.backend().get(VTEP_MAC_KEY),
            Some(&vtep_mac_for("n1", 1).to_string())
        );
        assert!(v.devices().is_empty(), "no device before ensure");
        let o = VxlanOptions {
            vni: 7,
            mtu: Some(1400),
            device: Some("vx7".into()),
            ..Default::default()
        };
        let v = Vxlan::new("n1", underlay(), &o).unwrap();
        assert_eq!((v.device(), v.mtu()), ("vx7", 1400));
        assert_eq!(v.mac(), vtep_mac_for("n1", 7));
        assert!(Vxlan::new("", underlay(), &VxlanOptions::default()).is_err());
        let mut tiny = underlay();
        tiny.mtu = 100;
        assert_eq!(
            Vxlan::new("n1", tiny, &VxlanOptions::default())
                .unwrap_err()
                .code,
            7
        );
    }

    #[test]
    fn objects_of_a_peer() {
        let v = ensured(&VxlanOptions::default());
        let p = peer(
            Some("198.51.100.7"),
            &[
                "10.0.1.64/26",
                "10.0.0.128/26",
                "fd00::80/122",
                "fd00::40/122",
            ],
            Some(MAC),
        );
        let mac: MacAddr = MAC.parse().unwrap();
        let vtep: IpAddr = "10.0.0.129".parse().unwrap();
        let vtep6: IpAddr = "fd00::41".parse().unwrap();
        let route = |dst: &str, gw: IpAddr| Object::Route {
            dst: dst.parse().unwrap(),
            gw,
            oif: Some(9),
            onlink: true,
        };
        let want = BTreeSet::from([
            Object::Fdb {
                dev: 9,
                mac,
                dst: "198.51.100.7".parse().unwrap(),
            },
            Object::Neigh {
                dev: 9,
                ip: vtep,
                mac,
            },
            Object::Neigh {
                dev: 9,
                ip: vtep6,
                mac,
            },
            route("10.0.0.128/26", vtep),
            route("10.0.1.64/26", vtep),
            route("fd00::40/122", vtep6),
            route("fd00::80/122", vtep6),
        ]);
        assert_eq!(v.objects(&p).unwrap(), want);
        // An on-link peer is still encapsulated without directRouting.
        let p2 = peer(Some("192.0.2.3"), &["10.0.2.0/26"], Some(MAC));
        assert_eq!(v.objects(&p2).unwrap().len(), 3);
        // IPv6 only: one FDB entry (IPv4 underlay), the IPv6 neighbour and route.
        let p3 = peer(Some("198.51.100.7"), &["fd00::40/122"], Some(MAC));
        let want = BTreeSet::from([
            Object::Fdb {
                dev: 9,
                mac,
                dst: "198.51.100.7".parse().unwrap(),
            },
            Object::Neigh {
                dev: 9,
                ip: vtep6,
                mac,
            },
            route("fd00::40/122", vtep6),
        ]);
        assert_eq!(v.objects(&p3).unwrap(), want);
        // No block: nothing to program.
        let p4 = peer(Some("198.51.100.7"), &[], Some(MAC));
        assert!(v.objects(&p4).unwrap().is_empty());
    }

    #[test]
    fn ipv6_underlay() {
        let mut u = underlay();
        u.addr = "2001:db8::2".parse().unwrap();
        u.networks = vec!["2001:db8::2/64".parse().unwrap()];
        let mut v = Vxlan::new("n1", u, &VxlanOptions::default()).unwrap();
        v.index = Some(9);
        assert_eq!(v.mtu(), 1430, "1500 - 70 on an IPv6 underlay");
        assert_eq!(v.spec().local, "2001:db8::2".parse::<IpAddr>().unwrap());
        assert_eq!(
            v.backend().get(UNDERLAY_V6_KEY).map(String::as_str),
            Some("2001:db8::2")
        );
        let p = peer(Some("2001:db8::7"), &["fd00::40/122"], Some(MAC));
        let got = v.objects(&p).unwrap();
        assert!(got.contains(&Object::Fdb {
            dev: 9,
            mac: MAC.parse().unwrap(),
            dst: "2001:db8::7".parse().unwrap(),
        }));
        assert_eq!(got.len(), 3);
        // A dual-stack peer whose record names its IPv4 address: the FDB entry takes
        // the IPv6 one it publishes.
        let mut p = peer(Some("198.51.100.7"), &["10.0.1.0/26"], Some(MAC));
        p.backend
            .insert(UNDERLAY_V6_KEY.into(), "2001:db8::8".into());
        assert!(v.objects(&p).unwrap().contains(&Object::Fdb {
            dev: 9,
            mac: MAC.parse().unwrap(),
            dst: "2001:db8::8".parse().unwrap(),
        }));
    }

    #[test]
    fn direct_routing_uses_plain_routes_on_link_only() {
        let v = ensured(&VxlanOptions {
            direct_routing: true,
            ..Default::default()
        });
        let on_link = peer(Some("192.0.2.3"), &["10.0.2.0/26", "10.0.3.0/26"], None);
        let got = v.objects(&on_link).unwrap();
        let want: BTreeSet<Object> = ["10.0.2.0/26", "10.0.3.0/26"]
            .iter()
            .map(|d| Object::Route {
                dst: d.parse().unwrap(),
                gw: "192.0.2.3".parse().unwrap(),
                oif: Some(3),
                onlink: false,
            })
            .collect();
        assert_eq!(got, want, "plain routes, no neighbour or FDB entry");
        let off_link = peer(Some("198.51.100.7"), &["10.0.2.0/26"], Some(MAC));
        let got = v.objects(&off_link).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got.iter().any(|o| matches!(o, Object::Fdb { .. })));
        // Dual-stack pool, IPv4-only underlay: IPv4 direct, IPv6 through VXLAN.
        let mixed = peer(
            Some("192.0.2.3"),
            &["10.0.2.0/26", "fd00::40/122"],
            Some(MAC),
        );
        let mac: MacAddr = MAC.parse().unwrap();
        let vtep6: IpAddr = "fd00::41".parse().unwrap();
        let want = BTreeSet::from([
            Object::Route {
                dst: "10.0.2.0/26".parse().unwrap(),
                gw: "192.0.2.3".parse().unwrap(),
                oif: Some(3),
                onlink: false,
            },
            Object::Fdb {
                dev: 9,
                mac,
                dst: "192.0.2.3".parse().unwrap(),
            },
            Object::Neigh {
                dev: 9,
                ip: vtep6,
                mac,
            },
            Object::Route {
                dst: "fd00::40/122".parse().unwrap(),
                gw: vtep6,
                oif: Some(9),
                onlink: true,
            },
        ]);
        assert_eq!(v.objects(&mixed).unwrap(), want);
    }

    #[test]
    fn peers_missing_data_are_refused_saying_what() {
        let v = ensured(&VxlanOptions::default());
        let e = v
            .objects(&peer(None, &["10.0.2.0/26"], Some(MAC)))
            .unwrap_err();
        assert!(
            e.to_string().contains("n2") && e.to_string().contains("underlay"),
            "{e}"
        );
        let e = v
            .objects(&peer(Some("198.51.100.7"), &["10.0.2.0/26"], None))
            .unwrap_err();
        assert!(e.to_string().contains(VTEP_MAC_KEY), "{e}");
        let e = v
            .objects(&peer(Some("198.51.100.7"), &["10.0.2.0/26"], Some("nope")))
            .unwrap_err();
        assert!(
            e.to_string().contains("nope") && e.to_string().contains("not a MAC"),
            "{e}"
        );
        let e = v
            .objects(&peer(Some("2001:db8::7"), &["10.0.2.0/26"], Some(MAC)))
            .unwrap_err();
        assert!(e.to_string().contains("family"), "{e}");
        // Before ensure there is no device to point entries at.
        let fresh = Vxlan::new("n1", underlay(), &VxlanOptions::default()).unwrap();
        let e = fresh
            .objects(&peer(Some("198.51.100.7"), &["10.0.2.0/26"], Some(MAC)))
            .unwrap_err();
        assert!(e.to_string().contains("cni-vx.1"), "{e}");
    }
}
