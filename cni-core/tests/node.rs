//! Root-only kernel tests for the node side: VXLAN devices, neighbour and FDB entries,
//! and the reconciler. Every test works in a network namespace of its own (named from
//! the test and the pid), removed by a guard, with an underlay veth pair inside it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use cni_core::netlink::neigh::{FdbEntry, NeighEntry};
use cni_core::netlink::{self, Link, MacAddr, Netlink, VxlanSpec};
use cni_core::node::{Applied, Object, Reconciler};
use common::{net, TestNs};
use ipnetwork::IpNetwork;

impl TestNs {
    /// An underlay inside the namespace: veth `under0` (192.168.77.1/24, up) with its
    /// peer `under1` (up). Returns the index of `under0`.
    fn underlay(&self) -> u32 {
        self.exec(&[
            "ip", "link", "add", "under0", "type", "veth", "peer", "name", "under1",
        ]);
        self.exec(&["ip", "addr", "add", "192.168.77.1/24", "dev", "under0"]);
        self.exec(&["ip", "link", "set", "under0", "up"]);
        self.exec(&["ip", "link", "set", "under1", "up"]);
        let out = self.exec(&["cat", "/sys/class/net/under0/ifindex"]);
        out.trim().parse().unwrap()
    }
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const LOCAL: &str = "192.168.77.1";

fn spec(name: &str, underlay: u32) -> VxlanSpec {
    VxlanSpec {
        name: name.into(),
        vni: 42,
        port: 8472,
        local: ip(LOCAL),
        underlay,
        mtu: 1450,
        mac: mac("02:42:00:00:00:01"),
    }
}

/// Creates the underlay and `vx0` on it; returns the VXLAN link.
async fn vxlan(ns: &TestNs, nl: &Netlink) -> Link {
    let under = ns.underlay();
    let (link, created) = nl.ensure_vxlan(&spec("vx0", under)).await.unwrap();
    assert!(created);
    link
}

#[test]
fn vxlan_create_adopt_recreate() {
    let ns = TestNs::new("vxlan");
    let under = ns.underlay();
    netlink::block_on(async {
        let nl = ns.nl();
        let want = spec("vx0", under);
        let (link, created) = nl.ensure_vxlan(&want).await.unwrap();
        assert!(created);
        assert_eq!(link.name, "vx0");
        assert_eq!(link.kind.as_deref(), Some("vxlan"));
        assert_eq!(link.mtu, 1450);
        assert_eq!(link.mac, Some(want.mac));
        assert!(link.up);
        let shown = ns.exec(&["ip", "-d", "link", "show", "vx0"]);
        for s in [
            "vxlan id 42",
            "local 192.168.77.1",
            "dev under0",
            "dstport 8472",
            "nolearning",
            "mtu 1450",
            "02:42:00:00:00:01",
        ] {
            assert!(shown.contains(s), "{s:?} not in {shown}");
        }

        // Adopted as it is.
        let (again, created) = nl.ensure_vxlan(&want).await.unwrap();
        assert!(!created);
        assert_eq!(again, link);

        // MTU, MAC and up-state are repaired in place.
        ns.exec(&["ip", "link", "set", "vx0", "down", "mtu", "1400"]);
        ns.exec(&["ip", "link", "set", "vx0", "address", "02:42:00:00:00:99"]);
        let (fixed, created) = nl.ensure_vxlan(&want).await.unwrap();
        assert!(!created);
        assert_eq!(fixed, link);

        // A different VNI or port: created again (a different local address: changed
        // in place, below).
        let mut other = want.clone();
        other.vni = 43;
        let (re, created) = nl.ensure_vxlan(&other).await.unwrap();
        assert!(created);
        assert!(ns
            .exec(&["ip", "-d", "link", "show", "vx0"])
            .contains("vxlan id 43"));
        other.port = 4789;
        let (re2, created) = nl.ensure_vxlan(&other).await.unwrap();
        assert!(created);
        assert_ne!(re2.index, re.index);
        assert!(ns
            .exec(&["ip", "-d", "link", "show", "vx0"])
            .contains("dstport 4789"));
        ns.exec(&["ip", "addr", "add", "192.168.77.5/24", "dev", "under0"]);
        other.local = ip("192.168.77.5");
        let (moved, created) = nl.ensure_vxlan(&other).await.unwrap();
        assert!(!created, "a new local address is set in place");
        assert_eq!(moved.index, re2.index);
        assert!(ns
            .exec(&["ip", "-d", "link", "show", "vx0"])
            .contains("local 192.168.77.5"));

        // Not a VXLAN device at all, or one that learns: replaced.
        ns.exec(&["ip", "link", "add", "vx1", "type", "bridge"]);
        let (l, created) = nl.ensure_vxlan(&spec("vx1", under)).await.unwrap();
        assert!(created);
        assert_eq!(l.kind.as_deref(), Some("vxlan"));
        ns.exec(&[
            "ip", "link", "add", "vx2", "type", "vxlan", "id", "44", "dstport", "8472", "local",
            LOCAL, "dev", "under0",
        ]);
        let mut vx2 = spec("vx2", under);
        vx2.vni = 44;
        let (_, created) = nl.ensure_vxlan(&vx2).await.unwrap();
        assert!(created);
        assert!(ns
            .exec(&["ip", "-d", "link", "show", "vx2"])
            .contains("nolearning"));

        // An IPv6 underlay.
        ns.exec(&["ip", "addr", "add", "fd77::1/64", "dev", "under0", "nodad"]);
        let mut v6 = spec("vx6", under);
        v6.vni = 45;
        v6.local = ip("fd77::1");
        // 1500 less the 70 bytes of VXLAN over IPv6.
        v6.mtu = 1430;
        let (l6, created) = nl.ensure_vxlan(&v6).await.unwrap();
        assert!(created);
        assert!(ns
            .exec(&["ip", "-d", "link", "show", "vx6"])
            .contains("local fd77::1"));
        let (again, created) = nl.ensure_vxlan(&v6).await.unwrap();
        assert!(!created);
        assert_eq!(again, l6);
        nl.replace_fdb(l6.index, mac("02:00:00:00:06:01"), ip("fd77::2"))
            .await
            .unwrap();
        assert_eq!(
            nl.fdbs(l6.index).await.unwrap(),
            vec![FdbEntry {
                dev: l6.index,
                mac: mac("02:00:00:00:06:01"),
                dst: ip("fd77::2"),
            }]
        );

        // A bad underlay is refused, naming the device.
        let e = nl.ensure_vxlan(&spec("vx3", 999_999)).await.unwrap_err();
        assert!(e.to_string().contains("vx3"), "{}", e.to_string());
    })
    .unwrap();
}

#[test]
fn neigh_replace_list_delete() {
    let ns = TestNs::new("neigh");
    netlink::block_on(async {
        let nl = ns.nl();
        let vx = vxlan(&ns, &nl).await;
        let (m1, m2) = (mac("02:00:00:00:01:01"), mac("02:00:00:00:01:02"));
        nl.replace_neigh(vx.index, ip("10.244.1.0"), m1)
            .await
            .unwrap();
        nl.replace_neigh(vx.index, ip("fd10::1"), m1).await.unwrap();
        let shown = ns.exec(&["ip", "neigh", "show", "dev", "vx0"]);
        assert!(
            shown.contains("10.244.1.0 lladdr 02:00:00:00:01:01 PERMANENT"),
            "{shown}"
        );
        assert!(
            shown.contains("fd10::1 lladdr 02:00:00:00:01:01 PERMANENT"),
            "{shown}"
        );
        // Replaced in place.
        nl.replace_neigh(vx.index, ip("10.244.1.0"), m2)
            .await
            .unwrap();
        let shown = ns.exec(&["ip", "-4", "neigh", "show", "dev", "vx0"]);
        assert_eq!(
            shown.trim(),
            "10.244.1.0 lladdr 02:00:00:00:01:02 PERMANENT",
            "{shown}"
        );

        // Listed: permanent ones only, this device only.
        ns.exec(&[
            "ip",
            "neigh",
            "add",
            "192.168.77.9",
            "lladdr",
            "02:00:00:00:09:09",
            "dev",
            "under0",
            "nud",
            "permanent",
        ]);
        ns.exec(&[
            "ip",
            "neigh",
            "add",
            "10.244.2.0",
            "lladdr",
            "02:00:00:00:02:02",
            "dev",
            "vx0",
            "nud",
            "reachable",
        ]);
        let mut got = nl.neighs(vx.index).await.unwrap();
        got.sort();
        let mut want = vec![
            NeighEntry {
                dev: vx.index,
                ip: ip("10.244.1.0"),
                mac: m2,
            },
            NeighEntry {
                dev: vx.index,
                ip: ip("fd10::1"),
                mac: m1,
            },
        ];
        want.sort();
        assert_eq!(got, want);

        nl.del_neigh(vx.index, ip("10.244.1.0")).await.unwrap();
        nl.del_neigh(vx.index, ip("fd10::1")).await.unwrap();
        // Gone already: fine.
        nl.del_neigh(vx.index, ip("10.244.1.0")).await.unwrap();
        let shown = ns.exec(&["ip", "neigh", "show", "dev", "vx0", "nud", "permanent"]);
        assert_eq!(shown.trim(), "", "{shown}");
        assert!(nl.neighs(vx.index).await.unwrap().is_empty());

        // Errors say what failed.
        let e = nl
            .replace_neigh(999_999, ip("10.244.1.0"), m1)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("10.244.1.0") && e.to_string().contains("#999999"),
            "{}",
            e.to_string()
        );
    })
    .unwrap();
}

