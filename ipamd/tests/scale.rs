//! Scale of the datapath: one `ipamd run --datapath vxlan` in its own network namespace
//! given 5,000 remote nodes in the cluster store programs every route, neighbour and FDB
//! entry (measured and printed), and one node joining afterwards costs a handful of
//! netlink requests, not a resync.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipam::cluster::{ClusterStore, NodeInfo, StoreUrl};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_ipamd");
const PEERS: usize = 5_000;
const VNI: u32 = 1;
const DEV: &str = "cni-vx.1";

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(&["ip", "netns", "add", name]);
        Netns(name.into())
    }
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.0];
        all.extend_from_slice(args);
        sh(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// `GET /metrics` from inside the namespace (its loopback is its own).
fn metrics(ns: &str, port: u16) -> String {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).ok()?;
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut r = String::new();
        s.read_to_string(&mut r).ok()?;
        Some(r)
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or_default()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

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

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

    let ns = Netns::new(&format!("scale{}", std::process::id()));
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    ns.ip(&["addr", "add", "10.255.0.1/24", "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "eth1", "up"]);
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.255.0.254",
        "dev",
        "eth0",
    ]);

    let log = dir.path().join("ipamd.log");
    let port = 9645;
    let start = Instant::now();
    let d = Daemon(
        Command::new("ip")
            .args(["netns", "exec", &ns.0, BIN, "run", "--node-name", "me"])
            .arg("--store")
            .arg(format!("file://{}", store.display()))
            .args(["--pool", "10.64.0.0/10", "--block-size", "26"])
            .args(["--network", "scale", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--datapath",
                "vxlan",
                "--resync",
                "10m",
                "--lease-ttl",
                "1h",
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("IPAMD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let want = (3 * PEERS) as f64;
    loop {
        let m = metrics(&ns.0, port);
        if metric(&m, "ipamd_datapath_objects") == Some(want) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "5,000 peers not programmed in 120 s; metrics:\n{m}\nlog:\n{}",
            show_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = start.elapsed();

    // The kernel has every entry, not just the daemon's count.
    assert_eq!(count(&ns.ip(&["route", "show", "proto", "97"])), PEERS);
    assert_eq!(
        count(&ns.ip(&["neigh", "show", "dev", DEV, "nud", "permanent"])),
        PEERS
    );
    let fdb = sh(&["bridge", "-n", &ns.0, "fdb", "show", "dev", DEV]);
    assert_eq!(fdb.lines().filter(|l| l.contains(" dst ")).count(), PEERS);
    let (_, ip, block, mac) = remote(4321);
    let r = ns.ip(&["route", "show", &block]);
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
    for l in show_log().lines().filter(|l| l.contains("datapath resync")) {
        println!("scale: {l}");
    }

    // One node joins: the difference only (its FDB entry, neighbour and route).
    let before = metric(&metrics(&ns.0, port), "ipamd_datapath_requests_total").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Not the block right after the others: this node claimed that one.
    let (name, ip, block, mac) = remote(PEERS + 1000);
    let joined = Instant::now();
    rt.block_on(async {
        let url = StoreUrl::parse(&format!("file://{}", store.display())).unwrap();
        let s = ClusterStore::connect(&url).await.unwrap();
        let info = NodeInfo {
            name: name.clone(),
            underlay_ip: Some(ip.parse().unwrap()),
            backend: [("vtepMac".to_string(), mac.clone())].into(),
        };
        s.register(&info, Duration::from_secs(3600)).await.unwrap();
        assert!(s.claim_exact(&name, block.parse().unwrap()).await.unwrap());
    });
    loop {
        if ns.ip(&["route", "show", &block]).contains(DEV) {
            break;
        }
        assert!(
            joined.elapsed() < Duration::from_secs(20),
            "the joining node was not programmed; log:\n{}",
            show_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let join_took = joined.elapsed();
    // Its FDB and neighbour entries may land a moment after the route is visible.
    std::thread::sleep(Duration::from_millis(300));
    let after = metric(&metrics(&ns.0, port), "ipamd_datapath_requests_total").unwrap();
    let sent = after - before;
    println!(
        "scale: node {PEERS}+1 joined: {sent} netlink requests, programmed {:.0} ms after its record was written (file store polled every second)",
        join_took.as_secs_f64() * 1000.0
    );
    // Register and block claim are two record changes: at most FDB + neighbour + route
    // for each, typically 3 in all.
    assert!(
        (3.0..=6.0).contains(&sent),
        "a join cost {sent} requests; log:\n{}",
        show_log()
    );
    assert!(sh(&["bridge", "-n", &ns.0, "fdb", "show", "dev", DEV])
        .contains(&format!("{mac} dst {ip}")));
    drop(d);
}
