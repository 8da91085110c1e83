//! Root-only kernel tests for netns, netlink, sysctl, masq and macspoof. Every test works
//! inside network namespaces of its own (named from the test and the pid) and removes
//! them in a guard, so tests run in parallel and never touch the host's network.

mod common;

use std::path::PathBuf;

use cni_core::netlink::{self, BridgeSpec, HostEnd, Ipv4Conf, MacAddr, RouteSpec, VethPair};
use cni_core::netns::NetNs;
use cni_core::spec::names::NetworkName;
use cni_core::{macspoof, masq, sysctl};
use common::{att_on, net, TestNs};
use ipnetwork::IpNetwork;

#[test]
fn netns_open_rejects_non_netns() {
    let e = NetNs::open(&PathBuf::from("/nonexistent/netns")).unwrap_err();
    assert!(
        e.to_string().contains("/nonexistent/netns"),
        "{}",
        e.to_string()
    );
    let e = NetNs::open(&PathBuf::from("/proc/self/ns/mnt")).unwrap_err();
    assert!(
        e.to_string().contains("/proc/self/ns/mnt"),
        "{}",
        e.to_string()
    );
    let e = NetNs::open(&PathBuf::from("/proc/self/status")).unwrap_err();
    assert!(
        e.to_string().contains("/proc/self/status"),
        "{}",
        e.to_string()
    );
    NetNs::current().unwrap();
}

#[test]
fn netns_run_enters_and_returns() {
    let a = TestNs::new("run");
    let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let inside =
        a.ns.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
            .unwrap();
    let after = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    assert_ne!(before, inside);
    assert_eq!(before, after);
    // sysctls follow the thread's namespace.
    a.ns.run(|| {
        sysctl::set("net.ipv4.ip_forward", "1").unwrap();
        assert_eq!(sysctl::get("net.ipv4.ip_forward").unwrap(), "1");
        assert_eq!(sysctl::get("net.ipv4.conf.lo.forwarding").unwrap(), "1");
    })
    .unwrap();
    assert_eq!(
        a.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    let e = sysctl::get("net.ipv4.conf.nosuchdev.rp_filter").unwrap_err();
    assert!(e.to_string().contains("nosuchdev"), "{}", e.to_string());
}

/// `run` returns the thread where it was: at home (the namespace kept per thread), and
/// inside a nested `run`, to the outer target; a thread whose home is another namespace
/// (entered before its first `NetNs` call) is returned there, not to the process's.
#[test]
fn netns_run_nested_and_per_thread_home() {
    let a = TestNs::new("nesta");
    let b = TestNs::new("nestb");
    let here = || std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let home = here();
    let (in_a, in_b, back_in_a) =
        a.ns.run(|| {
            let in_a = here();
            let in_b = b.ns.run(here).unwrap();
            (in_a, in_b, here())
        })
        .unwrap();
    assert_ne!(in_a, home);
    assert_ne!(in_b, in_a);
    assert_eq!(back_in_a, in_a, "nested run returned to the outer target");
    assert_eq!(here(), home);
    assert!(NetNs::current().unwrap().is_current().unwrap());
    assert!(!a.ns.is_current().unwrap());
    // Again, with the home already kept.
    assert_eq!(b.ns.run(here).unwrap(), in_b);
    assert_eq!(here(), home);

    let a_path = a.ns.path().to_path_buf();
    let b_path = b.ns.path().to_path_buf();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&a_path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let b = NetNs::open(&b_path).unwrap();
        let a = NetNs::open(&a_path).unwrap();
        assert!(a.is_current().unwrap(), "the thread's home is a");
        assert_eq!(b.run(here).unwrap(), in_b);
        assert_eq!(here(), in_a, "returned to the thread's own home");
    })
    .join()
    .unwrap();
}

