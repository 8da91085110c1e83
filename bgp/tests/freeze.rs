//! A frozen mesh member (issue: after a thaw the thawed node's mesh sessions sometimes
//! never came back). Three speakers in a full iBGP mesh on loopback, each on its own
//! thread with a single-threaded runtime, with ipamd's mesh timers (hold 3 s, connect
//! retry 1 s, back-off up to 12 s, OpenSent hold 240 s, graceful restart with the N
//! bit). Freezing one is blocking its runtime's only thread: like SIGSTOP of ipamd, its
//! timers and tasks stop while the kernel keeps accepting and acknowledging its TCP
//! connections. After the others' hold timers expired it is thawed, and every session
//! must be Established again, with every route fresh, within hold + connect retry +
//! margin.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bgp::{HoldTime, PeerConfig, Speaker, SpeakerConfig, State, Timers};
use common::init_tracing;
use ipnetwork::IpNetwork;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::mpsc;

const HOLD: u16 = 3;
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// ipamd's timers for the conformance clusters (`--bgp-hold-time 3 --bgp-connect-retry
/// 1s`, the rest its defaults).
fn mesh_timers() -> Timers {
    Timers {
        hold_time: HoldTime::new(HOLD).unwrap(),
        connect_retry: CONNECT_RETRY,
        max_backoff: CONNECT_RETRY * 12,
        ..Timers::default()
    }
}

/// One speaker on its own thread and runtime, which `freeze` blocks.
struct Node {
    speaker: Speaker,
    /// Its runtime (the speaker spawns a task per added peer).
    rt: tokio::runtime::Handle,
    freeze: mpsc::UnboundedSender<Duration>,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    fn start(addr: Ipv4Addr) -> Node {
        let (tx, rx) = std_mpsc::channel();
        let (freeze, mut orders) = mpsc::unbounded_channel::<Duration>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut cfg = SpeakerConfig::new(addr);
                cfg.listen = SocketAddr::new(IpAddr::V4(addr), 0);
                cfg.timers = mesh_timers();
                let (speaker, mut events) = Speaker::start(cfg).await.unwrap();
                tx.send((speaker.clone(), tokio::runtime::Handle::current()))
                    .unwrap();
                // The daemon drains its events.
                tokio::spawn(async move { while events.recv().await.is_some() {} });
                while let Some(d) = orders.recv().await {
                    if d.is_zero() {
                        break;
                    }
                    // The whole runtime stops: no timer, no read, no accept.
                    std::thread::sleep(d);
                }
                speaker.shutdown().await;
            });
        });
        let (speaker, rt) = rx.recv().unwrap();
        Node {
            speaker,
            rt,
            freeze,
            thread: Some(thread),
        }
    }
    fn freeze_for(&self, d: Duration) {
        self.freeze.send(d).unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.freeze.send(Duration::ZERO);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Loopback addresses of this test process (other tests use 127.0.x.y).
fn addresses(n: u8) -> Vec<Ipv4Addr> {
    let pid = std::process::id();
    let (a, b) = (100 + (pid % 100) as u8, ((pid / 100) % 250) as u8);
    (1..=n).map(|i| Ipv4Addr::new(127, a, b, i)).collect()
}

fn block(i: usize) -> IpNetwork {
    format!("10.{}.0.0/26", 40 + i).parse().unwrap()
}

/// Every session Established and every peer's block fresh (received in the current
/// session), on every node; `Err` says what is missing.
fn converged(nodes: &[Node]) -> Result<(), String> {
    let mut missing = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for p in n.speaker.peers() {
            if p.state != State::Established || p.prefixes_received != 1 {
                missing.push(format!(
                    "node {i}: peer {} {} with {} fresh routes (last error {:?})",
                    p.address, p.state, p.prefixes_received, p.last_error
                ));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("\n"))
    }
}

/// Flaps (Established sessions that ended) per (node, peer address).
fn flaps(nodes: &[Node]) -> Vec<(usize, IpAddr, u32)> {
    let mut out: Vec<(usize, IpAddr, u32)> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            n.speaker
                .peers()
                .into_iter()
                .map(move |p| (i, p.address, p.flaps))
        })
        .collect();
    out.sort();
    out
}

/// After a freeze of node `frozen`: each of its sessions ended exactly once on both
/// sides (no second flap once back), the others not at all.
fn check_flaps(
    before: &[(usize, IpAddr, u32)],
    after: &[(usize, IpAddr, u32)],
    frozen: usize,
    frozen_addr: IpAddr,
) -> Result<(), String> {
    let wrong: Vec<String> = before
        .iter()
        .zip(after)
        .filter(|((i, a, b), (_, _, c))| {
            let want = u32::from(*i == frozen || *a == frozen_addr);
            c - b != want
        })
        .map(|((i, a, b), (_, _, c))| format!("node {i} peer {a}: {} flaps", c - b))
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join(", "))
    }
}

