//! `cni-bench breakdown` and `cni-bench floors`: where the time of one ADD and one DEL
//! goes, phase by phase, and what the kernel makes each phase cost at least.
//!
//! Breakdown: every invocation runs with `CNI_TRACE=<file of its own>`, so the plugin
//! (and an exec'd `cni-ipam`, which inherits the variable) appends one line per finished
//! phase (see `cni_core::timing`). Pods alternate between IPAM in-process (the default)
//! and exec'd (`CNI_INPROC=0`), in the same run. Per phase the table gives the median
//! over invocations of the summed wall and thread-CPU time and how often it ran per
//! invocation. Phases nest (e.g. `bridge.ensure` includes a `link.get`) and `ipam.*`
//! runs on another thread or process, concurrently with the links: the rows are not to
//! be added up. `exec+start` is the plugin's `execve` to `main`; `total` is `execve` to reap (see
//! `spawn.rs`); `cpu total`
//! is the process's user+system time including the children it waited for.
//!
//! Floors (in this process, no plugin): a veth pair created with its peer in a netns and
//! the host end set up (one RTM_NEWLINK + one RTM_SETLINK); an fsync'd atomic
//! write (temp file, fsync, rename, fsync dir) in the temp dir, where the benchmark's
//! IPAM stores live; `/bin/true` through the bench's spawner (`execve` to reap, the same
//! interval as a plugin's `total`).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use cni_core::netlink::{block_on, Netlink};
use cni_core::netns::NetNs;
use conformance::fixture::with_prev;
use serde_json::Value;

use super::{invoke_env, ms, pairs_for, quantile, PairKind};

/// One invocation's phases: name -> (summed wall, summed cpu, how many times).
pub type Phases = BTreeMap<String, (Duration, Duration, usize)>;

/// Per variant and command: phase -> per-invocation (wall, cpu, count) samples.
#[derive(Default)]
struct Table {
    order: Vec<String>,
    rows: BTreeMap<String, Vec<(Duration, Duration, usize)>>,
    invocations: usize,
}

impl Table {
    fn add(&mut self, per_inv: Phases, order: &[String]) {
        for name in order {
            if !self.order.contains(name) {
                self.order.push(name.clone());
            }
        }
        for (k, v) in per_inv {
            self.rows.entry(k).or_default().push(v);
        }
        self.invocations += 1;
    }

    /// Median wall, median cpu, mean count per invocation.
    fn stat(&self, name: &str) -> Option<(f64, f64, f64)> {
        let v = self.rows.get(name)?;
        let mut w: Vec<Duration> = v.iter().map(|x| x.0).collect();
        let mut c: Vec<Duration> = v.iter().map(|x| x.1).collect();
        let n: usize = v.iter().map(|x| x.2).sum();
        Some((
            ms(quantile(&mut w, 0.5)),
            ms(quantile(&mut c, 0.5)),
            n as f64 / self.invocations.max(1) as f64,
        ))
    }
}

/// One line of a `CNI_TRACE` file (`cni-core/src/timing.rs`: one JSON object per
/// finished phase), typed once for both readers (this one and `churn`'s spans).
#[derive(Debug, serde::Deserialize)]
pub struct TraceLine {
    pub pid: u64,
    pub phase: String,
    pub start_us: u64,
    pub wall_us: u64,
    pub cpu_us: u64,
}

/// The lines of one trace that parse.
pub fn trace_lines(text: &str) -> Vec<TraceLine> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The plugin's own `main` mark: the earliest one (a delegated IPAM process writes its
/// own).
pub fn plugin_main(lines: &[TraceLine]) -> Option<&TraceLine> {
    lines
        .iter()
        .filter(|l| l.phase == "main")
        .min_by_key(|l| l.start_us)
}

/// Reads one invocation's trace: phases summed by name (`ipam process:` prefixed when
/// they come from another process), plus `exec+start` of the plugin and of an exec'd
/// IPAM, `total` and `cpu total`.
pub fn parse_trace(
    text: &str,
    exec_us: u64,
    total: Duration,
    cpu: Duration,
) -> (Phases, Vec<String>) {
    let mut out = Phases::new();
    let mut order = vec!["exec+start".to_string()];
    let lines = trace_lines(text);
    let main_pid = plugin_main(&lines).map(|l| l.pid);
    let ipam_start = lines
        .iter()
        .find(|l| l.phase == "ipam.start")
        .map(|l| l.start_us);
    for l in &lines {
        let (start, wall, c) = (l.start_us, l.wall_us, l.cpu_us);
        let own = Some(l.pid) == main_pid;
        let (name, wall, c) = match (l.phase.as_str(), own) {
            ("main", true) => ("exec+start".to_string(), start.saturating_sub(exec_us), 0),
            ("main", false) => (
                "ipam process: exec+start".to_string(),
                start.saturating_sub(ipam_start.unwrap_or(start)),
                0,
            ),
            (p, true) => (p.to_string(), wall, c),
            (p, false) => (format!("ipam process: {p}"), wall, c),
        };
        if !order.contains(&name) {
            order.push(name.clone());
        }
        let e = out.entry(name).or_default();
        e.0 += Duration::from_micros(wall);
        e.1 += Duration::from_micros(c);
        e.2 += 1;
    }
    out.insert("total (exec to reap)".into(), (total, cpu, 1));
    order.push("total (exec to reap)".into());
    (out, order)
}

