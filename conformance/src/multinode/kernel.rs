//! What `ipamd` programmed in a node, read with the system tools: its routes (protocol
//! 97), the neighbour and FDB entries of the VXLAN device; and netlink monitors (`ip
//! monitor`, `bridge monitor`) to prove that nothing was touched.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::ROUTE_PROTO;

/// One kernel object `ipamd` owns in a node, normalised for comparison.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entry {
    /// `dst via gw dev [onlink]`, protocol 97.
    Route {
        dst: String,
        via: Option<String>,
        dev: String,
        onlink: bool,
    },
    /// A permanent neighbour on the tunnel device: `ip lladdr mac`.
    Neigh { ip: String, mac: String },
    /// A permanent FDB entry of the tunnel device: `mac dst ip`.
    Fdb { mac: String, dst: String },
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Route {
                dst,
                via,
                dev,
                onlink,
            } => {
                write!(f, "route {dst}")?;
                if let Some(v) = via {
                    write!(f, " via {v}")?;
                }
                write!(f, " dev {dev}")?;
                if *onlink {
                    write!(f, " onlink")?;
                }
                Ok(())
            }
            Entry::Neigh { ip, mac } => write!(f, "neigh {ip} lladdr {mac} PERMANENT"),
            Entry::Fdb { mac, dst } => write!(f, "fdb {mac} dst {dst} permanent"),
        }
    }
}

impl Entry {
    /// True when the entry names any of `tokens` (an address, a CIDR, a MAC) exactly.
    pub fn mentions(&self, tokens: &[String]) -> bool {
        let fields: Vec<&str> = match self {
            Entry::Route { dst, via, .. } => {
                let mut v = vec![dst.as_str()];
                if let Some(g) = via {
                    v.push(g);
                }
                v
            }
            Entry::Neigh { ip, mac } => vec![ip, mac],
            Entry::Fdb { mac, dst } => vec![mac, dst],
        };
        fields
            .iter()
            .any(|f| tokens.iter().any(|t| t.eq_ignore_ascii_case(f)))
    }
}

fn json(prog: &str, args: &[&str]) -> Value {
    let out = crate::try_sh(prog, args).unwrap_or_default();
    if out.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{prog} {args:?}: bad JSON ({e}): {out}"))
}

/// One entry a line, indented, for failure messages (`(none)` when empty).
pub fn show(set: &BTreeSet<Entry>) -> String {
    if set.is_empty() {
        return "    (none)".into();
    }
    set.iter()
        .map(|e| format!("    {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `-4` or `-6`.
fn family(v6: bool) -> &'static str {
    if v6 {
        "-6"
    } else {
        "-4"
    }
}

/// The IPv4 routes of protocol 97 in netns `ns`.
pub fn routes(ns: &str) -> BTreeSet<Entry> {
    routes_of(ns, false)
}

/// The IPv4 or IPv6 routes of protocol 97 in netns `ns`.
pub fn routes_of(ns: &str, v6: bool) -> BTreeSet<Entry> {
    let v = json(
        "ip",
        &[
            "-n",
            ns,
            family(v6),
            "-j",
            "route",
            "show",
            "proto",
            ROUTE_PROTO,
        ],
    );
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| Entry::Route {
            dst: r["dst"].as_str().unwrap_or("").to_string(),
            // `via inet6 ADDR` (an IPv4 route with an IPv6 gateway, RFC 8950) has no
            // "gateway" in iproute2's JSON but "via": {"family", "host"}.
            via: r["gateway"]
                .as_str()
                .or_else(|| r["via"]["host"].as_str())
                .map(String::from),
            dev: r["dev"].as_str().unwrap_or("").to_string(),
            onlink: r["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f.as_str() == Some("onlink")),
        })
        .collect()
}

/// The permanent IPv4 neighbour entries of `dev` in `ns` (empty when there is no `dev`).
pub fn neighs(ns: &str, dev: &str) -> BTreeSet<Entry> {
    neighs_of(ns, dev, false)
}

/// The permanent IPv4 or IPv6 neighbour entries of `dev` in `ns`.
pub fn neighs_of(ns: &str, dev: &str, v6: bool) -> BTreeSet<Entry> {
    let v = json(
        "ip",
        &["-n", ns, family(v6), "-j", "neigh", "show", "dev", dev],
    );
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["state"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s.as_str() == Some("PERMANENT"))
        })
        .map(|n| Entry::Neigh {
            ip: n["dst"].as_str().unwrap_or("").to_string(),
            mac: n["lladdr"].as_str().unwrap_or("").to_lowercase(),
        })
        .collect()
}

