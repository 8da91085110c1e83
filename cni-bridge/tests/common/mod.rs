//! Test harness: one pod netns, one bridge, one subnet and one host-local data dir per
//! test, all removed by a Drop guard. The plugin runs as the built binary with the
//! reference host-local (/usr/lib/cni) as IPAM.
#![allow(dead_code)]

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use testkit::{try_sh, Netns};

pub const REF_CNI: &str = "/usr/lib/cni";

/// Runs `argv` (the test kit's [`try_sh`]): whether it succeeded, and its stdout, or
/// the failure (its stderr and stdout). Stdout only on success: `ip` writes notes about
/// other namespaces on stderr (e.g. "Error: Peer netns reference is invalid." when a
/// netns it resolves for `link-netns` is being deleted by another test), which must not
/// be read as data.
fn run(argv: &[&str]) -> (bool, String) {
    match try_sh(argv[0], &argv[1..]) {
        Ok(out) => (true, out),
        Err(e) => (false, e),
    }
}

/// What the plugin answered.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: Value,
    pub raw: String,
    pub stderr: String,
}

impl Outcome {
    /// The CNI error code on stdout, if any.
    pub fn err_code(&self) -> Option<u64> {
        self.stdout.get("code").and_then(Value::as_u64)
    }
    pub fn msg(&self) -> String {
        self.stdout
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }
}

pub struct Pod {
    /// The namespace's name.
    pub ns: String,
    pub netns: Netns,
    pub container: String,
    pub ifname: String,
}

impl Pod {
    pub fn netns_path(&self) -> String {
        format!("/var/run/netns/{}", self.ns)
    }
}

/// One test's world.
pub struct World {
    pub tag: String,
    pub bridge: String,
    /// Third octet of 10.251.X.0/24.
    pub net: u8,
    pub name: String,
    pub data: tempfile::TempDir,
    pub pods: Vec<Pod>,
    /// Extra directory prepended to CNI_PATH (fake plugins).
    pub extra_path: Option<PathBuf>,
    /// Links to delete in Drop besides the bridge.
    pub extra_links: Vec<String>,
    /// When set, the plugin runs inside this "node" netns (bridge, forwarding and rules
    /// live there, not on the machine).
    pub node: Option<String>,
    node_netns: Option<Netns>,
    /// The configuration DEL should use in Drop.
    pub last_conf: std::sync::Mutex<Option<Value>>,
}

impl World {
    /// `tag`: up to 5 chars, unique per test; `net`: unique per test.
    pub fn new(tag: &str, net: u8) -> World {
        let pid = std::process::id();
        let bridge = format!("cb{tag}{pid:x}");
        assert!(bridge.len() <= 15, "bridge name {bridge} too long");
        let data = tempfile::Builder::new()
            .prefix(&format!("cni-bridge-{tag}-"))
            .tempdir()
            .unwrap();
        World {
            tag: tag.to_string(),
            bridge,
            net,
            name: format!("cbt-{tag}"),
            data,
            pods: Vec::new(),
            extra_path: None,
            extra_links: Vec::new(),
            node: None,
            node_netns: None,
            last_conf: std::sync::Mutex::new(None),
        }
    }

    /// Runs the plugin (and host-side inspection) inside a fresh node netns.
    pub fn in_node(&mut self) {
        let ns = Netns::named(&format!("cbt-{}-{}-node", self.tag, std::process::id()));
        self.node = Some(ns.name().into());
        self.node_netns = Some(ns);
    }

    /// `ip ...` on the host side (the node netns if any).
    pub fn host_ip(&self, args: &[&str]) -> (bool, String) {
        let mut v = vec!["ip"];
        if let Some(n) = &self.node {
            v.extend_from_slice(&["-n", n.as_str()]);
        }
        v.extend_from_slice(args);
        run(&v)
    }

    /// A command on the host side (inside the node netns if any).
    pub fn host_sh(&self, args: &[&str]) -> (bool, String) {
        let mut v = Vec::new();
        if let Some(n) = &self.node {
            v.extend_from_slice(&["ip", "netns", "exec", n.as_str()]);
        }
        v.extend_from_slice(args);
        run(&v)
    }

    /// Creates a pod netns; returns its index.
    pub fn pod(&mut self) -> usize {
        let i = self.pods.len();
        let netns = Netns::named(&format!("cbt-{}-{}-{}", self.tag, std::process::id(), i));
        self.pods.push(Pod {
            ns: netns.name().into(),
            netns,
            container: format!("ctr-{}-{i}", self.tag),
            ifname: "eth0".into(),
        });
        i
    }