#[test]
fn fdb_replace_list_delete() {
    let ns = TestNs::new("fdb");
    netlink::block_on(async {
        let nl = ns.nl();
        let vx = vxlan(&ns, &nl).await;
        let m1 = mac("02:00:00:00:01:01");
        nl.replace_fdb(vx.index, m1, ip("192.168.77.2"))
            .await
            .unwrap();
        let shown = ns.exec(&["bridge", "fdb", "show", "dev", "vx0"]);
        assert!(
            shown.contains("02:00:00:00:01:01 dst 192.168.77.2 self permanent"),
            "{shown}"
        );
        // A new remote replaces the old one: no stale entry.
        nl.replace_fdb(vx.index, m1, ip("192.168.77.3"))
            .await
            .unwrap();
        let shown = ns.exec(&["bridge", "fdb", "show", "dev", "vx0"]);
        assert!(
            shown.contains("02:00:00:00:01:01 dst 192.168.77.3 self permanent"),
            "{shown}"
        );
        assert!(!shown.contains("192.168.77.2"), "{shown}");
        assert_eq!(
            nl.fdbs(vx.index).await.unwrap(),
            vec![FdbEntry {
                dev: vx.index,
                mac: m1,
                dst: ip("192.168.77.3"),
            }]
        );
        // A unicast MAC has one remote; the all-zeros one (flooding) several: an entry
        // each, deleted one by one.
        let zero = mac("00:00:00:00:00:00");
        for dst in ["192.168.77.4", "192.168.77.5"] {
            ns.exec(&[
                "bridge",
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                "vx0",
                "dst",
                dst,
                "self",
                "permanent",
            ]);
        }
        assert_eq!(nl.fdbs(vx.index).await.unwrap().len(), 3);
        nl.del_fdb(vx.index, zero, ip("192.168.77.4"))
            .await
            .unwrap();
        let shown = ns.exec(&["bridge", "fdb", "show", "dev", "vx0"]);
        assert!(!shown.contains("192.168.77.4"), "{shown}");
        assert!(
            shown.contains("00:00:00:00:00:00 dst 192.168.77.5 self permanent"),
            "{shown}"
        );
        nl.del_fdb(vx.index, zero, ip("192.168.77.5"))
            .await
            .unwrap();
        nl.del_fdb(vx.index, m1, ip("192.168.77.3")).await.unwrap();
        // Gone already: fine.
        nl.del_fdb(vx.index, m1, ip("192.168.77.3")).await.unwrap();
        let shown = ns.exec(&["bridge", "fdb", "show", "dev", "vx0"]);
        assert!(!shown.contains("02:00:00:00:01:01"), "{shown}");
        assert!(nl.fdbs(vx.index).await.unwrap().is_empty());

        let e = nl
            .replace_fdb(999_999, m1, ip("192.168.77.2"))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("02:00:00:00:01:01") && e.to_string().contains("#999999"),
            "{}",
            e.to_string()
        );
    })
    .unwrap();
}

