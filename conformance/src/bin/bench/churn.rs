//! `cni-bench churn`: sustained pod churn on one node. `--inflight` workers (default 16)
//! each add and delete pods back to back for `--seconds` (default 60), through
//! `cni-bridge` and `cni-routed` (with `ipMasq`, so there are rules to leak), with
//! `cni-ipam` node-local and in cluster mode on a real etcd the bench starts on loopback.
//! Prints pods/s and ADD/DEL p50/p99, then asserts that nothing leaked: no address left in
//! the IPAM store, no interface left in a pod, no host veth left on the bridge, no /32
//! route left to a pod (routed), no masquerade rule left for the network.
//!
//! Pods are a fixed set of namespaces (two per worker) reused with a new container id per
//! ADD, so the run measures the plugins, not `ip netns add`.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use conformance::fixture::with_prev;
use conformance::{inspect, names, try_sh};
use serde_json::json;

use super::{invoke, make_pair, ms, quantile, Pair};

/// An etcd on loopback in a temp dir, killed on drop.
pub struct Etcd {
    child: std::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Result<Etcd, String> {
        let dir = tempfile::Builder::new()
            .prefix("bench-etcd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let client = free_port()?;
        let peer = free_port()?;
        let c = format!("http://127.0.0.1:{client}");
        let p = format!("http://127.0.0.1:{peer}");
        let child = std::process::Command::new("etcd")
            .args([
                "--name",
                "bench",
                "--data-dir",
                &dir.path().join("data").display().to_string(),
                "--listen-client-urls",
                &c,
                "--advertise-client-urls",
                &c,
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
                "--initial-cluster",
                &format!("bench={p}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting etcd (apt-get install etcd-server): {e}"))?;
        let etcd = Etcd {
            child,
            url: format!("etcd://127.0.0.1:{client}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if healthy(client) {
                return Ok(etcd);
            }
            if Instant::now() > deadline {
                return Err(format!("etcd on {c} not healthy after 20 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcd's `/health` on loopback `port` says `"health":"true"`.
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
    if c.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = c.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// A loopback port free right now (bound then released).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    drop(l);
    // Nobody listens there now.
    if TcpStream::connect(("127.0.0.1", port)).is_ok() {
        return Err(format!("port {port} taken"));
    }
    Ok(port)
}

/// One churn run's numbers.
pub struct ChurnResult {
    pub label: String,
    pub pods: usize,
    pub seconds: f64,
    pub add_p50: f64,
    pub add_p99: f64,
    pub del_p50: f64,
    pub del_p99: f64,
    pub leaks: Vec<String>,
}

fn churn_pair(plugin: &str, etcd: Option<&Etcd>, inflight: usize) -> Pair {
    let label = match (plugin, etcd.is_some()) {
        ("cni-bridge", false) => "bridge, node-local",
        ("cni-bridge", true) => "bridge, etcd cluster",
        (_, false) => "routed, node-local",
        (_, true) => "routed, etcd cluster",
    };
    let mut pair = make_pair(label, plugin, "cni-ipam", 2 * inflight);
    pair.conf["ipMasq"] = json!(true);
    if let Some(e) = etcd {
        let data = pair.net.data_dir().display().to_string();
        pair.conf["ipam"] = json!({
            "type": "cni-ipam",
            "pool": pair.net.subnet.cidr(),
            "blockSize": 26,
            "reserveGateway": true,
            "nodeName": names::unique("churn", plugin),
            "store": format!("{}/{}", e.url, names::unique("churn", plugin)),
            "dataDir": data,
        });
    }
    pair
}

/// Everything under `dir` as one string (names, symlink targets, contents).
fn dump_dir(dir: &std::path::Path, out: &mut String) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        out.push_str(&e.file_name().to_string_lossy());
        out.push('\n');
        if let Ok(t) = std::fs::read_link(&p) {
            out.push_str(&t.to_string_lossy());
            out.push('\n');
        } else if p.is_dir() {
            dump_dir(&p, out);
        } else if let Ok(t) = std::fs::read_to_string(&p) {
            out.push_str(&t);
            out.push('\n');
        }
    }
}

fn leaks(pair: &Pair, plugin: &str, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut store = String::new();
    dump_dir(pair.net.data_dir(), &mut store);
    let kept = ids.iter().filter(|id| store.contains(id.as_str())).count();
    if kept > 0 {
        out.push(format!(
            "{kept} container(s) still hold an address in the store"
        ));
    }
    for pod in &pair.pods {
        if inspect::link_exists_in(&pod.netns, &pod.ifname) {
            out.push(format!("{} left in {}", pod.ifname, pod.netns.name()));
        }
    }
    if plugin == "cni-bridge" {
        let ports =
            try_sh("ip", &["-o", "link", "show", "master", &pair.net.bridge]).unwrap_or_default();
        let n = ports.lines().filter(|l| !l.trim().is_empty()).count();
        if n > 0 {
            out.push(format!("{n} host veth(s) left on {}", pair.net.bridge));
        }
    }
    let routes = try_sh(
        "ip",
        &["-o", "route", "show", "root", &pair.net.subnet.cidr()],
    )
    .unwrap_or_default();
    let pod_routes = routes
        .lines()
        .filter(|l| !l.contains("proto kernel") && !l.trim().is_empty())
        .count();
    if pod_routes > 0 {
        out.push(format!("{pod_routes} route(s) to pods left: {routes}"));
    }
    let prefix = pair.net.subnet.prefix();
    let rules = inspect::nft_rules()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.mentions_prefix(&prefix))
        .count();
    if rules > 0 {
        out.push(format!("{rules} nftables rule(s) left for {prefix}"));
    }
    out
}

/// Churns `plugin` for `seconds` with `inflight` workers.
pub fn churn(
    plugin: &str,
    etcd: Option<&Etcd>,
    seconds: u64,
    inflight: usize,
) -> Result<ChurnResult, String> {
    let mut pair = churn_pair(plugin, etcd, inflight);
    // Each worker owns two pods (namespaces), given a new container id per ADD.
    let pods: Vec<Mutex<conformance::fixture::Pod>> = std::mem::take(&mut pair.pods)
        .into_iter()
        .map(Mutex::new)
        .collect();
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let adds = Mutex::new(Vec::new());
    let dels = Mutex::new(Vec::new());
    let ids = Mutex::new(Vec::new());
    let err: Mutex<Option<String>> = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..inflight {
            let (pair, pods, stop, done, adds, dels, ids, err) =
                (&pair, &pods, &stop, &done, &adds, &dels, &ids, &err);
            s.spawn(move || {
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let mut pod = pods[2 * w + k % 2].lock().unwrap();
                    k += 1;
                    // Same netns, a new container.
                    pod.container_id = names::container_id("churn");
                    ids.lock().unwrap().push(pod.container_id.clone());
                    let r = invoke(pair, "ADD", &pod, &pair.conf).and_then(|(m, v)| {
                        adds.lock().unwrap().push(m.elapsed);
                        let (m, _) = invoke(pair, "DEL", &pod, &with_prev(&pair.conf, Some(&v)))?;
                        dels.lock().unwrap().push(m.elapsed);
                        Ok(())
                    });
                    if let Err(e) = r {
                        *err.lock().unwrap() = Some(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(seconds) {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    pair.pods = pods.into_iter().map(|p| p.into_inner().unwrap()).collect();
    if let Some(e) = err.into_inner().unwrap() {
        return Err(format!("{}: {e}", pair.label));
    }
    let mut a = adds.into_inner().unwrap();
    let mut d = dels.into_inner().unwrap();
    let ids = ids.into_inner().unwrap();
    Ok(ChurnResult {
        label: pair.label.to_string(),
        pods: done.load(Ordering::Relaxed),
        seconds: elapsed,
        add_p50: ms(quantile(&mut a, 0.5)),
        add_p99: ms(quantile(&mut a, 0.99)),
        del_p50: ms(quantile(&mut d, 0.5)),
        del_p99: ms(quantile(&mut d, 0.99)),
        leaks: leaks(&pair, plugin, &ids),
    })
}

/// `cni-bench churn`: every combination, a table, and a non-zero exit on any leak.
pub fn run(seconds: u64, inflight: usize) -> Result<(), String> {
    let etcd = Etcd::start()?;
    println!(
        "cni-bench churn: {inflight} in flight, {seconds} s per run, ipMasq on; etcd {}",
        etcd.url
    );
    let mut results = Vec::new();
    for plugin in ["cni-bridge", "cni-routed"] {
        for e in [None, Some(&etcd)] {
            results.push(churn(plugin, e, seconds, inflight)?);
        }
    }
    println!(
        "\n{:<24} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}  leaks",
        "", "pods", "pods/s", "ADD p50", "ADD p99", "DEL p50", "DEL p99"
    );
    let mut leaked = false;
    for r in &results {
        println!(
            "{:<24} {:>7} {:>8.1} {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>6.1} ms  {}",
            r.label,
            r.pods,
            r.pods as f64 / r.seconds,
            r.add_p50,
            r.add_p99,
            r.del_p50,
            r.del_p99,
            if r.leaks.is_empty() {
                "none".to_string()
            } else {
                r.leaks.join("; ")
            }
        );
        leaked |= !r.leaks.is_empty();
    }
    if leaked {
        return Err("resources leaked (see above)".into());
    }
    Ok(())
}
