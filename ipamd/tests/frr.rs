//! `ipamd --datapath bgp` against FRR 8.4 (zebra + bgpd in a router namespace, root):
//! eBGP with a 4-octet AS and TCP MD5, withdraw, route refresh, extra connections from
//! the router's address (without MD5: with it the kernel drops them), iBGP graceful restart both ways under `ip monitor`, a
//! NOTIFICATION ending graceful restart at once, hold-timer expiry both ways with
//! ipamd idle while the router is frozen, an IPv6 session, and IPv4 blocks over an
//! IPv6-only link with the extended next hop capability (RFC 8950).

mod common;
mod routers;

use std::time::{Duration, Instant};

use bgp::wire::{Capability, Codec, Family, Message, Open};
use common::*;
use ipnetwork::IpNetwork;
use nix::sys::signal::Signal;
use routers::*;

/// The node `n` at `192.168.<net>.1` linked to router `r` at `.254`.
fn pair(tag: &str, net: u8) -> (tempfile::TempDir, Node, Node) {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::bare(&format!("{tag}n-"));
    let r = Node::bare(&format!("{tag}r-"));
    link(&n, "eth0", &format!("192.168.{net}.1/24"), &r, "r1");
    r.ip(&["addr", "add", &format!("192.168.{net}.254/24"), "dev", "r1"]);
    (dir, n, r)
}

fn node_flags(net: u8, peer: &str, extra: &[&str]) -> Vec<String> {
    let mut f = bgp_flags(&format!("192.168.{net}.1"));
    f.extend(["--bgp-no-mesh".into(), "--bgp-peer".into(), peer.into()]);
    f.extend(extra.iter().map(|s| s.to_string()));
    f
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

const OFFERED: &str = "10.244.200.0/26";

/// An OPEN from the router's BGP identity, with or without graceful restart.
fn router_open(asn: u32, id: &str) -> Vec<u8> {
    Message::Open(Open {
        asn,
        hold_time: 3,
        router_id: id.parse().unwrap(),
        capabilities: vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::FourOctetAs(asn),
        ],
    })
    .encode(Codec::default())
}

