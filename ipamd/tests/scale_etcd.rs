//! Scale on a real etcd: N simulated nodes (registered with a lease and given a /26 block
//! straight through the cluster-store API, as their `ipamd`s would) and one real
//! `ipamd run --datapath vxlan` watching them. Measures the time from start to every
//! route, neighbour and FDB entry in the kernel, the netlink requests of one node joining
//! and of one leaving (asserted: 3 to 6, the difference only, never a resync), `ipamd`'s
//! RSS and CPU at rest, and one renewal pass of every lease (what the load generator does
//! every TTL/5): the raft writes, puts and watch events etcd counts for it (asserted: no
//! put, a renewal is a lease keep-alive only) and the watching `ipamd`'s CPU.
//!
//! `etcd_50_nodes` (CI) checks it works at 50 nodes; `etcd_1000_nodes` is the benchmark
//! (`cargo test -p ipamd --release --test scale_etcd -- --ignored --nocapture`).
//! etcd runs inside the node's namespace on its loopback: `ipamd` reaches it there, and
//! the load generator's sockets are made from a thread inside that namespace.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Node, BIN, METRICS_PORT};
use ipam::cluster::{ClusterStore, NodeInfo, StoreUrl};

const VNI: u32 = 1;
const DEV: &str = "cni-vx.1";

/// etcd inside `node`'s namespace, killed on drop.
struct Etcd(std::process::Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_etcd(node: &Node, dir: &std::path::Path, port: u16) -> Etcd {
    let c = format!("http://127.0.0.1:{port}");
    let p = format!("http://127.0.0.1:{}", port + 1);
    let child = Command::new("ip")
        .args(["netns", "exec", &node.ns, "etcd", "--name", "s"])
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
        .args([
            "--listen-peer-urls",
            &p,
            "--initial-advertise-peer-urls",
            &p,
        ])
        .args(["--initial-cluster", &format!("s={p}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd (apt-get install etcd-server)");
    Etcd(child)
}

/// etcd's `/health` on loopback `port` (of the calling thread's namespace) is true.
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
    let mut body = String::new();
    c.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok()
        && c.read_to_string(&mut body).is_ok()
        && body.contains("\"health\":\"true\"")
}

/// etcd's counters (`/metrics` on loopback `port` of the calling thread's namespace) that
/// tell what a renewal costs the cluster: raft proposals committed (every write), puts,
/// watch events sent, lease renewals.
#[derive(Clone, Copy, Debug, Default)]
struct EtcdCounters {
    proposals: f64,
    puts: f64,
    events: f64,
    renewed: f64,
}

fn etcd_counters(port: u16) -> EtcdCounters {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("etcd /metrics");
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut body = String::new();
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    c.read_to_string(&mut body).unwrap();
    let get = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("etcd metric {name} missing"))
    };
    EtcdCounters {
        proposals: get("etcd_server_proposals_committed_total"),
        puts: get("etcd_mvcc_put_total"),
        events: get("etcd_debugging_mvcc_events_total"),
        renewed: get("etcd_debugging_lease_renewed_total"),
    }
}

fn remote(i: usize) -> (NodeInfo, ipnetwork::IpNetwork) {
    let name = format!("s{i:05}");
    let u = 0x0a80_0000u32 + 1 + i as u32;
    let b = 0x0a40_0000u32 + (i as u32) * 64;
    let mut backend = std::collections::BTreeMap::new();
    backend.insert(
        "vtepMac".to_string(),
        cni_core::node::peer::vtep_mac_for(&name, VNI).to_string(),
    );
    let info = NodeInfo {
        name,
        underlay_ip: Some(std::net::Ipv4Addr::from(u).into()),
        backend,
    };
    let block = format!("{}/26", std::net::Ipv4Addr::from(b))
        .parse()
        .unwrap();
    (info, block)
}

