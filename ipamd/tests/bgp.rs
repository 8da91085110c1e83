//! `ipamd run --datapath bgp` in network namespaces (root): a two-node iBGP mesh, and
//! three nodes on two subnets behind a router running the real BIRD 2 as route
//! reflector, and two nodes on an IPv6-only link whose IPv4 blocks BIRD reflects with
//! IPv6 next hops (RFC 8950). Every namespace, daemon and BIRD is removed on drop (also
//! on panic).

mod common;
mod routers;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use ipnetwork::IpNetwork;
use routers::*;

/// Two nodes on one veth, `192.168.<net>.1` and `.2`, and a store (in `dir`).
struct Pair {
    dir: tempfile::TempDir,
    store: PathBuf,
    n1: Node,
    n2: Node,
}

fn pair(tag: &str, net: u8) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    let n1 = Node::bare(&format!("{tag}1-"));
    let n2 = Node::bare(&format!("{tag}2-"));
    link(&n1, "eth0", &format!("192.168.{net}.1/24"), &n2, "eth0");
    n2.ip(&["addr", "add", &format!("192.168.{net}.2/24"), "dev", "eth0"]);
    Pair { dir, store, n1, n2 }
}

#[test]
fn mesh_of_two_nodes_learns_resyncs_and_withdraws() {
    let Pair { dir, store, n1, n2 } = pair("bgpm", 71);
    let d1 = start(&n1, "n1", dir.path(), &store, &bgp_flags("192.168.71.1"));
    let d2 = start(&n2, "n2", dir.path(), &store, &bgp_flags("192.168.71.2"));
    let b1 = block_of(&store, "n1", &d1);
    let b2 = block_of(&store, "n2", &d2);
    let logs = || format!("n1:\n{}\nn2:\n{}", d1.log(), d2.log());

    // Each learns the other's block with the other's underlay address as next hop.
    wait_route(&n1, b2, Some("192.168.71.2"), true, 30 * SEC, logs);
    wait_route(&n2, b1, Some("192.168.71.1"), true, 30 * SEC, logs);
    // Nothing else: not its own block.
    assert_eq!(routes97(&n1).lines().count(), 1, "{}", routes97(&n1));

    // Operability: metrics and the CLI.
    let up = "ipamd_bgp_session_up{peer=\"192.168.71.2\"}";
    wait_until(5 * SEC, || n1.metric(up) == Some(1.0), || n1.metrics());
    assert_eq!(
        n1.metric("ipamd_bgp_prefixes_received{peer=\"192.168.71.2\"}"),
        Some(1.0)
    );
    assert_eq!(
        n1.metric("ipamd_bgp_prefixes_sent{peer=\"192.168.71.2\"}"),
        Some(1.0)
    );
    let (ok, json) = n1.exec(&[BIN, "bgp-peers", "--json"]);
    assert!(
        ok && json.contains("\"established\"") && json.contains("64512"),
        "{json}"
    );
    let (ok, table) = n1.exec(&[BIN, "bgp-peers"]);
    assert!(
        ok && table.contains("192.168.71.2") && table.contains("established"),
        "{table}"
    );

    // Deleted behind the daemon's back: the resync puts it back.
    n1.ip(&["route", "del", &b2.to_string()]);
    wait_route(&n1, b2, Some("192.168.71.2"), true, 10 * SEC, logs);

    // n2's ipamd dies: its route goes from n1 within the hold time.
    let t0 = Instant::now();
    drop(d2);
    wait_route(&n1, b2, None, false, 3 * SEC + 2 * SEC, || d1.log());
    eprintln!("withdrawn on n1 {:?} after n2 was killed", t0.elapsed());
}