pub fn run(kind: PairKind, pods: usize) -> Result<(), String> {
    if pods == 0 || pods > 250 {
        return Err("--pods must be 1..=250".into());
    }
    let [ours, _] = pairs_for(kind, pods);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let variants = ["in-process IPAM", "exec'd IPAM (CNI_INPROC=0)"];
    let mut tables: [[Table; 2]; 2] = Default::default(); // [command][variant]
    let mut results = vec![Value::Null; pods];
    for (c, command) in ["ADD", "DEL"].into_iter().enumerate() {
        for (i, pod) in ours.pods.iter().enumerate() {
            let variant = i % 2;
            let trace = dir.path().join(format!("{command}-{i}.trace"));
            let mut extra = vec![("CNI_TRACE", trace.display().to_string())];
            if variant == 1 {
                extra.push(("CNI_INPROC", "0".into()));
            }
            let conf = if command == "ADD" {
                ours.conf.clone()
            } else {
                with_prev(&ours.conf, Some(&results[i]))
            };
            let (m, v, exec_us) = invoke_env(&ours, command, pod, &conf, &extra)?;
            if command == "ADD" {
                results[i] = v;
            }
            let text = std::fs::read_to_string(&trace).unwrap_or_default();
            let (per, order) = parse_trace(&text, exec_us, m.elapsed, m.cpu);
            tables[c][variant].add(per, &order);
        }
    }
    println!(
        "cni-bench breakdown: {} ({} pods, half with IPAM in-process, half exec'd; medians in ms over invocations; phases nest and IPAM runs concurrently: rows do not add up)",
        ours.label, pods
    );
    for (c, command) in ["ADD", "DEL"].into_iter().enumerate() {
        println!("\n{command} {}", ours.label);
        println!(
            "{:<36} {:>9} {:>9} {:>5}   {:>9} {:>9} {:>5}",
            "phase", "wall", "cpu", "n", "wall", "cpu", "n"
        );
        println!("{:<36} {:^25}   {:^25}", "", variants[0], variants[1]);
        let mut order = tables[c][0].order.clone();
        for n in &tables[c][1].order {
            if !order.contains(n) {
                order.push(n.clone());
            }
        }
        for name in &order {
            let cell = |t: &Table| match t.stat(name) {
                Some((w, cpu, n)) => format!("{w:>9.3} {cpu:>9.3} {n:>5.1}"),
                None => format!("{:>9} {:>9} {:>5}", "-", "-", "-"),
            };
            println!(
                "{:<36} {}   {}",
                name,
                cell(&tables[c][0]),
                cell(&tables[c][1])
            );
        }
    }
    Ok(())
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    ms(quantile(&mut v, 0.5))
}

pub fn floors(iterations: usize) -> Result<(), String> {
    let iterations = iterations.max(1);
    // veth create (peer in a netns) + host end up.
    let ns = conformance::netns::Netns::new("floor");
    let pod = NetNs::open(&ns.path()).map_err(|e| e.to_string())?;
    let mut veth = Vec::new();
    let mut veth_del = Vec::new();
    block_on(async {
        let host = Netlink::connect()?;
        for i in 0..iterations {
            let name = format!("vflr{:x}{i}", std::process::id() & 0xffff);
            let t = Instant::now();
            let link = host
                .create_veth(&name, "eth0", &pod, Some(1500), None)
                .await?;
            host.set_up(link.index).await?;
            veth.push(t.elapsed());
            let t = Instant::now();
            host.delete_link(link.index).await?;
            veth_del.push(t.elapsed());
        }
        Ok::<(), cni_core::CniError>(())
    })
    .and_then(|r| r)
    .map_err(|e| e.to_string())?;

    // fsync'd atomic write where the benchmark's stores live.
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut write = Vec::new();
    for i in 0..iterations {
        let t = Instant::now();
        let tmp = dir.path().join(format!(".a.tmp{i}"));
        let mut f = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        f.write_all(b"{\"container\":\"0123456789abcdef\",\"ifname\":\"eth0\"}")
            .map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, dir.path().join("a")).map_err(|e| e.to_string())?;
        std::fs::File::open(dir.path())
            .and_then(|d| d.sync_all())
            .map_err(|e| e.to_string())?;
        write.push(t.elapsed());
    }

    // Process exec to reap, through the spawner the plugins run through.
    let mut spawn = Vec::new();
    let req = super::spawn::Request {
        argv: vec!["/bin/true".into()],
        env: Vec::new(),
        stdin: Vec::new(),
    };
    for _ in 0..iterations {
        spawn.push(super::spawn::run(&req)?.elapsed);
    }
    println!("cni-bench floors ({iterations} iterations, medians)");
    println!(
        "veth create (peer in netns) + up   {:>8.3} ms",
        median_ms(veth)
    );
    println!(
        "veth delete (synchronous)          {:>8.3} ms",
        median_ms(veth_del)
    );
    println!(
        "fsync'd atomic write (ext4 temp)   {:>8.3} ms",
        median_ms(write)
    );
    println!(
        "process exec to reap (/bin/true)   {:>8.3} ms",
        median_ms(spawn)
    );
    Ok(())
}
