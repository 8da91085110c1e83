//! `cni-bench`: attach and detach N pods through one of our plugins and through its
//! reference counterpart, in the same run, and compare.
//!
//! ```text
//! cni-bench [--pair bridge|routed|vxlan|inproc|cluster] [--pods 100] [--parallel 8] [--rounds 1]
//!           [--skip-sequential] [--skip-parallel]
//! cni-bench measure [--runs 1] [--ballast-mb 0] -- PROGRAM [ARGS..]   # peak RSS, time
//! cni-bench breakdown [--pair bridge|routed|vxlan|cluster] [--pods 40]   # time per phase
//! cni-bench floors                                                       # kernel floors
//! cni-bench churn [--seconds 60] [--inflight 16] [--trace-cost] [--only bridge-local,..]  # sustained churn
//! ```
//!
//! Pairs (`--pair`): `bridge`: `cni-bridge`+`cni-ipam` vs the reference
//! `bridge`+`host-local`; `routed`: `cni-routed`+`cni-ipam` vs `ptp`+`host-local`;
//! `vxlan`: `cni-vxlan` (pod side, MTU 1450) +`cni-ipam` vs `bridge`+`host-local` with the
//! same MTU; `inproc`: `cni-bridge` with `cni-ipam` run in-process (the default) vs the
//! same with `CNI_INPROC=0` (exec'd, the CNI contract for other IPAM plugins);
//! `cluster`: `cni-bridge` with `cni-ipam` in cluster mode (blocks from a file cluster
//! store) vs the reference `bridge`+`host-local`.
//!
//! Both pairs get the same config (cniVersion 1.0.0, `isGateway: true`, a /24 of their
//! own under 10.200.0.0/13, a fresh data dir, a bridge of their own). Each phase runs
//! both pairs alternately so that machine noise hits both alike:
//! - sequential: pod i is added through one pair then the other (the first alternating
//!   with i), then deleted the same way;
//! - parallel: P workers add all N pods of one pair, then of the other, then delete in
//!   the reverse order (A B B A), the first pair alternating between rounds.
//!
//! Every invocation runs through a small helper process that forks, execs the plugin and
//! reaps it with `wait4`, as `/usr/bin/time` does (`bench/spawn.rs` says why: a child
//! spawned by the bench itself would report the bench's RSS as its peak). Latency is the
//! wall time of one plugin invocation, from its `execve` to `wait4` returning (until
//! 2026-12-01 it was from before the bench's `Command::spawn` to `wait4`, which also held
//! the bench's argument building, pipes and `posix_spawn`: `floors` gave 0.61 ms for
//! `/bin/true` that way on the quiet VM; the fork child's exec, which frees the copied mm,
//! costs ~35 µs more than a `vfork` child's, and is inside the interval). Peak RSS
//! is the maximum over invocations of that `wait4`'s `ru_maxrss`: Linux reports there the
//! larger of the process's own peak and the peak of every descendant it waited for, so
//! an exec'd IPAM plugin (the reference `host-local`, or `cni-ipam` with
//! `CNI_INPROC=0`; by default `cni-ipam` runs inside our plugin) is covered.
//!
//! `cni-bench measure [--runs N] -- PROGRAM ARGS..` runs any program through the same
//! helper and prints its peak RSS, wall and CPU time per run (`/usr/bin/time` for the
//! bench's way of spawning; `tests/bench_spawn.rs` holds it to `/usr/bin/time -f %M`).
//!
//! Needs root; builds nothing (`scripts/bench.sh` builds release and runs this). Only
//! addresses inside namespaces it creates are used, and everything is removed at exit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use conformance::fixture::{with_prev, Pod, TestNet};
use serde_json::Value;

#[path = "bench/breakdown.rs"]
mod breakdown;
#[path = "bench/churn.rs"]
mod churn;
#[path = "bench/spawn.rs"]
mod spawn;

/// What the run compares (see the module doc).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairKind {
    Bridge,
    Routed,
    Vxlan,
    Inproc,
    Cluster,
}