/// A block the node releases (an empty second block, after `--block-release-grace`) is
/// withdrawn: the other node's route to it goes, the route to its first block stays.
#[test]
fn a_released_block_is_withdrawn() {
    let Pair { dir, store, n1, n2 } = pair("bgpw", 72);
    let d1 = start(&n1, "n1", dir.path(), &store, &bgp_flags("192.168.72.1"));
    let mut f2 = bgp_flags("192.168.72.2");
    f2.extend(["--block-release-grace".into(), "3s".into()]);
    let d2 = start(&n2, "n2", dir.path(), &store, &f2);
    let first = block_of(&store, "n2", &d2);
    let logs = || format!("n1:\n{}\nn2:\n{}", d1.log(), d2.log());
    wait_route(&n1, first, Some("192.168.72.2"), true, 30 * SEC, logs);

    // A pod in the first block (an empty one could be released instead), and a second
    // block claimed into n2's cache as an ADD would: it stays empty.
    let local = ipam::Store::open(dir.path().join("n2/data/dp")).unwrap();
    let range = ipam::Range::new("dp", first, None, None, None).unwrap();
    let sets =
        ipam::RangeSets::new("dp", vec![ipam::RangeSet::new("dp", vec![range]).unwrap()]).unwrap();
    local
        .allocate(&ipam::AllocKey::new("c1", "eth0"), &sets, &[])
        .unwrap();
    let second = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = ipam::cluster::StoreUrl::parse(&format!("file://{}", store.display())).unwrap();
        let c = ipam::cluster::ClusterStore::connect(&url).await.unwrap();
        let pool = ipam::cluster::Pool::new(vec![POOL.parse().unwrap()], Some(26), None).unwrap();
        let seen = ipam::cluster::local::cached_blocks(&local).unwrap();
        ipam::cluster::local::claim_into_cache(&local, &c, "n2", &pool, false, None, &seen)
            .await
            .unwrap()
    });
    assert_ne!(second, first);
    wait_route(&n1, second, Some("192.168.72.2"), true, 10 * SEC, logs);
    // Released after the grace: withdrawn, gone from n1; the first block stays.
    wait_route(&n1, second, None, false, 15 * SEC, logs);
    assert!(!node_blocks(&store, "n2").contains(&second));
    assert!(node_blocks(&store, "n2").contains(&first));
    wait_route(&n1, first, Some("192.168.72.2"), true, SEC, logs);
    assert!(d2.log().contains("BGP: block withdrawn"), "{}", d2.log());
}

/// Route reflector for `clients` (address, name) in AS 64512, with one static prefix
/// outside the pool that it offers everyone; installs what it learns in its kernel.
fn rr_config(router_id: &str, clients: &[(&str, &str)]) -> String {
    let mut c = format!(
        "router id {router_id};\n\
         protocol device {{ scan time 1; }}\n\
         protocol direct {{ ipv4; }}\n\
         protocol kernel {{ ipv4 {{ export where source = RTS_BGP; }}; }}\n\
         protocol static {{ ipv4; route 172.16.99.0/24 blackhole; }}\n\
         template bgp node {{\n\
           local as 64512;\n\
           rr client;\n\
           direct;\n\
           hold time 3; connect retry time 1; error wait time 1, 3;\n\
           ipv4 {{ import all; export where source = RTS_BGP || source = RTS_STATIC; gateway direct; }};\n\
         }}\n"
    );
    for (addr, name) in clients {
        c.push_str(&format!(
            "protocol bgp {name} from node {{ neighbor {addr} as 64512; }}\n"
        ));
    }
    c
}