/// What the VXLAN datapath programs toward a peer: route to its block via its gateway
/// onlink, the gateway's neighbour entry (its VTEP MAC), the VTEP's FDB entry.
fn peer_objects(dev: u32, block: &str, vtep: MacAddr, underlay: &str) -> BTreeSet<Object> {
    let block = net(block);
    let gw = match block {
        IpNetwork::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1)),
        IpNetwork::V6(_) => unreachable!(),
    };
    BTreeSet::from([
        Object::Route {
            dst: block,
            gw,
            oif: Some(dev),
            onlink: true,
        },
        Object::Neigh {
            dev,
            ip: gw,
            mac: vtep,
        },
        Object::Fdb {
            dev,
            mac: vtep,
            dst: ip(underlay),
        },
    ])
}

fn routes97(ns: &TestNs) -> String {
    let mut s = ns.exec(&["ip", "-4", "route", "show", "proto", "97"]);
    s.push_str(&ns.exec(&["ip", "-6", "route", "show", "proto", "97"]));
    s
}

#[test]
fn reconciler_set_peer_change_remove() {
    let ns = TestNs::new("setpeer");
    netlink::block_on(async {
        let nl = ns.nl();
        let vx = vxlan(&ns, &nl).await;
        let mut r = Reconciler::new(nl.clone());
        let (mb, mb2) = (mac("02:00:00:00:0b:01"), mac("02:00:00:00:0b:02"));

        let a = r
            .set_peer(
                "b",
                peer_objects(vx.index, "10.244.1.0/24", mb, "192.168.77.2"),
            )
            .await;
        assert_eq!(
            a,
            Applied {
                added: 3,
                ..Default::default()
            }
        );
        assert_eq!(r.installed(), 3);
        let rt = routes97(&ns);
        assert!(
            rt.contains("10.244.1.0/24 via 10.244.1.1 dev vx0 onlink"),
            "{rt}"
        );
        let nb = ns.exec(&["ip", "neigh", "show", "dev", "vx0"]);
        assert!(
            nb.contains("10.244.1.1 lladdr 02:00:00:00:0b:01 PERMANENT"),
            "{nb}"
        );
        let fdb = ns.exec(&["bridge", "fdb", "show", "dev", "vx0"]);
        assert!(
            fdb.contains("02:00:00:00:0b:01 dst 192.168.77.2 self permanent"),
            "{fdb}"
        );

        // The same again: nothing sent.
        let a = r
            .set_peer(
                "b",
                peer_objects(vx.index, "10.244.1.0/24", mb, "192.168.77.2"),
            )
            .await;
        assert_eq!(a.requests(), 0, "{a:?}");

        // New underlay address: the FDB entry is replaced, no stale remote.
        let a = r
            .set_peer(
                "b",
                peer_objects(vx.index, "10.244.1.0/24", mb, "192.168.77.3"),
            )
            .await;
        assert_eq!(
            a,
            Applied {
                replaced: 1,
                ..Default::default()
            }
        );
        let fdb = ns.exec(&["bridge", "fdb", "show", "dev", "vx0"]);
        assert!(
            fdb.contains("02:00:00:00:0b:01 dst 192.168.77.3 self permanent"),
            "{fdb}"
        );
        assert!(!fdb.contains("192.168.77.2"), "{fdb}");

        // New VTEP MAC: neighbour replaced, FDB entry of the old MAC deleted.
        let a = r
            .set_peer(
                "b",
                peer_objects(vx.index, "10.244.1.0/24", mb2, "192.168.77.3"),
            )
            .await;
        assert_eq!(
            a,
            Applied {
                added: 1,
                replaced: 1,
                removed: 1,
                failed: 0
            }
        );
        let fdb = ns.exec(&["bridge", "fdb", "show", "dev", "vx0"]);
        assert!(
            fdb.contains("02:00:00:00:0b:02 dst 192.168.77.3 self permanent"),
            "{fdb}"
        );
        assert!(!fdb.contains("02:00:00:00:0b:01"), "{fdb}");
        let nb = ns.exec(&["ip", "neigh", "show", "dev", "vx0"]);
        assert!(
            nb.contains("10.244.1.1 lladdr 02:00:00:00:0b:02 PERMANENT"),
            "{nb}"
        );

        // A second peer, then the first one goes: only its entries go.
        r.set_peer(
            "c",
            peer_objects(
                vx.index,
                "10.244.2.0/24",
                mac("02:00:00:00:0c:01"),
                "192.168.77.4",
            ),
        )
        .await;
        let a = r.remove_peer("b").await;
        assert_eq!(
            a,
            Applied {
                removed: 3,
                ..Default::default()
            }
        );
        assert_eq!(r.installed(), 3);
        let rt = routes97(&ns);
        assert!(!rt.contains("10.244.1.0"), "{rt}");
        assert!(rt.contains("10.244.2.0/24"), "{rt}");
        let nb = ns.exec(&["ip", "neigh", "show", "dev", "vx0"]);
        assert!(!nb.contains("10.244.1.1"), "{nb}");
        let fdb = ns.exec(&["bridge", "fdb", "show", "dev", "vx0"]);
        assert!(!fdb.contains("02:00:00:00:0b"), "{fdb}");
        assert!(fdb.contains("02:00:00:00:0c:01"), "{fdb}");

        // A refused request is counted, not recorded, and does not stop the others.
        let mut bad = peer_objects(
            vx.index,
            "10.244.3.0/24",
            mac("02:00:00:00:0d:01"),
            "192.168.77.5",
        );
        bad.insert(Object::Neigh {
            dev: 999_999,
            ip: ip("10.244.3.1"),
            mac: mac("02:00:00:00:0d:01"),
        });
        let a = r.set_peer("d", bad).await;
        assert_eq!(a.failed, 1, "{a:?}");
        assert_eq!(a.added, 3, "{a:?}");
        assert_eq!(r.installed_for("d").map(BTreeSet::len), Some(3));
        r.remove_peer("c").await;
        r.remove_peer("d").await;
        assert_eq!(r.installed(), 0);
        assert_eq!(routes97(&ns).trim(), "");
    })
    .unwrap();
}