#[derive(clap::Subcommand, Debug)]
enum Mode {
    /// Time per phase of one ADD and one DEL of our plugin (CNI_TRACE spans), with the
    /// IPAM in-process and exec'd, next to the kernel floors.
    Breakdown {
        #[arg(long, value_enum, default_value = "bridge")]
        pair: PairKind,
        /// Pods added then deleted per variant.
        #[arg(long, short = 'n', default_value_t = 40)]
        pods: usize,
    },
    /// Sustained churn: pods added and deleted continuously, bridge and routed,
    /// node-local and etcd cluster IPAM; pods/s, latency, and a leak check.
    Churn {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 16)]
        inflight: usize,
        /// Trace only every other cycle of each worker and report traced and untraced
        /// latencies side by side: what `CNI_TRACE` itself costs.
        #[arg(long)]
        trace_cost: bool,
        /// Only these configurations (e.g. `--only routed-etcd`); default all four.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// The kernel floors: veth create+up, an fsync'd atomic write, a process spawn.
    Floors {
        #[arg(long, short = 'n', default_value_t = 100)]
        iterations: usize,
    },
    /// Run a program through the bench's spawner and print, per run, its peak RSS
    /// (`ru_maxrss`, KiB), wall time (exec to reap) and user/system CPU as JSON.
    Measure {
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Allocate and touch this many MiB in cni-bench first: a spawner that let the
        /// bench's own RSS into the child's peak would show it (used by the test).
        #[arg(long, default_value_t = 0)]
        ballast_mb: usize,
        /// The program (searched in PATH when it has no `/`) and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
}

#[derive(Parser, Debug)]
#[command(
    name = "cni-bench",
    version,
    about = "Benchmark our plugins against the reference plugins"
)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Which pair to compare.
    #[arg(long, value_enum, default_value = "bridge")]
    pair: PairKind,
    /// Pods attached and detached per phase and pair (at most 250: one /24 each).
    #[arg(long, short = 'n', default_value_t = 100)]
    pods: usize,
    /// Concurrent invocations in the parallel phase.
    #[arg(long, short = 'p', default_value_t = 8)]
    parallel: usize,
    /// Repetitions of the whole run (samples accumulate).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    #[arg(long)]
    skip_sequential: bool,
    #[arg(long)]
    skip_parallel: bool,
}

/// One pair under test.
pub struct Pair {
    pub label: &'static str,
    pub net: TestNet,
    pub conf: Value,
    pub pods: Vec<Pod>,
    /// Extra environment of every invocation (e.g. `CNI_INPROC=0`).
    pub env: Vec<(&'static str, String)>,
}

#[derive(Default)]
struct Samples {
    add: Vec<Duration>,
    del: Vec<Duration>,
    maxrss_kib: i64,
}

pub struct Measured {
    pub elapsed: Duration,
    pub maxrss_kib: i64,
    /// User + system CPU of the process and the children it waited for.
    pub cpu: Duration,
}

/// Runs one invocation through the spawner (`bench/spawn.rs`): its time and rusage.
fn invoke(
    pair: &Pair,
    command: &str,
    pod: &Pod,
    conf: &Value,
) -> Result<(Measured, Value), String> {
    invoke_env(pair, command, pod, conf, &[]).map(|(m, v, _)| (m, v))
}

/// [`invoke`] with extra variables; also returns when the plugin was exec'd
/// (`CLOCK_REALTIME`, µs).
fn invoke_env(
    pair: &Pair,
    command: &str,
    pod: &Pod,
    conf: &Value,
    extra: &[(&str, String)],
) -> Result<(Measured, Value, u64), String> {
    let net = &pair.net;
    let inv = net.invocation(command, pod, conf);
    // The Invocation's command: a clean environment with PATH and the CNI_* variables.
    let mut cmd = inv.command();
    for (k, v) in &pair.env {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let run = spawn::run(&spawn::Request::from_command(&cmd, &inv.stdin))?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    if !run.success() {
        return Err(format!(
            "{command} via {} failed (status {:#x}): {stdout}",
            inv.plugin.display(),
            run.status
        ));
    }
    let v = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).map_err(|e| e.to_string())?
    };
    Ok((
        Measured {
            elapsed: run.elapsed,
            maxrss_kib: run.maxrss_kib,
            cpu: run.utime + run.stime,
        },
        v,
        run.exec_realtime_us,
    ))
}