#[test]
fn frr_ebgp_four_octet_as_md5_withdraw_refresh_and_extra_connections() {
    let (dir, n, r) = pair("frre", 110);
    let asn = 4_200_000_001u32;
    let frr = Frr::start(
        &r,
        dir.path(),
        &format!(
            "frr defaults datacenter\n\
             hostname tor\n\
             router bgp {asn}\n\
              bgp router-id 192.168.110.254\n\
              no bgp ebgp-requires-policy\n\
              no bgp network import-check\n\
              neighbor 192.168.110.1 remote-as 64512\n\
              neighbor 192.168.110.1 password s3cret\n\
              neighbor 192.168.110.1 timers 1 3\n\
              neighbor 192.168.110.1 timers connect 1\n\
              address-family ipv4 unicast\n\
               network {OFFERED}\n\
               network 172.16.99.0/24\n\
              exit-address-family\n"
        ),
    );
    // FRR (user frr) made its pid files and sockets in a dir that is its own, and
    // nothing from its dir up to the test's dir is world-writable.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::metadata(frr.dir()).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o750);
    let frr_uid = std::fs::metadata(frr.dir().join("bgpd.pid")).unwrap().uid();
    assert_eq!(
        md.uid(),
        frr_uid,
        "the dir belongs to the user bgpd runs as"
    );
    assert_ne!(frr_uid, 0, "bgpd dropped root");
    for d in [frr.dir(), dir.path()] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o002,
            0,
            "{} is world-writable: {mode:o}",
            d.display()
        );
    }
    let store = dir.path().join("cluster.json");
    let d = start(
        &n,
        "n1",
        dir.path(),
        &store,
        &node_flags(110, &format!("192.168.110.254,{asn},s3cret"), &[]),
    );
    let logs = || format!("{}\nFRR:\n{}", d.log(), frr.log("bgpd"));
    let b = block_of(&store, "n1", &d);

    // The router's prefix in the pool is installed (TCP MD5 session), the other not.
    wait_route(
        &n,
        net(OFFERED),
        Some("192.168.110.254"),
        true,
        30 * SEC,
        logs,
    );
    assert!(!n.ip(&["-4", "route"]).contains("172.16.99.0"));
    // FRR has the node's block: next hop the node, AS path our AS.
    wait_until(
        10 * SEC,
        || !frr.paths("ipv4", &b.to_string()).is_empty(),
        || frr.vtysh("show bgp ipv4 unicast"),
    );
    let path = &frr.paths("ipv4", &b.to_string())[0];
    assert_eq!(path["path"], "64512", "{path}");
    assert_eq!(path["nexthops"][0]["ip"], "192.168.110.1", "{path}");
    let sessions = || frr.peer("ipv4Unicast", "192.168.110.1")["connectionsEstablished"].clone();
    assert_eq!(sessions(), 1);

    // Route refresh: FRR asks (soft in), ipamd sends its table again, no reset.
    let updates = || {
        frr.json("show bgp neighbors 192.168.110.1 json")["192.168.110.1"]["messageStats"]
            ["updatesRecv"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = updates();
    frr.vtysh("clear bgp ipv4 unicast 192.168.110.1 soft in");
    wait_until(5 * SEC, || updates() > before, logs);
    assert_eq!(sessions(), 1);

    // Withdraw and announce again: in the kernel within a second.
    let t = Instant::now();
    frr.configure(
        asn,
        Some("ipv4 unicast"),
        &[&format!("no network {OFFERED}")],
    );
    wait_route(&n, net(OFFERED), None, false, 5 * SEC, logs);
    let gone = t.elapsed();
    let t = Instant::now();
    frr.configure(asn, Some("ipv4 unicast"), &[&format!("network {OFFERED}")]);
    wait_route(
        &n,
        net(OFFERED),
        Some("192.168.110.254"),
        true,
        5 * SEC,
        logs,
    );
    eprintln!(
        "withdrawn in {gone:?}, announced again in {:?}",
        t.elapsed()
    );
    assert!(gone < 2 * SEC, "{gone:?}");

    // `ipamd bgp-peers` into a pipe closed early: no "Broken pipe".
    let (ok, _) = n.exec(&[
        "bash",
        "-c",
        &format!(
            "set -o pipefail; {BIN} bgp-peers 2>{0}/err | true && ! test -s {0}/err",
            dir.path().display()
        ),
    ]);
    assert!(
        ok,
        "{}",
        std::fs::read_to_string(dir.path().join("err")).unwrap_or_default()
    );

    // A wrong MD5 key: the session goes down and ipamd says why at WARN.
    frr.configure(asn, None, &["neighbor 192.168.110.1 password wrong"]);
    wait_until(
        20 * SEC,
        || d.log().contains("TCP MD5 failures are counting up"),
        logs,
    );
    frr.configure(asn, None, &["neighbor 192.168.110.1 password s3cret"]);
    wait_route(
        &n,
        net(OFFERED),
        Some("192.168.110.254"),
        true,
        30 * SEC,
        logs,
    );
}

/// iBGP with FRR as a graceful-restart router that keeps forwarding through its
/// restarts (the F bit: without it RFC 4724 §4.2 has the stale routes go as soon as the
/// session is back).
fn gr_router(dir: &std::path::Path, r: &Node, net: u8, restart_time: u16) -> Frr {
    Frr::start(
        r,
        dir,
        &format!(
            "frr defaults datacenter\n\
             hostname tor\n\
             router bgp 64512\n\
              bgp router-id 192.168.{net}.254\n\
              no bgp network import-check\n\
              bgp graceful-restart\n\
              bgp graceful-restart preserve-fw-state\n\
              bgp graceful-restart restart-time {restart_time}\n\
              neighbor 192.168.{net}.1 remote-as 64512\n\
              neighbor 192.168.{net}.1 timers 1 3\n\
              neighbor 192.168.{net}.1 timers connect 1\n\
              address-family ipv4 unicast\n\
               network {OFFERED}\n\
              exit-address-family\n"
        ),
    )
}

#[test]
fn frr_graceful_restart_both_ways_and_a_notification_ends_it_at_once() {
    let (dir, n, r) = pair("frrg", 111);
    let frr = gr_router(dir.path(), &r, 111, 6);
    let store = dir.path().join("cluster.json");
    let flags = node_flags(
        111,
        "192.168.111.254,64512",
        &["--bgp-graceful-restart", "--bgp-restart-time", "30"],
    );
    let mut d = start(&n, "n1", dir.path(), &store, &flags);
    let b = block_of(&store, "n1", &d);
    let log = d.log.clone();
    let logs = || {
        let d = std::fs::read_to_string(&log).unwrap_or_default();
        format!("{d}\nFRR:\n{}", frr.log("bgpd"))
    };
    let gw = Some("192.168.111.254");
    wait_route(&n, net(OFFERED), gw, true, 30 * SEC, logs);
    let up = |f: &Frr| f.established("ipv4Unicast", "192.168.111.1");
    wait_until(10 * SEC, || up(&frr), logs);
    let sessions = || frr.peer("ipv4Unicast", "192.168.111.1")["connectionsEstablished"].clone();

    // Connections from the router's address: bare, garbage, an OPEN without graceful
    // restart (FRR advertises graceful restart: the case of RFC 4724 §4.2 only once an
    // OPEN with the capability comes). None touches the session or the route (ip monitor), each is closed.
    let mon = RouteMonitor::start(&n);
    let bare = connect_from(&r, "192.168.111.254", "192.168.111.1", &[]);
    let garbage = connect_from(&r, "192.168.111.254", "192.168.111.1", &[0x42; 64]);
    let open = connect_from(
        &r,
        "192.168.111.254",
        "192.168.111.1",
        &router_open(64512, "192.168.111.254"),
    );
    std::thread::sleep(4 * SEC); // more than the hold time
    drop((bare, garbage, open));
    let events = mon.stop();
    assert!(deletions(&events, OFFERED).is_empty(), "{events}");
    wait_route(&n, net(OFFERED), Some("192.168.111.254"), true, SEC, logs);
    assert_eq!(sessions(), 1, "{}", logs());
    let (_, json) = n.exec(&[BIN, "bgp-peers", "--json"]);
    assert!(json.contains("\"flaps\": 0"), "{json}");
    assert_eq!(
        n.metric("ipamd_bgp_session_up{peer=\"192.168.111.254\"}"),
        Some(1.0)
    );

    // 1. The router restarts (bgpd killed, back after 1 s): the route never leaves.
    let mon = RouteMonitor::start(&n);
    frr.kill_bgpd();
    std::thread::sleep(SEC);
    frr.start_bgpd();
    wait_until(15 * SEC, || up(&frr), logs);
    std::thread::sleep(2 * SEC); // End-of-RIB swept nothing
    let events = mon.stop();
    assert!(
        deletions(&events, OFFERED).is_empty(),
        "{events}\n{}",
        logs()
    );
    wait_route(&n, net(OFFERED), gw, true, SEC, logs);

    // 2. The router dies for good: kept for its restart time (6 s), gone right after.
    let mon = RouteMonitor::start(&n);
    frr.kill_bgpd();
    let t = now_of_day();
    wait_route(&n, net(OFFERED), None, false, 12 * SEC, logs);
    let events = mon.stop();
    let kept = Duration::from_secs_f64(deleted_at(&events, OFFERED).unwrap_or(0.0) - t);
    eprintln!("kept {kept:?} for a restart time of 6 s");
    assert!(
        kept >= Duration::from_millis(5500) && kept < Duration::from_millis(7500),
        "{kept:?}\n{events}"
    );
    assert_eq!(deletions(&events, OFFERED).len(), 1, "{events}");
    frr.start_bgpd();
    wait_route(&n, net(OFFERED), gw, true, 30 * SEC, logs);
    wait_until(10 * SEC, || up(&frr), logs);

    // 3. A NOTIFICATION (neighbor shutdown): the routes go at once, not after 6 s;
    // bgp-peers keeps the NOTIFICATION as the last error.
    let t = Instant::now();
    frr.configure(64512, None, &["neighbor 192.168.111.1 shutdown"]);
    wait_route(&n, net(OFFERED), None, false, 5 * SEC, logs);
    let gone = t.elapsed();
    eprintln!("gone {gone:?} after FRR's shutdown NOTIFICATION");
    assert!(gone < Duration::from_millis(2500), "{gone:?}");
    std::thread::sleep(2 * SEC);
    let (_, json) = n.exec(&[BIN, "bgp-peers", "--json"]);
    assert!(json.contains("received cease (6/"), "{json}");
    frr.configure(64512, None, &["no neighbor 192.168.111.1 shutdown"]);
    wait_route(&n, net(OFFERED), gw, true, 30 * SEC, logs);
    wait_until(10 * SEC, || up(&frr), logs);

    // 4. ipamd restarts with --bgp-graceful-restart: FRR keeps the node's block (and
    // its kernel route to it: no deletion in the router's namespace) throughout.
    let block = b.to_string();
    wait_until(10 * SEC, || !frr.paths("ipv4", &block).is_empty(), logs);
    let mon = RouteMonitor::start(&r);
    d.terminate();
    wait_until(10 * SEC, || !up(&frr), || frr.log("bgpd"));
    assert!(
        !frr.paths("ipv4", &block).is_empty(),
        "FRR dropped the restarting node's block: {}",
        frr.vtysh("show bgp ipv4 unicast")
    );
    d = start(&n, "n1", dir.path(), &store, &flags);
    wait_until(15 * SEC, || up(&frr), logs);
    std::thread::sleep(2 * SEC);
    assert!(!frr.paths("ipv4", &block).is_empty());
    let events = mon.stop();
    assert!(deletions(&events, &block).is_empty(), "{events}");
    drop(d);
}

#[test]
fn frr_hold_timer_both_ways_and_ipamd_idle_with_a_frozen_router() {
    let (dir, n, r) = pair("frrh", 112);
    let frr = gr_router(dir.path(), &r, 112, 5);
    let store = dir.path().join("cluster.json");
    let d = start(
        &n,
        "n1",
        dir.path(),
        &store,
        &node_flags(112, "192.168.112.254,64512", &[]),
    );
    let b = block_of(&store, "n1", &d);
    let logs = || format!("{}\nFRR:\n{}", d.log(), frr.log("bgpd"));
    let gw = Some("192.168.112.254");
    wait_route(&n, net(OFFERED), gw, true, 30 * SEC, logs);
    let block = b.to_string();
    wait_until(10 * SEC, || !frr.paths("ipv4", &block).is_empty(), logs);

    // The router freezes: ipamd's hold timer (3 s) fires, the routes stay at most the
    // router's restart time (5 s) after that, and ipamd stays idle meanwhile and after
    // (its TCP handshakes still complete: the frozen router's kernel answers).
    let bgpd = frr.bgpd_pid();
    signal(bgpd, Signal::SIGSTOP);
    let t = Instant::now();
    wait_route(&n, net(OFFERED), None, false, 15 * SEC, logs);
    let kept = t.elapsed();
    eprintln!("frozen router: route gone after {kept:?} (hold 3 s + restart time 5 s)");
    // The last KEEPALIVE came up to 1 s before the freeze: 2-3 s of hold, then 5 s.
    assert!(
        kept >= Duration::from_millis(6500) && kept < 9 * SEC,
        "{kept:?}"
    );
    let pid = ipamd_pid(&n);
    let share = cpu_share(pid, 4 * SEC);
    eprintln!("ipamd CPU with a frozen router: {:.1} %", share * 100.0);
    assert!(share < 0.05, "ipamd uses {:.0} % of a core", share * 100.0);
    assert!(d.log().contains("hold timer expired"), "{}", d.log());
    signal(bgpd, Signal::SIGCONT);
    wait_route(&n, net(OFFERED), gw, true, 30 * SEC, logs);

    // ipamd freezes: FRR's hold timer fires and it drops the node's block (ipamd
    // announced no graceful restart families).
    wait_until(10 * SEC, || !frr.paths("ipv4", &block).is_empty(), logs);
    signal(pid, Signal::SIGSTOP);
    let t = Instant::now();
    wait_until(
        10 * SEC,
        || frr.paths("ipv4", &block).is_empty(),
        || frr.vtysh("show bgp ipv4 unicast"),
    );
    eprintln!(
        "frozen ipamd: FRR dropped its block after {:?}",
        t.elapsed()
    );
    signal(pid, Signal::SIGCONT);
    wait_until(20 * SEC, || !frr.paths("ipv4", &block).is_empty(), logs);
}

#[test]
fn frr_ipv6_session_over_an_ipv6_underlay() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::bare("frr6n-");
    let r = Node::bare("frr6r-");
    link(&n, "eth0", "fd00:113::1/64", &r, "r1");
    n.ip(&["addr", "change", "fd00:113::1/64", "dev", "eth0", "nodad"]);
    r.ip(&["addr", "add", "fd00:113::254/64", "dev", "r1", "nodad"]);
    let offered = "fd10:244:0:ff::/64";
    let frr = Frr::start(
        &r,
        dir.path(),
        &format!(
            "frr defaults datacenter\n\
             hostname tor\n\
             router bgp 65000\n\
              bgp router-id 192.0.2.254\n\
              no bgp ebgp-requires-policy\n\
              no bgp network import-check\n\
              neighbor fd00:113::1 remote-as 64512\n\
              neighbor fd00:113::1 timers 1 3\n\
              neighbor fd00:113::1 timers connect 1\n\
              address-family ipv6 unicast\n\
               neighbor fd00:113::1 activate\n\
               network {offered}\n\
              exit-address-family\n"
        ),
    );
    let store = dir.path().join("cluster.json");
    let mut flags = bgp_flags("fd00:113::1");
    flags.extend(
        [
            "--pool",
            "fd10:244::/56",
            "--bgp-listen",
            "[::]:179",
            "--bgp-no-mesh",
            "--bgp-peer",
            "fd00:113::254,65000",
        ]
        .map(String::from),
    );
    let d = start(&n, "n1", dir.path(), &store, &flags);
    let logs = || format!("{}\nFRR:\n{}", d.log(), frr.log("bgpd"));
    let v6 = || n.ip(&["-6", "route", "show", "proto", "97"]);
    wait_until(
        30 * SEC,
        || v6().contains(&format!("{offered} via fd00:113::254")),
        || format!("{}\n{}", v6(), logs()),
    );
    // FRR has the node's IPv6 block with the node as next hop.
    let mut blocks = Vec::new();
    wait_until(
        20 * SEC,
        || {
            blocks = node_blocks(&store, "n1");
            blocks.iter().any(IpNetwork::is_ipv6)
        },
        logs,
    );
    let b6 = blocks.iter().find(|b| b.is_ipv6()).unwrap().to_string();
    wait_until(
        10 * SEC,
        || !frr.paths("ipv6", &b6).is_empty(),
        || frr.vtysh("show bgp ipv6 unicast"),
    );
    let path = &frr.paths("ipv6", &b6)[0];
    assert!(path.to_string().contains("fd00:113::1"), "{path}");
    // An IPv6-only node: the router id is derived from a hash of its whole address (no
    // --bgp-router-id); FRR received it in our OPEN. Pinned (ipamd's unit test
    // `ipv6_only_router_ids_hash_the_whole_address` has the same value).
    let remote_id =
        frr.json("show bgp neighbors fd00:113::1 json")["fd00:113::1"]["remoteRouterId"].clone();
    assert_eq!(remote_id, "11.132.54.217", "{}", d.log());
    assert!(
        d.log()
            .contains("router id derived from a hash of its underlay address"),
        "{}",
        d.log()
    );
}

