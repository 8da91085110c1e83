//! Scale of the datapath: one `ipamd run --datapath vxlan` in its own network namespace
//! given 5,000 remote nodes in the cluster store programs every route, neighbour and FDB
//! entry (measured and printed), and one node joining afterwards costs a handful of
//! netlink requests, not a resync.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{put_node, Daemon, Node};
use serde_json::json;

const PEERS: usize = 5_000;
const VNI: u32 = 1;
const DEV: &str = "cni-vx.1";

fn count(out: &str) -> usize {
    out.lines().filter(|l| !l.trim().is_empty()).count()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Remote node `i`: underlay 10.128.x.y, block 10.64.0.0/10 + i*64 (/26), VTEP MAC as
/// that node would publish it.
fn remote(i: usize) -> (String, String, String, String) {
    let name = format!("r{i:05}");
    let u = 0x0a80_0000u32 + 1 + i as u32;
    let b = 0x0a40_0000u32 + (i as u32) * 64;
    let mac = cni_core::node::peer::vtep_mac_for(&name, VNI).to_string();
    (
        name,
        std::net::Ipv4Addr::from(u).to_string(),
        format!("{}/26", std::net::Ipv4Addr::from(b)),
        mac,
    )
}

#[test]
fn five_thousand_remote_nodes_then_one_more() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    // The documented file-store format, written at once (5,000 registrations through
    // the locked read-modify-write would measure the file store, not the datapath).
    let expiry = now() + 3600;
    let mut nodes = serde_json::Map::new();
    for i in 0..PEERS {
        let (name, ip, block, mac) = remote(i);
        nodes.insert(
            name.clone(),
            json!({"name": name, "underlayIp": ip, "backend": {"vtepMac": mac},
                   "blocks": [block], "leaseExpiry": expiry, "ttl": 3600}),
        );
    }
    std::fs::write(
        &store,
        serde_json::to_vec(&json!({ "nodes": nodes })).unwrap(),
    )
    .unwrap();

    let node = Node::new("scale", "10.255.0.1");
    let start = Instant::now();
    let d = Daemon::start(
        &node,
        dir.path(),
        &store,
        "10.64.0.0/10",
        &["--datapath", "vxlan", "--resync", "10m"],
    );
    let want = (3 * PEERS) as f64;
    common::wait_until(
        Duration::from_secs(120),
        || node.metric("ipamd_datapath_objects") == Some(want),
        || format!("5,000 peers not programmed; log:\n{}", d.log()),
    );
    let took = start.elapsed();

    // The kernel has every entry, not just the daemon's count.
    assert_eq!(count(&node.ip(&["route", "show", "proto", "97"])), PEERS);
    let neigh = node.ip(&["neigh", "show", "dev", DEV, "nud", "permanent"]);
    assert_eq!(count(&neigh), PEERS);
    let fdb = node.bridge(&["fdb", "show", "dev", DEV]);
    assert_eq!(fdb.lines().filter(|l| l.contains(" dst ")).count(), PEERS);
    let (_, ip, block, mac) = remote(4321);
    let r = node.ip(&["route", "show", &block]);
    assert!(
        r.contains(&format!("dev {DEV}")) && r.contains("onlink"),
        "{r}"
    );
    assert!(
        fdb.contains(&format!("{mac} dst {ip}")),
        "no FDB entry for r04321"
    );
    println!(
        "scale: {PEERS} remote nodes ({} routes + neighbours + FDB entries) programmed {:.2} s after ipamd started",
        3 * PEERS,
        took.as_secs_f64()
    );
    for l in d.log().lines().filter(|l| l.contains("datapath resync")) {
        println!("scale: {l}");
    }

    // One node joins: the difference only (its FDB entry, neighbour and route).
    let before = node.metric("ipamd_datapath_requests_total").unwrap();
    // Not the block right after the others: this node claimed that one.
    let (name, ip, block, mac) = remote(PEERS + 1000);
    let joined = Instant::now();
    put_node(&store, &name, &ip, &block, &[("vtepMac", &mac)]);
    common::wait_until(
        Duration::from_secs(20),
        || node.ip(&["route", "show", &block]).contains(DEV),
        || format!("the joining node was not programmed; log:\n{}", d.log()),
    );
    let join_took = joined.elapsed();
    // Its FDB and neighbour entries may land a moment after the route is visible.
    std::thread::sleep(Duration::from_millis(300));
    let sent = node.metric("ipamd_datapath_requests_total").unwrap() - before;
    println!(
        "scale: node {PEERS}+1 joined: {sent} netlink requests, programmed {:.0} ms after its record was written (file store polled every second)",
        join_took.as_secs_f64() * 1000.0
    );
    // Register and block claim are two record changes: at most FDB + neighbour + route
    // for each, typically 3 in all.
    assert!(
        (3.0..=6.0).contains(&sent),
        "a join cost {sent} requests; log:\n{}",
        d.log()
    );
    assert!(node
        .bridge(&["fdb", "show", "dev", DEV])
        .contains(&format!("{mac} dst {ip}")));
}