/// `cni-bench measure`: `command` through the spawner `runs` times, one JSON line each.
fn measure(runs: usize, ballast_mb: usize, command: &[std::ffi::OsString]) -> Result<(), String> {
    let mut ballast = vec![0u8; ballast_mb << 20];
    for b in ballast.iter_mut().step_by(4096) {
        *b = 1;
    }
    std::hint::black_box(&mut ballast);
    let mut argv = command.to_vec();
    argv[0] = spawn::resolve(&argv[0]);
    let env = ["PATH", "HOME", "LANG"]
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (k.into(), v)))
        .collect();
    let req = spawn::Request {
        argv,
        env,
        stdin: Vec::new(),
    };
    for _ in 0..runs {
        let r = spawn::run(&req)?;
        println!(
            "{}",
            serde_json::json!({
                "maxrss_kib": r.maxrss_kib,
                "floor_kib": r.floor_kib,
                "wall_us": r.elapsed.as_micros() as u64,
                "user_us": r.utime.as_micros() as u64,
                "sys_us": r.stime.as_micros() as u64,
                "status": r.status,
                "bench_hwm_kib": vm_hwm_kib(),
            })
        );
    }
    std::hint::black_box(&ballast);
    Ok(())
}

/// This process's own peak RSS (`VmHWM`), KiB.
fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn record(s: &Mutex<Samples>, add: bool, m: &Measured) {
    let mut s = s.lock().unwrap();
    if add {
        s.add.push(m.elapsed)
    } else {
        s.del.push(m.elapsed)
    }
    s.maxrss_kib = s.maxrss_kib.max(m.maxrss_kib);
}

/// Sequential phase: pod by pod, alternating which pair goes first.
#[allow(clippy::needless_range_loop)] // i indexes the pods and results of both pairs
fn sequential(pairs: &[Pair; 2], samples: &[Mutex<Samples>; 2]) -> Result<(), String> {
    let n = pairs[0].pods.len();
    let mut results: [Vec<Value>; 2] = [vec![Value::Null; n], vec![Value::Null; n]];
    for i in 0..n {
        for k in [i % 2, 1 - i % 2] {
            let p = &pairs[k];
            let (m, v) = invoke(p, "ADD", &p.pods[i], &p.conf)?;
            record(&samples[k], true, &m);
            results[k][i] = v;
        }
    }
    for i in 0..n {
        for k in [i % 2, 1 - i % 2] {
            let p = &pairs[k];
            let (m, _) = invoke(
                p,
                "DEL",
                &p.pods[i],
                &with_prev(&p.conf, Some(&results[k][i])),
            )?;
            record(&samples[k], false, &m);
        }
    }
    Ok(())
}

/// All pods of one pair through `workers` threads; returns the phase's wall time.
fn parallel_phase(
    pair: &Pair,
    add: bool,
    workers: usize,
    results: &Mutex<Vec<Value>>,
    samples: &Mutex<Samples>,
) -> Result<Duration, String> {
    let next = AtomicUsize::new(0);
    let err = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= pair.pods.len() || err.lock().unwrap().is_some() {
                    return;
                }
                let conf = if add {
                    pair.conf.clone()
                } else {
                    with_prev(&pair.conf, Some(&results.lock().unwrap()[i]))
                };
                match invoke(pair, if add { "ADD" } else { "DEL" }, &pair.pods[i], &conf) {
                    Ok((m, v)) => {
                        record(samples, add, &m);
                        if add {
                            results.lock().unwrap()[i] = v;
                        }
                    }
                    Err(e) => *err.lock().unwrap() = Some(e),
                }
            });
        }
    });
    match err.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(start.elapsed()),
    }
}

