//! Set-up shared by the datapath tests: a node namespace with an underlay, an `ipamd`
//! running inside it, its metrics, and a cluster store the test writes to.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipam::cluster::{ClusterStore, NodeInfo, StoreUrl};
pub use testkit::{sh, Netns};

pub const BIN: &str = env!("CARGO_BIN_EXE_ipamd");
pub const METRICS_PORT: u16 = 9645;

/// A node: a network namespace (the test kit's, deleted on drop) with `eth0` (a veth
/// whose peer stays inside too) at `addr` on a /24, a default route, and loopback up.
pub struct Node {
    /// The namespace's name.
    pub ns: String,
    netns: Netns,
}

impl Node {
    pub fn new(tag: &str, addr: &str) -> Node {
        let n = Node::bare(tag);
        n.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ]);
        n.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        for l in ["eth0", "eth1"] {
            n.ip(&["link", "set", l, "up"]);
        }
        let gw = format!("{}.254", addr.rsplit_once('.').unwrap().0);
        n.ip(&["route", "add", "default", "via", &gw, "dev", "eth0"]);
        n
    }

    pub fn ip(&self, args: &[&str]) -> String {
        self.netns.ip(args)
    }

    pub fn bridge(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.ns];
        all.extend_from_slice(args);
        sh("bridge", &all)
    }

    /// `GET /metrics` from inside the namespace (its loopback is its own).
    pub fn metrics(&self) -> String {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).ok()?;
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
            let mut s = TcpStream::connect(("127.0.0.1", METRICS_PORT)).ok()?;
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

    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(&self.metrics(), name)
    }
}

pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// `ipamd run` inside a node; killed on drop.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// `ipamd run --node-name me` in `node` with `store`, `pool` (/26 blocks), data under
    /// `dir`, and `extra` flags (the datapath).
    pub fn start(node: &Node, dir: &Path, store: &Path, pool: &str, extra: &[&str]) -> Daemon {
        Daemon::start_named(node, "me", dir, store, pool, extra)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (`ip netns exec` execs ipamd: the pid is its own); waits up to 5 s.
    pub fn terminate(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ipamd did not exit on SIGTERM: {}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 50 ms until it holds; panics after `timeout` with `why()`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool, why: impl Fn() -> String) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?}: {}",
            why()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A remote node written through the store's API (locked, as a real daemon would).
pub fn put_node(store: &Path, name: &str, underlay: &str, block: &str, backend: &[(&str, &str)]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = StoreUrl::parse(&format!("file://{}", store.display())).unwrap();
        let s = ClusterStore::connect(&url).await.unwrap();
        let info = NodeInfo {
            name: name.into(),
            underlay_ip: Some(underlay.parse().unwrap()),
            backend: backend
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.register(&info, Duration::from_secs(3600)).await.unwrap();
        s.claim_exact(name, block.parse().unwrap()).await.unwrap();
    });
}

pub fn remove_node(store: &Path, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = StoreUrl::parse(&format!("file://{}", store.display())).unwrap();
        let s = ClusterStore::connect(&url).await.unwrap();
        s.remove_node(name).await.unwrap();
    });
}

impl Node {
    /// An empty namespace (loopback up) named `<tag><pid>`: the test wires its links.
    /// Deleted on drop.
    pub fn bare(tag: &str) -> Node {
        let netns = Netns::named(&format!("{tag}{}", std::process::id()));
        Node {
            ns: netns.name().into(),
            netns,
        }
    }

    /// `cmd` run inside the namespace: whether it succeeded, and its stdout (its stderr
    /// too when it failed).
    pub fn exec(&self, cmd: &[&str]) -> (bool, String) {
        match self.netns.try_exec(cmd) {
            Ok(out) => (true, out),
            Err(e) => (false, e),
        }
    }
}

impl Daemon {
    /// As [`Daemon::start`], with node name `name` (several nodes in one store); `dir`
    /// must be the node's own (its node-local store and log go there).
    pub fn start_named(
        node: &Node,
        name: &str,
        dir: &Path,
        store: &Path,
        pool: &str,
        extra: &[&str],
    ) -> Daemon {
        let log = dir.join(format!("ipamd-{}.log", node.ns));
        let child = Command::new("ip")
            .args(["netns", "exec", &node.ns, BIN, "run", "--node-name", name])
            .arg("--store")
            .arg(format!("file://{}", store.display()))
            .args(["--pool", pool, "--block-size", "26"])
            .args(["--network", "dp", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--lease-ttl", "1h"])
            .args(["--listen", &format!("127.0.0.1:{METRICS_PORT}")])
            .args(extra)
            .env("IPAMD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }
}

/// A node's blocks as the cluster store has them (empty when it is not there).
pub fn node_blocks(store: &Path, name: &str) -> Vec<ipnetwork::IpNetwork> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = StoreUrl::parse(&format!("file://{}", store.display())).unwrap();
        let Ok(s) = ClusterStore::connect(&url).await else {
            return Vec::new();
        };
        s.node(name)
            .await
            .ok()
            .flatten()
            .map(|r| r.blocks)
            .unwrap_or_default()
    })
}
