//! IPv6 in `ipamd --datapath host-gw` / `vxlan` on one node namespace, with remote nodes
//! written to the cluster store by the test: what this node publishes (its underlay
//! address of each family), what it programs toward a dual-stack peer (IPv6 blocks via
//! the peer's IPv6 underlay address; vxlan: an IPv6 route via the peer's IPv6 VTEP
//! address and its neighbour), and a peer with an IPv6 block but no IPv6 underlay
//! address refused, logged and counted, with nothing programmed toward it.

mod common;

use std::time::Duration;

use common::{put_node, wait_until, Daemon, Node};

const WAIT: Duration = Duration::from_secs(15);
const MAC: &str = "02:aa:00:00:06:01";

/// `node` with an IPv6 address next to its IPv4 one on `eth0`.
fn dual_node(tag: &str, v4: &str, v6: &str) -> Node {
    let n = Node::new(tag, v4);
    n.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    n
}

#[test]
fn host_gw_routes_ipv6_via_the_ipv6_underlay_and_refuses_a_node_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    let v6ok = [("underlayIPv6", "fd00:254:3::8")];
    put_node(&store, "v6ok", "10.254.3.8", "10.62.0.64/26", &v6ok);
    put_node(&store, "v6ok", "10.254.3.8", "fd62::40/122", &v6ok);
    put_node(&store, "nov6", "10.254.3.9", "10.62.0.128/26", &[]);
    put_node(&store, "nov6", "10.254.3.9", "fd62::80/122", &[]);
    let node = dual_node("dphg6", "10.254.3.1", "fd00:254:3::1");
    let d = Daemon::start(
        &node,
        dir.path(),
        &store,
        "10.62.0.0/16,fd62::/112",
        &["--datapath", "host-gw", "--resync", "1s"],
    );
    wait_until(
        WAIT,
        || {
            node.metric("ipamd_datapath_peers_refused") == Some(1.0)
                && node
                    .ip(&["-6", "route", "show", "proto", "97"])
                    .contains("fd62::40/122 via fd00:254:3::8 dev eth0")
        },
        || format!("not programmed; log:\n{}", d.log()),
    );
    let r4 = node.ip(&["-4", "route", "show", "proto", "97"]);
    let r6 = node.ip(&["-6", "route", "show", "proto", "97"]);
    assert!(r4.contains("10.62.0.64/26 via 10.254.3.8 dev eth0"), "{r4}");
    assert!(
        !r4.contains("10.62.0.128") && !r6.contains("fd62::80"),
        "the refused node got routes:\n{r4}{r6}"
    );
    assert_eq!(r4.lines().count() + r6.lines().count(), 2, "{r4}{r6}");
    let log = d.log();
    assert!(
        log.contains("nov6") && log.contains("publishes no IPv6 underlay address"),
        "log:\n{log}"
    );
    // This node publishes both of its underlay addresses.
    let me = own_record(&store);
    assert_eq!(me["backend"]["underlayIPv6"], "fd00:254:3::1", "{me}");
    assert_eq!(me["backend"]["underlayIPv4"], "10.254.3.1", "{me}");
}

#[test]
fn vxlan_programs_an_ipv6_vtep_per_peer() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    let backend = [("vtepMac", MAC)];
    put_node(&store, "peer", "10.254.4.8", "10.63.0.64/26", &backend);
    put_node(&store, "peer", "10.254.4.8", "fd63::40/122", &backend);
    let node = Node::new("dpvx6", "10.254.4.1");
    let d = Daemon::start(
        &node,
        dir.path(),
        &store,
        "10.63.0.0/16,fd63::/112",
        &["--datapath", "vxlan", "--resync", "1s"],
    );
    let want6 = "fd63::40/122 via fd63::41 dev cni-vx.1";
    wait_until(
        WAIT,
        || {
            node.ip(&["-6", "route", "show", "proto", "97"])
                .contains(want6)
        },
        || format!("no {want6}; log:\n{}", d.log()),
    );
    let r6 = node.ip(&["-6", "route", "show", "proto", "97"]);
    assert!(r6.contains("onlink"), "{r6}");
    let n6 = node.ip(&["-6", "neigh", "show", "dev", "cni-vx.1", "nud", "permanent"]);
    assert!(n6.contains(&format!("fd63::41 lladdr {MAC}")), "{n6}");
    let n4 = node.ip(&["-4", "neigh", "show", "dev", "cni-vx.1", "nud", "permanent"]);
    assert!(n4.contains(&format!("10.63.0.65 lladdr {MAC}")), "{n4}");
    let fdb = node.bridge(&["fdb", "show", "dev", "cni-vx.1"]);
    let entries: Vec<&str> = fdb.lines().filter(|l| l.contains(MAC)).collect();
    assert_eq!(entries.len(), 1, "one FDB entry for both families:\n{fdb}");
    assert!(entries[0].contains("dst 10.254.4.8"), "{fdb}");
    // The device carries this node's gateway of each family: the first host of its
    // block (network + 1), /32 and /128.
    let me = own_record(&store);
    let addrs = node.ip(&["addr", "show", "dev", "cni-vx.1", "scope", "global"]);
    for b in me["blocks"].as_array().unwrap() {
        let b: ipnetwork::IpNetwork = b.as_str().unwrap().parse().unwrap();
        let (gw, len) = match b.network() {
            std::net::IpAddr::V4(n) => (std::net::Ipv4Addr::from(u32::from(n) + 1).to_string(), 32),
            std::net::IpAddr::V6(n) => {
                (std::net::Ipv6Addr::from(u128::from(n) + 1).to_string(), 128)
            }
        };
        assert!(
            addrs.contains(&format!("{gw}/{len} ")),
            "{gw}/{len} not on the device:\n{addrs}"
        );
    }
}

/// This node's (`me`) record in the file store.
fn own_record(store: &std::path::Path) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store).unwrap()).unwrap();
    v["nodes"]["me"].clone()
}