pub fn quantile(v: &mut [Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    // Nearest rank.
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(
    title: &str,
    pairs: &[Pair; 2],
    samples: &[Mutex<Samples>; 2],
    wall: Option<[Duration; 4]>,
) {
    let mut s: Vec<Samples> = samples
        .iter()
        .map(|m| std::mem::take(&mut *m.lock().unwrap()))
        .collect();
    println!("\n{title}");
    println!(
        "{:<22} {:>14} {:>14} {:>10}",
        "", pairs[0].label, pairs[1].label, "ours/ref"
    );
    let row = |name: &str, a: f64, b: f64, unit: &str| {
        let ratio = if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "-".into()
        };
        println!(
            "{:<22} {:>11.2} {unit:<2} {:>11.2} {unit:<2} {:>10}",
            name, a, b, ratio
        );
    };
    for (name, add, q) in [
        ("ADD median", true, 0.5),
        ("ADD p99", true, 0.99),
        ("DEL median", false, 0.5),
        ("DEL p99", false, 0.99),
    ] {
        let [a, b] = [0, 1].map(|k| {
            let v = if add { &mut s[k].add } else { &mut s[k].del };
            ms(quantile(v, q))
        });
        row(name, a, b, "ms");
    }
    if let Some(w) = wall {
        row("all ADDs (wall)", ms(w[0]), ms(w[1]), "ms");
        row("all DELs (wall)", ms(w[2]), ms(w[3]), "ms");
    }
    row(
        "peak RSS",
        s[0].maxrss_kib as f64 / 1024.0,
        s[1].maxrss_kib as f64 / 1024.0,
        "MB",
    );
    println!(
        "(samples: {} ADD, {} DEL per pair)",
        s[0].add.len(),
        s[0].del.len()
    );
}

fn main() {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(spawn::HELPER_ARG)) {
        spawn::serve();
    }
    let args = Args::parse();
    let done = match &args.mode {
        Some(Mode::Breakdown { pair, pods }) => Some(breakdown::run(*pair, *pods)),
        Some(Mode::Floors { iterations }) => Some(breakdown::floors(*iterations)),
        Some(Mode::Churn {
            seconds,
            inflight,
            trace_cost,
            only,
        }) => Some(churn::run(*seconds, (*inflight).max(1), *trace_cost, only)),
        Some(Mode::Measure {
            runs,
            ballast_mb,
            command,
        }) => Some(measure(*runs, *ballast_mb, command)),
        None => None,
    };
    if let Some(r) = done {
        if let Err(e) = r {
            eprintln!("cni-bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.pods == 0 || args.pods > 250 || args.parallel == 0 {
        eprintln!("--pods must be 1..=250 and --parallel at least 1");
        std::process::exit(2);
    }
    if let Err(e) = run(&args) {
        eprintln!("cni-bench: {e}");
        std::process::exit(1);
    }
}

/// A pair's network and configuration: `plugin` (any of ours or the reference ones)
/// delegating to `ipam`, in a network of its own.
pub fn make_pair(label: &'static str, plugin: &str, ipam: &str, n: usize) -> Pair {
    let path = conformance::bins::CniPath::from_dirs(&[
        conformance::bins::our_bin_dir(),
        conformance::bins::ref_bin_dir(),
    ]);
    let net = TestNet::with_path(&format!("bench-{plugin}"), path);
    let mut conf = net.conf_with("1.0.0", plugin, ipam).to_json();
    match plugin {
        // Routed veth: no bridge, no gateway on a bridge.
        "cni-routed" | "ptp" => {
            let o = conf.as_object_mut().expect("object");
            o.remove("bridge");
            o.remove("isGateway");
        }
        "cni-vxlan" => conf["mtu"] = serde_json::json!(1450),
        _ => {}
    }
    let pods = (0..n).map(|_| net.pod()).collect();
    Pair {
        label,
        net,
        conf,
        pods,
        env: Vec::new(),
    }
}

/// `pair`'s IPAM switched to `cni-ipam` cluster mode: /26 blocks of the network's /24,
/// claimed from a file cluster store in the pair's data dir.
pub fn to_cluster(mut pair: Pair) -> Pair {
    let data = pair.net.data_dir().display().to_string();
    pair.conf["ipam"] = serde_json::json!({
        "type": "cni-ipam",
        "pool": pair.net.subnet.cidr(),
        "blockSize": 26,
        "reserveGateway": true,
        "nodeName": format!("bench-{}", std::process::id()),
        "store": format!("file://{data}/cluster.json"),
        "dataDir": data,
    });
    pair
}

/// Our side and the reference side of `kind`.
pub fn pairs_for(kind: PairKind, n: usize) -> [Pair; 2] {
    match kind {
        PairKind::Bridge => [
            make_pair("cni-bridge", "cni-bridge", "cni-ipam", n),
            make_pair("ref bridge", "bridge", "host-local", n),
        ],
        PairKind::Routed => [
            make_pair("cni-routed", "cni-routed", "cni-ipam", n),
            make_pair("ref ptp", "ptp", "host-local", n),
        ],
        PairKind::Vxlan => {
            let mut reference = make_pair("ref bridge", "bridge", "host-local", n);
            reference.conf["mtu"] = serde_json::json!(1450);
            [
                make_pair("cni-vxlan", "cni-vxlan", "cni-ipam", n),
                reference,
            ]
        }
        PairKind::Inproc => {
            let mut exec = make_pair("exec ipam", "cni-bridge", "cni-ipam", n);
            exec.env.push(("CNI_INPROC", "0".into()));
            [make_pair("inproc ipam", "cni-bridge", "cni-ipam", n), exec]
        }
        PairKind::Cluster => [
            to_cluster(make_pair("cni-br+cluster", "cni-bridge", "cni-ipam", n)),
            make_pair("ref bridge", "bridge", "host-local", n),
        ],
    }
}

fn run(args: &Args) -> Result<(), String> {
    conformance::bins::ref_bin("bridge");
    conformance::bins::ref_bin("ptp");
    conformance::bins::ref_bin("host-local");
    for b in ["cni-bridge", "cni-ipam", "cni-routed", "cni-vxlan"] {
        conformance::bins::our_bin(b);
    }
    println!(
        "cni-bench: {:?}: {} pods, {} in parallel, {} round(s); ours from {}, reference from {}",
        args.pair,
        args.pods,
        args.parallel,
        args.rounds,
        conformance::bins::our_bin_dir().display(),
        conformance::bins::ref_bin_dir().display()
    );
    let pairs = pairs_for(args.pair, args.pods);
    let seq = [
        Mutex::new(Samples::default()),
        Mutex::new(Samples::default()),
    ];
    let par = [
        Mutex::new(Samples::default()),
        Mutex::new(Samples::default()),
    ];
    let mut wall = [Duration::ZERO; 4];
    for round in 0..args.rounds {
        if !args.skip_sequential {
            sequential(&pairs, &seq)?;
        }
        if !args.skip_parallel {
            let results: [Mutex<Vec<Value>>; 2] = [
                Mutex::new(vec![Value::Null; args.pods]),
                Mutex::new(vec![Value::Null; args.pods]),
            ];
            let (a, b) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
            for k in [a, b] {
                wall[k] += parallel_phase(&pairs[k], true, args.parallel, &results[k], &par[k])?;
            }
            for k in [b, a] {
                wall[2 + k] +=
                    parallel_phase(&pairs[k], false, args.parallel, &results[k], &par[k])?;
            }
        }
    }
    if !args.skip_sequential {
        report("sequential (one invocation at a time)", &pairs, &seq, None);
    }
    if !args.skip_parallel {
        report(
            &format!("parallel ({} concurrent invocations)", args.parallel),
            &pairs,
            &par,
            Some(wall),
        );
    }
    Ok(())
}
