//! IPv6 across nodes on the BGP datapath (issue 16): three "nodes" (network namespaces
//! on an underlay bridge, each running `ipamd --datapath bgp --bgp-no-mesh`) with two
//! `cni-routed` pods each, and the real BIRD 2 in the fabric namespace as iBGP route
//! reflector with IPv4 and IPv6 channels (`multinode::router::config_dual_stack`).
//! The harness is `conformance::multinode::dual` (the one of vxlan/host-gw/ipip).
//!
//! - dual-stack pool, dual-stack underlay: one IPv4 session per node carries both
//!   families (IPv6 blocks with the node's IPv6 underlay address as next hop);
//! - IPv6-only pool, IPv6-only underlay: IPv6 sessions, router ids derived by `ipamd`;
//! - dual-stack pool, IPv6-only underlay: IPv6 sessions carrying the IPv4 blocks too,
//!   with IPv6 next hops (RFC 8950 extended next hop; BIRD `extended next hop on`),
//!   installed `via inet6`.
//!
//! Needs root, `bird2`, and the built binaries (`cni-routed`, `cni-ipam`, `ipamd`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use conformance::multinode::cluster::BgpTor;
use conformance::multinode::dual::{
    self, DualCluster, DualSpec, PoolKind, UnderlayKind, TRANSFER_BYTES,
};
use conformance::multinode::{lifecycle, router, wait_until, Datapath};

fn spec(underlay: UnderlayKind, pool: PoolKind) -> DualSpec {
    DualSpec {
        datapath: Datapath::Bgp,
        underlay,
        pool,
        nodes: 3,
        pods_per_node: 2,
        mtu: 1500,
        direct_routing: false,
    }
}

/// The prefixes the fabric's router (BIRD or FRR) holds, both families.
fn prefixes(c: &DualCluster) -> Vec<String> {
    match (&c.router, &c.frr) {
        (Some(r), _) => r.prefixes(),
        (None, Some(f)) => f.routes_dual_stack().into_keys().collect(),
        (None, None) => Vec::new(),
    }
}