#[test]
fn veth_peer_born_in_netns() {
    let host = TestNs::new("veth-h");
    let pod = TestNs::new("veth-p");
    let mac: MacAddr = "02:11:22:33:44:55".parse().unwrap();
    netlink::block_on(async {
        let nl = host.nl();
        let pnl = pod.nl();
        let v = nl
            .create_veth("vethtest0", "eth0", &pod.ns, Some(1400), Some(mac))
            .await
            .unwrap();
        assert_eq!(v.name, "vethtest0");
        assert_eq!(v.mtu, 1400);
        assert_eq!(v.kind.as_deref(), Some("veth"));
        assert!(!v.up);
        assert!(
            nl.link_by_name("eth0").await.unwrap().is_none(),
            "peer visible on the host side"
        );
        let peer = pnl
            .link_by_name("eth0")
            .await
            .unwrap()
            .expect("peer inside the pod netns");
        assert_eq!(peer.mac, Some(mac));
        assert_eq!(peer.mtu, 1400);
        // The host end names its peer (IFLA_LINK, from the create's echo): the pod end
        // needs no lookup after the create (cni_core::attach::Ctx::pod_end).
        assert_eq!(v.peer, Some(peer.index));
        assert_eq!(
            pnl.link_by_index(peer.index).await.unwrap().unwrap().name,
            "eth0"
        );

        // A second veth with the same host name fails and says why, naming it.
        let e = nl
            .create_veth("vethtest0", "eth1", &pod.ns, None, None)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("vethtest0") && e.to_string().contains("exists"),
            "{}",
            e.to_string()
        );

        nl.set_up(v.index).await.unwrap();
        nl.set_mtu(v.index, 1300).await.unwrap();
        let m2 = MacAddr::random();
        nl.set_mac(v.index, m2).await.unwrap();
        nl.set_promisc(v.index, true).await.unwrap();
        let v2 = nl.link_by_index(v.index).await.unwrap().unwrap();
        assert!(v2.up && v2.promisc);
        assert_eq!((v2.mtu, v2.mac), (1300, Some(m2)));
        nl.set_down(v.index).await.unwrap();
        assert!(!nl.link_by_index(v.index).await.unwrap().unwrap().up);

        nl.delete_link(v.index).await.unwrap();
        nl.delete_link(v.index).await.unwrap();
        assert!(nl.link_by_name("vethtest0").await.unwrap().is_none());
        assert!(
            pnl.link_by_name("eth0").await.unwrap().is_none(),
            "peer goes with its pair"
        );
        assert!(nl.link_by_index(999_999).await.unwrap().is_none());
    })
    .unwrap();
    assert!(pod
        .exec(&["ip", "-o", "link"])
        .lines()
        .all(|l| !l.contains("eth0")));
}

