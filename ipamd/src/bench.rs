//! `ipamd bench`: what an ADD through `cni-ipam` (cluster mode) costs when the node has
//! a block at hand, and when the ADD must first claim a new block from the cluster store
//! (etcd: a compare-and-swap transaction; file: a flock-ed rewrite), next to the
//! reference `host-local` in the same run (these machines are noisy: compare ratios).
//!
//! - `warm`: one ADD claims a block big enough for every later one; the next `count`
//!   ADDs are timed (never a claim);
//! - `claim`: blocks of /30 (2 usable addresses), so every other ADD claims a block;
//!   each ADD is classed by whether the node-local block cache grew;
//! - `host-local`: the reference plugin with a /16 range.
//!
//! Each series uses its own half of `--pool` and its own node name, and is cleaned up
//! (DEL of every attachment, node record removed, data dir deleted) at the end.

use ipam::cluster::{local, ClusterStore, StoreUrl};
use ipam::Store;
use ipnetwork::{IpNetwork, Ipv4Network};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::BenchArgs;
use crate::error::Error;

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

struct Series {
    name: String,
    samples: Vec<Duration>,
}

pub(crate) async fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<(), Error> {
    let pool = match args.pools.first() {
        Some(IpNetwork::V4(p)) if p.prefix() <= 20 => *p,
        _ => {
            return Err(Error::Usage(
                "bench: --pool must be one IPv4 CIDR of /20 or larger".into(),
            ))
        }
    };
    let halves = halves(pool)?;
    let dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ipamd-bench-{}", std::process::id()))
    });
    let cluster = ClusterStore::connect(&StoreUrl::parse(&args.store)?).await?;
    let pid = std::process::id();
    let n = args.count.max(2);

    // warm: a block holding every ADD of the series.
    let warm_prefix = prefix_for(n + 4);
    let warm_node = format!("bench-warm-{pid}");
    let warm = Bench {
        plugin: &args.plugin,
        conf: cluster_conf(
            "bench-warm",
            halves.0,
            warm_prefix,
            &warm_node,
            &args.store,
            &dir,
        ),
        store_dir: dir.join("bench-warm"),
    };
    warm.add("warmup")?;
    let mut s_warm = Series {
        name: format!("warm (/{warm_prefix} at hand)"),
        samples: Vec::new(),
    };
    for i in 0..n {
        s_warm.samples.push(warm.add(&format!("w{i}"))?.0);
    }

    // claim: /30 blocks, every other ADD claims.
    let claim_node = format!("bench-claim-{pid}");
    let claim = Bench {
        plugin: &args.plugin,
        conf: cluster_conf("bench-claim", halves.1, 30, &claim_node, &args.store, &dir),
        store_dir: dir.join("bench-claim"),
    };
    let mut s_claim = Series {
        name: "claim (ADD that claimed a /30)".into(),
        samples: Vec::new(),
    };
    let mut s_noclaim = Series {
        name: "claim series, no claim".into(),
        samples: Vec::new(),
    };
    for i in 0..n {
        let (t, claimed) = claim.add(&format!("c{i}"))?;
        if claimed {
            s_claim.samples.push(t);
        } else {
            s_noclaim.samples.push(t);
        }
    }

    let mut series = vec![s_warm, s_claim, s_noclaim];
    if Path::new(HOST_LOCAL).exists() {
        let hl = Bench {
            plugin: Path::new(HOST_LOCAL),
            conf: serde_json::json!({
                "cniVersion": "1.0.0", "name": "bench-hl", "type": "bridge",
                "ipam": {"type": "host-local", "subnet": "10.255.0.0/16",
                         "dataDir": dir.join("host-local")}
            })
            .to_string(),
            store_dir: dir.join("host-local"),
        };
        let mut s = Series {
            name: "host-local (reference)".into(),
            samples: Vec::new(),
        };
        for i in 0..n {
            s.samples.push(hl.add(&format!("h{i}"))?.0);
        }
        series.push(s);
    }

    // Cleanup: DELs are not timed; node records go, with their blocks.
    for (b, prefix) in [(&warm, "w"), (&claim, "c")] {
        for i in 0..n {
            b.del(&format!("{prefix}{i}"));
        }
        b.del("warmup");
    }
    for node in [&warm_node, &claim_node] {
        if let Err(e) = cluster.remove_node(node).await {
            tracing::warn!(%node, error = %e, "cannot remove bench node");
        }
    }
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }

    let mut text = format!(
        "{:<34} {:>5} {:>10} {:>10}\n",
        "SERIES", "N", "MEDIAN", "P90"
    );
    for s in &mut series {
        s.samples.sort();
        text.push_str(&format!(
            "{:<34} {:>5} {:>10} {:>10}\n",
            s.name,
            s.samples.len(),
            ms(quantile(&s.samples, 0.5)),
            ms(quantile(&s.samples, 0.9)),
        ));
    }
    out.write_all(text.as_bytes())
        .map_err(|e| Error::io("write stdout", e))
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.2}ms", d.as_secs_f64() * 1000.0),
    )
}

fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied()
}

/// The smallest IPv4 block prefix with at least `n` addresses (at most /30).
fn prefix_for(n: usize) -> u8 {
    let mut p = 30u8;
    while p > 8 && (1usize << (32 - u32::from(p))) < n {
        p -= 1;
    }
    p
}

fn halves(p: Ipv4Network) -> Result<(IpNetwork, IpNetwork), Error> {
    let half = p.prefix() + 1;
    let bad = |e: ipnetwork::IpNetworkError| Error::Usage(format!("bench: --pool {p}: {e}"));
    let lo = Ipv4Network::new(p.network(), half).map_err(bad)?;
    let size = 1u32 << (32 - u32::from(half));
    let hi_ip = std::net::Ipv4Addr::from(u32::from(p.network()) + size);
    let hi = Ipv4Network::new(hi_ip, half).map_err(bad)?;
    Ok((IpNetwork::V4(lo), IpNetwork::V4(hi)))
}

fn cluster_conf(
    name: &str,
    pool: IpNetwork,
    block: u8,
    node: &str,
    store: &str,
    dir: &Path,
) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": name, "type": "bridge",
        "ipam": {"type": "cni-ipam", "pool": pool.to_string(), "blockSize": block,
                 "nodeName": node, "store": store, "dataDir": dir}
    })
    .to_string()
}

struct Bench<'a> {
    plugin: &'a Path,
    conf: String,
    store_dir: PathBuf,
}

impl Bench<'_> {
    fn blocks(&self) -> usize {
        Store::open(&self.store_dir)
            .and_then(|s| local::cached_blocks(&s))
            .map_or(0, |b| b.len())
    }

    /// One timed ADD: its wall time (process included) and whether it claimed a block.
    fn add(&self, id: &str) -> Result<(Duration, bool), Error> {
        let before = self.blocks();
        let t = Instant::now();
        let out = self.exec("ADD", id)?;
        let took = t.elapsed();
        if !out.status.success() {
            return Err(Error::Usage(format!(
                "bench: ADD {id} with {} failed: {}{}",
                self.plugin.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok((took, self.blocks() > before))
    }

    fn del(&self, id: &str) {
        if let Err(e) = self.exec("DEL", id) {
            tracing::warn!(id, error = %e, "bench DEL");
        }
    }

    fn exec(&self, cmd: &str, id: &str) -> Result<std::process::Output, Error> {
        let dir = self.plugin.parent().unwrap_or(Path::new("/"));
        let mut child = Command::new(self.plugin)
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", "/proc/self/ns/net")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("run {}", self.plugin.display()), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(self.conf.as_bytes())
                .map_err(|e| Error::io("plugin stdin", e))?;
        }
        child
            .wait_with_output()
            .map_err(|e| Error::io(format!("wait for {}", self.plugin.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(prefix_for(204), 24);
        assert_eq!(prefix_for(3), 30);
        let (a, b) = halves("10.250.0.0/16".parse().unwrap()).unwrap();
        assert_eq!(a.to_string(), "10.250.0.0/17");
        assert_eq!(b.to_string(), "10.250.128.0/17");
        let d: Vec<_> = [3, 1, 2]
            .iter()
            .map(|&n| Duration::from_millis(n))
            .collect();
        let mut d = d;
        d.sort();
        assert_eq!(quantile(&d, 0.5), Some(Duration::from_millis(2)));
    }
}