#[test]
fn bird_route_reflector_joins_two_subnets() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    // Router: br1 (192.168.81.0/24, n1 and n2), r3 (192.168.82.0/24, n3).
    let r = Node::bare("bgpr-");
    r.ip(&["link", "add", "br1", "type", "bridge"]);
    r.ip(&["addr", "add", "192.168.81.254/24", "dev", "br1"]);
    r.ip(&["link", "set", "br1", "up"]);
    let (ok, _) = r.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    assert!(ok, "ip_forward");
    let n1 = Node::bare("bgpn1-");
    let n2 = Node::bare("bgpn2-");
    let n3 = Node::bare("bgpn3-");
    link(&n1, "eth0", "192.168.81.1/24", &r, "r1");
    link(&n2, "eth0", "192.168.81.2/24", &r, "r2");
    r.ip(&["link", "set", "r1", "master", "br1"]);
    r.ip(&["link", "set", "r2", "master", "br1"]);
    link(&n3, "eth0", "192.168.82.3/24", &r, "r3");
    r.ip(&["addr", "add", "192.168.82.254/24", "dev", "r3"]);
    for (n, gw) in [
        (&n1, "192.168.81.254"),
        (&n2, "192.168.81.254"),
        (&n3, "192.168.82.254"),
    ] {
        n.ip(&["route", "add", "default", "via", gw]);
    }
    let bird = Bird::start(
        &r,
        dir.path(),
        &rr_config(
            "192.168.81.254",
            &[
                ("192.168.81.1", "n1"),
                ("192.168.81.2", "n2"),
                ("192.168.82.3", "n3"),
            ],
        ),
    );

    let flags = |ip: &str, router: &str| {
        let mut f = bgp_flags(ip);
        f.extend([
            "--bgp-no-mesh".into(),
            "--bgp-peer".into(),
            format!("{router},64512"),
        ]);
        f
    };
    let d1 = start(
        &n1,
        "n1",
        dir.path(),
        &store,
        &flags("192.168.81.1", "192.168.81.254"),
    );
    let d2 = start(
        &n2,
        "n2",
        dir.path(),
        &store,
        &flags("192.168.81.2", "192.168.81.254"),
    );
    let d3 = start(
        &n3,
        "n3",
        dir.path(),
        &store,
        &flags("192.168.82.3", "192.168.82.254"),
    );
    let b1 = block_of(&store, "n1", &d1);
    let b2 = block_of(&store, "n2", &d2);
    let b3 = block_of(&store, "n3", &d3);
    let logs = || {
        format!(
            "n1:\n{}\nn2:\n{}\nbird:\n{}",
            d1.log(),
            d2.log(),
            bird.birdc(&["show", "protocols", "all"])
        )
    };

    // BIRD learns every node's block, with the node as next hop.
    wait_until(
        30 * SEC,
        || {
            let t = bird.birdc(&["show", "route"]);
            [b1, b2, b3].iter().all(|b| t.contains(&b.to_string()))
        },
        || format!("{}\n{}", bird.birdc(&["show", "route"]), logs()),
    );

    // Every node installs the others' blocks from BGP alone (the nodes know nothing of
    // each other otherwise: no mesh). Same subnet: via the node; across: via the router,
    // the kernel's route to the node's address (a gateway must be on-link).
    wait_route(&n1, b2, Some("192.168.81.2"), true, 30 * SEC, logs);
    wait_route(&n1, b3, Some("192.168.81.254"), true, 30 * SEC, logs);
    wait_route(&n2, b1, Some("192.168.81.1"), true, 30 * SEC, logs);
    wait_route(&n2, b3, Some("192.168.81.254"), true, 30 * SEC, logs);
    wait_route(&n3, b1, Some("192.168.82.254"), true, 30 * SEC, logs);
    wait_route(&n3, b2, Some("192.168.82.254"), true, 30 * SEC, logs);

    // The prefix outside the pool that BIRD offers is refused everywhere.
    for n in [&n1, &n2, &n3] {
        assert!(!routes97(n).contains("172.16.99.0"), "{}", routes97(n));
        assert!(!n.ip(&["-4", "route"]).contains("172.16.99.0"));
    }

    // Traffic between node-owned addresses (the first host of each block, on lo),
    // across the subnets, with no encapsulation.
    let host = |b: IpNetwork| match b {
        IpNetwork::V4(n) => std::net::Ipv4Addr::from(u32::from(n.network()) + 1).to_string(),
        IpNetwork::V6(_) => unreachable!(),
    };
    for (n, b) in [(&n1, b1), (&n2, b2), (&n3, b3)] {
        n.ip(&["addr", "add", &format!("{}/32", host(b)), "dev", "lo"]);
    }
    for (from, src, to) in [(&n1, b1, b3), (&n3, b3, b2), (&n2, b2, b1)] {
        let (ok, out) = from.exec(&["ping", "-c", "2", "-W", "2", "-I", &host(src), &host(to)]);
        assert!(ok, "{} -> {}: {out}", from.ns, host(to));
    }

    // n3 stops: BIRD and the other nodes drop its block within the hold time.
    drop(d3);
    wait_route(&n1, b3, None, false, 5 * SEC, logs);
    wait_route(&n2, b3, None, false, 5 * SEC, logs);
    assert!(!bird.birdc(&["show", "route"]).contains(&b3.to_string()));
    drop(d1);
    drop(d2);
}

#[test]
fn prefix_outside_the_pool_is_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    let r = Node::bare("bgpor-");
    let n = Node::bare("bgpon-");
    link(&n, "eth0", "192.168.91.1/24", &r, "r1");
    r.ip(&["addr", "add", "192.168.91.254/24", "dev", "r1"]);
    // A ToR in AS 65000 offering one prefix inside the pool and one outside.
    let bird = Bird::start(
        &r,
        dir.path(),
        "router id 192.168.91.254;\n\
         protocol device { scan time 1; }\n\
         protocol static { ipv4; route 10.244.200.0/26 blackhole; route 172.16.99.0/24 blackhole; }\n\
         protocol bgp n1 {\n\
           local 192.168.91.254 as 65000; neighbor 192.168.91.1 as 64512;\n\
           hold time 3; connect retry time 1; error wait time 1, 3;\n\
           ipv4 { import all; export where source = RTS_STATIC; };\n\
         }\n",
    );
    let mut flags = bgp_flags("192.168.91.1");
    flags.extend([
        "--bgp-no-mesh".into(),
        "--bgp-peer".into(),
        "192.168.91.254,65000".into(),
    ]);
    let d = start(&n, "n1", dir.path(), &store, &flags);
    let logs = || format!("{}\n{}", d.log(), bird.birdc(&["show", "protocols", "all"]));
    let inside: IpNetwork = "10.244.200.0/26".parse().unwrap();
    wait_route(&n, inside, Some("192.168.91.254"), true, 30 * SEC, logs);
    // The node's own block went the other way (eBGP: the AS path is ours).
    let b = block_of(&store, "n1", &d);
    wait_until(
        10 * SEC,
        || {
            bird.birdc(&["show", "route", "protocol", "n1"])
                .contains(&b.to_string())
        },
        || bird.birdc(&["show", "route", "all"]),
    );
    std::thread::sleep(2 * SEC); // a resync passes
    assert!(
        !n.ip(&["-4", "route"]).contains("172.16.99.0"),
        "{}",
        routes97(&n)
    );
    assert_eq!(routes97(&n).lines().count(), 1, "{}", routes97(&n));
    assert_eq!(
        n.metric("ipamd_bgp_prefixes_received{peer=\"192.168.91.254\"}"),
        Some(1.0)
    );
}

