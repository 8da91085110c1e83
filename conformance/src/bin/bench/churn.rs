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
//!
//! Tail attribution: every invocation runs with a `CNI_TRACE` file of its own (see
//! `cni_core::timing`) on tmpfs (`/dev/shm`), so that tracing adds no inode or block
//! work on the disk the IPAM store and etcd share; the bench reads and removes it after
//! reaping the plugin, outside the timed window. Per configuration it prints a per-phase
//! table (p50/p99/max of wall, p50/p99 of thread CPU, over all invocations) and, for the
//! slowest invocations (the 5 slowest ADDs and DELs and every one above p99), the phase
//! that holds their wall time: starting from the longest span, it descends into any span
//! that lies inside it and covers at least half of it (so `ipam.wait` resolves to the
//! `ipam.allocate` it waited for). `exec+start` is the plugin's `execve` to `main` (exec,
//! loader, the scheduler), `exit+reap` is the end of the last phase to `wait4` returning.
//! The queue on the IPAM store's `flock` is sampled from `/proc/locks` every 50 ms (held
//! or not, blocked waiters), and a derived row `ipam minus fsync` (the IPAM call minus its
//! `ipam.fsync-dir`: flock wait plus entry creation/removal) separates the wait from the
//! fsync. `--trace-cost` traces only every other cycle and prints traced and untraced
//! latencies side by side, which is what tracing costs.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use conformance::fixture::with_prev;
use conformance::{inspect, names, try_sh};
use serde_json::json;

use super::breakdown::{parse_trace, plugin_main, trace_lines, Phases};
use super::{invoke_env, make_pair, ms, quantile, Pair};

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
    /// Load average (1 min) at the start and the end of the run.
    pub load: (f64, f64),
}

/// Derived row: `ipam.allocate`/`ipam.release` minus its `ipam.fsync-dir`.
const IPAM_NOT_FSYNC: &str = "ipam minus fsync (flock wait+entries)";

/// One span of a trace, on the bench's clock (`CLOCK_REALTIME` µs).
struct Span {
    name: String,
    start: u64,
    wall: u64,
    cpu: u64,
}

/// One timed invocation.
struct Inv {
    add: bool,
    traced: bool,
    total: Duration,
    cpu: Duration,
    /// Summed per phase name (see `breakdown::parse_trace`), plus `exit+reap`.
    phases: Phases,
    spans: Vec<Span>,
}

/// The spans of one trace: each line as it is (names of another process prefixed
/// `ipam process:`), `exec+start` (`execve` to `main`) and `exit+reap` (end of the last span
/// to reap). Zero-length marks are dropped.
fn spans(text: &str, exec_us: u64, total: Duration) -> Vec<Span> {
    let lines = trace_lines(text);
    let main = plugin_main(&lines);
    let main_pid = main.map(|l| l.pid);
    let mut out = Vec::new();
    if let Some(main) = main {
        out.push(Span {
            name: "exec+start".into(),
            start: exec_us,
            wall: main.start_us.saturating_sub(exec_us),
            cpu: 0,
        });
    }
    for l in &lines {
        if l.phase == "main" {
            continue;
        }
        let (start, wall, cpu) = (l.start_us, l.wall_us, l.cpu_us);
        let name = if Some(l.pid) == main_pid {
            l.phase.clone()
        } else {
            format!("ipam process: {}", l.phase)
        };
        out.push(Span {
            name,
            start,
            wall,
            cpu,
        });
    }
    let end = exec_us + total.as_micros() as u64;
    let last = out
        .iter()
        .map(|s| s.start + s.wall)
        .max()
        .unwrap_or(exec_us);
    out.push(Span {
        name: "exit+reap".into(),
        start: last,
        wall: end.saturating_sub(last),
        cpu: 0,
    });
    out
}

/// The span that holds an invocation's wall time: the longest, then repeatedly the
/// longest span inside it that covers at least half of it.
fn dominant(spans: &[Span]) -> Option<&Span> {
    let mut cur = spans.iter().max_by_key(|s| s.wall)?;
    for _ in 0..spans.len() {
        let inside = spans
            .iter()
            .filter(|s| !std::ptr::eq(*s, cur))
            .filter(|s| s.start >= cur.start && s.start + s.wall <= cur.start + cur.wall)
            .filter(|s| 2 * s.wall >= cur.wall && s.wall > 0)
            .max_by_key(|s| s.wall);
        match inside {
            Some(s) => cur = s,
            None => break,
        }
    }
    Some(cur)
}

