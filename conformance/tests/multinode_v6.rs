//! IPv6 across nodes (issue 16): three "nodes" (network namespaces on an underlay
//! bridge, each running `ipamd --datapath ...`) with two pods each, dual-stack or
//! IPv6-only, on an IPv4, dual-stack or IPv6-only underlay. See
//! `conformance::multinode::dual` for the scenario: exact routes/neighbours/FDB of both
//! families, ping matrix on both families, TCP over IPv6, MTU probe per family, node
//! removal, silent restart. And the refusal at start of what a datapath cannot carry.
//!
//! Needs root and the built binaries (`cni-vxlan`, `cni-routed`, `cni-ipam`, `ipamd`).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conformance::bins;
use conformance::multinode::bench::{self, Row};
use conformance::multinode::dual::{self, DualCluster, DualSpec, PoolKind, UnderlayKind};
use conformance::multinode::node::{Ipamd, IpamdConf};
use conformance::multinode::topology::{Fabric, FabricSpec, NodeNs};
use conformance::multinode::{in_uml, uml, Datapath, VXLAN_DEVICE};

fn spec(datapath: Datapath, underlay: UnderlayKind, pool: PoolKind, mtu: u32) -> DualSpec {
    DualSpec {
        datapath,
        underlay,
        pool,
        nodes: 3,
        pods_per_node: 2,
        mtu,
        direct_routing: false,
    }
}

/// VXLAN over an IPv4 underlay, dual-stack pool: pod MTU 1500 - 50.
#[test]
fn vxlan_v4_underlay_dual_stack() {
    dual::scenario(
        "mn6-vx4",
        spec(Datapath::Vxlan, UnderlayKind::V4, PoolKind::Dual, 1500),
    );
}

/// VXLAN over an IPv6-only underlay (no IPv4 on the nodes), dual-stack pool: the device
/// has an IPv6 local address, FDB entries an IPv6 dst; pod MTU 1400 - 70 (detected).
#[test]
fn vxlan_v6_underlay_dual_stack() {
    dual::scenario(
        "mn6-vx6d",
        spec(Datapath::Vxlan, UnderlayKind::V6, PoolKind::Dual, 1400),
    );
}

/// An IPv6-only cluster: IPv6 underlay, IPv6 pool, VXLAN.
#[test]
fn vxlan_v6_underlay_v6_only() {
    dual::scenario(
        "mn6-vx6",
        spec(Datapath::Vxlan, UnderlayKind::V6, PoolKind::V6, 1500),
    );
}

/// `directRouting` per family, vxlan, dual-stack pool on an IPv4-only underlay: every
/// node holds exactly, per peer, a plain route `via <its IPv4> dev eth0` for its IPv4
/// block and, for its IPv6 block, the VXLAN route via its IPv6 VTEP address with that
/// neighbour and one FDB entry (no IPv4 VTEP neighbour); then the whole scenario (ping
/// matrix on both families, TCP over IPv6, MTU probe, removal, silent restart).
#[test]
fn vxlan_direct_routing_per_family_v4_underlay() {
    dual::scenario(
        "mn6-vxdr4",
        DualSpec {
            direct_routing: true,
            ..spec(Datapath::Vxlan, UnderlayKind::V4, PoolKind::Dual, 1500)
        },
    );
}

/// The other way round: an IPv6-only underlay, dual-stack pool, `directRouting`: IPv6
/// blocks by plain routes via the peers' IPv6 addresses, IPv4 blocks through VXLAN over
/// IPv6 (FDB dst the peer's IPv6 address); the whole scenario.
#[test]
fn vxlan_direct_routing_per_family_v6_underlay() {
    dual::scenario(
        "mn6-vxdr6",
        DualSpec {
            direct_routing: true,
            ..spec(Datapath::Vxlan, UnderlayKind::V6, PoolKind::Dual, 1500)
        },
    );
}

/// A dual-stack underlay with `ipamd --underlay-ip` its IPv6 address: FDB entries to the
/// peers' IPv6 addresses, device MTU 1500 - 70, and the pods take the device's MTU
/// although their own underlay lookup (the IPv4 default route) would give 1500 - 50.
#[test]
fn vxlan_dual_underlay_tunnel_over_ipv6() {
    let c = DualCluster::up(
        "mn6-vxd6",
        DualSpec {
            nodes: 2,
            ..spec(
                Datapath::Vxlan,
                UnderlayKind::DualOverV6,
                PoolKind::Dual,
                1500,
            )
        },
    );
    assert_eq!(c.pod_mtu(), 1430);
    c.check_mtu("node1", "node2");
    c.check_ping_matrix();
    c.check_transfer6("node2", "node1", dual::TRANSFER_BYTES);
}

