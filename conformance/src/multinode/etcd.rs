//! A real etcd (Debian's `etcd-server`) for a multi-node cluster: it runs inside the
//! fabric namespace on the fabric's address of the first underlay subnet, so every node
//! reaches it over its underlay and its ports cannot clash with anything outside the
//! test's namespaces. Data in a temp dir; killed on drop. [`Etcd::freeze`] and
//! [`Etcd::thaw`] (SIGSTOP/SIGCONT) make the datastore hiccups of the chaos tests.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

/// One etcd member in netns `ns`.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    ns: String,
    addr: Ipv4Addr,
    dir: PathBuf,
    /// The data directory, on tmpfs when there is one: etcd fsyncs every write, and on a
    /// disk shared with other builds a sync can take seconds, which stalls the store
    /// longer than a lease TTL of the tests (seen in `chaos.rs`).
    data: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd in `ns` listening on `addr` (an address of that namespace), its data
    /// and log under `dir`; waits until it answers.
    pub fn start(ns: &str, addr: Ipv4Addr, dir: &Path) -> Etcd {
        std::fs::create_dir_all(dir).expect("etcd dir");
        let shm = Path::new("/dev/shm");
        let data = tempfile::Builder::new()
            .prefix("mn-etcd-")
            .tempdir_in(if shm.is_dir() { shm } else { dir })
            .expect("etcd data dir");
        let mut e = Etcd {
            child: None,
            ns: ns.to_string(),
            addr,
            dir: dir.to_path_buf(),
            data,
        };
        e.spawn();
        e
    }

    fn spawn(&mut self) {
        let c = format!("http://{}:{CLIENT_PORT}", self.addr);
        let p = format!("http://{}:{PEER_PORT}", self.addr);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "/usr/bin/etcd"])
            .args(["--name", "chaos", "--data-dir"])
            .arg(self.data.path().join("data"))
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args([
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
            ])
            .args(["--initial-cluster", &format!("chaos={p}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("fd"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd (package etcd-server)");
        self.child = Some(child);
        let addr = format!("{}:{CLIENT_PORT}", self.addr);
        wait_until(
            "etcd answers",
            Duration::from_secs(30),
            || match super::inns::http_get(&self.ns, &addr, "/health") {
                Ok((200, body)) if body.contains("true") => Ok(()),
                Ok((s, b)) => Err(format!("{s} {b}")),
                Err(e) => Err(e),
            },
        )
        .unwrap_or_else(|e| panic!("{e}\netcd log:\n{}", self.log_text()));
    }

    /// `http://addr:2379`.
    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.addr)
    }

    /// The cluster store URL for `ipamd --store` and the plugins' `ipam.store`.
    pub fn store_url(&self, prefix: &str) -> String {
        format!("etcd://{}:{CLIENT_PORT}/{prefix}", self.addr)
    }

    fn pid(&self) -> nix::unistd::Pid {
        let c = self.child.as_ref().expect("etcd running");
        // `ip netns exec` execs etcd: this pid is etcd's.
        nix::unistd::Pid::from_raw(c.id() as i32)
    }

    /// SIGSTOP: the process and its sockets stay, nothing is answered.
    pub fn freeze(&self) {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    }

    /// SIGCONT after [`Etcd::freeze`].
    pub fn thaw(&self) {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            // A frozen process must be continued to die of SIGKILL promptly.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
