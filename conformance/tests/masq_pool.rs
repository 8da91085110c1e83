//! `ipMasq: true` never masquerades traffic between pods of the network (issue 11.6):
//! a TCP connection from one pod to another arrives with the pod's own source address,
//! on the same node (range-mode IPAM: its subnet is excluded) and across nodes
//! (cluster IPAM: the whole pool is excluded), while a connection to an address outside
//! the pod network still arrives from the node's address (masqueraded). The source is
//! what the receiving socket's `accept()` reports, inside the receiving namespace.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use conformance::bins::{self, CniPath};
use conformance::multinode::cluster::{Cluster, ClusterSpec, CONVERGE};
use conformance::multinode::inns;
use conformance::multinode::pod::MnPod;
use conformance::multinode::topology::{Fabric, FabricSpec};
use conformance::multinode::Datapath;
use conformance::subnet::Subnet;
use serde_json::json;

/// The source address a TCP server in `server_ns` listening on `dst:port` sees for a
/// connection from `client_ns`.
fn source_seen(client_ns: &str, server_ns: &str, dst: Ipv4Addr, port: u16) -> Ipv4Addr {
    let addr = SocketAddr::from((dst, port));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let server = inns::spawn_in(server_ns, move || {
        let l = TcpListener::bind(addr).map_err(|e| {
            let m = format!("bind {addr}: {e}");
            let _ = ready_tx.send(Err(m.clone()));
            m
        })?;
        let _ = ready_tx.send(Ok(()));
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match l.accept() {
                Ok((_, peer)) => return Ok(peer.ip()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(format!("no connection to {addr} within 15 s"));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("accept on {addr}: {e}")),
            }
        }
    });
    ready_rx
        .recv()
        .expect("server thread")
        .unwrap_or_else(|e| panic!("{e}"));
    let client = inns::run_in(client_ns, move || {
        let mut last = String::new();
        // The first SYN may race neighbour resolution: a few tries.
        for _ in 0..5 {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("connect to {addr}: {last}"))
    });
    client.unwrap_or_else(|e| panic!("{client_ns} -> {addr}: {e}"));
    match server.join().expect("server thread") {
        Ok(std::net::IpAddr::V4(ip)) => ip,
        Ok(other) => panic!("IPv6 peer {other}"),
        Err(e) => panic!("{e}"),
    }
}

fn port(tag: &str) -> u16 {
    20000 + (conformance::names::unique_hash(tag) % 20000) as u16
}

/// Two `cni-routed` pods on one node (the plugin runs inside the node's netns), IPAM
/// range mode; the fabric namespace stands for "outside".
#[test]
fn same_node_pods_see_each_others_address_routed() {
    let fabric = Fabric::new("msq-node", &FabricSpec::flat(1));
    let node = &fabric.nodes[0];
    let subnet = Subnet::for_test("msq-node-pods");
    let work = tempfile::tempdir().unwrap();
    let cni_path = CniPath::from_dirs(&[bins::our_bin_dir(), bins::ref_bin_dir()]);
    let conf = json!({
        "cniVersion": "1.1.0", "name": "msq-node", "type": "cni-routed", "ipMasq": true,
        "ipam": {"type": "cni-ipam", "dataDir": work.path().join("ipam"),
                 "ranges": [[{"subnet": subnet.cidr()}]]}
    });
    let plugin = bins::our_bin("cni-routed");
    let mut pods: Vec<MnPod> = (0..2)
        .map(|_| {
            MnPod::add(
                "msq-node",
                node,
                &plugin,
                work.path(),
                &cni_path,
                conf.clone(),
            )
        })
        .collect();
    let (a, b) = (&pods[0], &pods[1]);
    let seen = source_seen(a.ns(), b.ns(), b.ip, port("msq-ab"));
    assert_eq!(seen, a.ip, "pod-to-pod on one node was masqueraded");
    let seen = source_seen(b.ns(), a.ns(), a.ip, port("msq-ba"));
    assert_eq!(seen, b.ip, "pod-to-pod on one node was masqueraded");
    // Outside the pod network: masqueraded to the node's address.
    let outside = node.gateway;
    let seen = source_seen(a.ns(), fabric.fabric.name(), outside, port("msq-out"));
    assert_eq!(
        seen, node.underlay_ip,
        "traffic leaving the network not masqueraded"
    );
    let rules = node.netns.exec(&["nft", "list", "table", "ip", "cni_masq"]);
    assert!(
        rules.contains(&format!("ip daddr != {}", subnet.cidr())),
        "the pod subnet is not excluded:\n{rules}"
    );

    for p in &mut pods {
        p.del();
    }
    assert!(
        node.netns
            .try_exec(&["nft", "list", "table", "ip", "cni_masq"])
            .is_err(),
        "empty cni_masq table left after the last DEL"
    );
}

/// Two nodes, cluster IPAM (pool mode), one `ipMasq` pod each: pod-to-pod across nodes
/// keeps the pod's address, pod-to-other-node's-address is masqueraded.
fn cross_node(tag: &str, datapath: Datapath) {
    // One plain pod per node (the harness checks each node's blocks against its pods),
    // then one ipMasq pod per node: those are the ones tested.
    let mut c = Cluster::up(tag, ClusterSpec::new(datapath, 2, 1));
    let plugin = bins::our_bin(datapath.plugin());
    let wrappers = c.work.path().join("wrappers");
    for n in &c.fabric.nodes {
        let mut conf = c.net.for_node(&n.name, &c.data_dir(&n.name));
        conf["ipMasq"] = json!(true);
        let p = MnPod::add(tag, n, &plugin, &wrappers, &c.cni_path, conf);
        c.pods.push(p);
    }
    c.wait_converged(CONVERGE)
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let (p1, p2) = (&c.pods[2], &c.pods[3]);
    let (n1, n2) = (&c.fabric.nodes[0], &c.fabric.nodes[1]);
    assert_ne!(p1.node, p2.node);
    let seen = source_seen(p1.ns(), p2.ns(), p2.ip, port(&format!("{tag}-12")));
    assert_eq!(seen, p1.ip, "pod-to-pod across nodes was masqueraded");
    let seen = source_seen(p2.ns(), p1.ns(), p1.ip, port(&format!("{tag}-21")));
    assert_eq!(seen, p2.ip, "pod-to-pod across nodes was masqueraded");
    // The other node's own address is outside the pod network: masqueraded.
    let seen = source_seen(
        p1.ns(),
        n2.ns(),
        n2.underlay_ip,
        port(&format!("{tag}-out")),
    );
    assert_eq!(seen, n1.underlay_ip, "pod-to-node traffic not masqueraded");
    let rules = n1.netns.exec(&["nft", "list", "table", "ip", "cni_masq"]);
    assert!(
        rules.contains(&format!("ip daddr != {}", c.net.pool)),
        "the cluster pool is not excluded on {}:\n{rules}",
        n1.name
    );
    c.detach_all();
}

#[test]
fn cross_node_pods_see_each_others_address_host_gw() {
    cross_node("msq-hostgw", Datapath::HostGw);
}

#[test]
fn cross_node_pods_see_each_others_address_vxlan() {
    cross_node("msq-vxlan", Datapath::Vxlan);
}
