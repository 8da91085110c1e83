//! `ipamd --datapath` on one node namespace, with remote nodes written to the cluster
//! store by the test: what is programmed, how it follows changes (a new underlay IP or
//! VTEP MAC leaves no stale FDB entry), what is repaired (a deleted route, a deleted
//! VXLAN device), what a restart sends (nothing), and host-gw refusing an off-link node.

mod common;

use std::time::Duration;

use common::{put_node, remove_node, wait_until, Daemon, Node};

const DEV: &str = "cni-vx.1";
const M1: &str = "02:aa:00:00:00:01";
const M2: &str = "02:aa:00:00:00:02";
const M2B: &str = "02:aa:00:00:00:22";
const WAIT: Duration = Duration::from_secs(15);

#[test]
fn vxlan_programs_follows_repairs_and_restarts_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    // Claimed before this node starts, so its own first block is 10.60.0.0/26.
    put_node(
        &store,
        "p1",
        "10.9.0.1",
        "10.60.0.64/26",
        &[("vtepMac", M1)],
    );
    put_node(
        &store,
        "p2",
        "10.9.0.2",
        "10.60.0.128/26",
        &[("vtepMac", M2)],
    );
    let node = Node::new("dpvx", "10.254.1.1");
    let args = ["--datapath", "vxlan", "--resync", "1s"];
    let d = Daemon::start(&node, dir.path(), &store, "10.60.0.0/16", &args);
    let programmed = |n: f64| {
        wait_until(
            WAIT,
            || node.metric("ipamd_datapath_objects") == Some(n),
            || format!("want {n} objects; log:\n{}", d.log()),
        )
    };
    programmed(6.0);

    // The device: VNI, port, learning off, MTU underlay − 50, the stable MAC, the
    // node's gateway as /32.
    let link = node.ip(&["-d", "link", "show", DEV]);
    let mac = cni_core::node::peer::vtep_mac_for("me", 1).to_string();
    for want in ["vxlan id 1", "dstport 8472", "nolearning", "mtu 1450", &mac] {
        assert!(link.contains(want), "{want} missing in {link}");
    }
    assert!(node.ip(&["addr", "show", DEV]).contains("10.60.0.1/32"));
    // Toward p1: route via its gateway onlink, neighbour, FDB to its underlay.
    let r = node.ip(&["route", "show", "10.60.0.64/26"]);
    assert!(
        r.contains(&format!("via 10.60.0.65 dev {DEV} proto 97 onlink")),
        "{r}"
    );
    let neigh = node.ip(&["neigh", "show", "dev", DEV]);
    assert!(
        neigh.contains(&format!("10.60.0.65 lladdr {M1} PERMANENT")),
        "{neigh}"
    );
    let fdb = || node.bridge(&["fdb", "show", "dev", DEV]);
    assert!(fdb().contains(&format!("{M1} dst 10.9.0.1")), "{}", fdb());

    // A route deleted behind the daemon's back is put back by the next resync.
    node.ip(&["route", "del", "10.60.0.64/26"]);
    wait_until(
        WAIT,
        || {
            node.ip(&["route", "show", "10.60.0.64/26"])
                .contains("proto 97")
        },
        || format!("route not put back; log:\n{}", d.log()),
    );
    // So is the device, with everything on it.
    node.ip(&["link", "del", DEV]);
    wait_until(
        WAIT,
        || {
            node.ip(&["route", "show", "proto", "97"]).lines().count() == 2
                && fdb().contains(&format!("{M2} dst 10.9.0.2"))
        },
        || format!("device not repaired; log:\n{}", d.log()),
    );

    // p1 moves to another underlay IP: its FDB entry follows, the old one is gone.
    put_node(
        &store,
        "p1",
        "10.9.0.11",
        "10.60.0.64/26",
        &[("vtepMac", M1)],
    );
    wait_until(
        WAIT,
        || fdb().contains(&format!("{M1} dst 10.9.0.11")),
        || format!("FDB not updated; {}", fdb()),
    );
    assert!(
        !fdb().contains("dst 10.9.0.1 "),
        "stale FDB entry: {}",
        fdb()
    );
    // p2 gets a new VTEP MAC: neighbour and FDB follow, nothing of the old MAC stays.
    put_node(
        &store,
        "p2",
        "10.9.0.2",
        "10.60.0.128/26",
        &[("vtepMac", M2B)],
    );
    wait_until(
        WAIT,
        || fdb().contains(&format!("{M2B} dst 10.9.0.2")),
        || format!("FDB not updated; {}", fdb()),
    );
    assert!(!fdb().contains(M2), "stale FDB entry: {}", fdb());
    let neigh = node.ip(&["neigh", "show", "dev", DEV]);
    assert!(
        neigh.contains(&format!("10.60.0.129 lladdr {M2B}")),
        "{neigh}"
    );

    // p2 leaves: its route, neighbour and FDB entry go.
    remove_node(&store, "p2");
    programmed(3.0);
    assert!(node
        .ip(&["route", "show", "10.60.0.128/26"])
        .trim()
        .is_empty());
    assert!(!node
        .ip(&["neigh", "show", "dev", DEV])
        .contains("10.60.0.129"));
    assert!(!fdb().contains(M2B));

    // A restart finds everything right and sends nothing.
    drop(d);
    let d = Daemon::start(&node, dir.path(), &store, "10.60.0.0/16", &args);
    wait_until(
        WAIT,
        || node.metric("ipamd_datapath_resyncs_total").unwrap_or(0.0) >= 2.0,
        || format!("no resync after restart; log:\n{}", d.log()),
    );
    assert_eq!(
        node.metric("ipamd_datapath_requests_total"),
        Some(0.0),
        "log:\n{}",
        d.log()
    );
    assert_eq!(node.metric("ipamd_datapath_objects"), Some(3.0));
}

#[test]
fn host_gw_refuses_a_node_off_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    put_node(&store, "near", "10.254.2.7", "10.61.0.64/26", &[]);
    put_node(&store, "far", "10.9.9.9", "10.61.0.128/26", &[]);
    let node = Node::new("dphg", "10.254.2.1");
    let d = Daemon::start(
        &node,
        dir.path(),
        &store,
        "10.61.0.0/16",
        &["--datapath", "host-gw", "--resync", "1s"],
    );
    wait_until(
        WAIT,
        || node.metric("ipamd_datapath_peers_refused") == Some(1.0),
        || format!("far not refused; log:\n{}", d.log()),
    );
    let r = node.ip(&["route", "show", "proto", "97"]);
    assert!(
        r.contains("10.61.0.64/26 via 10.254.2.7 dev eth0"),
        "{r}\nlog:\n{}",
        d.log()
    );
    assert!(!r.contains("10.61.0.128"), "{r}");
    assert!(
        d.log().contains("not on a directly connected subnet"),
        "log:\n{}",
        d.log()
    );
}