/// The host end made with its MAC, on its bridge and up by the create request itself
/// (`HostEnd`), the pod end left down; a create the kernel refuses in part (a master that
/// does not exist) leaves neither end and names what it asked for.
#[test]
fn veth_host_end_made_up_on_its_bridge() {
    let host = TestNs::new("vhe-h");
    let pod = TestNs::new("vhe-p");
    let host_mac: MacAddr = "02:aa:bb:cc:dd:01".parse().unwrap();
    let pod_mac: MacAddr = "02:aa:bb:cc:dd:02".parse().unwrap();
    netlink::block_on(async {
        let nl = host.nl();
        let pnl = pod.nl();
        let br = nl
            .ensure_bridge(&BridgeSpec {
                name: "cnibr0".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let pair = |host_name, host_end| VethPair {
            host_name,
            peer_name: "eth0",
            peer_ns: &pod.ns,
            mtu: Some(1400),
            peer_mac: Some(pod_mac),
            host: host_end,
        };
        let v = nl
            .create_veth_pair(&pair(
                "vethhe0",
                HostEnd {
                    mac: Some(host_mac),
                    master: Some(br.index),
                    up: true,
                },
            ))
            .await
            .unwrap();
        assert_eq!(v.master, Some(br.index));
        assert_eq!(v.mac, Some(host_mac));
        let read = nl.link_by_index(v.index).await.unwrap().unwrap();
        assert!(read.up, "host end up");
        assert_eq!(read.master, Some(br.index), "host end on the bridge");
        assert_eq!((read.mac, read.mtu), (Some(host_mac), 1400));
        let peer = pnl.link_by_name("eth0").await.unwrap().unwrap();
        assert!(
            !peer.up,
            "the pod end stays down until its addresses are on it"
        );
        assert_eq!(peer.mac, Some(pod_mac));

        // A master that does not exist: the kernel refuses after making the pair, and
        // unregisters it again.
        let e = nl
            .create_veth_pair(&pair(
                "vethhe1",
                HostEnd {
                    mac: None,
                    master: Some(999_999),
                    up: true,
                },
            ))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("vethhe1") && e.to_string().contains("master #999999"),
            "{}",
            e.to_string()
        );
        assert!(nl.link_by_name("vethhe1").await.unwrap().is_none());
        let pod_links: Vec<String> = pnl
            .links()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(
            pod_links.iter().filter(|n| *n == "eth0").count(),
            1,
            "{pod_links:?}"
        );
    })
    .unwrap();
    // What the kernel holds, as iproute2 reads it.
    let link = host.exec(&["ip", "-o", "link", "show", "dev", "vethhe0"]);
    assert!(
        link.contains("master cnibr0")
            && link.contains(",UP")
            && link.contains("02:aa:bb:cc:dd:01"),
        "{link}"
    );
    let peer = pod.exec(&["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(!peer.contains(",UP"), "{peer}");
}

/// IPv4 per-device settings over netlink (`IFLA_INET_CONF`), from a socket of the
/// device's namespace: `/proc/sys` inside that namespace reads them back, both ways.
#[test]
fn ipv4_conf_over_netlink() {
    let host = TestNs::new("v4c-h");
    let pod = TestNs::new("v4c-p");
    let read = |leaf: &str| {
        pod.exec(&["cat", &format!("/proc/sys/net/ipv4/conf/eth0/{leaf}")])
            .trim()
            .to_string()
    };
    let index = netlink::block_on(async {
        let v = host
            .nl()
            .create_veth("vethv4c0", "eth0", &pod.ns, None, None)
            .await
            .unwrap();
        v.peer.unwrap()
    })
    .unwrap();
    assert_eq!(
        (read("arp_notify"), read("proxy_arp")),
        ("0".into(), "0".into())
    );
    netlink::block_on(async {
        pod.nl()
            .set_ipv4_conf(index, &[(Ipv4Conf::ArpNotify, 1), (Ipv4Conf::ProxyArp, 1)])
            .await
            .unwrap();
    })
    .unwrap();
    assert_eq!(
        (read("arp_notify"), read("proxy_arp")),
        ("1".into(), "1".into())
    );
    netlink::block_on(async {
        pod.nl()
            .set_ipv4_conf(index, &[(Ipv4Conf::ArpNotify, 0)])
            .await
            .unwrap();
        let e = pod
            .nl()
            .set_ipv4_conf(999_999, &[(Ipv4Conf::ProxyArp, 1)])
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("proxy_arp=1") && e.to_string().contains("999999"),
            "{}",
            e.to_string()
        );
    })
    .unwrap();
    assert_eq!(
        (read("arp_notify"), read("proxy_arp")),
        ("0".into(), "1".into())
    );
}

/// `proxy_delay` over netlink (`RTM_SETNEIGHTBL`, milliseconds): `/proc/sys` reads it
/// back (in USER_HZ ticks, 1/100 s) for that device only.
#[test]
fn arp_proxy_delay_over_netlink() {
    let host = TestNs::new("pxd-h");
    let pod = TestNs::new("pxd-p");
    let read = |dev: &str| {
        host.exec(&[
            "cat",
            &format!("/proc/sys/net/ipv4/neigh/{dev}/proxy_delay"),
        ])
        .trim()
        .to_string()
    };
    netlink::block_on(async {
        let nl = host.nl();
        let a = nl
            .create_veth("vethpxd0", "eth0", &pod.ns, None, None)
            .await
            .unwrap();
        nl.create_veth("vethpxd1", "eth1", &pod.ns, None, None)
            .await
            .unwrap();
        let default = read("vethpxd1");
        nl.set_arp_proxy_delay(a.index, 0).await.unwrap();
        assert_eq!(read("vethpxd0"), "0");
        assert_eq!(read("vethpxd1"), default, "another device keeps its own");
        nl.set_arp_proxy_delay(a.index, 500).await.unwrap();
        assert_eq!(read("vethpxd0"), "50");
        let e = nl.set_arp_proxy_delay(999_999, 0).await.unwrap_err();
        assert!(e.to_string().contains("proxy_delay"), "{}", e.to_string());
    })
    .unwrap();
}

#[test]
fn bridge_create_race() {
    let a = TestNs::new("brrace");
    let spec = BridgeSpec {
        name: "cnibr0".into(),
        mtu: Some(1450),
        promisc: true,
        ..Default::default()
    };
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| netlink::block_on(async { a.nl().ensure_bridge(&spec).await }).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut index = None;
    for r in results {
        let br = r.unwrap();
        assert_eq!(br.kind.as_deref(), Some("bridge"));
        assert_eq!(*index.get_or_insert(br.index), br.index);
    }
    netlink::block_on(async {
        let nl = a.nl();
        let links = nl.links().await.unwrap();
        assert_eq!(links.iter().filter(|l| l.name == "cnibr0").count(), 1);
        let br = nl.link_by_name("cnibr0").await.unwrap().unwrap();
        assert!(br.up && br.promisc);
        assert_eq!(br.mtu, 1450);

        // A same-named link of another kind is refused, naming its kind.
        let pod = TestNs::new("brrace-p");
        nl.create_veth("notabr0", "eth0", &pod.ns, None, None)
            .await
            .unwrap();
        let e = nl
            .ensure_bridge(&BridgeSpec {
                name: "notabr0".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("notabr0") && e.to_string().contains("veth"),
            "{}",
            e.to_string()
        );
    })
    .unwrap();
}

#[test]
fn addresses_and_routes() {
    let host = TestNs::new("addr-h");
    let pod = TestNs::new("addr-p");
    netlink::block_on(async {
        let nl = host.nl();
        let v = nl
            .create_veth("vethaddr0", "eth0", &pod.ns, None, None)
            .await
            .unwrap();
        nl.set_up(v.index).await.unwrap();
        for a in ["10.77.0.1/24", "fd77::1/64"] {
            nl.add_address(v.index, net(a)).await.unwrap();
            nl.add_address(v.index, net(a)).await.unwrap();
        }
        let addrs = nl.addresses(v.index).await.unwrap();
        assert!(addrs.contains(&net("10.77.0.1/24")), "{addrs:?}");
        assert!(addrs.contains(&net("fd77::1/64")), "{addrs:?}");

        // IPv4 via a gateway on the connected subnet, with every field we can set.
        let mut r = RouteSpec::new(net("10.88.0.0/16"));
        r.gw = Some("10.77.0.2".parse().unwrap());
        r.oif = Some(v.index);
        r.src = Some("10.77.0.1".parse().unwrap());
        r.metric = Some(42);
        r.mtu = Some(1300);
        r.advmss = Some(1240);
        r.protocol = Some(77);
        nl.add_route(&r).await.unwrap();
        nl.add_route(&r).await.unwrap();
        let got: Vec<_> = nl
            .routes(false, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|x| x.dst == r.dst)
            .collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].gw, r.gw);
        assert_eq!(got[0].oif, r.oif);
        assert_eq!(got[0].src, r.src);
        assert_eq!(
            (got[0].metric, got[0].mtu, got[0].advmss, got[0].protocol),
            (Some(42), Some(1300), Some(1240), Some(77))
        );
        assert_eq!(got[0].scope, Some(0));
        assert!(r.matches(&got[0]));
        // A different route to the same destination is not "already there".
        let mut other = r.clone();
        other.gw = Some("10.77.0.3".parse().unwrap());
        assert!(nl.add_route(&other).await.is_err());
        nl.replace_route(&other).await.unwrap();
        let got: Vec<_> = nl
            .routes(false, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|x| x.dst == r.dst)
            .collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].gw, other.gw);
        assert!(host
            .exec(&["ip", "route", "show", "10.88.0.0/16"])
            .contains("via 10.77.0.3"));

        // Onlink + another table; v6.
        let mut t = RouteSpec::new(net("0.0.0.0/0"));
        t.gw = Some("192.0.2.1".parse().unwrap());
        t.oif = Some(v.index);
        t.onlink = true;
        t.table = Some(1000);
        nl.add_route(&t).await.unwrap();
        let got = nl.routes(false, Some(1000)).await.unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].onlink && got[0].table == Some(1000));
        assert!(!nl
            .routes(false, None)
            .await
            .unwrap()
            .iter()
            .any(|x| x.gw == t.gw));
        let mut r6 = RouteSpec::new(net("fd88::/48"));
        r6.gw = Some("fd77::2".parse().unwrap());
        r6.oif = Some(v.index);
        nl.add_route(&r6).await.unwrap();
        assert!(nl
            .routes(true, None)
            .await
            .unwrap()
            .iter()
            .any(|x| r6.matches(x)));
        assert!(!nl
            .routes(false, None)
            .await
            .unwrap()
            .iter()
            .any(|x| x.dst == r6.dst));

        // Deletions are idempotent.
        for x in [&other, &t, &r6] {
            nl.del_route(x).await.unwrap();
            nl.del_route(x).await.unwrap();
        }
        assert!(!nl
            .routes(false, None)
            .await
            .unwrap()
            .iter()
            .any(|x| x.dst == r.dst));
        assert!(nl.routes(false, Some(1000)).await.unwrap().is_empty());
        for a in ["10.77.0.1/24", "fd77::1/64"] {
            nl.del_address(v.index, net(a)).await.unwrap();
            nl.del_address(v.index, net(a)).await.unwrap();
        }
        let addrs = nl.addresses(v.index).await.unwrap();
        assert!(
            addrs.iter().all(|a| !matches!(a, IpNetwork::V4(_))),
            "{addrs:?}"
        );
    })
    .unwrap();
}