/// A dual-stack node over one IPv4 session: its IPv6 block goes out with its IPv6
/// underlay address as next hop (MP_REACH_NLRI), and the router's IPv6 prefix comes in
/// with the router's IPv6 address as next hop and is installed.
#[test]
fn frr_dual_stack_ipv6_blocks_over_an_ipv4_session() {
    let (dir, n, r) = pair("frrd", 114);
    n.ip(&["addr", "add", "fd00:114::1/64", "dev", "eth0", "nodad"]);
    r.ip(&["addr", "add", "fd00:114::254/64", "dev", "r1", "nodad"]);
    let offered6 = "fd10:244:0:fe::/64";
    let frr = Frr::start(
        &r,
        dir.path(),
        &format!(
            "frr defaults datacenter\n\
             hostname tor\n\
             router bgp 65000\n\
              bgp router-id 192.168.114.254\n\
              no bgp ebgp-requires-policy\n\
              no bgp network import-check\n\
              neighbor 192.168.114.1 remote-as 64512\n\
              neighbor 192.168.114.1 timers 1 3\n\
              neighbor 192.168.114.1 timers connect 1\n\
              address-family ipv4 unicast\n\
               network {OFFERED}\n\
              exit-address-family\n\
              address-family ipv6 unicast\n\
               neighbor 192.168.114.1 activate\n\
               network {offered6}\n\
              exit-address-family\n"
        ),
    );
    let store = dir.path().join("cluster.json");
    let d = start(
        &n,
        "n1",
        dir.path(),
        &store,
        &node_flags(114, "192.168.114.254,65000", &["--pool", "fd10:244::/56"]),
    );
    let logs = || format!("{}\nFRR:\n{}", d.log(), frr.log("bgpd"));
    wait_route(
        &n,
        net(OFFERED),
        Some("192.168.114.254"),
        true,
        30 * SEC,
        logs,
    );
    let v6 = || n.ip(&["-6", "route", "show", "proto", "97"]);
    wait_until(
        20 * SEC,
        || v6().contains(&format!("{offered6} via fd00:114::254")),
        || format!("{}\n{}", v6(), logs()),
    );
    let mut blocks = Vec::new();
    wait_until(
        20 * SEC,
        || {
            blocks = node_blocks(&store, "n1");
            blocks.iter().any(IpNetwork::is_ipv6) && blocks.iter().any(IpNetwork::is_ipv4)
        },
        logs,
    );
    for b in &blocks {
        let (afi, nh) = if b.is_ipv6() {
            ("ipv6", "fd00:114::1")
        } else {
            ("ipv4", "192.168.114.1")
        };
        let b = b.to_string();
        wait_until(
            10 * SEC,
            || {
                frr.paths(afi, &b)
                    .iter()
                    .any(|p| p.to_string().contains(nh))
            },
            || {
                format!(
                    "{b} via {nh}?\n{}",
                    frr.vtysh(&format!("show bgp {afi} unicast"))
                )
            },
        );
    }
}