/// A learned route deleted behind the daemon's back comes back from the kernel's
/// notification, with the default `--resync` (60 s: the resync is not what repairs it),
/// within a second; routes of another protocol in the pool's space are left alone.
#[test]
fn a_deleted_learned_route_is_back_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    let r = Node::bare("bgprr-");
    let n = Node::bare("bgprn-");
    link(&n, "eth0", "192.168.92.1/24", &r, "r1");
    r.ip(&["addr", "add", "192.168.92.254/24", "dev", "r1"]);
    let bird = Bird::start(
        &r,
        dir.path(),
        "router id 192.168.92.254;\n\
         protocol device { scan time 1; }\n\
         protocol static { ipv4; route 10.244.210.0/26 blackhole; }\n\
         protocol bgp n1 {\n\
           local 192.168.92.254 as 65000; neighbor 192.168.92.1 as 64512;\n\
           hold time 3; connect retry time 1; error wait time 1, 3;\n\
           ipv4 { import none; export where source = RTS_STATIC; };\n\
         }\n",
    );
    let mut flags: Vec<String> = bgp_flags("192.168.92.1")
        .into_iter()
        .take_while(|f| f != "--resync")
        .collect();
    flags.extend([
        "--bgp-no-mesh".into(),
        "--bgp-peer".into(),
        "192.168.92.254,65000".into(),
    ]);
    let d = start(&n, "n1", dir.path(), &store, &flags);
    let logs = || format!("{}\n{}", d.log(), bird.birdc(&["show", "protocols", "all"]));
    let learned: IpNetwork = "10.244.210.0/26".parse().unwrap();
    wait_route(&n, learned, Some("192.168.92.254"), true, 30 * SEC, logs);

    // Another agent's routes: one to the same prefix (another metric), one to another
    // prefix of the pool.
    n.ip(&[
        "route",
        "add",
        "10.244.210.0/26",
        "via",
        "192.168.92.254",
        "proto",
        "static",
        "metric",
        "500",
    ]);
    n.ip(&[
        "route",
        "add",
        "10.244.211.0/26",
        "via",
        "192.168.92.254",
        "proto",
        "static",
    ]);
    let others = || n.ip(&["-4", "route", "show", "proto", "static"]);
    let before = others();
    assert_eq!(before.lines().count(), 2, "{before}");

    let mut times = Vec::new();
    for _ in 0..3 {
        n.ip(&["route", "del", "10.244.210.0/26", "proto", "97"]);
        let t0 = Instant::now();
        let back = loop {
            if routes97(&n).contains("10.244.210.0/26 via 192.168.92.254 ") {
                break t0.elapsed();
            }
            assert!(
                t0.elapsed() < 5 * SEC,
                "not back: {}\n{}",
                routes97(&n),
                logs()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(back < SEC, "back after {back:?}");
        times.push(back);
        assert_eq!(others(), before, "another protocol's routes changed");
    }
    eprintln!("learned route back after {times:?}");
    assert!(d.log().contains("kernel entries put back"), "{}", d.log());
    assert_eq!(routes97(&n).lines().count(), 1, "{}", routes97(&n));

    // Another agent deletes its own route to the same prefix: not ours, not put back.
    n.ip(&[
        "route",
        "del",
        "10.244.210.0/26",
        "proto",
        "static",
        "metric",
        "500",
    ]);
    std::thread::sleep(SEC);
    assert_eq!(others().lines().count(), 1, "{}", others());
    assert!(others().contains("10.244.211.0/26"), "{}", others());
    wait_route(&n, learned, Some("192.168.92.254"), true, SEC, logs);
}

/// While starting, a route from before a restart that no peer announced again yet is
/// kept, and the event-driven repair respects that: deleted by hand, it is not put back
/// (the importer does not want it now), and the other one kept stays (a repair never
/// deletes). The peer never answers, so the startup lasts the default window (90 s).
#[test]
fn repair_during_the_startup_neither_adds_nor_deletes_kept_routes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    let r = Node::bare("bgpsr-");
    let n = Node::bare("bgpsn-");
    link(&n, "eth0", "192.168.96.1/24", &r, "r1");
    r.ip(&["addr", "add", "192.168.96.254/24", "dev", "r1"]);
    // Left by the previous run.
    for p in ["10.244.230.0/26", "10.244.231.0/26"] {
        n.ip(&["route", "add", p, "via", "192.168.96.254", "proto", "97"]);
    }
    let flags: Vec<String> = [
        "--datapath",
        "bgp",
        "--underlay-ip",
        "192.168.96.1",
        "--bgp-connect-retry",
        "1s",
        "--bgp-no-mesh",
        "--bgp-peer",
        "192.168.96.254,65000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let d = start(&n, "n1", dir.path(), &store, &flags);
    wait_until(
        20 * SEC,
        || n.metric("ipamd_datapath_resyncs_total").unwrap_or(0.0) >= 1.0,
        || d.log(),
    );
    n.ip(&["route", "del", "10.244.230.0/26", "proto", "97"]);
    std::thread::sleep(2 * SEC);
    let left = routes97(&n);
    assert!(
        !left.contains("10.244.230.0/26"),
        "put back:\n{left}\n{}",
        d.log()
    );
    assert!(
        left.contains("10.244.231.0/26 via 192.168.96.254 "),
        "{left}\n{}",
        d.log()
    );
    assert!(!d.log().contains("startup over"), "{}", d.log());
}

/// Two route reflectors (each its own BIRD, namespace and link) offer the same prefix
/// with different next hops: the route stays while either still offers it, follows the
/// one left, and goes when neither does.
#[test]
fn same_prefix_from_two_reflectors_stays_while_either_offers_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    let n = Node::bare("bgp2n-");
    let ra = Node::bare("bgp2a-");
    let rb = Node::bare("bgp2b-");
    link(&n, "eth0", "192.168.93.1/24", &ra, "r1");
    ra.ip(&["addr", "add", "192.168.93.254/24", "dev", "r1"]);
    link(&n, "eth1", "192.168.94.1/24", &rb, "r1");
    rb.ip(&["addr", "add", "192.168.94.254/24", "dev", "r1"]);
    let tor = |local: &str, sub: &str| {
        let d = dir.path().join(sub);
        std::fs::create_dir_all(&d).unwrap();
        format!(
            "router id {local};\n\
             protocol device {{ scan time 1; }}\n\
             protocol static {{ ipv4; route 10.244.200.0/26 blackhole; }}\n\
             protocol bgp n1 {{\n\
               local {local} as 64512; neighbor {} as 64512; rr client; direct;\n\
               hold time 3; connect retry time 1; error wait time 1, 3;\n\
               ipv4 {{ import all; export where source = RTS_STATIC; next hop self; }};\n\
             }}\n",
            if sub == "a" {
                "192.168.93.1"
            } else {
                "192.168.94.1"
            }
        )
    };
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let bird_a = Bird::start(&ra, &a_dir, &tor("192.168.93.254", "a"));
    let bird_b = Bird::start(&rb, &b_dir, &tor("192.168.94.254", "b"));
    let (a, b) = ("192.168.93.254", "192.168.94.254");
    let mut flags = bgp_flags("192.168.93.1");
    flags.extend([
        "--bgp-no-mesh".into(),
        "--bgp-peer".into(),
        format!("{a},64512"),
        "--bgp-peer".into(),
        format!("{b},64512"),
    ]);
    let d = start(&n, "n1", dir.path(), &store, &flags);
    let logs = || d.log();
    let p: IpNetwork = "10.244.200.0/26".parse().unwrap();
    let received =
        |peer: &str| n.metric(&format!("ipamd_bgp_prefixes_received{{peer=\"{peer}\"}}"));
    let wait_received = |peer: &str, want: f64| {
        wait_until(
            20 * SEC,
            || received(peer) == Some(want),
            || format!("{peer}: {:?}\n{}", received(peer), d.log()),
        )
    };
    wait_received(a, 1.0);
    wait_received(b, 1.0);
    wait_route(&n, p, None, true, 10 * SEC, logs);

    // Whichever next hop is installed, losing one reflector leaves the other's, and the
    // route is never deleted on the way (a resync would put it back: the monitor sees
    // a gap the polling would not).
    let mon = RouteMonitor::start(&n);
    bird_a.birdc(&["disable", "n1"]);
    wait_received(a, 0.0);
    wait_route(&n, p, Some(b), true, 10 * SEC, logs);
    bird_a.birdc(&["enable", "n1"]);
    wait_received(a, 1.0);
    bird_b.birdc(&["disable", "n1"]);
    wait_received(b, 0.0);
    wait_route(&n, p, Some(a), true, 10 * SEC, logs);
    let events = mon.stop();
    assert!(
        !events
            .lines()
            .any(|l| l.contains("] Deleted ") && l.contains("10.244.200.0/26")),
        "the route went away while a reflector still offered it:\n{events}"
    );

    // Neither offers it: gone.
    bird_a.birdc(&["disable", "n1"]);
    wait_route(&n, p, None, false, 10 * SEC, logs);
}