#[test]
fn reconciler_resync() {
    let ns = TestNs::new("resync");
    netlink::block_on(async {
        let nl = ns.nl();
        let vx = vxlan(&ns, &nl).await;
        let mut want = BTreeMap::new();
        let mut b = peer_objects(
            vx.index,
            "10.244.1.0/24",
            mac("02:00:00:00:0b:01"),
            "192.168.77.2",
        );
        // An IPv6 route too: both families are dumped.
        b.insert(Object::Route {
            dst: net("fd10:1::/64"),
            gw: ip("fd10::1"),
            oif: Some(vx.index),
            onlink: true,
        });
        want.insert("b".to_string(), b);
        want.insert(
            "c".to_string(),
            peer_objects(
                vx.index,
                "10.244.2.0/24",
                mac("02:00:00:00:0c:01"),
                "192.168.77.3",
            ),
        );
        let mut r = Reconciler::new(nl.clone());
        let a = r.resync(want.clone(), &[vx.index]).await.unwrap();
        assert_eq!(
            a,
            Applied {
                added: 7,
                ..Default::default()
            }
        );
        assert_eq!(r.installed(), 7);
        let rt = routes97(&ns);
        assert!(rt.contains("fd10:1::/64 via fd10::1 dev vx0"), "{rt}");

        // Behind its back: an owned route, neighbour and FDB entry nobody wants, a route of
        // another protocol, a wanted route deleted, a wanted FDB entry changed.
        ns.exec(&[
            "ip",
            "route",
            "add",
            "10.99.0.0/24",
            "via",
            "10.244.1.1",
            "dev",
            "vx0",
            "onlink",
            "proto",
            "97",
        ]);
        ns.exec(&[
            "ip",
            "route",
            "add",
            "10.98.0.0/24",
            "via",
            "10.244.1.1",
            "dev",
            "vx0",
            "onlink",
            "proto",
            "static",
        ]);
        ns.exec(&[
            "ip",
            "neigh",
            "add",
            "10.244.9.1",
            "lladdr",
            "02:00:00:00:09:01",
            "dev",
            "vx0",
            "nud",
            "permanent",
        ]);
        ns.exec(&[
            "bridge",
            "fdb",
            "append",
            "02:00:00:00:09:01",
            "dev",
            "vx0",
            "dst",
            "192.168.77.9",
            "self",
            "permanent",
        ]);
        ns.exec(&["ip", "route", "del", "10.244.2.0/24"]);
        ns.exec(&[
            "bridge",
            "fdb",
            "replace",
            "02:00:00:00:0b:01",
            "dev",
            "vx0",
            "dst",
            "192.168.77.8",
            "self",
            "permanent",
        ]);

        let a = r.resync(want.clone(), &[vx.index]).await.unwrap();
        assert_eq!(
            a,
            Applied {
                added: 1,
                replaced: 1,
                removed: 3,
                failed: 0
            }
        );
        let rt = routes97(&ns);
        assert!(!rt.contains("10.99.0.0"), "{rt}");
        assert!(
            rt.contains("10.244.2.0/24 via 10.244.2.1 dev vx0 onlink"),
            "{rt}"
        );
        let all = ns.exec(&["ip", "route", "show"]);
        assert!(
            all.contains("10.98.0.0/24 via 10.244.1.1 dev vx0 proto static onlink"),
            "{all}"
        );
        let nb = ns.exec(&["ip", "neigh", "show", "dev", "vx0"]);
        assert!(!nb.contains("10.244.9.1"), "{nb}");
        let fdb = ns.exec(&["bridge", "fdb", "show", "dev", "vx0"]);
        assert!(!fdb.contains("02:00:00:00:09:01"), "{fdb}");
        assert!(!fdb.contains("192.168.77.8"), "{fdb}");
        assert!(
            fdb.contains("02:00:00:00:0b:01 dst 192.168.77.2 self permanent"),
            "{fdb}"
        );

        // Nothing changed: nothing sent.
        let a = r.resync(want.clone(), &[vx.index]).await.unwrap();
        assert_eq!(a.requests(), 0, "{a:?}");

        // The flooding MAC with two remotes, one of them wanted: the other goes.
        for dst in ["192.168.77.6", "192.168.77.7"] {
            ns.exec(&[
                "bridge",
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                "vx0",
                "dst",
                dst,
                "self",
                "permanent",
            ]);
        }
        want.insert(
            "flood".to_string(),
            BTreeSet::from([Object::Fdb {
                dev: vx.index,
                mac: mac("00:00:00:00:00:00"),
                dst: ip("192.168.77.6"),
            }]),
        );
        let a = r.resync(want.clone(), &[vx.index]).await.unwrap();
        assert_eq!(
            a,
            Applied {
                removed: 1,
                ..Default::default()
            }
        );
        let fdb = ns.exec(&["bridge", "fdb", "show", "dev", "vx0"]);
        assert!(!fdb.contains("192.168.77.7"), "{fdb}");
        assert!(fdb.contains("00:00:00:00:00:00 dst 192.168.77.6"), "{fdb}");
        want.remove("flood");

        // Peers gone from `want`: their entries go; then set_peer works from the new
        // state.
        want.remove("c");
        let a = r.resync(want.clone(), &[vx.index]).await.unwrap();
        assert_eq!(
            a,
            Applied {
                removed: 4,
                ..Default::default()
            }
        );
        assert_eq!(r.installed(), 4);
        let a = r.set_peer("b", want["b"].clone()).await;
        assert_eq!(a.requests(), 0, "{a:?}");
        let a = r.resync(BTreeMap::new(), &[vx.index]).await.unwrap();
        assert_eq!(a.removed, 4, "{a:?}");
        assert_eq!(routes97(&ns).trim(), "");
        assert!(ns.exec(&["ip", "route", "show"]).contains("10.98.0.0/24"));
    })
    .unwrap();
}

