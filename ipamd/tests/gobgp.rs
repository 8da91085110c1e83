//! `ipamd --datapath bgp` against GoBGP 3.10 (`gobgpd` in a router namespace, its API on
//! that namespace's loopback, root): eBGP with a 4-octet AS and no graceful restart (no
//! End-of-RIB: a withdrawal right after ipamd starts is applied at once, not at the end
//! of the startup window), graceful restart with a NOTIFICATION ending it at once, and
//! iBGP with TCP MD5 and hold-timer expiry both ways.

mod common;
mod routers;

use std::time::{Duration, Instant};

use common::*;
use ipnetwork::IpNetwork;
use routers::*;

const OFFERED: &str = "10.244.201.0/26";
const API_PORT: u16 = 50151;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// The node `n` at `192.168.<net>.1` linked to router `r` at `.254`.
fn pair(tag: &str, net: u8) -> (tempfile::TempDir, Node, Node) {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::bare(&format!("{tag}n-"));
    let r = Node::bare(&format!("{tag}r-"));
    link(&n, "eth0", &format!("192.168.{net}.1/24"), &r, "r1");
    r.ip(&["addr", "add", &format!("192.168.{net}.254/24"), "dev", "r1"]);
    (dir, n, r)
}

fn config(asn: u32, net: u8, hold: u16, graceful_restart: &str) -> String {
    format!(
        "[global.config]\n\
         as = {asn}\n\
         router-id = \"192.168.{net}.254\"\n\
         [[neighbors]]\n\
         [neighbors.config]\n\
         neighbor-address = \"192.168.{net}.1\"\n\
         peer-as = 64512\n\
         [neighbors.timers.config]\n\
         hold-time = {hold}\n\
         keepalive-interval = {}\n\
         connect-retry = 1\n\
         {graceful_restart}\
         [[neighbors.afi-safis]]\n\
         [neighbors.afi-safis.config]\n\
         afi-safi-name = \"ipv4-unicast\"\n",
        hold / 3
    )
}

fn add(g: &Gobgp, net: u8) {
    let out = g.gobgp(&[
        "global",
        "rib",
        "add",
        "-a",
        "ipv4",
        OFFERED,
        "nexthop",
        &format!("192.168.{net}.254"),
    ]);
    assert!(!out.contains("rror"), "{out}");
}

fn del(g: &Gobgp) {
    let out = g.gobgp(&["global", "rib", "del", "-a", "ipv4", OFFERED]);
    assert!(!out.contains("rror"), "{out}");
}

#[test]
fn gobgp_without_end_of_rib_withdrawal_at_start_is_applied_at_once() {
    let (dir, n, r) = pair("gobw", 120);
    let asn = 4_200_000_002u32;
    let g = Gobgp::start(&r, dir.path(), &config(asn, 120, 9, ""), API_PORT);
    add(&g, 120);
    let store = dir.path().join("cluster.json");
    // The default hold time (90 s) on ipamd's side; GoBGP proposes 9 s: the negotiated
    // hold time, and so how long the startup waits for a peer that sends no End-of-RIB.
    let flags: Vec<String> = [
        "--datapath",
        "bgp",
        "--underlay-ip",
        "192.168.120.1",
        "--bgp-connect-retry",
        "1s",
        "--resync",
        "1s",
        "--bgp-no-mesh",
        "--bgp-peer",
        &format!("192.168.120.254,{asn}"),
    ]
    .map(String::from)
    .to_vec();
    let started = Instant::now();
    let d = start(&n, "n1", dir.path(), &store, &flags);
    let logs = || format!("{}\nGoBGP:\n{}", d.log(), g.log());
    wait_route(
        &n,
        net(OFFERED),
        Some("192.168.120.254"),
        true,
        20 * SEC,
        logs,
    );
    let t = Instant::now();
    del(&g);
    wait_route(&n, net(OFFERED), None, false, 5 * SEC, logs);
    eprintln!(
        "withdrawn {:?} after ipamd started: gone from the kernel in {:?}",
        t - started,
        t.elapsed()
    );
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(
        d.log()
            .contains("withdrawn route removed (during the startup)"),
        "{}",
        d.log()
    );
    // GoBGP has the node's block from AS 64512 (4-octet AS session).
    let b = block_of(&store, "n1", &d);
    wait_until(
        10 * SEC,
        || {
            g.gobgp(&["neighbor", "192.168.120.1", "adj-in"])
                .contains(&b.to_string())
        },
        || g.gobgp(&["neighbor", "192.168.120.1", "adj-in"]),
    );
    // Back, and after the startup (one negotiated hold time) withdrawals still go.
    add(&g, 120);
    wait_route(
        &n,
        net(OFFERED),
        Some("192.168.120.254"),
        true,
        5 * SEC,
        logs,
    );
    wait_until(20 * SEC, || d.log().contains("startup over"), logs);
    assert!(started.elapsed() < 20 * SEC, "{:?}", started.elapsed());
    del(&g);
    wait_route(&n, net(OFFERED), None, false, 2 * SEC, logs);
}

