//! Multi-node end-to-end tests of the datapaths on this machine's kernel (VXLAN, host-gw
//! and BGP; IPIP is in `ipip.rs`): three "nodes" (network namespaces on an underlay
//! bridge, each running `ipamd --datapath ...`) with two pods each, attached by the
//! datapath plugin run inside the node. See `conformance::multinode::cluster` for the
//! scenario. Also the throughput benchmark (`#[ignore]`, run by
//! `scripts/bench-datapaths.sh`).
//!
//! Needs root, the built binaries (`cni-vxlan`, `cni-routed`, `cni-ipam`, `ipamd`) and,
//! for BGP, BIRD 2 (`bird2`).

use std::time::Duration;

use conformance::multinode::bench::{self, Row};
use conformance::multinode::checks;
use conformance::multinode::cluster::{self, Cluster, ClusterSpec};
use conformance::multinode::topology::{Fabric, FabricSpec};
use conformance::multinode::{in_uml, uml, Datapath};

#[test]
fn vxlan_three_nodes() {
    cluster::three_node_scenario("mn-vxlan", Datapath::Vxlan, 1500);
}

/// Underlay MTU 1400: the plugin must detect it (pod MTU 1400, not a default 1500).
#[test]
fn host_gw_three_nodes() {
    cluster::three_node_scenario("mn-hostgw", Datapath::HostGw, 1400);
}

/// `cni-routed` across two underlay subnets, routes only from BGP (BIRD as route
/// reflector in the fabric).
#[test]
fn bgp_two_subnets_route_reflector() {
    cluster::bgp_scenario("mn-bgp");
}

#[test]
fn vxlan_direct_routing() {
    cluster::direct_routing_scenario("mn-vxdirect");
}

/// The harness itself, without the product: the fabric connects its nodes, a transfer
/// between two node namespaces arrives intact, the MTU probe passes at the fabric's MTU
/// and fails when told a larger one (so it can fail).
#[test]
fn harness_fabric_transfer_and_mtu_probe() {
    let f = Fabric::new("mn-harness", &FabricSpec::flat(2).mtu(1400));
    let (a, b) = (&f.nodes[0], &f.nodes[1]);
    checks::ping_from(a.ns(), b.underlay_ip, &[]).expect("underlay ping");
    let t = checks::tcp_transfer(a.ns(), b.ns(), b.underlay_ip, 31337, 4 << 20, 7)
        .expect("transfer between the nodes");
    assert_eq!(t.bytes, 4 << 20);
    checks::mtu_probe(a.ns(), b.underlay_ip, 1400).expect("MTU probe at 1400");
    assert!(
        checks::mtu_probe(a.ns(), b.underlay_ip, 1500).is_err(),
        "the MTU probe passed for 1500 on a 1400 fabric"
    );
    // Nothing listens on the other port: the transfer must report it.
    assert!(checks::tcp_transfer(a.ns(), b.ns(), a.underlay_ip, 31338, 1024, 7).is_err());
}

fn bench_secs() -> u32 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn bench_rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// iperf3 between the first pods of node1 and node2 of `c` (node2 receives).
fn pod_to_pod(c: &Cluster, secs: u32, port: u16) -> f64 {
    let a = c.pods_of("node1")[0];
    let b = c.pods_of("node2")[0];
    bench::iperf3(b.ns(), b.ip, a.ns(), secs, port)
        .unwrap_or_else(|e| panic!("iperf3 {} -> {}: {e}", a.label(), b.label()))
}

/// iperf3 between the node namespaces node1 -> node2 of `c` (the underlay).
fn node_to_node(c: &Cluster, secs: u32, port: u16) -> f64 {
    let (a, b) = (c.node("node1"), c.node("node2"));
    bench::iperf3(b.ns(), b.underlay_ip, a.ns(), secs, port)
        .unwrap_or_else(|e| panic!("iperf3 underlay: {e}"))
}