/// ipip with a dual-stack pool: IPv4 through tunl0, IPv6 through sit0 (IPv6-in-IPv4 via
/// the peer's IPv4-compatible address), both over the IPv4 underlay; the full scenario.
/// This kernel has neither ipip nor sit: the test re-runs itself inside User-Mode Linux.
#[test]
fn ipip_dual_stack_through_sit() {
    if uml::kernel_has_ipip() {
        dual::scenario(
            "mn6-ipip",
            spec(Datapath::Ipip, UnderlayKind::V4, PoolKind::Dual, 1500),
        );
        return;
    }
    assert!(
        !in_uml(),
        "inside the UML guest but its kernel cannot make IPIP tunnels"
    );
    let o = uml::run_test_in_uml("ipip_dual_stack_through_sit", &[], Duration::from_secs(300));
    eprintln!("{}", o.output);
    assert!(
        o.success() && o.output.contains("test result: ok. 1 passed"),
        "the dual-stack IPIP scenario failed inside UML:\n{}",
        o.describe()
    );
}

/// host-gw on a dual-stack underlay with a dual-stack pool: IPv6 blocks via the peers'
/// IPv6 underlay addresses.
#[test]
fn host_gw_dual_stack() {
    dual::scenario(
        "mn6-hg",
        spec(Datapath::HostGw, UnderlayKind::Dual, PoolKind::Dual, 1500),
    );
}

