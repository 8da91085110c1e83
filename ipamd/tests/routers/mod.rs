//! What the BGP tests share: nodes wired by veths, `ipamd --datapath bgp` with test
//! timers, waiting for kernel routes, `ip monitor route`, and the routers ipamd peers
//! with, each in its own namespace with its own config and control socket: BIRD 2
//! ([`Bird`]), FRR 8.4 ([`Frr`]: zebra + bgpd), GoBGP 3.10 ([`Gobgp`]). Every process is
//! killed on drop (also on panic).
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::common::*;
use ipnetwork::IpNetwork;

pub const POOL: &str = "10.244.0.0/16";
pub const SEC: Duration = Duration::from_secs(1);

/// The flags of a BGP node with test timers (hold time 3 s, retry 1 s, resync 1 s).
pub fn bgp_flags(underlay: &str) -> Vec<String> {
    [
        "--datapath",
        "bgp",
        "--underlay-ip",
        underlay,
        "--bgp-hold-time",
        "3",
        "--bgp-connect-retry",
        "1s",
        "--resync",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn start(node: &Node, name: &str, dir: &Path, store: &Path, flags: &[String]) -> Daemon {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    Daemon::start_named(node, name, &d, store, POOL, &extra)
}

/// A veth pair: `a_if` in `a` at `a_addr`, `b_if` in `b` (up, no address).
pub fn link(a: &Node, a_if: &str, a_addr: &str, b: &Node, b_if: &str) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.ns,
    ]);
    a.ip(&["addr", "add", a_addr, "dev", a_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// The node's one IPv4 block, once the store has it.
pub fn block_of(store: &Path, name: &str, d: &Daemon) -> IpNetwork {
    let mut got = None;
    wait_until(
        20 * SEC,
        || {
            got = node_blocks(store, name)
                .into_iter()
                .find(IpNetwork::is_ipv4);
            got.is_some()
        },
        || format!("{name} has no block: {}", d.log()),
    );
    got.unwrap_or_else(|| unreachable!())
}

pub fn routes97(n: &Node) -> String {
    n.ip(&["-4", "route", "show", "proto", "97"])
}

/// Waits until `n`'s kernel has (or, `present` false, lacks) a proto-97 route to `dst`
/// (via `gw` when given).
pub fn wait_route(
    n: &Node,
    dst: IpNetwork,
    gw: Option<&str>,
    present: bool,
    within: Duration,
    log: impl Fn() -> String,
) {
    let want = match gw {
        Some(g) => format!("{dst} via {g} "),
        None => format!("{dst} "),
    };
    wait_until(
        within,
        || {
            routes97(n)
                .lines()
                .any(|l| format!("{l} ").starts_with(&want))
                == present
        },
        || {
            format!(
                "{}: route {want:?} present={present}? routes:\n{}\n{}",
                n.ns,
                routes97(n),
                log()
            )
        },
    );
}

/// BIRD in the router namespace; killed on drop.
pub struct Bird {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Bird {
    pub fn start(ns: &Node, dir: &Path, config: &str) -> Bird {
        let conf = dir.join("bird.conf");
        let socket = dir.join("bird.ctl");
        let log = dir.join("bird.log");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.ns, "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("bird (Debian package bird2)");
        let b = Bird { child, socket, log };
        wait_until(
            10 * SEC,
            || b.birdc(&["show", "status"]).contains("Daemon is up"),
            || std::fs::read_to_string(&b.log).unwrap_or_default(),
        );
        b
    }

    pub fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ip -ts monitor route` in a namespace, from when [`RouteMonitor::start`] returns (it
/// waits until a marker route shows up) until [`RouteMonitor::stop`].
pub struct RouteMonitor {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl RouteMonitor {
    pub fn start(n: &Node) -> RouteMonitor {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("events");
        let child = Command::new("ip")
            .args(["-ts", "-n", &n.ns, "monitor", "route"])
            .stdout(File::create(&out).unwrap())
            .spawn()
            .unwrap();
        let m = RouteMonitor {
            child,
            out,
            _dir: dir,
        };
        wait_until(
            10 * SEC,
            || {
                let _ = n.exec(&["ip", "route", "del", "blackhole", "192.0.2.99/32"]);
                n.ip(&["route", "add", "blackhole", "192.0.2.99/32"]);
                std::thread::sleep(Duration::from_millis(50));
                m.text().contains("192.0.2.99")
            },
            || m.text(),
        );
        m
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stop(mut self) -> String {
        std::thread::sleep(Duration::from_millis(100));
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.text()
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid of the `ipamd` running in `n` (`ip netns pids`).
pub fn ipamd_pid(n: &Node) -> i32 {
    let pids = sh("ip", &["netns", "pids", &n.ns]);
    pids.split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "ipamd")
        })
        .expect("no ipamd in the namespace")
}

/// CPU time (user + system, every thread) a process has used so far.
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses: field 3 onwards; utime, stime are 14, 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // In USER_HZ, 100 on every Linux.
    Duration::from_millis((f[11] + f[12]) * 10)
}

/// The share of one core `pid` uses over `d`.
pub fn cpu_share(pid: i32, d: Duration) -> f64 {
    let before = cpu_time(pid);
    std::thread::sleep(d);
    (cpu_time(pid) - before).as_secs_f64() / d.as_secs_f64()
}

pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

/// Route events of `prefix` in a monitor's output that are deletions.
pub fn deletions(events: &str, prefix: &str) -> Vec<String> {
    events
        .lines()
        .filter(|l| l.contains("] Deleted ") && l.contains(prefix))
        .map(str::to_string)
        .collect()
}

/// When the first deletion of `prefix` happened (the kernel's event, stamped by
/// `ip -ts monitor`), in seconds since midnight UTC: timing from the event itself, not
/// from a poll that load can delay.
pub fn deleted_at(events: &str, prefix: &str) -> Option<f64> {
    let line = deletions(events, prefix).into_iter().next()?;
    // "[2026-12-01T13:54:37.801137] Deleted ..."
    let t = line.get(12..27)?;
    let (h, rest) = t.split_once(':')?;
    let (m, s) = rest.split_once(':')?;
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// Now, in seconds since midnight UTC (the clock of [`deleted_at`]).
pub fn now_of_day() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_secs_f64() % 86400.0
}

/// A bare TCP connection from `from` (an address of namespace `ns`) to `to`:179, made
/// inside that namespace; it sends `payload` (nothing if empty) and stays open until
/// dropped.
pub fn connect_from(ns: &Node, from: &str, to: &str, payload: &[u8]) -> std::net::TcpStream {
    use std::io::Write;
    use std::os::fd::AsFd;
    let path = format!("/run/netns/{}", ns.ns);
    let (from, to): (std::net::IpAddr, std::net::IpAddr) =
        (from.parse().unwrap(), to.parse().unwrap());
    let payload = payload.to_vec();
    std::thread::spawn(move || {
        let f = File::open(&path).unwrap();
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = std::net::TcpStream::connect_timeout(&(to, 179).into(), Duration::from_secs(5));
        // Bound source: the namespace's only address toward `to` is `from`.
        let mut s = s.unwrap();
        assert_eq!(s.local_addr().unwrap().ip(), from);
        if !payload.is_empty() {
            s.write_all(&payload).unwrap();
        }
        s
    })
    .join()
    .unwrap()
}

/// FRR 8.4 in a namespace: zebra and bgpd (as user `frr`, not daemonized) with the
/// test's config, pid files, zebra socket and vty sockets in `dir`.
pub struct Frr {
    ns: String,
    dir: PathBuf,
    zebra: Child,
    bgpd: Mutex<Option<Child>>,
}

impl Frr {
    pub fn start(ns: &Node, parent: &Path, config: &str) -> Frr {
        let dir = testkit::frr_dir(&parent.join("frr"));
        std::fs::write(dir.join("bgpd.conf"), config).unwrap();
        std::fs::write(dir.join("zebra.conf"), "").unwrap();
        let zebra = Self::spawn(&ns.ns, &dir, "zebra");
        let f = Frr {
            ns: ns.ns.clone(),
            dir,
            zebra,
            bgpd: Mutex::new(None),
        };
        wait_until(
            10 * SEC,
            || f.dir.join("zserv.api").exists(),
            || f.log("zebra"),
        );
        f.start_bgpd();
        f
    }

    fn spawn(ns: &str, dir: &Path, daemon: &str) -> Child {
        let _ = std::fs::remove_file(dir.join(format!("{daemon}.pid")));
        Command::new("ip")
            .args(["netns", "exec", ns, &format!("/usr/lib/frr/{daemon}")])
            .arg("-f")
            .arg(dir.join(format!("{daemon}.conf")))
            .arg("-i")
            .arg(dir.join(format!("{daemon}.pid")))
            .arg("-z")
            .arg(dir.join("zserv.api"))
            .arg("--vty_socket")
            .arg(dir)
            .args(["--log", "stdout", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(File::create(dir.join(format!("{daemon}.log"))).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("FRR (Debian package frr)")
    }

    /// bgpd (again): the restarting router.
    pub fn start_bgpd(&self) {
        *self.bgpd.lock().unwrap() = Some(Self::spawn(&self.ns, &self.dir, "bgpd"));
        wait_until(
            10 * SEC,
            || self.vtysh("show bgp summary json").contains("routerId"),
            || self.log("bgpd"),
        );
    }

    pub fn bgpd_pid(&self) -> i32 {
        self.bgpd
            .lock()
            .unwrap()
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("bgpd runs")
    }

    /// SIGKILL bgpd (a crash: no NOTIFICATION).
    pub fn kill_bgpd(&self) {
        let child = self.bgpd.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Where its config, pid files and sockets are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log(&self, daemon: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{daemon}.log"))).unwrap_or_default()
    }

    pub fn vtysh(&self, cmd: &str) -> String {
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&self.dir)
            .args(["-c", cmd])
            .output()
            .expect("vtysh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Configuration commands, in `router bgp ASN` (and its address family when `af`).
    pub fn configure(&self, asn: u32, af: Option<&str>, cmds: &[&str]) {
        let mut args: Vec<String> = vec!["-c".into(), "configure terminal".into()];
        args.extend(["-c".into(), format!("router bgp {asn}")]);
        if let Some(af) = af {
            args.extend(["-c".into(), format!("address-family {af}")]);
        }
        for c in cmds {
            args.extend(["-c".into(), c.to_string()]);
        }
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&self.dir)
            .args(&args)
            .output()
            .expect("vtysh");
        assert!(
            out.status.success(),
            "{cmds:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn json(&self, cmd: &str) -> serde_json::Value {
        serde_json::from_str(&self.vtysh(cmd)).unwrap_or(serde_json::Value::Null)
    }

    /// The neighbour's summary entry (`show bgp summary json`, IPv4 or IPv6 unicast).
    pub fn peer(&self, afi: &str, addr: &str) -> serde_json::Value {
        self.json("show bgp summary json")[afi]["peers"][addr].clone()
    }

    pub fn established(&self, afi: &str, addr: &str) -> bool {
        self.peer(afi, addr)["state"] == "Established"
    }

    /// The paths FRR has for `prefix` (`show bgp ipv4|ipv6 unicast json`).
    pub fn paths(&self, afi: &str, prefix: &str) -> Vec<serde_json::Value> {
        let v = self.json(&format!("show bgp {afi} unicast json"));
        v["routes"][prefix].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        self.kill_bgpd();
        let _ = self.zebra.kill();
        let _ = self.zebra.wait();
    }
}

/// GoBGP 3.10 in a namespace: `gobgpd` with the test's TOML, its gRPC API on the
/// namespace's own loopback at `port`, driven with `gobgp` run inside the namespace.
pub struct Gobgp {
    ns: String,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Gobgp {
    pub fn start(ns: &Node, parent: &Path, config: &str, port: u16) -> Gobgp {
        // gobgpd runs as root: a plain directory.
        let dir = parent.join("gobgp");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("gobgpd.toml"), config).unwrap();
        let mut g = Gobgp {
            ns: ns.ns.clone(),
            dir,
            port,
            child: None,
        };
        g.restart();
        g
    }

    /// gobgpd (again).
    pub fn restart(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "gobgpd", "-f"])
            .arg(self.dir.join("gobgpd.toml"))
            .args([
                "--api-hosts",
                &format!("127.0.0.1:{}", self.port),
                "--pprof-disable",
                "-p",
            ])
            .stdin(Stdio::null())
            .stdout(File::create(self.dir.join("gobgpd.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("gobgpd (Debian package gobgpd)");
        self.child = Some(child);
        wait_until(
            10 * SEC,
            || self.gobgp(&["global"]).contains("AS"),
            || self.log(),
        );
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("gobgpd runs")
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gobgpd.log")).unwrap_or_default()
    }

    pub fn gobgp(&self, args: &[&str]) -> String {
        let port = self.port.to_string();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "gobgp", "-p", &port])
            .args(args)
            .output()
            .expect("gobgp");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    pub fn established(&self, addr: &str) -> bool {
        self.gobgp(&["neighbor", addr])
            .to_ascii_lowercase()
            .contains("state = established")
    }
}

impl Drop for Gobgp {
    fn drop(&mut self) {
        self.kill();
    }
}
