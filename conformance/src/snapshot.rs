//! Snapshots of the host resources one attachment may own, for "everything ADD created
//! is gone after DEL": host links, addresses, routes (every table), static neighbour
//! entries (`ip -j neigh`), FDB entries (`bridge -j fdb`), nftables rules
//! (`nft -j list ruleset`) and the IPAM store files of the data dir.
//!
//! Tests run in parallel on a shared machine, so a snapshot only holds what is in the
//! [`Scope`] of one test: its bridge and the links enslaved to it, the host interfaces
//! named by the ADD result, its subnet, its container ids and its data dir. Each entry
//! is one line of text; a leak is a line that appeared after ADD and is still there
//! after DEL.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::try_sh;

/// What belongs to the test.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub bridge: String,
    /// Host-side interface names (from ADD results: interfaces without `sandbox`).
    pub host_ifaces: Vec<String>,
    /// Textual prefix of the subnet's addresses, e.g. `10.213.7.`.
    pub prefix: String,
    pub container_ids: Vec<String>,
    pub data_dir: PathBuf,
}

/// A set of resource lines.
pub type Snapshot = BTreeSet<String>;

/// What the kernel makes by itself, asynchronously, once a link of ours gets carrier:
/// the IPv6 link-local address, its routes (`fe80::/64`, the local and anycast ones,
/// `ff00::/8`) and the multicast FDB entries of the groups it joins (`33:33:…`,
/// `01:00:5e:…`). They can land after the warm-up ADD returned and were then counted as
/// made by the next ADD (a leak "left after DEL", under load, with any plugin version).
/// They live and die with their link, which the snapshot tracks itself.
fn kernel_autoconf(text: &str) -> bool {
    text.starts_with("fe80:")
        || text.starts_with("ff00:")
        || text.starts_with("33:33:")
        || text.starts_with("01:00:5e:")
}

fn json(prog: &str, args: &[&str]) -> Value {
    try_sh(prog, args)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

impl Scope {
    fn dev_ours(&self, dev: &str, master: &str) -> bool {
        !dev.is_empty()
            && (dev == self.bridge
                || master == self.bridge
                || self.host_ifaces.iter().any(|h| h == dev))
    }

    fn mentions(&self, text: &str) -> bool {
        text.contains(&self.prefix) || self.container_ids.iter().any(|c| text.contains(c.as_str()))
    }

    /// Takes a snapshot now.
    pub fn take(&self) -> Snapshot {
        let mut out = Snapshot::new();
        // Links, and the set of our devices (for addresses, routes, neighbours).
        let mut devs: Vec<String> = Vec::new();
        for l in json("ip", &["-j", "link", "show"])
            .as_array()
            .into_iter()
            .flatten()
        {
            let (name, master) = (s(&l["ifname"]), s(&l["master"]));
            if self.dev_ours(name, master) {
                out.insert(format!("link {name} master={master}"));
                devs.push(name.to_string());
            }
        }
        let ours = |d: &str| devs.iter().any(|x| x == d);
        for l in json("ip", &["-j", "addr", "show"])
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = s(&l["ifname"]);
            for a in l["addr_info"].as_array().into_iter().flatten() {
                let local = s(&a["local"]);
                if kernel_autoconf(local) {
                    continue;
                }
                if ours(name) || local.starts_with(&self.prefix) {
                    out.insert(format!("addr {name} {local}/{}", a["prefixlen"]));
                }
            }
        }
        for fam in ["-4", "-6"] {
            for r in json("ip", &[fam, "-j", "route", "show", "table", "all"])
                .as_array()
                .into_iter()
                .flatten()
            {
                let (dst, gw, dev) = (s(&r["dst"]), s(&r["gateway"]), s(&r["dev"]));
                if kernel_autoconf(dst) {
                    continue;
                }
                if ours(dev) || dst.starts_with(&self.prefix) || gw.starts_with(&self.prefix) {
                    out.insert(format!(
                        "route {dst} via={gw} dev={dev} table={} type={}",
                        r["table"].as_str().unwrap_or("main"),
                        s(&r["type"])
                    ));
                }
            }
        }
        // Static neighbour entries only: dynamic ones are the kernel's, not the plugin's.
        for n in json("ip", &["-j", "neigh", "show"])
            .as_array()
            .into_iter()
            .flatten()
        {
            let states: Vec<&str> = n["state"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let (dst, dev) = (s(&n["dst"]), s(&n["dev"]));
            if !(states.contains(&"PERMANENT") || states.contains(&"NOARP")) {
                continue;
            }
            if ours(dev) || dst.starts_with(&self.prefix) {
                out.insert(format!("neigh {dst} dev={dev} lladdr={}", s(&n["lladdr"])));
            }
        }
        for f in json("bridge", &["-j", "fdb", "show"])
            .as_array()
            .into_iter()
            .flatten()
        {
            let (dev, master) = (s(&f["ifname"]), s(&f["master"]));
            if kernel_autoconf(s(&f["mac"])) {
                continue;
            }
            if self.dev_ours(dev, master) || ours(dev) {
                out.insert(format!(
                    "fdb {} dev={dev} master={master} state={} dst={}",
                    s(&f["mac"]),
                    s(&f["state"]),
                    s(&f["dst"])
                ));
            }
        }
        if let Ok(rules) = crate::inspect::nft_rules() {
            for r in &rules {
                let text = format!("{} {}", r.expr, r.comment.clone().unwrap_or_default());
                if self.mentions(&text) {
                    out.insert(format!("nft {} {} {} {}", r.family, r.table, r.chain, text));
                    if let Some(t) = r.jump_target() {
                        out.insert(format!("nft-chain {} {} {t}", r.family, r.table));
                    }
                }
            }
        }
        self.store(&self.data_dir, &mut out);
        out
    }

    fn store(&self, dir: &Path, out: &mut Snapshot) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(&self.data_dir)
                .unwrap_or(&p)
                .display()
                .to_string();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                self.store(&p, out);
            } else {
                out.insert(format!("file {rel}"));
                // cni-ipam's entries are symlinks whose target is the data; never follow them.
                let text = std::fs::read_link(&p)
                    .map(|t| t.to_string_lossy().into_owned())
                    .or_else(|_| std::fs::read_to_string(&p));
                if let Ok(text) = text {
                    for c in &self.container_ids {
                        if text.contains(c.as_str()) {
                            out.insert(format!("file {rel} mentions {c}"));
                        }
                    }
                }
            }
        }
    }
}

/// The lines that appeared between `before` and `after_add` and are still in
/// `after_del`.
pub fn leaked(before: &Snapshot, after_add: &Snapshot, after_del: &Snapshot) -> Vec<String> {
    after_add
        .difference(before)
        .filter(|l| after_del.contains(*l))
        .cloned()
        .collect()
}

/// The lines that appeared between `before` and `after`.
pub fn added(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    after.difference(before).cloned().collect()
}