/// n2's ipamd restarts (SIGTERM, started again) behind a BIRD route reflector while n1
/// watches its route to n2's block. With `--bgp-graceful-restart`: BIRD keeps the block
/// (stale) through the restart and n1 never loses it. Without: the Cease makes BIRD
/// withdraw it and n1 deletes it (so the test can tell the two apart).
#[test]
fn graceful_restart_keeps_a_restarting_nodes_routes_at_its_peers() {
    for graceful in [true, false] {
        restart_behind_reflector(graceful);
    }
}

fn restart_behind_reflector(graceful: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    let r = Node::bare("bgpgr-");
    r.ip(&["link", "add", "br1", "type", "bridge"]);
    r.ip(&["addr", "add", "192.168.97.254/24", "dev", "br1"]);
    r.ip(&["link", "set", "br1", "up"]);
    let n1 = Node::bare("bgpg1-");
    let n2 = Node::bare("bgpg2-");
    link(&n1, "eth0", "192.168.97.1/24", &r, "r1");
    link(&n2, "eth0", "192.168.97.2/24", &r, "r2");
    r.ip(&["link", "set", "r1", "master", "br1"]);
    r.ip(&["link", "set", "r2", "master", "br1"]);
    let bird = Bird::start(
        &r,
        dir.path(),
        &rr_config(
            "192.168.97.254",
            &[("192.168.97.1", "n1"), ("192.168.97.2", "n2")],
        ),
    );
    let flags = |ip: &str| {
        let mut f = bgp_flags(ip);
        f.extend([
            "--bgp-no-mesh".into(),
            "--bgp-peer".into(),
            "192.168.97.254,64512".into(),
        ]);
        if graceful {
            f.push("--bgp-graceful-restart".into());
        }
        f
    };
    let d1 = start(&n1, "n1", dir.path(), &store, &flags("192.168.97.1"));
    let d2 = start(&n2, "n2", dir.path(), &store, &flags("192.168.97.2"));
    let b2 = block_of(&store, "n2", &d2);
    let logs = || {
        format!(
            "n1:\n{}\nbird:\n{}",
            d1.log(),
            bird.birdc(&["show", "protocols"])
        )
    };
    wait_route(&n1, b2, Some("192.168.97.2"), true, 30 * SEC, logs);
    let established = || {
        bird.birdc(&["show", "protocols", "n2"])
            .contains("Established")
    };
    wait_until(10 * SEC, established, logs);

    let mon = RouteMonitor::start(&n1);
    d2.terminate();
    wait_until(10 * SEC, || !established(), logs);
    let bird_has_b2 = bird.birdc(&["show", "route"]).contains(&b2.to_string());
    assert_eq!(
        bird_has_b2,
        graceful,
        "graceful={graceful}: BIRD has n2's block during its restart? {}",
        bird.birdc(&["show", "route", "all"])
    );
    let d2 = start(&n2, "n2", dir.path(), &store, &flags("192.168.97.2"));
    wait_until(10 * SEC, established, || {
        format!("{}\n{}", logs(), d2.log())
    });
    wait_route(&n1, b2, Some("192.168.97.2"), true, 10 * SEC, logs);
    let events = mon.stop();
    let deleted = events
        .lines()
        .any(|l| l.contains("] Deleted ") && l.contains(&b2.to_string()));
    assert_eq!(
        deleted, !graceful,
        "graceful={graceful}: n1 deleted its route to n2's block during n2's restart? \
         events:\n{events}"
    );
    // After the restart BIRD holds the route fresh again (End-of-RIB swept nothing of it).
    assert!(bird.birdc(&["show", "route"]).contains(&b2.to_string()));
}