/// The FDB entries of `dev` in `ns` that carry a remote (`dst`).
pub fn fdb(ns: &str, dev: &str) -> BTreeSet<Entry> {
    let v = json(
        "ip",
        &[
            "netns", "exec", ns, "bridge", "-j", "fdb", "show", "dev", dev,
        ],
    );
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(Entry::Fdb {
                mac: e["mac"].as_str()?.to_lowercase(),
                dst: e["dst"].as_str()?.to_string(),
            })
        })
        .collect()
}

/// Every object `ipamd` owns in `ns`: proto-97 routes, and the neighbour and FDB entries
/// of the VXLAN device `vxlan_dev` when given.
pub fn owned(ns: &str, vxlan_dev: Option<&str>) -> BTreeSet<Entry> {
    let mut s = routes(ns);
    if let Some(d) = vxlan_dev {
        s.extend(neighs(ns, d));
        s.extend(fdb(ns, d));
    }
    s
}

/// The address (without prefix) and MAC of `dev` in `ns`: `(first IPv4, mac)`.
pub fn link_addr(ns: &str, dev: &str) -> Result<(Option<String>, String), String> {
    let out = crate::try_sh("ip", &["-n", ns, "-j", "addr", "show", "dev", dev])?;
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let link = &v[0];
    let mac = link["address"]
        .as_str()
        .ok_or_else(|| format!("{dev} in {ns} has no MAC"))?
        .to_lowercase();
    let ip = link["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["family"].as_str() == Some("inet"))
        .and_then(|a| a["local"].as_str())
        .map(String::from);
    Ok((ip, mac))
}

/// The MTU of `dev` in `ns`.
pub fn link_mtu(ns: &str, dev: &str) -> Result<u32, String> {
    let out = crate::try_sh("ip", &["-n", ns, "-j", "link", "show", "dev", dev])?;
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    v[0]["mtu"]
        .as_u64()
        .map(|m| m as u32)
        .ok_or_else(|| format!("no mtu for {dev} in {ns}"))
}

/// A netlink monitor running in a node (`ip -N monitor route neigh`, `bridge monitor
/// fdb`), its output in a temp file. Killed on drop.
#[derive(Debug)]
pub struct Monitor {
    child: Option<Child>,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Monitor {
    /// Starts `argv` inside `ns`, stdout and stderr to a file.
    pub fn start(ns: &str, argv: &[&str]) -> Monitor {
        let dir = tempfile::Builder::new()
            .prefix("mn-monitor-")
            .tempdir()
            .expect("tempdir");
        let out = dir.path().join("events");
        let f = std::fs::File::create(&out).expect("monitor output");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("fd"))
            .stderr(f)
            .spawn()
            .expect("spawn monitor");
        Monitor {
            child: Some(child),
            out,
            _dir: dir,
        }
    }

    /// `ip -N monitor route neigh` (numeric protocols: `proto 97`).
    pub fn routes_and_neighbours(ns: &str) -> Monitor {
        Monitor::start(ns, &["ip", "-N", "monitor", "route", "neigh"])
    }

    /// `bridge monitor fdb`.
    pub fn fdb(ns: &str) -> Monitor {
        Monitor::start(ns, &["bridge", "monitor", "fdb"])
    }

    /// What it printed so far.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until a line of its output satisfies `pred` (e.g. to know it is listening).
    pub fn wait_for_line(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<(), String> {
        super::wait_until(&format!("monitor saw {what}"), timeout, || {
            let t = self.text();
            if t.lines().any(&pred) {
                Ok(())
            } else {
                Err(format!("output so far: {t:?}"))
            }
        })
    }

    /// Stops it and returns everything it printed.
    pub fn stop(mut self) -> String {
        if let Some(mut c) = self.child.take() {
            std::thread::sleep(Duration::from_millis(100));
            let _ = c.kill();
            let _ = c.wait();
        }
        self.text()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