/// The inode of the IPAM store's `lock` file under `data` (depth 2), once it exists.
fn lock_inode(data: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir(data).ok()?.flatten() {
        let l = e.path().join("lock");
        if let Ok(m) = std::fs::metadata(&l) {
            return Some(m.ino());
        }
    }
    None
}

/// One sample of `/proc/locks` for inode `ino`: (held, blocked waiters).
fn lock_sample(ino: u64) -> (bool, usize) {
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let tag = format!(":{ino} ");
    let mine = text.lines().filter(|l| l.contains(&tag));
    let (mut held, mut waiting) = (false, 0);
    for l in mine {
        if l.contains("->") {
            waiting += 1;
        } else {
            held = true;
        }
    }
    (held, waiting)
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Runs one traced (or untraced) invocation; the trace file is read and removed after
/// the plugin is reaped.
fn timed(
    pair: &Pair,
    command: &str,
    pod: &conformance::fixture::Pod,
    conf: &serde_json::Value,
    trace: Option<std::path::PathBuf>,
) -> Result<(Inv, serde_json::Value), String> {
    let extra: Vec<(&str, String)> = trace
        .iter()
        .map(|t| ("CNI_TRACE", t.display().to_string()))
        .collect();
    let (m, v, exec_us) = invoke_env(pair, command, pod, conf, &extra)?;
    let (mut phases, mut sp) = (Phases::new(), Vec::new());
    if let Some(t) = &trace {
        let text = std::fs::read_to_string(t).unwrap_or_default();
        let _ = std::fs::remove_file(t);
        phases = parse_trace(&text, exec_us, m.elapsed, m.cpu).0;
        sp = spans(&text, exec_us, m.elapsed);
        if let Some(x) = sp.last() {
            phases.insert(
                "exit+reap".into(),
                (Duration::from_micros(x.wall), Duration::ZERO, 1),
            );
        }
        // The store's fsync runs under its flock; the rest of the IPAM call is mostly
        // waiting for that flock (plus creating/removing the entries).
        let ipam = phases
            .get("ipam.allocate")
            .or_else(|| phases.get("ipam.release"))
            .copied();
        if let Some((w, c, _)) = ipam {
            let (fw, fc, _) = phases.get("ipam.fsync-dir").copied().unwrap_or_default();
            phases.insert(
                IPAM_NOT_FSYNC.into(),
                (w.saturating_sub(fw), c.saturating_sub(fc), 1),
            );
        }
    }
    Ok((
        Inv {
            add: command == "ADD",
            traced: trace.is_some(),
            total: m.elapsed,
            cpu: m.cpu,
            phases,
            spans: sp,
        },
        v,
    ))
}

/// Per-phase table and the slowest invocations of one command.
fn explain(invs: &[Inv], add: bool) {
    let cmd = if add { "ADD" } else { "DEL" };
    let traced: Vec<&Inv> = invs.iter().filter(|i| i.add == add && i.traced).collect();
    if traced.is_empty() {
        return;
    }
    let mut order: Vec<String> = Vec::new();
    for i in &traced {
        for s in &i.spans {
            if !order.contains(&s.name) {
                order.push(s.name.clone());
            }
        }
    }
    order.push(IPAM_NOT_FSYNC.into());
    order.push("total (exec to reap)".into());
    println!(
        "  {cmd}: per phase over {} invocations (ms; wall summed per invocation, cpu = thread CPU)",
        traced.len()
    );
    println!(
        "  {:<34} {:>6} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "phase", "n/inv", "wall p50", "wall p99", "wall max", "cpu p50", "cpu p99"
    );
    for name in &order {
        let (mut w, mut c, mut n) = (Vec::new(), Vec::new(), 0usize);
        for i in &traced {
            let got = if name == "total (exec to reap)" {
                Some((i.total, i.cpu, 1))
            } else {
                i.phases.get(name).copied()
            };
            if let Some((pw, pc, pn)) = got {
                w.push(pw);
                c.push(pc);
                n += pn;
            }
        }
        if w.is_empty() {
            continue;
        }
        println!(
            "  {:<34} {:>6.1} {:>9.2} {:>9.2} {:>9.2} {:>8.2} {:>8.2}",
            name,
            n as f64 / traced.len() as f64,
            ms(quantile(&mut w, 0.5)),
            ms(quantile(&mut w, 0.99)),
            ms(quantile(&mut w, 1.0)),
            ms(quantile(&mut c, 0.5)),
            ms(quantile(&mut c, 0.99)),
        );
    }
    let mut totals: Vec<Duration> = traced.iter().map(|i| i.total).collect();
    let p99 = quantile(&mut totals, 0.99);
    let mut slow = traced.clone();
    slow.sort_by_key(|i| std::cmp::Reverse(i.total));
    let cut = slow.iter().take_while(|i| i.total > p99).count().max(5);
    println!("  {cmd}: slowest (the 5 slowest and all above p99 {:.1} ms): total (cpu) | the phase holding the time (wall/cpu) | longest spans", ms(p99));
    for i in slow.iter().take(cut) {
        let us = |x: u64| x as f64 / 1e3;
        let dom = dominant(&i.spans)
            .map(|d| format!("{} {:.1}/{:.1}", d.name, us(d.wall), us(d.cpu)))
            .unwrap_or_else(|| "-".into());
        let mut top: Vec<&Span> = i.spans.iter().collect();
        top.sort_by_key(|s| std::cmp::Reverse(s.wall));
        let top: Vec<String> = top
            .iter()
            .take(4)
            .map(|s| format!("{} {:.1}/{:.1}", s.name, us(s.wall), us(s.cpu)))
            .collect();
        println!(
            "    {:>8.1} ({:>5.1}) | {:<36} | {}",
            ms(i.total),
            ms(i.cpu),
            dom,
            top.join(", ")
        );
    }
}

/// Traced against untraced latencies of the same run (`--trace-cost`).
fn trace_cost(invs: &[Inv]) {
    for add in [true, false] {
        let q = |traced: bool, p: f64| {
            let mut v: Vec<Duration> = invs
                .iter()
                .filter(|i| i.add == add && i.traced == traced)
                .map(|i| i.total)
                .collect();
            (ms(quantile(&mut v, p)), v.len())
        };
        let ((t50, n), (u50, m)) = (q(true, 0.5), q(false, 0.5));
        println!(
            "  trace cost {}: p50 traced {t50:.1} ms (n={n}) vs untraced {u50:.1} ms (n={m}); p99 {:.1} vs {:.1} ms",
            if add { "ADD" } else { "DEL" },
            q(true, 0.99).0,
            q(false, 0.99).0
        );
    }
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
    half_traced: bool,
) -> Result<ChurnResult, String> {
    let mut pair = churn_pair(plugin, etcd, inflight);
    let shm = std::path::Path::new("/dev/shm");
    let traces = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("churn-trace-")
            .tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .map_err(|e| e.to_string())?;
    let load0 = load1();
    // Each worker owns two pods (namespaces), given a new container id per ADD.
    let pods: Vec<Mutex<conformance::fixture::Pod>> = std::mem::take(&mut pair.pods)
        .into_iter()
        .map(Mutex::new)
        .collect();
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let invs: Mutex<Vec<Inv>> = Mutex::new(Vec::new());
    let mut lock_samples: Vec<(bool, usize)> = Vec::new();
    let ids = Mutex::new(Vec::new());
    let err: Mutex<Option<String>> = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..inflight {
            let (pair, pods, stop, done, invs, ids, err, traces) =
                (&pair, &pods, &stop, &done, &invs, &ids, &err, traces.path());
            s.spawn(move || {
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let mut pod = pods[2 * w + k % 2].lock().unwrap();
                    k += 1;
                    // Same netns, a new container.
                    pod.container_id = names::container_id("churn");
                    ids.lock().unwrap().push(pod.container_id.clone());
                    let trace = |cmd: &str| {
                        (!half_traced || k % 2 == 0).then(|| traces.join(format!("{w}-{k}-{cmd}")))
                    };
                    let r =
                        timed(pair, "ADD", &pod, &pair.conf, trace("ADD")).and_then(|(a, v)| {
                            invs.lock().unwrap().push(a);
                            let conf = with_prev(&pair.conf, Some(&v));
                            let (d, _) = timed(pair, "DEL", &pod, &conf, trace("DEL"))?;
                            invs.lock().unwrap().push(d);
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
        // Samples the store lock's queue every 50 ms (`/proc/locks`: blocked waiters are
        // the `->` lines), outside the plugins, so that a convoy shows as a queue.
        let mut ino = None;
        while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(seconds) {
            std::thread::sleep(Duration::from_millis(50));
            ino = ino.or_else(|| lock_inode(pair.net.data_dir()));
            if let Some(i) = ino {
                lock_samples.push(lock_sample(i));
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    pair.pods = pods.into_iter().map(|p| p.into_inner().unwrap()).collect();
    if let Some(e) = err.into_inner().unwrap() {
        return Err(format!("{}: {e}", pair.label));
    }
    let invs = invs.into_inner().unwrap();
    let load = (load0, load1());
    println!(
        "\n{}: {} pods in {elapsed:.1} s, load {:.1} -> {:.1}",
        pair.label,
        done.load(Ordering::Relaxed),
        load.0,
        load.1
    );
    if !lock_samples.is_empty() {
        let n = lock_samples.len();
        let held = lock_samples.iter().filter(|s| s.0).count();
        let mut w: Vec<usize> = lock_samples.iter().map(|s| s.1).collect();
        w.sort();
        println!(
            "  IPAM store flock ({n} samples of /proc/locks, every 50 ms): held {:.0}% of the time; waiters p50 {}, p90 {}, max {} (of {inflight} in flight)",
            100.0 * held as f64 / n as f64,
            w[n / 2],
            w[(n * 9 / 10).min(n - 1)],
            w[n - 1]
        );
    }
    explain(&invs, true);
    explain(&invs, false);
    if half_traced {
        trace_cost(&invs);
    }
    let pick = |add: bool| -> Vec<Duration> {
        invs.iter()
            .filter(|i| i.add == add)
            .map(|i| i.total)
            .collect()
    };
    let (mut a, mut d) = (pick(true), pick(false));
    let ids = ids.into_inner().unwrap();
    Ok(ChurnResult {
        load,
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
pub fn run(
    seconds: u64,
    inflight: usize,
    half_traced: bool,
    only: &[String],
) -> Result<(), String> {
    let etcd = Etcd::start()?;
    println!(
        "cni-bench churn: {inflight} in flight, {seconds} s per run, ipMasq on; etcd {}; plugins from {}",
        etcd.url,
        conformance::bins::our_bin_dir().display()
    );
    let mut results = Vec::new();
    for plugin in ["cni-bridge", "cni-routed"] {
        for e in [None, Some(&etcd)] {
            let key = format!(
                "{}-{}",
                plugin.trim_start_matches("cni-"),
                if e.is_some() { "etcd" } else { "local" }
            );
            if only.is_empty() || only.contains(&key) {
                results.push(churn(plugin, e, seconds, inflight, half_traced)?);
            }
        }
    }
    println!(
        "\n{:<24} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>11}  leaks",
        "", "pods", "pods/s", "ADD p50", "ADD p99", "DEL p50", "DEL p99", "load"
    );
    let mut leaked = false;
    for r in &results {
        println!(
            "{:<24} {:>7} {:>8.1} {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>4.1}->{:<4.1}  {}",
            r.label,
            r.pods,
            r.pods as f64 / r.seconds,
            r.add_p50,
            r.add_p99,
            r.del_p50,
            r.del_p99,
            r.load.0,
            r.load.1,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A trace of an in-process ADD: the IPAM thread's `ipam.allocate` runs inside the
    /// main thread's `ipam.wait`, and holds most of it.
    const TRACE: &str = r#"{"pid":7,"phase":"main","start_us":1000,"wall_us":0,"cpu_us":0}
{"pid":7,"phase":"veth.create","start_us":1100,"wall_us":500,"cpu_us":400}
{"pid":7,"phase":"ipam.fsync-dir","start_us":2000,"wall_us":300,"cpu_us":10}
{"pid":7,"phase":"ipam.allocate","start_us":1200,"wall_us":9000,"cpu_us":800}
{"pid":7,"phase":"ipam.wait","start_us":1700,"wall_us":8600,"cpu_us":5}
{"pid":7,"phase":"masq.add","start_us":10400,"wall_us":100,"cpu_us":90}
"#;

    #[test]
    fn spans_add_exec_start_and_exit_reap() {
        let total = Duration::from_micros(11_000);
        let s = spans(TRACE, 600, total);
        let get = |n: &str| s.iter().find(|x| x.name == n).map(|x| (x.start, x.wall));
        assert_eq!(get("exec+start"), Some((600, 400)));
        // The last span ends at 10_500; the reap is at 600 + 11_000.
        assert_eq!(get("exit+reap"), Some((10_500, 1_100)));
        assert!(get("main").is_none(), "zero-length marks are dropped");
        assert_eq!(s.len(), 7);
    }

    #[test]
    fn dominant_descends_into_the_span_that_holds_the_time() {
        let mut s = spans(TRACE, 600, Duration::from_micros(11_000));
        // ipam.allocate (9.0 ms) is the longest; ipam.wait ends after it (not inside) and
        // the 0.3 ms fsync inside covers less than half of it.
        assert_eq!(dominant(&s).map(|d| d.name.as_str()), Some("ipam.allocate"));
        // A span inside it that covers at least half holds the time.
        s.push(Span {
            name: "lock".into(),
            start: 1300,
            wall: 6000,
            cpu: 0,
        });
        assert_eq!(dominant(&s).map(|d| d.name.as_str()), Some("lock"));
    }
}