#[test]
fn reconciler_resync_5000_peers() {
    const PEERS: u32 = 5000;
    let ns = TestNs::new("scale");
    netlink::block_on(async {
        let nl = ns.nl();
        let vx = vxlan(&ns, &nl).await;
        let mut want = BTreeMap::new();
        for i in 0..PEERS {
            let block = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i << 8));
            let vtep = MacAddr([0x02, 0x55, 0, 0, (i >> 8) as u8, i as u8]);
            let under = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + i);
            want.insert(
                format!("node-{i}"),
                peer_objects(vx.index, &format!("{block}/24"), vtep, &under.to_string()),
            );
        }
        let mut r = Reconciler::new(nl.clone());
        let t = Instant::now();
        let a = r.resync(want.clone(), &[vx.index]).await.unwrap();
        let first = t.elapsed();
        assert_eq!(
            a,
            Applied {
                added: 3 * PEERS as usize,
                ..Default::default()
            }
        );
        let t = Instant::now();
        let again = r.resync(want.clone(), &[vx.index]).await.unwrap();
        let second = t.elapsed();
        assert_eq!(again.requests(), 0, "{again:?}");
        println!(
            "resync of {PEERS} peers (route + neigh + fdb each): {:.3} s; unchanged resync: {:.3} s",
            first.as_secs_f64(),
            second.as_secs_f64()
        );
        assert!(first.as_secs() < 60, "took {first:?}");

        let count = |args: &[&str], pat: &str| {
            ns.exec(args).lines().filter(|l| l.contains(pat)).count()
        };
        assert_eq!(
            count(&["ip", "-4", "route", "show", "proto", "97"], "onlink"),
            PEERS as usize
        );
        assert_eq!(
            count(
                &["ip", "neigh", "show", "dev", "vx0", "nud", "permanent"],
                "lladdr"
            ),
            PEERS as usize
        );
        assert_eq!(
            count(&["bridge", "fdb", "show", "dev", "vx0"], " dst 172.16."),
            PEERS as usize
        );

        // And all of it removed again, as fast.
        let t = Instant::now();
        let gone = r.resync(BTreeMap::new(), &[vx.index]).await.unwrap();
        println!("removing them: {:.3} s", t.elapsed().as_secs_f64());
        assert_eq!(gone.removed, 3 * PEERS as usize, "{gone:?}");
        assert_eq!(routes97(&ns).trim(), "");
    })
    .unwrap();
}