/// Pod-to-pod throughput per datapath across two nodes, next to the underlay between
/// the same two node namespaces in the same run; IPIP inside UML next to UML's own
/// underlay. Prints a table (medians of BENCH_ROUNDS rounds of BENCH_SECONDS each).
#[test]
#[ignore = "benchmark: scripts/bench-datapaths.sh"]
fn bench_throughput() {
    let (secs, rounds) = (bench_secs(), bench_rounds());
    let vx = Cluster::up("bench-vxlan", ClusterSpec::new(Datapath::Vxlan, 2, 1));
    let hg = Cluster::up("bench-hostgw", ClusterSpec::new(Datapath::HostGw, 2, 1));
    let (mut under, mut vxs, mut hgs) = (vec![], vec![], vec![]);
    for r in 0..rounds {
        let port = 5201 + r as u16;
        under.push(node_to_node(&vx, secs, port));
        vxs.push(pod_to_pod(&vx, secs, port));
        hgs.push(pod_to_pod(&hg, secs, port));
        eprintln!(
            "round {}: underlay {:.2}, vxlan {:.2}, host-gw {:.2} Gbit/s",
            r + 1,
            under[r] / 1e9,
            vxs[r] / 1e9,
            hgs[r] / 1e9
        );
    }
    drop(vx);
    drop(hg);
    let u = bench::median(&under);
    let mut rows = vec![
        Row {
            what: "underlay node-to-node (veth+bridge)".into(),
            samples: under.clone(),
            baseline: Some(u),
        },
        Row {
            what: "vxlan pod-to-pod".into(),
            samples: vxs,
            baseline: Some(u),
        },
        Row {
            what: "host-gw pod-to-pod".into(),
            samples: hgs,
            baseline: Some(u),
        },
    ];
    // IPIP: inside UML when this kernel lacks it (much slower: compare to UML's underlay).
    let (uu, ui) = if uml::kernel_has_ipip() {
        let ip = Cluster::up("bench-ipip", ClusterSpec::new(Datapath::Ipip, 2, 1));
        let (mut uu, mut ui) = (vec![], vec![]);
        for r in 0..rounds {
            uu.push(node_to_node(&ip, secs, 5301 + r as u16));
            ui.push(pod_to_pod(&ip, secs, 5301 + r as u16));
        }
        (uu, ui)
    } else {
        let o = uml::run_test_in_uml(
            "bench_ipip_inside_uml",
            &["--ignored"],
            Duration::from_secs(60 + 3 * (secs as u64 + 5) * rounds as u64),
        );
        assert!(o.success(), "{}", o.describe());
        let grab = |k: &str| -> Vec<f64> {
            o.output
                .lines()
                .filter_map(|l| l.trim().strip_prefix(k))
                .filter_map(|v| v.trim().parse().ok())
                .collect()
        };
        (grab("CNI-BENCH underlay"), grab("CNI-BENCH ipip"))
    };
    assert!(!uu.is_empty() && !ui.is_empty(), "no IPIP samples");
    let ub = bench::median(&uu);
    let where_ = if in_uml() || !uml::kernel_has_ipip() {
        " (UML)"
    } else {
        ""
    };
    rows.push(Row {
        what: format!("underlay node-to-node{where_}"),
        samples: uu,
        baseline: Some(ub),
    });
    rows.push(Row {
        what: format!("ipip pod-to-pod{where_}"),
        samples: ui,
        baseline: Some(ub),
    });
    println!(
        "\npod-to-pod TCP throughput across two nodes, iperf3 -t {secs}, median of {rounds}; \
         ratio = to the underlay of the same kernel in the same run\n{}",
        bench::table(&rows)
    );
}

/// The IPIP half of [`bench_throughput`], run inside UML by it: prints `CNI-BENCH`
/// lines for the host to read.
#[test]
#[ignore = "run inside UML by bench_throughput"]
fn bench_ipip_inside_uml() {
    assert!(uml::kernel_has_ipip(), "no IPIP in this kernel");
    let (secs, rounds) = (bench_secs(), bench_rounds());
    let c = Cluster::up("bench-ipip", ClusterSpec::new(Datapath::Ipip, 2, 1));
    for r in 0..rounds {
        let port = 5301 + r as u16;
        println!("CNI-BENCH underlay {}", node_to_node(&c, secs, port));
        println!("CNI-BENCH ipip {}", pod_to_pod(&c, secs, port));
    }
}
