//! The fabric's router for the BGP datapath: the real BIRD 2 (Debian's `bird2`) running
//! in the fabric namespace as an iBGP route reflector for every node, exporting what it
//! learns into the fabric's kernel so that it forwards pod traffic between the underlay
//! subnets. Killed on drop; [`Router::kill`] and [`Router::start`] again for the tests
//! that take it away.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// The cluster's AS (ipamd's default).
pub const AS: u32 = 64512;

/// Hold time (seconds) on both sides of every session of the tests.
pub const HOLD_TIME: u64 = 3;

/// The graceful-restart time BIRD offers: how long the nodes keep its routes after it
/// goes away.
pub const GR_TIME: u64 = 5;

/// BIRD's configuration: a route reflector for `clients` (underlay addresses) that
/// offers graceful restart, and the kernel protocol exporting its BGP routes.
pub fn config(router_id: Ipv4Addr, clients: &[Ipv4Addr]) -> String {
    let mut c = format!(
        "router id {router_id};\n\
         protocol device {{ scan time 1; }}\n\
         protocol kernel {{ ipv4 {{ import none; export where source = RTS_BGP; }}; }}\n\
         template bgp node {{\n\
           local as {AS};\n\
           rr client;\n\
           direct;\n\
           hold time {HOLD_TIME}; connect retry time 1; error wait time 1, 3;\n\
           graceful restart on; graceful restart time {GR_TIME};\n\
           ipv4 {{ import all; export where source = RTS_BGP; gateway direct; }};\n\
         }}\n"
    );
    for (i, ip) in clients.iter().enumerate() {
        c.push_str(&format!(
            "protocol bgp node{} from node {{ neighbor {ip} as {AS}; }}\n",
            i + 1
        ));
    }
    c
}

/// BIRD in a namespace.
#[derive(Debug)]
pub struct Router {
    ns: String,
    conf: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Router {
    /// Writes `config` to `dir` and starts BIRD in netns `ns`; waits until it is up.
    pub fn new(ns: &str, dir: &Path, config: &str) -> Router {
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, config).expect("write bird.conf");
        let mut r = Router {
            ns: ns.to_string(),
            conf,
            socket: dir.join("bird.ctl"),
            log: dir.join("bird.log"),
            child: None,
        };
        r.start();
        r
    }

    /// Starts BIRD (again) with the same configuration; waits until it answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "BIRD already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("bird log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "bird", "-f", "-c"])
            .arg(&self.conf)
            .arg("-s")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("bird (Debian package bird2)");
        self.child = Some(child);
        wait_until("BIRD up", Duration::from_secs(10), || {
            let s = self.birdc(&["show", "status"]);
            if s.contains("Daemon is up") {
                Ok(())
            } else {
                Err(format!("{s}\n{}", self.log_text()))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGKILL: no NOTIFICATION, its sessions end when the kernel closes the sockets.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `birdc -s <socket> args...` (stdout; empty when BIRD does not answer).
    pub fn birdc(&self, args: &[&str]) -> String {
        Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The prefixes in BIRD's table (`show route`), as `a.b.c.d/len`.
    pub fn prefixes(&self) -> Vec<String> {
        self.birdc(&["show", "route"])
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.contains('/') && w.parse::<ipnetwork::IpNetwork>().is_ok())
            .map(String::from)
            .collect()
    }

    /// BIRD's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_every_client() {
        let c = config(
            "10.200.0.1".parse().unwrap(),
            &[
                "10.200.0.10".parse().unwrap(),
                "10.201.0.11".parse().unwrap(),
            ],
        );
        assert!(c.contains("router id 10.200.0.1;"));
        assert!(c.contains("protocol bgp node1 from node { neighbor 10.200.0.10 as 64512; }"));
        assert!(c.contains("protocol bgp node2 from node { neighbor 10.201.0.11 as 64512; }"));
        assert!(c.contains("graceful restart time 5;"));
    }
}