/// Runs `f` on a fresh runtime on a thread inside `node`'s namespace.
fn in_node<T: Send>(node: &Node, f: impl FnOnce() -> T + Send) -> T {
    let ns = cni_core::netns::NetNs::open(std::path::Path::new(&format!("/run/netns/{}", node.ns)))
        .unwrap();
    std::thread::scope(|s| s.spawn(|| ns.run(f).unwrap()).join().unwrap())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// (RSS kB, utime+stime ticks) of `pid`.
fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (rss, ticks)
}

fn scale(n: usize, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(tag, "10.255.0.1");
    let port = 20000 + (std::process::id() % 20000) as u16;
    let _etcd = start_etcd(&node, dir.path(), port);
    let url = StoreUrl::parse(&format!("etcd://127.0.0.1:{port}/scale")).unwrap();

    in_node(&node, || {
        common::wait_until(
            Duration::from_secs(30),
            || healthy(port),
            || "etcd not healthy after 30 s".into(),
        )
    });

    // The simulated nodes, straight into etcd.
    let t = Instant::now();
    in_node(&node, || {
        rt().block_on(async {
            let store = ClusterStore::connect(&url).await.unwrap();
            for i in 0..n {
                let (info, block) = remote(i);
                store
                    .register(&info, Duration::from_secs(3600))
                    .await
                    .unwrap();
                assert!(store.claim_exact(&info.name, block).await.unwrap());
            }
        })
    });
    println!(
        "scale_etcd: {n} nodes registered with a block in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let log = dir.path().join("ipamd.log");
    let start = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.ns, BIN, "run", "--node-name", "me"])
        .arg("--store")
        .arg(format!("etcd://127.0.0.1:{port}/scale"))
        .args(["--pool", "10.64.0.0/10", "--block-size", "26"])
        .args(["--network", "dp", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--lease-ttl",
            "1h",
            "--resync",
            "10m",
            "--datapath",
            "vxlan",
        ])
        .args(["--listen", &format!("127.0.0.1:{METRICS_PORT}")])
        .env("IPAMD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logtext = || std::fs::read_to_string(&log).unwrap_or_default();
    let want = (3 * n) as f64;
    common::wait_until(
        Duration::from_secs(120),
        || node.metric("ipamd_datapath_objects") == Some(want),
        || format!("{n} nodes not programmed; log:\n{}", logtext()),
    );
    let took = start.elapsed();
    let routes = node.ip(&["route", "show", "proto", "97"]);
    assert_eq!(routes.lines().filter(|l| !l.is_empty()).count(), n);
    let fdb = node.bridge(&["fdb", "show", "dev", DEV]);
    assert_eq!(fdb.lines().filter(|l| l.contains(" dst ")).count(), n);
    println!(
        "scale_etcd: {n} nodes ({} routes + neighbours + FDB entries) in the kernel {:.2} s after ipamd started",
        3 * n,
        took.as_secs_f64()
    );

    // At rest.
    let pid = child.id();
    let (_, c0) = usage(pid);
    std::thread::sleep(Duration::from_secs(5));
    let (rss, c1) = usage(pid);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as f64;
    println!(
        "scale_etcd: ipamd at rest: RSS {:.1} MB, CPU {:.2} % over 5 s",
        rss as f64 / 1024.0,
        (c1 - c0) as f64 / hz / 5.0 * 100.0
    );

    // One node joins, then leaves.
    let (info, block) = remote(n + 1000);
    let before = node.metric("ipamd_datapath_requests_total").unwrap();
    let t = Instant::now();
    in_node(&node, || {
        rt().block_on(async {
            let s = ClusterStore::connect(&url).await.unwrap();
            s.register(&info, Duration::from_secs(3600)).await.unwrap();
            assert!(s.claim_exact(&info.name, block).await.unwrap());
        })
    });
    let b = block.to_string();
    common::wait_until(
        Duration::from_secs(20),
        || node.ip(&["route", "show", &b]).contains(DEV),
        || format!("the joining node was not programmed; log:\n{}", logtext()),
    );
    let join_ms = t.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(Duration::from_millis(300));
    let joined = node.metric("ipamd_datapath_requests_total").unwrap() - before;
    println!("scale_etcd: a node joining: {joined} netlink requests, routed {join_ms:.0} ms after its first write");
    assert!(
        (3.0..=6.0).contains(&joined),
        "join cost {joined}; log:\n{}",
        logtext()
    );

    let before = node.metric("ipamd_datapath_requests_total").unwrap();
    let t = Instant::now();
    let name = info.name.clone();
    in_node(&node, || {
        rt().block_on(async {
            let s = ClusterStore::connect(&url).await.unwrap();
            s.remove_node(&name).await.unwrap();
        })
    });
    common::wait_until(
        Duration::from_secs(20),
        || !node.ip(&["route", "show", &b]).contains(DEV),
        || format!("the leaving node's route stayed; log:\n{}", logtext()),
    );
    let leave_ms = t.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(Duration::from_millis(300));
    let left = node.metric("ipamd_datapath_requests_total").unwrap() - before;
    println!("scale_etcd: a node leaving: {left} netlink requests, route gone {leave_ms:.0} ms after the removal");
    assert!(
        (3.0..=6.0).contains(&left),
        "leave cost {left}; log:\n{}",
        logtext()
    );

    // One renewal pass over every simulated lease (the load generator's TTL/5 work):
    // what it costs etcd (raft writes, watch events, counted by etcd itself) and the
    // watching ipamd (CPU).
    let (_, r0) = usage(pid);
    let e0 = in_node(&node, || etcd_counters(port));
    let t = Instant::now();
    in_node(&node, || {
        rt().block_on(async {
            let s = ClusterStore::connect(&url).await.unwrap();
            for i in 0..n {
                s.renew(&remote(i).0.name, Duration::from_secs(3600))
                    .await
                    .unwrap();
            }
        })
    });
    let pass = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let e1 = in_node(&node, || etcd_counters(port));
    let (_, r1) = usage(pid);
    let writes = e1.proposals - e0.proposals;
    let puts = e1.puts - e0.puts;
    let events = e1.events - e0.events;
    println!(
        "scale_etcd: {n} renewals: etcd counted {} lease renewals, {writes} raft proposals, {puts} puts, {events} watch events",
        e1.renewed - e0.renewed
    );
    println!(
        "scale_etcd: the watching ipamd spent {:.2} s CPU on {n} renewals ({:.2} ms each)",
        (r1 - r0) as f64 / hz,
        (r1 - r0) as f64 / hz * 1000.0 / n as f64
    );
    let per = writes / n as f64;
    // ipamd renews every TTL/5 (lease::renew_interval).
    let every = Duration::from_secs(30) / 5;
    println!(
        "scale_etcd: renewing {n} leases took {pass:.2} s ({:.0} renewals/s from one client); at TTL 30 s (renew every {every:?}): {:.1} raft writes/s for {n} nodes, {:.1} for 5,000 (computed)",
        n as f64 / pass,
        per * n as f64 / every.as_secs_f64(),
        per * 5000.0 / every.as_secs_f64()
    );
    assert_eq!(
        e1.renewed - e0.renewed,
        n as f64,
        "one keep-alive per renewal"
    );
    // A renewal is a keep-alive only: no write, so no event at any watcher. (A handful
    // of proposals may come from etcd itself, e.g. lease checkpoints: not per renewal.)
    assert_eq!(puts, 0.0, "a renewal rewrote a record");
    assert!(
        writes < n as f64 / 10.0,
        "{writes} raft writes for {n} renewals"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn etcd_50_nodes() {
    scale(50, "sce");
}

#[test]
#[ignore = "benchmark: 1,000 nodes on etcd"]
fn etcd_1000_nodes() {
    scale(1000, "scE");
}