/// The router (BIRD or FRR) holds every live node's blocks of both families, each with the node's underlay
/// address of the block's family as next hop.
fn check_router_has_every_block(c: &DualCluster) {
    let mut want: Vec<(String, IpAddr)> = Vec::new();
    for n in &c.live {
        let info = c.peer_info(n).unwrap_or_else(|e| panic!("{e}"));
        for (v6, b) in &info.blocks {
            // IPv4 blocks of an IPv6-only node: its IPv6 address (RFC 8950).
            let via = if *v6 {
                info.underlay6
            } else {
                info.underlay4.or(info.underlay6)
            };
            let via = via.unwrap_or_else(|| panic!("{n} has no underlay address for {b}"));
            want.push((b.clone(), via));
        }
    }
    assert!(
        want.iter().any(|(b, _)| b.contains(':')),
        "no IPv6 block: {want:?}"
    );
    wait_until("the router learned every block", dual::CONVERGE, || {
        let has = |b: &str, via: &IpAddr| match (&c.router, &c.frr) {
            (Some(r), _) => r
                .birdc(&["show", "route", "for", b])
                .contains(&format!("via {via} ")),
            (None, Some(f)) => f
                .routes_dual_stack()
                .get(b)
                .is_some_and(|hops| hops.contains(&via.to_string())),
            (None, None) => panic!("a BGP cluster has a router"),
        };
        let missing: Vec<String> = want
            .iter()
            .filter(|(b, via)| !has(b, via))
            .map(|(b, via)| format!("{b} via {via}"))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "missing {missing:?}; the router has {:?}",
                prefixes(c)
            ))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// `node`'s ipamd frozen (SIGSTOP: no NOTIFICATION, its socket stays open): within the
/// hold time BIRD drops the session, and neither BIRD nor any other node holds a route
/// of either family to its blocks; the others still reach each other on both families.
/// Thawed: its routes come back everywhere.
fn check_node_frozen(c: &mut DualCluster, node: &str) {
    let info = c.peer_info(node).unwrap_or_else(|e| panic!("{e}"));
    let tokens = info.tokens();
    let blocks: Vec<String> = info.blocks.iter().map(|(_, b)| b.clone()).collect();
    let others: Vec<String> = c.live.iter().filter(|n| *n != node).cloned().collect();
    let had = prefixes(c);
    assert!(
        blocks.iter().all(|b| had.contains(b)),
        "the router lacks some of {blocks:?} before the freeze: {had:?}"
    );
    c.daemon(node).freeze();
    let hold = Duration::from_secs(router::HOLD_TIME);
    let r = lifecycle::wait_blocks_withdrawn(
        node,
        &others,
        &tokens,
        &blocks,
        |n| c.owned(n),
        || prefixes(c),
    );
    let took = match r {
        Ok(took) => took,
        Err(e) => {
            c.daemon(node).thaw();
            panic!("{e}");
        }
    };
    let among: Vec<&str> = others.iter().map(String::as_str).collect();
    c.check_ping_matrix_among(&among);
    eprintln!(
        "[{}] {node}'s ipamd frozen: its blocks {blocks:?} gone from {among:?} and the router after \
         {took:?} (hold time {hold:?})",
        c.tag
    );
    c.daemon(node).thaw();
    let back = c
        .wait_converged(dual::CONVERGE)
        .unwrap_or_else(|e| panic!("after {node}'s ipamd was thawed: {e}"));
    check_router_has_every_block(c);
    eprintln!("[{}] {node}'s ipamd thawed: converged in {back:?}", c.tag);
}

/// Dual-stack pool over one IPv4 session per node: exact routes of both families on
/// every node; BIRD holds every block with the right next hop; CHECK; every pod pings
/// every other on both families; 4 MiB over IPv6 across nodes arrives intact (two
/// pairs); the MTU probe per family; node2's ipamd frozen -> its IPv4 and IPv6 blocks
/// gone from BIRD and the others within the hold time, thawed -> back; node3's ipamd stopped and the node removed -> its
/// IPv4 and IPv6 routes gone from the others; node1's ipamd restarted -> no event on its
/// routes of either family under `ip monitor`, no netlink request; DEL of every pod.
#[test]
fn bgp_bird_dual_stack() {
    let t = Instant::now();
    let tag = "bgp6-dual";
    let mut c = DualCluster::up(tag, spec(UnderlayKind::Dual, PoolKind::Dual));
    check_router_has_every_block(&c);
    c.check_pods();
    c.check_ping_matrix();
    c.check_transfer6("node1", "node3", TRANSFER_BYTES);
    c.check_transfer6("node2", "node1", TRANSFER_BYTES);
    c.check_mtu("node1", "node2");
    check_node_frozen(&mut c, "node2");
    c.check_ping_matrix();
    c.check_node_removal("node3");
    c.check_ping_matrix_among(&["node1", "node2"]);
    c.check_restart("node1");
    // node1's Cease made BIRD withdraw its blocks from node2 for the restart: back now.
    c.wait_converged(dual::CONVERGE)
        .unwrap_or_else(|e| panic!("after the restart: {e}"));
    check_router_has_every_block(&c);
    c.check_ping_matrix_among(&["node1", "node2"]);
    c.detach_all();
    eprintln!("[{tag}] done in {:?}", t.elapsed());
}

/// IPv6-only pool on an IPv6-only underlay: IPv6 sessions to BIRD (no IPv4 anywhere on
/// the nodes, router ids derived from the underlay); exact IPv6 routes; every pod pings
/// every other; 4 MiB over IPv6 across nodes; the MTU probe; a frozen node's routes go
/// within the hold time and come back when thawed; node removal removes its routes;
/// node1's ipamd restarted -> no event on its routes under `ip monitor`.
#[test]
fn bgp_bird_ipv6_only() {
    let t = Instant::now();
    let tag = "bgp6-only";
    let mut c = DualCluster::up(tag, spec(UnderlayKind::V6, PoolKind::V6));
    check_router_has_every_block(&c);
    c.check_pods();
    c.check_ping_matrix();
    c.check_transfer6("node1", "node3", TRANSFER_BYTES);
    c.check_mtu("node1", "node2");
    check_node_frozen(&mut c, "node2");
    c.check_node_removal("node3");
    c.check_ping_matrix_among(&["node1", "node2"]);
    c.check_restart("node1");
    c.wait_converged(dual::CONVERGE)
        .unwrap_or_else(|e| panic!("after the restart: {e}"));
    check_router_has_every_block(&c);
    c.check_ping_matrix_among(&["node1", "node2"]);
    c.detach_all();
    eprintln!("[{tag}] done in {:?}", t.elapsed());
}

/// RFC 8950: a dual-stack pool on an IPv6-only underlay (no IPv4 address on any node),
/// BIRD as reflector with `extended next hop on` in the ipv4 channel of the IPv6
/// sessions. BIRD holds every IPv4 block with its node's IPv6 address as next hop; every
/// node holds exactly the others' IPv4 blocks `via inet6` their IPv6 addresses and their
/// IPv6 blocks via the same; every pod pings every other on both families; the MTU probe
/// per family; a frozen node's blocks of both families leave BIRD and the others within
/// the hold time and come back; node removal; a silent restart (no route event of either
/// family under `ip monitor`).
#[test]
fn bgp_bird_ipv4_over_ipv6_underlay() {
    let t = Instant::now();
    let tag = "bgp6-x4";
    let mut c = DualCluster::up(tag, spec(UnderlayKind::V6, PoolKind::Dual));
    check_router_has_every_block(&c);
    c.check_pods();
    c.check_ping_matrix();
    c.check_mtu("node1", "node3");
    check_node_frozen(&mut c, "node2");
    c.check_ping_matrix();
    c.check_node_removal("node3");
    c.check_ping_matrix_among(&["node1", "node2"]);
    c.check_restart("node1");
    c.wait_converged(dual::CONVERGE)
        .unwrap_or_else(|e| panic!("after the restart: {e}"));
    check_router_has_every_block(&c);
    c.check_ping_matrix_among(&["node1", "node2"]);
    c.detach_all();
    eprintln!("[{tag}] done in {:?}", t.elapsed());
}

/// As [`bgp_bird_dual_stack`] with FRR as eBGP top-of-rack router (IPv6 unicast
/// activated on the IPv4 sessions) and the nodes' full iBGP mesh, one IPv4 session per
/// pair of nodes carrying both families: FRR holds every block of both families with
/// its node's address of the family as next hop; ping matrix on both families; 4 MiB
/// over IPv6; a frozen node's blocks leave FRR and the others within the hold time;
/// node removal; a silent restart.
#[test]
fn bgp_frr_dual_stack() {
    let t = Instant::now();
    let tag = "bgp6-frr";
    let mut c = DualCluster::up_with(
        tag,
        spec(UnderlayKind::Dual, PoolKind::Dual),
        BgpTor::FrrMesh,
    );
    check_router_has_every_block(&c);
    c.check_pods();
    c.check_ping_matrix();
    c.check_transfer6("node3", "node1", TRANSFER_BYTES);
    check_node_frozen(&mut c, "node2");
    c.check_ping_matrix();
    c.check_node_removal("node3");
    c.check_restart("node1");
    c.wait_converged(dual::CONVERGE)
        .unwrap_or_else(|e| panic!("after the restart: {e}"));
    check_router_has_every_block(&c);
    c.check_ping_matrix_among(&["node1", "node2"]);
    c.detach_all();
    eprintln!("[{tag}] done in {:?}", t.elapsed());
}

/// An IPv6-only cluster (IPv6 pool, IPv6-only underlay) with FRR as eBGP top-of-rack
/// and the nodes' iBGP mesh, every session over IPv6: FRR holds every block with its
/// node's IPv6 address; exact routes; ping matrix; 4 MiB over IPv6; the MTU probe; a
/// frozen node's blocks leave FRR and the others within the hold time; node removal; a
/// silent restart.
#[test]
fn bgp_frr_ipv6_only() {
    let t = Instant::now();
    let tag = "bgp6-frr6";
    let mut c = DualCluster::up_with(tag, spec(UnderlayKind::V6, PoolKind::V6), BgpTor::FrrMesh);
    check_router_has_every_block(&c);
    c.check_pods();
    c.check_ping_matrix();
    c.check_transfer6("node2", "node3", TRANSFER_BYTES);
    c.check_mtu("node1", "node3");
    check_node_frozen(&mut c, "node2");
    c.check_node_removal("node3");
    c.check_restart("node1");
    c.wait_converged(dual::CONVERGE)
        .unwrap_or_else(|e| panic!("after the restart: {e}"));
    check_router_has_every_block(&c);
    c.check_ping_matrix_among(&["node1", "node2"]);
    c.detach_all();
    eprintln!("[{tag}] done in {:?}", t.elapsed());
}

/// RFC 8950 with FRR: a dual-stack pool on an IPv6-only underlay, FRR as eBGP
/// top-of-rack with `capability extended-nexthop` and the nodes' iBGP mesh over IPv6
/// (our speaker negotiates it with itself): FRR holds every IPv4 block with its node's
/// IPv6 address as next hop; exact `via inet6` routes; ping matrix on both families; the
/// MTU probe; a frozen node's blocks leave FRR and the others, and its mesh sessions come
/// back when thawed; node removal; a silent restart.
#[test]
fn bgp_frr_ipv4_over_ipv6_underlay() {
    let t = Instant::now();
    let tag = "bgp6-frrx";
    let mut c = DualCluster::up_with(tag, spec(UnderlayKind::V6, PoolKind::Dual), BgpTor::FrrMesh);
    check_router_has_every_block(&c);
    c.check_pods();
    c.check_ping_matrix();
    c.check_mtu("node2", "node3");
    check_node_frozen(&mut c, "node2");
    c.check_node_removal("node3");
    c.check_restart("node1");
    c.wait_converged(dual::CONVERGE)
        .unwrap_or_else(|e| panic!("after the restart: {e}"));
    check_router_has_every_block(&c);
    c.check_ping_matrix_among(&["node1", "node2"]);
    c.detach_all();
    eprintln!("[{tag}] done in {:?}", t.elapsed());
}