fn wait_converged(nodes: &[Node], within: Duration) -> Result<Duration, String> {
    let t = Instant::now();
    loop {
        match converged(nodes) {
            Ok(()) => return Ok(t.elapsed()),
            Err(e) if t.elapsed() > within => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A three-node mesh; node 1 (the middle router id) is frozen past the hold time and
/// thawed, several times with different freeze lengths (the others' hold timers and
/// reconnects fall at different points of the freeze).
#[test]
fn a_thawed_mesh_member_reestablishes_every_session() {
    init_tracing();
    let addrs = addresses(3);
    let nodes: Vec<Node> = addrs.iter().map(|a| Node::start(*a)).collect();
    for (i, n) in nodes.iter().enumerate() {
        n.speaker.announce(block(i), IpAddr::V4(addrs[i])).unwrap();
        for (j, m) in nodes.iter().enumerate() {
            if i != j {
                let a = m.speaker.local_addr();
                let _rt = n.rt.enter();
                n.speaker
                    .add_peer(PeerConfig {
                        port: a.port(),
                        ..PeerConfig::new(a.ip(), SpeakerConfig::DEFAULT_AS)
                    })
                    .unwrap();
            }
        }
    }
    let took = wait_converged(&nodes, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("mesh up in {took:?}");
    let hold = Duration::from_secs(HOLD.into());
    // Hold time + connect retry + margin (the others' back-off after one failed
    // attempt is 1 s, then 2 s).
    let within = hold + CONNECT_RETRY + Duration::from_secs(4);
    for (round, extra_ms) in [1500u64, 9000, 3500, 16000, 3000].into_iter().enumerate() {
        let frozen = round % 3;
        let freeze = hold + Duration::from_millis(extra_ms);
        let before = flaps(&nodes);
        nodes[frozen].freeze_for(freeze);
        std::thread::sleep(freeze);
        let back = wait_converged(&nodes, within).unwrap_or_else(|e| {
            panic!("round {round}: node {frozen} frozen {freeze:?}, not back within {within:?} after the thaw:\n{e}")
        });
        // A session that comes back and goes again (the collision loser taken for a
        // restart) shows as a second flap.
        std::thread::sleep(Duration::from_secs(1));
        converged(&nodes).unwrap_or_else(|e| panic!("round {round}: down again: {e}"));
        check_flaps(&before, &flaps(&nodes), frozen, IpAddr::V4(addrs[frozen]))
            .unwrap_or_else(|e| panic!("round {round}: node {frozen} frozen: {e}"));
        eprintln!(
            "round {round}: node {frozen} frozen {freeze:?}: mesh back {back:?} after the thaw"
        );
    }
}

/// The most faithful freeze: each speaker is a child process (this test binary again,
/// running [`speaker_process`]) with a multi-threaded runtime as in ipamd, frozen by
/// SIGSTOP and thawed by SIGCONT. Each writes its peers' states to a file every 50 ms.
#[test]
fn a_sigstopped_mesh_member_reestablishes_every_session() {
    init_tracing();
    let addrs = addresses(3)
        .into_iter()
        .map(|a| {
            Ipv4Addr::new(
                a.octets()[0],
                a.octets()[1],
                a.octets()[2],
                a.octets()[3] + 10,
            )
        })
        .collect::<Vec<_>>();
    let port = 20000 + (std::process::id() % 20000) as u16;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<Child> = (0..addrs.len())
        .map(|i| {
            let peers: Vec<String> = addrs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| a.to_string())
                .collect();
            let spec = format!("{};{port};{};{}", addrs[i], peers.join(","), block(i));
            let log = std::fs::File::create(dir.path().join(format!("node{i}.log"))).unwrap();
            Child(
                std::process::Command::new(&exe)
                    .args(["--exact", "speaker_process", "--nocapture"])
                    .env(CHILD_ENV, spec)
                    .env(STATUS_ENV, dir.path().join(format!("node{i}.status")))
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let status = |i: usize| dir.path().join(format!("node{i}.status"));
    let wait = |since: SystemTime, within: Duration| -> Result<Duration, String> {
        let t = Instant::now();
        loop {
            let mut missing = Vec::new();
            for i in 0..addrs.len() {
                let text = std::fs::read_to_string(status(i)).unwrap_or_default();
                // Written after `since` (its first line: when, in ns since the epoch).
                let since_ns = since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                let fresh = text
                    .lines()
                    .next()
                    .and_then(|l| l.parse::<u128>().ok())
                    .is_some_and(|t| t > since_ns);
                let up = text
                    .lines()
                    .filter(|l| l.contains(" Established 1 "))
                    .count();
                if !fresh || up != addrs.len() - 1 {
                    missing.push(format!("node {i}:\n{text}"));
                }
            }
            if missing.is_empty() {
                return Ok(t.elapsed());
            }
            if t.elapsed() > within {
                return Err(missing.join(""));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let flaps = || -> Vec<(usize, IpAddr, u32)> {
        let mut out = Vec::new();
        for i in 0..addrs.len() {
            let text = std::fs::read_to_string(status(i)).unwrap_or_default();
            for l in text.lines().skip(1) {
                let w: Vec<&str> = l.split(' ').collect();
                out.push((i, w[0].parse().unwrap(), w[4].parse().unwrap()));
            }
        }
        out.sort();
        out
    };
    let took = wait(SystemTime::now(), Duration::from_secs(15)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("mesh up in {took:?}");
    let hold = Duration::from_secs(HOLD.into());
    let within = hold + CONNECT_RETRY + Duration::from_secs(4);
    for (round, extra_ms) in [1500u64, 9000, 3500, 2000, 5000].into_iter().enumerate() {
        let frozen = round % 3;
        let freeze = hold + Duration::from_millis(extra_ms);
        let before = flaps();
        children[frozen].signal(Signal::SIGSTOP);
        std::thread::sleep(freeze);
        children[frozen].signal(Signal::SIGCONT);
        let logs = || -> String {
            (0..addrs.len())
                .map(|i| {
                    let log = std::fs::read_to_string(dir.path().join(format!("node{i}.log")));
                    let log = log.unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(300).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    format!("--- node {i} ({}):\n{}\n", addrs[i], tail.join("\n"))
                })
                .collect()
        };
        let back = wait(SystemTime::now(), within).unwrap_or_else(|e| {
            panic!(
                "round {round}: node {frozen} frozen {freeze:?}, not back within {within:?} after \
                 SIGCONT:\n{e}\n{}",
                logs()
            )
        });
        // A session that came back and went again shows as a second flap.
        std::thread::sleep(Duration::from_secs(1));
        check_flaps(&before, &flaps(), frozen, IpAddr::V4(addrs[frozen]))
            .unwrap_or_else(|e| panic!("round {round}: node {frozen} SIGSTOPped: {e}\n{}", logs()));
        eprintln!(
            "round {round}: node {frozen} SIGSTOPped {freeze:?}: mesh back {back:?} after SIGCONT"
        );
    }
    children.clear();
    if std::env::var_os("BGP_FREEZE_KEEP").is_some() {
        eprintln!("logs kept in {}", dir.keep().display());
    }
}

const CHILD_ENV: &str = "BGP_FREEZE_TEST_SPEAKER";
const STATUS_ENV: &str = "BGP_FREEZE_TEST_STATUS";

/// Killed (and reaped) with the test, also when it fails.
struct Child(std::process::Child);

impl Child {
    fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(Pid::from_raw(self.0.id() as i32), sig).unwrap();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Not a test of its own: the speaker process of
/// [`a_sigstopped_mesh_member_reestablishes_every_session`] (returns at once unless
/// started by it).
#[test]
fn speaker_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    init_tracing();
    let status = std::path::PathBuf::from(std::env::var(STATUS_ENV).unwrap());
    let parts: Vec<&str> = spec.split(';').collect();
    let addr: Ipv4Addr = parts[0].parse().unwrap();
    let port: u16 = parts[1].parse().unwrap();
    let peers: Vec<IpAddr> = parts[2].split(',').map(|p| p.parse().unwrap()).collect();
    let block: IpNetwork = parts[3].parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut cfg = SpeakerConfig::new(addr);
        cfg.listen = SocketAddr::new(IpAddr::V4(addr), port);
        cfg.timers = mesh_timers();
        cfg.peers = peers
            .iter()
            .map(|p| PeerConfig {
                port,
                ..PeerConfig::new(*p, SpeakerConfig::DEFAULT_AS)
            })
            .collect();
        let (speaker, mut events) = Speaker::start(cfg).await.unwrap();
        speaker.announce(block, IpAddr::V4(addr)).unwrap();
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let tmp = status.with_extension("tmp");
        loop {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
            let text: String = std::iter::once(format!("{}\n", now.unwrap().as_nanos()))
                .chain(speaker.peers().iter().map(|p| {
                    let (a, st, n, f) = (p.address, p.state, p.prefixes_received, p.flaps);
                    format!("{a} {st:?} {n} flaps {f}\n")
                }))
                .collect();
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &status).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}