/// An IPv4 route via an IPv6 gateway (RTA_VIA: RFC 8950 routes learned over BGP) is an
/// ordinary reconciler route: installed `via inet6`, read back from a dump as the same
/// object (a repeated set and a resync send nothing), put back after a delete behind
/// the reconciler's back.
#[test]
fn reconciler_route_via_inet6() {
    let ns = TestNs::new("via6");
    netlink::block_on(async {
        let nl = ns.nl();
        let dev = ns.underlay();
        ns.exec(&["ip", "addr", "add", "fd77::1/64", "dev", "under0", "nodad"]);
        let want = BTreeSet::from([Object::Route {
            dst: net("10.244.9.0/26"),
            gw: ip("fd77::2"),
            oif: None,
            onlink: false,
        }]);
        let mut r = Reconciler::new(nl.clone());
        let a = r.set_peer("bgp:fd77::2", want.clone()).await;
        assert_eq!(a.added, 1, "{a:?}");
        let rt = routes97(&ns);
        assert!(
            rt.contains("10.244.9.0/26 via inet6 fd77::2 dev under0"),
            "{rt}"
        );
        assert_eq!(r.set_peer("bgp:fd77::2", want.clone()).await.requests(), 0);
        let all = BTreeMap::from([("bgp:fd77::2".to_string(), want.clone())]);
        let a = r.resync(all.clone(), &[dev]).await.unwrap();
        assert_eq!(a.requests(), 0, "a dump reads the route as wanted: {a:?}");
        ns.exec(&["ip", "route", "del", "10.244.9.0/26", "proto", "97"]);
        // An owned one nobody wants is deleted exactly (the dumped route, RTA_VIA).
        ns.exec(&[
            "ip",
            "route",
            "add",
            "10.244.8.0/26",
            "via",
            "inet6",
            "fd77::3",
            "proto",
            "97",
        ]);
        let a = r.resync(all, &[dev]).await.unwrap();
        assert_eq!((a.added, a.removed), (1, 1), "{a:?}");
        let rt = routes97(&ns);
        assert!(rt.contains("10.244.9.0/26 via inet6 fd77::2"), "{rt}");
        assert!(!rt.contains("10.244.8.0"), "{rt}");
        r.remove_peer("bgp:fd77::2").await;
        assert_eq!(routes97(&ns).trim(), "");
    })
    .unwrap();
}