#[test]
fn gobgp_graceful_restart_kept_for_a_crash_not_for_a_notification() {
    let (dir, n, r) = pair("gobg", 121);
    let gr = "[neighbors.graceful-restart.config]\n\
              enabled = true\n\
              restart-time = 5\n";
    let cfg = config(65000, 121, 3, gr)
        + "[neighbors.afi-safis.mp-graceful-restart.config]\n\
           enabled = true\n";
    let mut g = Gobgp::start(&r, dir.path(), &cfg, API_PORT + 1);
    add(&g, 121);
    let store = dir.path().join("cluster.json");
    let flags = {
        let mut f = bgp_flags("192.168.121.1");
        f.extend(["--bgp-no-mesh", "--bgp-peer", "192.168.121.254,65000"].map(String::from));
        f
    };
    let d = start(&n, "n1", dir.path(), &store, &flags);
    let log = d.log.clone();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let gw = Some("192.168.121.254");
    wait_route(&n, net(OFFERED), gw, true, 20 * SEC, logs);

    // `neighbor disable`: a Cease, and GoBGP announced no N bit: gone at once.
    wait_until(
        10 * SEC,
        || g.established("192.168.121.1"),
        || g.gobgp(&["neighbor", "192.168.121.1"]),
    );
    let t = Instant::now();
    g.gobgp(&["neighbor", "192.168.121.1", "disable"]);
    wait_route(&n, net(OFFERED), None, false, 5 * SEC, logs);
    eprintln!("gone {:?} after GoBGP's disable", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    g.gobgp(&["neighbor", "192.168.121.1", "enable"]);
    wait_route(&n, net(OFFERED), gw, true, 20 * SEC, logs);

    // A crash (SIGKILL): kept for the restart time (5 s), then gone.
    let mon = RouteMonitor::start(&n);
    g.kill();
    let t = now_of_day();
    wait_route(&n, net(OFFERED), None, false, 10 * SEC, logs);
    let events = mon.stop();
    let kept = Duration::from_secs_f64(deleted_at(&events, OFFERED).unwrap_or(0.0) - t);
    eprintln!("kept {kept:?} for GoBGP's restart time of 5 s");
    assert!(
        kept >= Duration::from_millis(4500) && kept < Duration::from_millis(6500),
        "{kept:?}\n{events}"
    );
    // Back (no route in its RIB until added again).
    g.restart();
    add(&g, 121);
    wait_route(&n, net(OFFERED), gw, true, 20 * SEC, logs);
}

/// iBGP with TCP MD5 and graceful restart without the N bit: when the router freezes,
/// ipamd's hold timer expiry is a NOTIFICATION it sends, which ends graceful restart at
/// once (RFC 8538 needs the N bit on both sides to keep the routes); when ipamd
/// freezes, GoBGP's hold timer drops the node's block.
#[test]
fn gobgp_ibgp_md5_hold_timer_both_ways() {
    let (dir, n, r) = pair("gobh", 122);
    let gr = "[neighbors.graceful-restart.config]\n\
              enabled = true\n\
              restart-time = 10\n";
    // TCP MD5: `auth-password` in the neighbour's config.
    let cfg = config(64512, 122, 3, gr).replace(
        "peer-as = 64512\n",
        "peer-as = 64512\nauth-password = \"s3cret\"\n",
    ) + "[neighbors.afi-safis.mp-graceful-restart.config]\n\
           enabled = true\n";
    let g = Gobgp::start(&r, dir.path(), &cfg, API_PORT + 2);
    add(&g, 122);
    let store = dir.path().join("cluster.json");
    let mut flags = bgp_flags("192.168.122.1");
    flags.extend(
        [
            "--bgp-no-mesh",
            "--bgp-peer",
            "192.168.122.254,64512,s3cret",
        ]
        .map(String::from),
    );
    let d = start(&n, "n1", dir.path(), &store, &flags);
    let log = d.log.clone();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default() + &g.log();
    let gw = Some("192.168.122.254");
    wait_route(&n, net(OFFERED), gw, true, 20 * SEC, logs);
    let b = block_of(&store, "n1", &d).to_string();
    let adj_in = || g.gobgp(&["neighbor", "192.168.122.1", "adj-in"]);
    wait_until(10 * SEC, || adj_in().contains(&b), adj_in);

    // GoBGP frozen: gone when ipamd's hold timer fires (<= 3 s), not after 10 s.
    signal(g.pid(), nix::sys::signal::Signal::SIGSTOP);
    let t = Instant::now();
    wait_route(&n, net(OFFERED), None, false, 8 * SEC, logs);
    let gone = t.elapsed();
    eprintln!("frozen GoBGP: route gone after {gone:?} (hold 3 s, no N bit)");
    assert!(gone < Duration::from_millis(4500), "{gone:?}");
    signal(g.pid(), nix::sys::signal::Signal::SIGCONT);
    wait_route(&n, net(OFFERED), gw, true, 20 * SEC, logs);

    // ipamd frozen: GoBGP's hold timer drops the node's block.
    wait_until(10 * SEC, || adj_in().contains(&b), adj_in);
    let pid = ipamd_pid(&n);
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let t = Instant::now();
    let rib = || g.gobgp(&["global", "rib", "-a", "ipv4"]);
    wait_until(10 * SEC, || !rib().contains(&b), rib);
    eprintln!(
        "frozen ipamd: GoBGP dropped its block after {:?}",
        t.elapsed()
    );
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    wait_until(20 * SEC, || rib().contains(&b), rib);
}