    pub fn subnet(&self) -> String {
        format!("10.251.{}.0/24", self.net)
    }
    pub fn gw(&self) -> String {
        format!("10.251.{}.1", self.net)
    }

    /// A configuration for this world; `extra` fields are merged at the top level.
    pub fn conf(&self, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "cni-bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipam": {
                "type": "host-local",
                "dataDir": self.data.path(),
                "ranges": [[{"subnet": self.subnet()}]]
            }
        });
        if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        c
    }

    pub fn run(&self, cmd: &str, conf: &Value, pod: usize) -> Outcome {
        let p = &self.pods[pod];
        let vars = vec![
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", p.container.clone()),
            ("CNI_NETNS", p.netns_path()),
            ("CNI_IFNAME", p.ifname.clone()),
        ];
        if cmd == "ADD" {
            *self.last_conf.lock().unwrap() = Some(conf.clone());
        }
        self.run_env(conf, &vars)
    }

    pub fn run_env(&self, conf: &Value, vars: &[(&str, String)]) -> Outcome {
        let cni_path = match &self.extra_path {
            Some(p) => format!("{}:{REF_CNI}", p.display()),
            None => REF_CNI.to_string(),
        };
        let bin = env!("CARGO_BIN_EXE_cni-bridge");
        let mut cmd = match &self.node {
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", n.as_str(), bin]);
                c
            }
            None => Command::new(bin),
        };
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn cni-bridge");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(serde_json::to_vec(conf).unwrap().as_slice())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let raw = String::from_utf8_lossy(&out.stdout).to_string();
        Outcome {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: serde_json::from_str(&raw).unwrap_or(Value::Null),
            raw,
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    /// ADD that must succeed; returns the result.
    pub fn add_ok(&self, conf: &Value, pod: usize) -> Value {
        let o = self.run("ADD", conf, pod);
        assert!(o.ok, "ADD failed: {} / {}", o.raw, o.stderr);
        o.stdout
    }

    /// Addresses host-local holds for this network.
    pub fn reservations(&self) -> Vec<IpAddr> {
        let dir = self.data.path().join(&self.name);
        let mut v: Vec<IpAddr> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// What a failed reachability check needs to be understood: the bridge's ports and
    /// FDB, and both pods' addresses, links and neighbours.
    pub fn diag(&self, pods: &[usize]) -> String {
        let mut out = String::new();
        for args in [
            vec!["-d", "link", "show", "master", self.bridge.as_str()],
            vec!["addr", "show", "dev", self.bridge.as_str()],
        ] {
            out.push_str(&format!("ip {args:?}:\n{}\n", self.host_ip(&args).1));
        }
        out.push_str(&format!(
            "bridge fdb:\n{}\n",
            run(&["bridge", "fdb", "show", "br", &self.bridge]).1
        ));
        for &p in pods {
            for args in [["-d", "link"], ["addr", "show"], ["neigh", "show"]] {
                out.push_str(&format!(
                    "pod {p} ip {args:?}:\n{}\n",
                    self.in_pod(p, &args).1
                ));
            }
        }
        out
    }

    /// Names of the links enslaved to the bridge.
    pub fn ports(&self) -> Vec<String> {
        let mut v = vec!["ip"];
        if let Some(n) = &self.node {
            v.extend_from_slice(&["-n", n.as_str()]);
        }
        v.extend_from_slice(&["-o", "link", "show", "master", &self.bridge]);
        // No bridge (yet, or any more): no ports.
        let out = try_sh(v[0], &v[1..]).unwrap_or_default();
        out.lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// `ip -n <pod ns> ...`
    pub fn in_pod(&self, pod: usize, args: &[&str]) -> (bool, String) {
        let mut v = vec!["ip", "-n", self.pods[pod].ns.as_str()];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Pings `addr` from inside the pod (a few tries: the first ARP may be slow).
    pub fn ping_from(&self, pod: usize, addr: &str) -> bool {
        (0..3).any(|_| {
            self.pods[pod]
                .netns
                .try_exec(&["ping", "-c1", "-W1", addr])
                .is_ok()
        })
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let conf = self.last_conf.lock().unwrap().clone();
        if let Some(conf) = conf {
            for i in 0..self.pods.len() {
                let _ = self.run("DEL", &conf, i);
            }
        }
        // The pods' and the node's namespaces go with their `Netns` guards.
        self.host_ip(&["link", "del", &self.bridge]);
        for l in &self.extra_links {
            self.host_ip(&["link", "del", l]);
        }
    }
}

/// The pod's IPv4 address (with prefix) from an ADD result.
pub fn result_ip(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