/// Whether this kernel has CONFIG_BRIDGE_VLAN_FILTERING (some CI kernels do not).
fn kernel_has_vlan_filtering(ns: &TestNs) -> bool {
    ns.kit
        .try_exec(&[
            "ip",
            "link",
            "add",
            "name",
            "vlanprobe0",
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ])
        .is_ok()
}

#[test]
fn bridge_port_hairpin_and_vlan() {
    let host = TestNs::new("brport-h");
    let pod = TestNs::new("brport-p");
    let vlans = kernel_has_vlan_filtering(&host);
    netlink::block_on(async {
        let nl = host.nl();
        let spec = BridgeSpec {
            name: "cnibr1".into(),
            vlan_filtering: vlans,
            ..Default::default()
        };
        if !vlans {
            let e = nl
                .ensure_bridge(&BridgeSpec {
                    name: "cnibr9".into(),
                    vlan_filtering: true,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert!(
                e.to_string().contains("vlan_filtering") && e.to_string().contains("cnibr9"),
                "{}",
                e.to_string()
            );
        }
        let br = nl.ensure_bridge(&spec).await.unwrap();
        // Adopting an existing bridge is fine too.
        assert_eq!(nl.ensure_bridge(&spec).await.unwrap().index, br.index);
        let v = nl
            .create_veth("vethport0", "eth0", &pod.ns, None, None)
            .await
            .unwrap();
        nl.set_master(v.index, br.index).await.unwrap();
        nl.set_up(v.index).await.unwrap();
        assert_eq!(
            nl.link_by_index(v.index).await.unwrap().unwrap().master,
            Some(br.index)
        );
        nl.set_hairpin(v.index, true).await.unwrap();
        assert!(nl.set_port_vlan(v.index, 0).await.is_err());
        if vlans {
            nl.set_port_vlan(v.index, 100).await.unwrap();
        } else {
            let e = nl.set_port_vlan(v.index, 100).await.unwrap_err();
            assert!(e.to_string().contains("VLAN 100"), "{}", e.to_string());
        }
    })
    .unwrap();
    let link = host.exec(&["bridge", "-d", "link", "show", "dev", "vethport0"]);
    assert!(link.contains("hairpin on"), "{link}");
    if vlans {
        let vlan = host.exec(&["bridge", "vlan", "show", "dev", "vethport0"]);
        assert!(
            vlan.lines()
                .any(|l| l.contains("100") && l.contains("PVID") && l.contains("Untagged")),
            "{vlan}"
        );
        let details = host.exec(&["ip", "-d", "link", "show", "cnibr1"]);
        assert!(details.contains("vlan_filtering 1"), "{details}");
    } else {
        eprintln!(
            "kernel without CONFIG_BRIDGE_VLAN_FILTERING: VLAN checks limited to the error path"
        );
    }
    netlink::block_on(async {
        let nl = host.nl();
        let v = nl.link_by_name("vethport0").await.unwrap().unwrap();
        nl.set_hairpin(v.index, false).await.unwrap();
    })
    .unwrap();
    assert!(host
        .exec(&["bridge", "-d", "link", "show", "dev", "vethport0"])
        .contains("hairpin off"));
}

/// `nft -j list table <family> <table>` rules, as (comment, whole rule JSON).
fn nft_rules(ns: &TestNs, family: &str, table: &str) -> Vec<(String, String)> {
    let Ok(out) = ns
        .kit
        .try_exec(&["nft", "-j", "list", "table", family, table])
    else {
        return Vec::new(); // no table
    };
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .map(|r| {
            (
                r["comment"].as_str().unwrap_or("").to_string(),
                r.to_string(),
            )
        })
        .collect()
}

#[test]
fn masq_add_list_del_gc() {
    let a = TestNs::new("masq");
    let n = NetworkName::parse("masqnet").unwrap();
    let other_net = NetworkName::parse("othernet").unwrap();
    let (a1, a2) = (att_on("ctr-one", "eth0"), att_on("ctr-two", "eth0"));
    a.ns.run(|| {
        // Nothing there yet: all fine.
        masq::del(&n, &a1).unwrap();
        masq::gc(&n, &[]).unwrap();
        assert!(masq::list(&n, &a1).unwrap().is_empty());

        masq::add(&n, &a1, net("10.66.0.5/24"), &[]).unwrap();
        masq::add(&n, &a1, net("10.66.0.5/24"), &[]).unwrap();
        masq::add(&n, &a1, net("fd66::5/64"), &[]).unwrap();
        masq::add(&n, &a2, net("10.66.0.6/24"), &[]).unwrap();
        masq::add(&other_net, &a2, net("10.67.0.6/24"), &[]).unwrap();
        let mut l = masq::list(&n, &a1).unwrap();
        l.sort();
        assert_eq!(l, vec![net("10.66.0.5/24"), net("fd66::5/64")]);
    })
    .unwrap();

    let v4 = nft_rules(&a, "ip", "cni_masq");
    assert_eq!(v4.len(), 3, "{v4:?}");
    let r = &v4[0].1;
    assert!(
        r.contains("masquerade") && r.contains("10.66.0.5") && r.contains("224.0.0.0"),
        "{r}"
    );
    assert!(r.contains("10.66.0.0") && r.contains("!="), "{r}");
    assert!(v4[0].0.starts_with("cni-masq net="), "{}", v4[0].0);
    let v6 = nft_rules(&a, "ip6", "cni_masq");
    assert_eq!(v6.len(), 1, "{v6:?}");
    assert!(
        v6[0].1.contains("fd66::5") && v6[0].1.contains("ff00::"),
        "{}",
        v6[0].1
    );
    let text = a.exec(&["nft", "list", "table", "ip", "cni_masq"]);
    assert!(
        text.contains(
            "ip saddr 10.66.0.5 ip daddr != 10.66.0.0/24 ip daddr != 224.0.0.0/4 masquerade"
        ),
        "{text}"
    );

    a.ns.run(|| {
        // GC keeps a1 and other networks' rules.
        masq::gc(&n, std::slice::from_ref(&a1)).unwrap();
        assert!(masq::list(&n, &a2).unwrap().is_empty());
        assert_eq!(masq::list(&n, &a1).unwrap().len(), 2);
        assert_eq!(
            masq::list(&other_net, &a2).unwrap(),
            vec![net("10.67.0.6/24")]
        );
        masq::del(&n, &a1).unwrap();
        masq::del(&n, &a1).unwrap();
        assert!(masq::list(&n, &a1).unwrap().is_empty());
    })
    .unwrap();
    let v4 = nft_rules(&a, "ip", "cni_masq");
    assert_eq!(v4.len(), 1, "{v4:?}");
    assert!(v4[0].1.contains("10.67.0.6"));
    assert!(nft_rules(&a, "ip6", "cni_masq").is_empty());
}

#[test]
fn macspoof_add_del_gc() {
    let a = TestNs::new("spoof");
    let n = NetworkName::parse("spoofnet").unwrap();
    let (a1, a2) = (att_on("ctr-one", "eth0"), att_on("ctr-two", "eth0"));
    let (m1, m2): (MacAddr, MacAddr) = (
        "02:00:00:00:00:01".parse().unwrap(),
        "02:00:00:00:00:02".parse().unwrap(),
    );
    a.ns.run(|| {
        macspoof::del(&n, &a1).unwrap();
        macspoof::add(&n, &a1, "veth1", m1).unwrap();
        macspoof::add(&n, &a1, "veth1", m1).unwrap();
        macspoof::add(&n, &a2, "veth2", m2).unwrap();
        assert_eq!(
            macspoof::list(&n, &a1).unwrap(),
            vec![("veth1".to_string(), m1)]
        );
    })
    .unwrap();
    let rules = nft_rules(&a, "bridge", "cni_macspoof");
    assert_eq!(rules.len(), 2, "{rules:?}");
    let text = a.exec(&["nft", "list", "table", "bridge", "cni_macspoof"]);
    assert!(
        text.contains("iifname \"veth1\" ether saddr != 02:00:00:00:00:01 drop"),
        "{text}"
    );
    a.ns.run(|| {
        // A re-ADD with another MAC replaces the rule.
        macspoof::add(&n, &a1, "veth1", m2).unwrap();
        assert_eq!(
            macspoof::list(&n, &a1).unwrap(),
            vec![("veth1".to_string(), m2)]
        );
        macspoof::gc(&n, std::slice::from_ref(&a1)).unwrap();
        assert!(macspoof::list(&n, &a2).unwrap().is_empty());
        macspoof::del(&n, &a1).unwrap();
        macspoof::del(&n, &a1).unwrap();
    })
    .unwrap();
    assert!(nft_rules(&a, "bridge", "cni_macspoof").is_empty());
}

#[test]
fn macspoof_drops_spoofed_frames() {
    // Two pods on a bridge; pod b spoofs its MAC and must lose connectivity.
    let host = TestNs::new("spoofdp-h");
    let pa = TestNs::new("spoofdp-a");
    let pb = TestNs::new("spoofdp-b");
    let n = NetworkName::parse("spoofdp").unwrap();
    let ab = att_on("ctr-b", "eth0");
    let mb: MacAddr = "02:00:00:00:0b:0b".parse().unwrap();
    netlink::block_on(async {
        let nl = host.nl();
        let br = nl
            .ensure_bridge(&BridgeSpec {
                name: "br0".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        for (ns, veth, ip, mac) in [
            (&pa, "vetha", "10.55.0.1/24", None),
            (&pb, "vethb", "10.55.0.2/24", Some(mb)),
        ] {
            let v = nl
                .create_veth(veth, "eth0", &ns.ns, None, mac)
                .await
                .unwrap();
            nl.set_master(v.index, br.index).await.unwrap();
            nl.set_up(v.index).await.unwrap();
            let pnl = ns.nl();
            let e = pnl.link_by_name("eth0").await.unwrap().unwrap();
            pnl.add_address(e.index, net(ip)).await.unwrap();
            pnl.set_up(e.index).await.unwrap();
        }
    })
    .unwrap();
    let ping = |ns: &TestNs| {
        // Three tries: on a busy machine the first ARP round trip after a MAC change can
        // miss a one-second window. Success = any reply.
        ns.kit
            .try_exec(&["ping", "-c3", "-i0.3", "-W1", "10.55.0.1"])
            .is_ok()
    };
    host.ns
        .run(|| macspoof::add(&n, &ab, "vethb", mb).unwrap())
        .unwrap();
    assert!(ping(&pb), "legit MAC must pass");
    pb.exec(&["ip", "link", "set", "eth0", "address", "02:00:00:00:0b:0c"]);
    pb.exec(&["ip", "neigh", "flush", "all"]);
    assert!(!ping(&pb), "spoofed MAC must be dropped");
    host.ns.run(|| macspoof::del(&n, &ab).unwrap()).unwrap();
    // pa may still hold the old MAC for 10.55.0.2 (its ARP was dropped meanwhile).
    pa.exec(&["ip", "neigh", "flush", "all"]);
    assert!(ping(&pb), "passes again once the check is removed");
}

#[test]
fn masq_concurrent_adds() {
    // Plugins for different pods run at once: each ADD must land, in one table/chain.
    let a = TestNs::new("masqrace");
    let n = NetworkName::parse("racenet").unwrap();
    std::thread::scope(|s| {
        for i in 0..8 {
            let (a, n) = (&a, &n);
            s.spawn(move || {
                let at = att_on(&format!("ctr-{i}"), "eth0");
                let ip = net(&format!("10.44.0.{}/24", i + 2));
                a.ns.run(|| masq::add(n, &at, ip, &[])).unwrap().unwrap();
            });
        }
    });
    assert_eq!(nft_rules(&a, "ip", "cni_masq").len(), 8);
    a.ns.run(|| masq::gc(&n, &[])).unwrap().unwrap();
    assert!(nft_rules(&a, "ip", "cni_masq").is_empty());
}

#[test]
fn errors_name_the_link() {
    let a = TestNs::new("errname");
    let pod = TestNs::new("errname-p");
    netlink::block_on(async {
        let nl = a.nl();
        let e = nl.set_mtu(999_999, 1400).await.unwrap_err();
        assert!(e.to_string().contains("#999999"), "{}", e.to_string());
        let v = nl
            .create_veth("vethname0", "eth0", &pod.ns, None, None)
            .await
            .unwrap();
        let e = nl.set_mtu(v.index, 70_000).await.unwrap_err();
        assert!(
            e.to_string().contains("vethname0") && e.to_string().contains("70000"),
            "{}",
            e.to_string()
        );
        // Not a bridge port.
        let e = nl.set_hairpin(v.index, true).await.unwrap_err();
        assert!(e.to_string().contains("vethname0"), "{}", e.to_string());
    })
    .unwrap();
}

/// Kernel errors keep the kernel's errno and name the operation: an EEXIST answers
/// `is_exists()`, an ENODEV/ENOENT `is_not_found()`, and the CNI error made of it at the
/// plugin boundary keeps today's code and starts with the operation.
#[test]
fn kernel_errors_keep_errno_and_op() {
    use cni_core::{CniError, KernelErrorKind};
    use nix::errno::Errno;

    let host = TestNs::new("kerr-h");
    let pod = TestNs::new("kerr-p");
    netlink::block_on(async {
        let nl = host.nl();
        nl.create_veth("kerrdup0", "eth0", &pod.ns, None, None)
            .await
            .unwrap();
        // The same host name again: the kernel's EEXIST, no lookup needed to tell.
        let e = nl
            .create_veth("kerrdup0", "eth1", &pod.ns, None, None)
            .await
            .unwrap_err();
        assert!(e.is_exists() && !e.is_not_found(), "{e}");
        assert_eq!(e.errno(), Some(Errno::EEXIST));
        assert_eq!(e.kind(), KernelErrorKind::Kernel);
        assert!(e.op().starts_with("creating veth kerrdup0"), "{}", e.op());
        assert!(
            std::error::Error::source(&e).is_some(),
            "the rtnetlink error is kept"
        );
        let op = e.op().to_string();
        let c = CniError::from(e);
        assert_eq!(c.code, 999);
        assert_eq!(c.msg, format!("{op}: File exists (os error 17)"));

        // A link that is not there: ENODEV.
        let e = nl.set_up(999_999).await.unwrap_err();
        assert!(e.is_not_found() && !e.is_exists(), "{e}");
        assert_eq!(e.errno(), Some(Errno::ENODEV));
        assert_eq!(e.op(), "setting link #999999 up");

        // A neighbour entry on a device that is not there, deleted: already gone.
        nl.del_neigh(999_999, "10.78.0.9".parse().unwrap())
            .await
            .unwrap();
        // An FDB entry on a device that is no VXLAN device: the kernel's refusal kept.
        let lo = nl.link_by_name("lo").await.unwrap().unwrap();
        let e = nl
            .replace_fdb(
                lo.index,
                MacAddr([2, 0, 0, 0, 0, 9]),
                "10.78.0.9".parse().unwrap(),
            )
            .await
            .unwrap_err();
        assert!(e.errno().is_some(), "{e}");
        assert!(e.op().contains("FDB entry 02:00:00:00:00:09"), "{}", e.op());

        // A different route to a destination that has one: EEXIST, with the reason.
        let v = nl.link_by_name("kerrdup0").await.unwrap().unwrap();
        nl.set_up(v.index).await.unwrap();
        nl.add_address(v.index, net("10.78.0.1/24")).await.unwrap();
        let mut r = RouteSpec::new(net("10.79.0.0/24"));
        r.gw = Some("10.78.0.2".parse().unwrap());
        nl.add_route(&r).await.unwrap();
        r.gw = Some("10.78.0.3".parse().unwrap());
        let e = nl.add_route(&r).await.unwrap_err();
        assert!(e.is_exists(), "{e}");
        assert!(e.to_string().contains("a different route"), "{e}");
    })
    .unwrap();

    // Files: a namespace or sysctl that is not there is ENOENT, code 5 at the boundary.
    let e = NetNs::open(&PathBuf::from("/nonexistent/kerr-netns")).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.kind(), KernelErrorKind::File);
    assert_eq!(CniError::from(e).code, 5);
    let e = host
        .ns
        .run(|| sysctl::get("net.ipv4.conf.kerrnosuchdev.rp_filter"))
        .unwrap()
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let c = CniError::from(e);
    assert_eq!(c.code, 5);
    assert!(
        c.msg
            .starts_with("reading sysctl net.ipv4.conf.kerrnosuchdev.rp_filter"),
        "{}",
        c.msg
    );
    // Not a network namespace: refused before the kernel is asked, code 7.
    let e = NetNs::open(&PathBuf::from("/proc/self/ns/mnt")).unwrap_err();
    assert_eq!(e.errno(), None);
    assert_eq!(CniError::from(e).code, 7);
}

/// A bridge we create keeps its MAC when ports come and go (the kernel would otherwise
/// give it the lowest port MAC, and every pod's ARP entry for the gateway would go
/// wrong when a pod with a lower veth MAC is added); recreated, it gets the same MAC.
#[test]
fn bridge_mac_is_fixed_at_creation() {
    let a = TestNs::new("brmac");
    let spec = BridgeSpec {
        name: "cnibrmac0".into(),
        ..Default::default()
    };
    netlink::block_on(async {
        let nl = a.nl();
        let mac = nl.ensure_bridge(&spec).await.unwrap().mac.unwrap();
        // What an ADD compares with to skip reading the bridge again after its port joined.
        assert_eq!(mac, spec.pinned_mac());
        for (i, port_mac) in ["02:00:00:00:00:01", "00:00:00:00:00:01"]
            .iter()
            .enumerate()
        {
            let port = format!("brmacp{i}");
            a.exec(&[
                "ip",
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                &format!("brmacq{i}"),
            ]);
            a.exec(&["ip", "link", "set", &port, "address", port_mac]);
            a.exec(&["ip", "link", "set", &port, "master", "cnibrmac0", "up"]);
            let now = nl.link_by_name("cnibrmac0").await.unwrap().unwrap().mac;
            assert_eq!(
                now,
                Some(mac),
                "bridge MAC changed when a port with {port_mac} joined"
            );
        }
        a.exec(&["ip", "link", "del", "cnibrmac0"]);
        let again = nl.ensure_bridge(&spec).await.unwrap().mac;
        assert_eq!(again, Some(mac), "a recreated bridge got another MAC");
        // A MAC asked for is used.
        let want: MacAddr = "02:42:00:00:00:07".parse().unwrap();
        let asked = nl
            .ensure_bridge(&BridgeSpec {
                name: "cnibrmac1".into(),
                mac: Some(want),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(asked.mac, Some(want));
    })
    .unwrap();
}