/// `ipamd run` with `args` inside `node`'s namespace: its exit status and stderr. It
/// must exit by itself (a refusal at start); killed after 20 s otherwise.
fn ipamd_run(node: &NodeNs, work: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let store = format!("file://{}", work.join("cluster.json").display());
    let data = work.join("data").display().to_string();
    let bin = bins::our_bin("ipamd");
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.ns()])
        .arg(&bin)
        .args([
            "run",
            "--node-name",
            "node1",
            "--store",
            &store,
            "--network",
            "refusal",
            "--data-dir",
            &data,
            "--underlay-interface",
            "eth0",
            "--listen",
            "127.0.0.1:9645",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ipamd");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(st) => break st.code(),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status, err)
}

/// What a datapath cannot carry is refused by `ipamd run` at start (non-zero exit, a
/// message naming what to change), never a healthy daemon with pods that cannot talk:
/// ipip with an IPv6-only and with a dual-stack pool; host-gw with an IPv6 pool on an
/// underlay without IPv6; vxlan with an IPv6 pool whose device MTU would be below 1280.
/// The same flags with what the message asks for changed start (healthy).
#[test]
fn ipamd_refuses_what_the_datapath_cannot_carry() {
    let f = Fabric::new("mn6-refuse", &FabricSpec::flat(1).mtu(1330));
    let n = &f.nodes[0];
    let work = tempfile::tempdir().expect("tempdir");
    let pool4 = conformance::subnet::Subnet::for_test("mn6-refuse-pool").cidr();
    let pool6 = format!("fdbb:{:x}:{:x}::/112", n.subnet.b, n.subnet.c);
    let dual = format!("{pool4},{pool6}");
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "ipip",
            &pool6,
            &["IPv6-only pool", "--datapath vxlan", "tunl0"],
        ),
        (
            "ipip",
            &dual,
            // This kernel has no sit module: a dual-stack pool cannot be carried.
            &["sit0", "modprobe sit", "--datapath vxlan", "dual-stack"],
        ),
        (
            "host-gw",
            &dual,
            &["IPv6", "eth0", "has none", "--datapath vxlan"],
        ),
        // Underlay MTU 1330 - 50 = 1280 carries IPv6; with an explicit --mtu 1279 not.
        ("vxlan", &pool6, &["1279", "1280", "--mtu 1279", "IPv6"]),
    ];
    for (i, (datapath, pool, words)) in cases.iter().enumerate() {
        let mut args = vec!["--datapath", datapath, "--pool", pool];
        if *datapath == "vxlan" {
            args.extend(["--mtu", "1279"]);
        }
        let t = Instant::now();
        let dir = work.path().join(format!("case{i}"));
        let (status, err) = ipamd_run(n, &dir, &args);
        assert!(
            status.is_some_and(|s| s != 0),
            "ipamd run {args:?} did not exit with an error ({status:?}):\n{err}"
        );
        for w in *words {
            assert!(
                err.contains(w),
                "ipamd run {args:?}: message lacks {w:?}:\n{err}"
            );
        }
        eprintln!(
            "[mn6-refuse] ipamd run {args:?}: exit {status:?} after {:?}: {}",
            t.elapsed(),
            err.lines().last().unwrap_or("").trim()
        );
    }
    // What the messages ask for: vxlan carries the dual-stack pool (no --mtu: 1280).
    let conf = IpamdConf {
        store: format!("file://{}", work.path().join("ok.json").display()),
        pool: dual.clone(),
        block_size: 26,
        network: "refusal-ok".into(),
        datapath: "vxlan".into(),
        resync: "2s".into(),
        extra: vec![],
    };
    let mut d = Ipamd::start(
        n,
        &conf,
        &work.path().join("ok-data"),
        &work.path().join("ok.log"),
    );
    d.wait_healthy(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    // Healthy comes before the first resync, which makes the device.
    let mtu =
        conformance::multinode::wait_until("the VXLAN device", Duration::from_secs(20), || {
            conformance::multinode::kernel::link_mtu(n.ns(), VXLAN_DEVICE)
        })
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", d.log_text()));
    assert_eq!(mtu, 1280, "VXLAN device MTU on a 1330 underlay");
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// iperf3 from the first pod of node1 to the first pod of node2 of `c`, on the family
/// of `v6`.
fn pod_to_pod(c: &DualCluster, v6: bool, secs: u32, port: u16) -> f64 {
    let a = c.pods_of("node1")[0];
    let b = c.pods_of("node2")[0];
    let dst = b.ip(v6).expect("address of the family");
    bench::iperf3(b.ns(), dst, a.ns(), secs, port)
        .unwrap_or_else(|e| panic!("iperf3 {} -> {dst}: {e}", a.label()))
}

/// iperf3 node1 -> node2 over the underlay address of the family of `v6`.
fn node_to_node(c: &DualCluster, v6: bool, secs: u32, port: u16) -> f64 {
    let (a, b) = (c.node("node1"), c.node("node2"));
    let dst: std::net::IpAddr = if v6 {
        dual::underlay6(&c.fabric.subnets[0], 11).into()
    } else {
        b.underlay_ip.into()
    };
    bench::iperf3(b.ns(), dst, a.ns(), secs, port)
        .unwrap_or_else(|e| panic!("iperf3 underlay -> {dst}: {e}"))
}

/// IPv6 next to IPv4 pod-to-pod TCP throughput across two nodes, in one run: vxlan over
/// an IPv4 underlay, vxlan over an IPv6-only underlay, host-gw on a dual-stack underlay,
/// each with a dual-stack pool; next to the underlay node-to-node over IPv4 and IPv6.
/// Medians of BENCH_ROUNDS rounds of BENCH_SECONDS each (`scripts/bench-datapaths.sh`).
#[test]
#[ignore = "benchmark: scripts/bench-datapaths.sh"]
fn bench_throughput_v6() {
    let secs = env_or("BENCH_SECONDS", 5) as u32;
    let rounds = env_or("BENCH_ROUNDS", 3) as usize;
    let two = |d, u| DualSpec {
        datapath: d,
        underlay: u,
        pool: PoolKind::Dual,
        nodes: 2,
        pods_per_node: 1,
        mtu: 1500,
        direct_routing: false,
    };
    let vx4 = DualCluster::up("bench6-vx4", two(Datapath::Vxlan, UnderlayKind::V4));
    let vx6 = DualCluster::up("bench6-vx6", two(Datapath::Vxlan, UnderlayKind::V6));
    let hg = DualCluster::up("bench6-hg", two(Datapath::HostGw, UnderlayKind::Dual));
    type Measure<'a> = Box<dyn Fn(u16) -> f64 + 'a>;
    // (label, baseline row index: 0 = IPv4 underlay, 1 = IPv6 underlay, measurement)
    let paths: Vec<(&str, Option<usize>, Measure)> = vec![
        (
            "underlay node-to-node IPv4",
            None,
            Box::new(|p| node_to_node(&hg, false, secs, p)),
        ),
        (
            "underlay node-to-node IPv6",
            None,
            Box::new(|p| node_to_node(&hg, true, secs, p)),
        ),
        (
            "vxlan/IPv4 underlay, pods IPv4",
            Some(0),
            Box::new(|p| pod_to_pod(&vx4, false, secs, p)),
        ),
        (
            "vxlan/IPv4 underlay, pods IPv6",
            Some(0),
            Box::new(|p| pod_to_pod(&vx4, true, secs, p)),
        ),
        (
            "vxlan/IPv6 underlay, pods IPv4",
            Some(1),
            Box::new(|p| pod_to_pod(&vx6, false, secs, p)),
        ),
        (
            "vxlan/IPv6 underlay, pods IPv6",
            Some(1),
            Box::new(|p| pod_to_pod(&vx6, true, secs, p)),
        ),
        (
            "host-gw, pods IPv4",
            Some(0),
            Box::new(|p| pod_to_pod(&hg, false, secs, p)),
        ),
        (
            "host-gw, pods IPv6",
            Some(1),
            Box::new(|p| pod_to_pod(&hg, true, secs, p)),
        ),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for r in 0..rounds {
        for (i, (what, _, m)) in paths.iter().enumerate() {
            let v = m(5401 + (r * paths.len() + i) as u16);
            eprintln!("round {}: {what}: {:.2} Gbit/s", r + 1, v / 1e9);
            samples[i].push(v);
        }
    }
    let base = [bench::median(&samples[0]), bench::median(&samples[1])];
    let rows: Vec<Row> = paths
        .iter()
        .zip(samples)
        .map(|((what, b, _), s)| Row {
            what: what.to_string(),
            baseline: Some(b.map_or_else(|| bench::median(&s), |i| base[i])),
            samples: s,
        })
        .collect();
    println!(
        "\nIPv4 and IPv6 pod-to-pod TCP throughput across two nodes, iperf3 -t {secs}, median \
         of {rounds}; ratio = to the underlay node-to-node of the outer family in the same \
         run\n{}",
        bench::table(&rows)
    );
}

/// `cni-ipip`'s ADD refuses an IPv6 address from IPAM when the node has no `sit0` (this
/// kernel has no sit module; code 7, naming what to change)
/// and undoes itself: no `eth0` in the pod, no host veth, no address left reserved in
/// host-local's store. The same network with IPv4 only attaches.
#[test]
fn ipip_add_refuses_ipv6() {
    let f = Fabric::new("mn6-ipipadd", &FabricSpec::flat(1));
    let n = &f.nodes[0];
    let work = tempfile::tempdir().expect("tempdir");
    let wrappers = work.path().join("wrappers");
    std::fs::create_dir_all(&wrappers).expect("mkdir");
    let plugin =
        conformance::multinode::pod::wrapper(&wrappers, n.ns(), &bins::our_bin("cni-ipip"));
    let cni_path = bins::CniPath::from_dirs(&[bins::our_bin_dir(), bins::ref_bin_dir()]);
    let pool = conformance::subnet::Subnet::for_test("mn6-ipipadd-pool");
    let data = work.path().join("hl");
    let conf = |v6: bool| {
        let mut ranges = vec![serde_json::json!([{"subnet": pool.cidr()}])];
        if v6 {
            ranges.push(
                serde_json::json!([{"subnet": format!("fdbb:{:x}:{:x}::/64", pool.b, pool.c)}]),
            );
        }
        serde_json::json!({
            "cniVersion": "1.0.0", "name": "ipipv6", "type": "cni-ipip",
            "ipam": {"type": "host-local", "ranges": ranges, "dataDir": data.display().to_string()}
        })
    };
    let pod = conformance::fixture::Pod::new("mn6-ipipadd-pod");
    let run = |command: &str, c: &serde_json::Value| {
        conformance::runner::Invocation::new(&plugin, command, cni_path.dir())
            .container_id(&pod.container_id)
            .ifname(&pod.ifname)
            .netns(pod.netns.path())
            .config(c)
            .run()
    };
    let e = run("ADD", &conf(true)).expect_code(7);
    for w in ["IPv6", "cni-ipip", "sit0", "cni-vxlan"] {
        assert!(e.msg.contains(w), "message lacks {w:?}: {}", e.msg);
    }
    assert!(
        !conformance::inspect::link_exists_in(&pod.netns, "eth0"),
        "eth0 left in the pod after the refused ADD"
    );
    let host_links = n.ip(&["-o", "link", "show"]);
    assert!(
        !host_links.lines().any(|l| l.contains(": rt")),
        "a host veth left on the node after the refused ADD:\n{host_links}"
    );
    // host-local keeps one file per reserved address, named by it.
    let reserved = || -> Vec<String> {
        std::fs::read_dir(data.join("ipipv6"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        reserved().is_empty(),
        "addresses left reserved: {:?}",
        reserved()
    );
    eprintln!("[mn6-ipipadd] refused: {}", e.msg);
    let ok = run("ADD", &conf(false));
    assert!(ok.success(), "IPv4-only ADD: {}", ok.describe());
    assert_eq!(
        reserved().len(),
        1,
        "the IPv4-only ADD's reservation: {:?}",
        reserved()
    );
    let del = run("DEL", &conf(false));
    assert!(del.success(), "DEL: {}", del.describe());
}
