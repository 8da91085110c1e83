//! The BGP datapath with FRR 8.4 as the fabric's top-of-rack router: node1 and node2 on
//! one underlay subnet, node3 on another; every node an eBGP neighbour of FRR
//! ([`router::FRR_AS`]) and in the full iBGP mesh of the nodes (no route reflector).
//! The nodes learn each other's blocks over the mesh (FRR's copies carry the nodes'
//! own AS and are refused by the loop check); FRR learns every block and zebra puts it
//! in the fabric's kernel, which forwards the pod traffic between the subnets.

use std::time::{Duration, Instant};

use super::cluster::{BgpTor, Cluster, ClusterSpec, CONVERGE, TRANSFER_BYTES};
use super::inns;
use super::kernel::Monitor;
use super::router;
use super::{wait_until, Datapath};

/// Checked: exact routes on every node (same subnet: via the node; across: via the
/// fabric); FRR holds every block with its node as next hop; every node's sessions
/// (FRR and its two mesh peers) are up; CHECK; every pod pings every other; TCP
/// transfers across and within a subnet; a bare TCP connection from FRR's address to a
/// node changes nothing (no route event, FRR's session not re-established); node3's
/// ipamd frozen -> its blocks leave the other nodes and FRR within the hold time,
/// thawed -> back; node1's ipamd restarted -> no event on its routes, no netlink
/// request; DEL of every pod.
pub fn bgp_frr_mesh_scenario(tag: &str) {
    let t = Instant::now();
    let mut spec = ClusterSpec::new(Datapath::Bgp, 3, 2);
    spec.fabric.node_subnets = vec![0, 0, 1];
    spec.bgp_tor = BgpTor::FrrMesh;
    let mut c = Cluster::up(tag, spec);
    check_frr_has_every_block(&c);
    check_sessions(&c);
    c.check_pods();
    c.check_ping_matrix();
    c.check_transfer("node1", "node3", TRANSFER_BYTES);
    c.check_transfer("node2", "node1", TRANSFER_BYTES);
    check_extra_connection(&c, "node1");
    c.check_node_frozen("node3");
    c.check_ping_matrix();
    check_frr_has_every_block(&c);
    c.check_restart("node1");
    check_frr_has_every_block(&c);
    c.check_ping_matrix();
    c.detach_all();
    eprintln!("[{tag}] FRR + mesh scenario done in {:?}", t.elapsed());
}

fn frr(c: &Cluster) -> &router::Frr {
    c.frr.as_ref().expect("a cluster with an FRR ToR")
}

/// FRR's table holds every block of every live node, with the node as next hop.
pub fn check_frr_has_every_block(c: &Cluster) {
    let want = c.live_blocks();
    let f = frr(c);
    wait_until("FRR learned every block", CONVERGE, || {
        let routes = f.routes();
        let missing: Vec<String> = want
            .iter()
            .filter(|(b, via)| {
                !routes
                    .get(b)
                    .is_some_and(|hops| hops.contains(&via.to_string()))
            })
            .map(|(b, via)| format!("{b} via {via}"))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}; FRR has {routes:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Every node has its session with FRR (its subnet's gateway) and with every other node
/// up (`ipamd_bgp_session_up`).
fn check_sessions(c: &Cluster) {
    for d in &c.daemons {
        let me = c.node(&d.node);
        let mut peers = vec![me.gateway];
        peers.extend(
            c.fabric
                .nodes
                .iter()
                .filter(|n| n.name != d.node)
                .map(|n| n.underlay_ip),
        );
        wait_until(&format!("{}'s sessions up", d.node), CONVERGE, || {
            let down: Vec<String> = peers
                .iter()
                .filter(|p| d.metric(&format!("ipamd_bgp_session_up{{peer=\"{p}\"}}")) != Some(1.0))
                .map(|p| p.to_string())
                .collect();
            if down.is_empty() {
                Ok(())
            } else {
                Err(format!("down: {down:?}"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A bare TCP connection (and one with garbage) from FRR's address to `node`'s BGP
/// port, held past the hold time: `node`'s routes see no event and FRR's session with
/// it is not established again.
fn check_extra_connection(c: &Cluster, node: &str) {
    let n = c.node(node);
    let (to, from) = (n.underlay_ip, n.gateway);
    let before = frr(c).sessions_established(to);
    let mon = Monitor::routes_and_neighbours(n.ns());
    let held = inns::run_in(c.fabric.fabric.name(), move || {
        use std::io::Write;
        let addr = std::net::SocketAddr::from((to, 179));
        let bare = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let mut junk = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let local = bare.local_addr().map_err(|e| e.to_string())?;
        if local.ip() != std::net::IpAddr::V4(from) {
            return Err(format!("connected from {local}, not from FRR's {from}"));
        }
        junk.write_all(&[0x42; 64]).map_err(|e| e.to_string())?;
        Ok((bare, junk))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(router::HOLD_TIME + 1));
    drop(held);
    let events = mon.stop();
    let touched: Vec<&str> = events.lines().filter(|l| l.contains("proto 97")).collect();
    assert!(
        touched.is_empty(),
        "{node}'s routes changed after a bare connection from FRR's address:\n{events}"
    );
    assert_eq!(
        frr(c).sessions_established(to),
        before,
        "FRR's session with {node} was re-established"
    );
    eprintln!(
        "[{}] extra connections from FRR's address to {node}: nothing changed",
        c.tag
    );
}