/// Bench: `cargo test --release -p ipamd --test bgp -- --ignored --nocapture`
/// (`BENCH_ROUNDS`, default 5). A ToR (BIRD, eBGP) offers 10,000 prefixes; the node is
/// either `ipamd --datapath bgp` or, side by side in the same run, BIRD itself (BGP +
/// kernel protocol: Calico's node agent). Time from the node's process start until all
/// 10,000 routes are in its kernel; medians and the ratio.
#[test]
#[ignore = "benchmark"]
fn bench_learn_and_install_10000_prefixes_from_bird() {
    const N: usize = 10_000;
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    let r = Node::bare("bgpbr-");
    let n = Node::bare("bgpbn-");
    link(&n, "eth0", "192.168.95.1/24", &r, "r1");
    r.ip(&["addr", "add", "192.168.95.254/24", "dev", "r1"]);
    // /31s from 10.244.160.0: inside the pool, away from the node's first block.
    let base = u32::from(std::net::Ipv4Addr::new(10, 244, 160, 0));
    let mut statics = String::new();
    for i in 0..N as u32 {
        let p = std::net::Ipv4Addr::from(base + 2 * i);
        statics.push_str(&format!("route {p}/31 blackhole;\n"));
    }
    let tor_dir = dir.path().join("tor");
    std::fs::create_dir_all(&tor_dir).unwrap();
    let tor = Bird::start(
        &r,
        &tor_dir,
        &format!(
            "router id 192.168.95.254;\n\
             protocol device {{ scan time 1; }}\n\
             protocol static {{ ipv4;\n{statics}}}\n\
             protocol bgp n1 {{\n\
               local 192.168.95.254 as 65000; neighbor 192.168.95.1 as 64512;\n\
               connect retry time 1; error wait time 1, 2;\n\
               ipv4 {{ import all; export where source = RTS_STATIC; }};\n\
             }}\n"
        ),
    );
    let count = |proto: &str| {
        n.ip(&["-4", "route", "show", "proto", proto])
            .lines()
            .count()
    };
    // Waits for N routes of `proto`; the time since `t0`.
    let installed = |proto: &str, t0: Instant, why: &dyn Fn() -> String| {
        wait_until(
            60 * SEC,
            || count(proto) == N,
            || format!("{} routes\n{}", count(proto), why()),
        );
        t0.elapsed()
    };
    let node_bird_dir = dir.path().join("node-bird");
    std::fs::create_dir_all(&node_bird_dir).unwrap();
    let node_bird_conf = "router id 192.168.95.1;\n\
        protocol device { scan time 1; }\n\
        protocol kernel { ipv4 { import none; export all; }; }\n\
        protocol bgp tor {\n\
          local 192.168.95.1 as 64512; neighbor 192.168.95.254 as 65000;\n\
          connect retry time 1; start delay time 0;\n\
          ipv4 { import all; export none; };\n\
        }\n";
    let mut flags = bgp_flags("192.168.95.1");
    flags.extend([
        "--bgp-no-mesh".into(),
        "--bgp-peer".into(),
        "192.168.95.254,65000".into(),
    ]);
    // The ToR sees a fresh session each time (its previous one ended with the node).
    let tor_session_ended = || {
        wait_until(
            20 * SEC,
            || {
                !tor.birdc(&["show", "protocols", "n1"])
                    .contains("Established")
            },
            || tor.birdc(&["show", "protocols", "all", "n1"]),
        )
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        tor_session_ended();
        let t0 = Instant::now();
        let d = start(&n, "n1", dir.path(), &store, &flags);
        ours.push(installed("97", t0, &|| d.log()));
        drop(d); // SIGKILL: the kernel routes stay
        n.ip(&["route", "flush", "proto", "97"]);

        tor_session_ended();
        let t0 = Instant::now();
        let b = Bird::start(&n, &node_bird_dir, node_bird_conf);
        theirs.push(installed("bird", t0, &|| {
            b.birdc(&["show", "protocols", "all"])
        }));
        drop(b);
        n.ip(&["route", "flush", "proto", "bird"]);
        eprintln!(
            "round {}: ipamd {:?}, BIRD {:?}",
            round + 1,
            ours[round],
            theirs[round]
        );
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (o, t) = (median(&mut ours), median(&mut theirs));
    println!(
        "\n{N} prefixes from a BIRD ToR into the node's kernel, from process start, median \
         of {rounds}:\n  ipamd --datapath bgp  {:>6.0} ms\n  BIRD 2 (bgp + kernel) {:>6.0} ms\n  \
         ratio ipamd / BIRD    {:>6.2}",
        o.as_secs_f64() * 1e3,
        t.as_secs_f64() * 1e3,
        o.as_secs_f64() / t.as_secs_f64()
    );
}

/// RFC 8950 with BIRD 2: two nodes on an IPv6-only link (no IPv4 address anywhere on
/// it), a dual-stack pool, BIRD as route reflector with `extended next hop on` in its
/// ipv4 channel. BIRD holds both nodes' IPv4 blocks with their IPv6 addresses as next
/// hops, each node installs the other's `via inet6`, and IPv4 between the nodes' block
/// addresses flows over the IPv6-only link.
#[test]
fn bird_reflects_ipv4_blocks_with_ipv6_next_hops() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cluster.json");
    let r = Node::bare("bgpxr-");
    r.ip(&["link", "add", "br1", "type", "bridge"]);
    r.ip(&["link", "set", "br1", "up"]);
    r.ip(&["addr", "add", "fd00:116::254/64", "dev", "br1", "nodad"]);
    let n1 = Node::bare("bgpxn1-");
    let n2 = Node::bare("bgpxn2-");
    for (n, addr, port) in [(&n1, "fd00:116::1/64", "r1"), (&n2, "fd00:116::2/64", "r2")] {
        link(n, "eth0", addr, &r, port);
        n.ip(&["addr", "change", addr, "dev", "eth0", "nodad"]);
        r.ip(&["link", "set", port, "master", "br1"]);
    }
    let bird = Bird::start(
        &r,
        dir.path(),
        "router id 192.0.2.254;\n\
         protocol device { scan time 1; }\n\
         template bgp node {\n\
           local as 64512;\n\
           rr client;\n\
           direct;\n\
           hold time 3; connect retry time 1; error wait time 1, 3;\n\
           ipv4 { import all; export all; extended next hop on; };\n\
           ipv6 { import all; export all; };\n\
         }\n\
         protocol bgp n1 from node { neighbor fd00:116::1 as 64512; }\n\
         protocol bgp n2 from node { neighbor fd00:116::2 as 64512; }\n",
    );
    let flags = |ip: &str, id: &str| {
        let mut f = bgp_flags(ip);
        f.extend(
            [
                "--pool",
                "fd10:244::/56",
                "--bgp-listen",
                "[::]:179",
                "--bgp-router-id",
                id,
                "--bgp-no-mesh",
                "--bgp-peer",
                "fd00:116::254,64512",
            ]
            .map(String::from),
        );
        f
    };
    let d1 = start(
        &n1,
        "n1",
        dir.path(),
        &store,
        &flags("fd00:116::1", "192.0.2.1"),
    );
    let d2 = start(
        &n2,
        "n2",
        dir.path(),
        &store,
        &flags("fd00:116::2", "192.0.2.2"),
    );
    let b1 = block_of(&store, "n1", &d1);
    let b2 = block_of(&store, "n2", &d2);
    let logs = || {
        format!(
            "n1:\n{}\nn2:\n{}\nbird:\n{}",
            d1.log(),
            d2.log(),
            bird.birdc(&["show", "protocols", "all"])
        )
    };
    // BIRD holds each IPv4 block with the node's IPv6 address as next hop.
    for (b, nh) in [(b1, "fd00:116::1"), (b2, "fd00:116::2")] {
        wait_until(
            30 * SEC,
            || {
                let t = bird.birdc(&["show", "route", "for", &b.to_string(), "all"]);
                t.contains(&b.to_string()) && t.contains(nh)
            },
            || format!("{}\n{}", bird.birdc(&["show", "route", "all"]), logs()),
        );
    }
    // Each node: the other's block via inet6 its address (iBGP through the reflector
    // keeps the announcing node's next hop).
    wait_route(&n1, b2, Some("inet6 fd00:116::2"), true, 30 * SEC, logs);
    wait_route(&n2, b1, Some("inet6 fd00:116::1"), true, 30 * SEC, logs);
    assert_eq!(routes97(&n1).lines().count(), 1, "{}", routes97(&n1));
    // IPv4 traffic between the blocks over the IPv6-only link.
    let host = |b: IpNetwork| match b {
        IpNetwork::V4(n) => std::net::Ipv4Addr::from(u32::from(n.network()) + 1).to_string(),
        IpNetwork::V6(_) => unreachable!(),
    };
    n1.ip(&["addr", "add", &format!("{}/32", host(b1)), "dev", "lo"]);
    n2.ip(&["addr", "add", &format!("{}/32", host(b2)), "dev", "lo"]);
    let (ok, out) = n1.exec(&["ping", "-c", "2", "-W", "2", "-I", &host(b1), &host(b2)]);
    assert!(ok, "{out}\n{}", routes97(&n1));
    // Deleted behind the daemon's back: put back via inet6 (kernel notification).
    n1.ip(&["route", "del", &b2.to_string(), "proto", "97"]);
    wait_route(&n1, b2, Some("inet6 fd00:116::2"), true, 5 * SEC, logs);
    // n2 stops: its block leaves BIRD and n1.
    drop(d2);
    wait_route(&n1, b2, None, false, 6 * SEC, || d1.log());
}