/// RFC 8950 with FRR: an IPv6-only underlay (no IPv4 address on the link) and a
/// dual-stack pool over one IPv6 session with `capability extended-nexthop`. The node's
/// IPv4 block reaches FRR with the node's IPv6 address as next hop (zebra installs it
/// `via inet6`), FRR's IPv4 prefix is installed in the node `via inet6` FRR's address,
/// and IPv4 traffic flows both ways over the IPv6-only link. Without the capability
/// (FRR's side turned off: the session resets) the node no longer sends its IPv4 block
/// and says why.
#[test]
fn frr_ipv4_blocks_over_an_ipv6_only_underlay_with_extended_next_hop() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::bare("frrxn-");
    let r = Node::bare("frrxr-");
    link(&n, "eth0", "fd00:115::1/64", &r, "r1");
    n.ip(&["addr", "change", "fd00:115::1/64", "dev", "eth0", "nodad"]);
    r.ip(&["addr", "add", "fd00:115::254/64", "dev", "r1", "nodad"]);
    r.ip(&["addr", "add", "10.244.200.1/32", "dev", "lo"]);
    for ns in [&n, &r] {
        let (ok, _) = ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        assert!(ok);
    }
    let frr = Frr::start(
        &r,
        dir.path(),
        &format!(
            "frr defaults datacenter\n\
             hostname tor\n\
             router bgp 65000\n\
              bgp router-id 192.0.2.254\n\
              no bgp ebgp-requires-policy\n\
              no bgp network import-check\n\
              neighbor fd00:115::1 remote-as 64512\n\
              neighbor fd00:115::1 timers 1 3\n\
              neighbor fd00:115::1 timers connect 1\n\
              neighbor fd00:115::1 capability extended-nexthop\n\
              address-family ipv4 unicast\n\
               neighbor fd00:115::1 activate\n\
               network {OFFERED}\n\
              exit-address-family\n\
              address-family ipv6 unicast\n\
               neighbor fd00:115::1 activate\n\
              exit-address-family\n"
        ),
    );
    let store = dir.path().join("cluster.json");
    let mut flags = bgp_flags("fd00:115::1");
    flags.extend(
        [
            "--pool",
            "fd10:244::/56",
            "--bgp-listen",
            "[::]:179",
            "--bgp-no-mesh",
            "--bgp-peer",
            "fd00:115::254,65000",
        ]
        .map(String::from),
    );
    let d = start(&n, "n1", dir.path(), &store, &flags);
    let logs = || format!("{}\nFRR:\n{}", d.log(), frr.log("bgpd"));
    // FRR's IPv4 prefix, in the node via FRR's IPv6 address.
    wait_route(
        &n,
        net(OFFERED),
        Some("inet6 fd00:115::254"),
        true,
        30 * SEC,
        logs,
    );
    let b4 = block_of(&store, "n1", &d);
    // FRR has the node's IPv4 block with the node's IPv6 address as next hop.
    let b4s = b4.to_string();
    wait_until(
        10 * SEC,
        || {
            frr.paths("ipv4", &b4s)
                .iter()
                .any(|p| p.to_string().contains("fd00:115::1"))
        },
        || format!("{}\n{}", frr.vtysh("show bgp ipv4 unicast"), logs()),
    );
    // zebra installed it via inet6 too: IPv4 traffic both ways over the IPv6-only link.
    let host = match b4 {
        IpNetwork::V4(b) => std::net::Ipv4Addr::from(u32::from(b.network()) + 1).to_string(),
        IpNetwork::V6(_) => unreachable!(),
    };
    n.ip(&["addr", "add", &format!("{host}/32"), "dev", "lo"]);
    wait_until(
        10 * SEC,
        || {
            r.ip(&["-4", "route"]).contains(&format!("{b4s} nhid"))
                || r.ip(&["-4", "route"])
                    .contains(&format!("{b4s} via inet6 fd00:115::1"))
        },
        || r.ip(&["-4", "route"]),
    );
    let (ok, out) = n.exec(&["ping", "-c", "2", "-W", "2", "-I", &host, "10.244.200.1"]);
    assert!(
        ok,
        "IPv4 over the IPv6-only link: {out}\n{}",
        r.ip(&["-4", "route"])
    );
    assert!(d.log().contains("RFC 8950"), "{}", d.log());

    // FRR stops offering the capability: the session resets, the node's IPv4 block is
    // no longer sent to it (and the node says why); the IPv6 block still is.
    frr.configure(
        65000,
        None,
        &["no neighbor fd00:115::1 capability extended-nexthop"],
    );
    wait_until(
        20 * SEC,
        || {
            frr.paths("ipv4", &b4s).is_empty()
                && d.log().contains("did not negotiate the extended next hop")
        },
        || format!("{}\n{}", frr.vtysh("show bgp ipv4 unicast"), logs()),
    );
    let b6 = node_blocks(&store, "n1")
        .into_iter()
        .find(IpNetwork::is_ipv6)
        .unwrap()
        .to_string();
    wait_until(
        20 * SEC,
        || !frr.paths("ipv6", &b6).is_empty(),
        || format!("{}\n{}", frr.vtysh("show bgp ipv6 unicast"), logs()),
    );
    // FRR, for its part, sends no IPv4 route without the capability (it has no IPv4
    // next hop on this link).
    wait_route(&n, net(OFFERED), None, false, 5 * SEC, logs);
}
