//! `ipamd` on a node: started inside the node's namespace (`ip netns exec`), its stderr
//! appended to a log file (shown when a test fails), metrics read over HTTP from inside
//! the namespace. Killed on drop.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bins;

use super::inns;
use super::topology::NodeNs;

/// Where `ipamd` serves metrics inside each node namespace (each has its own loopback).
pub const LISTEN: &str = "127.0.0.1:9645";

/// The cluster-wide part of `ipamd run`'s flags.
#[derive(Clone, Debug)]
pub struct IpamdConf {
    /// `file:///...` cluster store.
    pub store: String,
    pub pool: String,
    pub block_size: u8,
    pub network: String,
    /// `--datapath`.
    pub datapath: String,
    pub resync: String,
    /// Further flags (`--direct-routing`, `--mtu`, ...).
    pub extra: Vec<String>,
}

/// One node's `ipamd`.
#[derive(Debug)]
pub struct Ipamd {
    pub node: String,
    pub ns: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    starts: u32,
}

impl Ipamd {
    /// Starts `ipamd run` for `node` (data dir `data_dir`, log `log`).
    pub fn start(node: &NodeNs, conf: &IpamdConf, data_dir: &Path, log: &Path) -> Ipamd {
        Ipamd::start_at(node, node.underlay_ip.into(), conf, data_dir, log)
    }

    /// [`Ipamd::start`] with `--underlay-ip underlay_ip` (e.g. the node's IPv6 address).
    pub fn start_at(
        node: &NodeNs,
        underlay_ip: std::net::IpAddr,
        conf: &IpamdConf,
        data_dir: &Path,
        log: &Path,
    ) -> Ipamd {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let mut args: Vec<String> = [
            "run",
            "--node-name",
            &node.name,
            "--store",
            &conf.store,
            "--pool",
            &conf.pool,
            "--block-size",
            &conf.block_size.to_string(),
            "--network",
            &conf.network,
            "--data-dir",
            &data_dir.display().to_string(),
            "--datapath",
            &conf.datapath,
            "--underlay-interface",
            "eth0",
            "--underlay-ip",
            &underlay_ip.to_string(),
            "--resync",
            &conf.resync,
            "--listen",
            LISTEN,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(conf.extra.iter().cloned());
        let mut d = Ipamd {
            node: node.name.clone(),
            ns: node.ns().to_string(),
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
            args,
            child: None,
            starts: 0,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "ipamd of {} already running",
            self.node
        );
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("ipamd log");
        let _ = writeln!(
            log,
            "===== start #{} of ipamd on {}: ipamd {}",
            self.starts,
            self.node,
            self.args.join(" ")
        );
        let bin = bins::our_bin("ipamd");
        // MULTINODE_IPAMD_LOG (a tracing filter, e.g. `bgp=debug,info`) overrides the
        // default `info`, to get debug traces of one subsystem out of a failing run.
        let level = std::env::var("MULTINODE_IPAMD_LOG").unwrap_or_else(|_| "info".into());
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(bin)
            .args(&self.args)
            .env("RUST_LOG", &level)
            .env("IPAMD_LOG", &level)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn ipamd");
        self.child = Some(child);
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM, then SIGKILL after 5 s; waits for it. Returns its exit status, if it had
    /// one (None when killed or not running).
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match c.try_wait() {
                Ok(Some(st)) => return st.code(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return None;
                }
            }
        }
    }

    /// SIGSTOP: the process stays, its sockets stay open, it answers nothing (a hung
    /// node, as its peers see it: only their hold timers notice).
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT after [`Ipamd::freeze`].
    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let c = self.child.as_ref().expect("ipamd running");
        // `ip netns exec` execs the daemon: this pid is ipamd's.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig)
            .unwrap_or_else(|e| panic!("{sig} to ipamd of {}: {e}", self.node));
    }

    /// Stops it (SIGTERM) and starts it again with the same flags.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /metrics` (Prometheus text).
    pub fn metrics(&self) -> Result<String, String> {
        let (status, body) = inns::http_get(&self.ns, LISTEN, "/metrics")?;
        if status != 200 {
            return Err(format!("GET /metrics: {status}: {body}"));
        }
        Ok(body)
    }

    /// The sum of every sample of metric `name` (any labels); None when absent or when
    /// the metrics cannot be read.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_sum(&self.metrics().ok()?, name)
    }

    /// Waits until `GET /healthz` answers 200.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if !self.running() {
                return Err(format!(
                    "ipamd of {} exited; log:\n{}",
                    self.node,
                    self.log_text()
                ));
            }
            let last = match inns::http_get(&self.ns, LISTEN, "/healthz") {
                Ok((200, _)) => return Ok(()),
                Ok((s, b)) => format!("{s} {b}"),
                Err(e) => e,
            };
            if start.elapsed() > timeout {
                return Err(format!(
                    "ipamd of {} not healthy after {timeout:?} ({last}); log:\n{}",
                    self.node,
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until metric `name` is at least `min`; returns its value.
    pub fn wait_metric_at_least(
        &self,
        name: &str,
        min: f64,
        timeout: Duration,
    ) -> Result<f64, String> {
        super::wait_until(
            &format!("{name} >= {min} on {}", self.node),
            timeout,
            || match self.metric(name) {
                Some(v) if v >= min => Ok(v),
                other => Err(format!("{name} = {other:?}")),
            },
        )
    }
}

impl Drop for Ipamd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `ipamd remove-node <name> --store <url>`.
pub fn remove_node(store: &str, name: &str) -> Result<String, String> {
    let bin = bins::our_bin("ipamd");
    crate::try_sh(
        &bin.display().to_string(),
        &["remove-node", name, "--store", store],
    )
}

/// Every daemon's log, each under a `----- <node>:` line.
pub fn logs(daemons: &[Ipamd]) -> String {
    daemons
        .iter()
        .map(|d| format!("----- {}:\n{}", d.node, d.log_text()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sum of the samples of `name` in Prometheus text `text` (lines `name value` or
/// `name{labels} value`).
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = if let Some(r) = rest.strip_prefix('{') {
            match r.split_once('}') {
                Some((_, after)) => after,
                None => continue,
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue; // a longer metric name with this prefix
        };
        if let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn sums_samples_of_one_metric() {
        let t = "# HELP x\nipamd_datapath_objects{kind=\"route\"} 3\n\
                 ipamd_datapath_objects{kind=\"fdb\"} 2\nipamd_datapath_objects_total 9\n\
                 ipamd_datapath_requests_total 0\n";
        assert_eq!(metric_sum(t, "ipamd_datapath_objects"), Some(5.0));
        assert_eq!(metric_sum(t, "ipamd_datapath_requests_total"), Some(0.0));
        assert_eq!(metric_sum(t, "ipamd_datapath_resyncs_total"), None);
    }
}
