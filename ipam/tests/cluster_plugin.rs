//! `cni-ipam` in cluster mode, end to end through the binary: 3 "nodes" (node names
//! with their own data dirs) sharing one cluster store, file or a real etcd.

mod cluster_util;

use cluster_util::{connect, Backend, Etcd};
use ipam::cluster::{local, NodeRecord};
use ipnetwork::IpNetwork;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cni-ipam");

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn conf(url: &str, node: &str, dir: &Path, pool: &str, block: u8) -> Value {
    json!({"cniVersion": "1.0.0", "name": "pods", "type": "cni-bridge",
        "ipam": {"type": "cni-ipam", "pool": pool, "blockSize": block, "nodeName": node,
                 "store": url, "dataDir": dir, "routes": [{"dst": "0.0.0.0/0"}]}})
}

fn spawn(cmd: &str, conf: &Value, cid: &str) -> Child {
    let mut child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", cmd)
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", "/proc/self/ns/net")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    child
}

/// (exit code, stdout JSON)
fn finish(child: Child) -> (i32, Value) {
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let v = serde_json::from_str(&out).unwrap_or(Value::String(out));
    (o.status.code().unwrap_or(-1), v)
}

fn add(conf: &Value, cid: &str) -> (i32, Value) {
    finish(spawn("ADD", conf, cid))
}

fn addr(v: &Value) -> IpNetwork {
    v["ips"][0]["address"].as_str().unwrap().parse().unwrap()
}

/// `n` ADDs for one node, `par` processes at a time.
fn adds(conf: &Value, node: &str, n: usize, par: usize) -> Vec<IpNetwork> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let batch: Vec<Child> = (i..(i + par).min(n))
            .map(|k| spawn("ADD", conf, &format!("{node}-c{k}")))
            .collect();
        i += batch.len();
        for c in batch {
            let (code, v) = finish(c);
            assert_eq!(code, 0, "{v}");
            assert!(v["ips"][0].get("gateway").is_none(), "{v}");
            out.push(addr(&v));
        }
    }
    out
}

async fn records(url: &str) -> BTreeMap<String, NodeRecord> {
    let s = connect(url).await;
    s.nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.info.name.clone(), r))
        .collect()
}

fn assert_no_block_twice(recs: &BTreeMap<String, NodeRecord>) {
    let mut seen = BTreeMap::new();
    for r in recs.values() {
        for b in &r.blocks {
            if let Some(o) = seen.insert(*b, r.info.name.clone()) {
                panic!("block {b} owned by {o} and {}", r.info.name);
            }
        }
    }
}

/// 3 nodes x 70 ADDs at once (5 processes per node at a time) on /28 blocks (14
/// usable addresses: 5-6 claims per node, racing): no address twice, every address in
/// a block its node owns, no block twice; the key entries record netns and time.
fn three_nodes_racing(backend: &Backend, prefix: &str) {
    let url = backend.url(prefix);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let c = conf(
                &url,
                &format!("node-{i}"),
                dirs[i].path(),
                "10.60.0.0/22",
                28,
            );
            std::thread::spawn(move || adds(&c, &format!("node-{i}"), 70, 5))
        })
        .collect();
    let per_node: Vec<Vec<IpNetwork>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let all: BTreeSet<_> = per_node.iter().flatten().map(|n| n.ip()).collect();
    assert_eq!(all.len(), 210, "an address was given twice");
    let recs = rt().block_on(records(&url));
    assert_no_block_twice(&recs);
    for (i, ips) in per_node.iter().enumerate() {
        let rec = &recs[&format!("node-{i}")];
        for n in ips {
            assert_eq!(n.prefix(), 28);
            assert!(
                rec.blocks.iter().any(|b| b.contains(n.ip())),
                "{n} not in node-{i}'s blocks"
            );
        }
        let store = ipam::Store::open(dirs[i].path().join("pods")).unwrap();
        let cached: BTreeSet<_> = local::cached_blocks(&store).unwrap().into_iter().collect();
        assert_eq!(
            cached,
            rec.blocks.iter().copied().collect(),
            "node-{i} cache"
        );
        let a = store
            .get(&ipam::AllocKey::new(format!("node-{i}-c0"), "eth0"))
            .unwrap()
            .unwrap();
        assert_eq!(a.netns.as_deref(), Some(Path::new("/proc/self/ns/net")));
        assert!(a.created.is_some());
    }
    // A repeated ADD answers the same address; DEL frees it.
    let c = conf(&url, "node-0", dirs[0].path(), "10.60.0.0/22", 28);
    let (code, v) = add(&c, "node-0-c3");
    assert_eq!((code, addr(&v)), (0, per_node[0][3]));
    assert_eq!(finish(spawn("DEL", &c, "node-0-c3")).0, 0);
}

#[test]
fn file_three_nodes_racing() {
    let d = tempfile::tempdir().unwrap();
    three_nodes_racing(&Backend::file(d.path()), "");
}

#[test]
fn etcd_three_nodes_racing() {
    three_nodes_racing(&Backend::Etcd(Etcd::start()), "race");
}

/// etcd down: pods still get addresses from the cached block; when it is full the
/// claim fails with code 11; etcd back: claims resume.
#[test]
fn etcd_down_uses_cached_blocks_then_code_11_then_resumes() {
    let mut etcd = Etcd::start();
    let d = tempfile::tempdir().unwrap();
    // /29 blocks: 6 usable addresses.
    let c = conf(&etcd.url("down"), "node-d", d.path(), "10.61.0.0/24", 29);
    let first = addr(&add(&c, "d0").1);
    assert_eq!(first, "10.61.0.1/29".parse().unwrap());
    etcd.stop();
    for k in 1..6 {
        let (code, v) = add(&c, &format!("d{k}"));
        assert_eq!(code, 0, "{v}");
    }
    let t = Instant::now();
    let (code, v) = add(&c, "d6");
    assert_ne!(code, 0, "{v}");
    assert_eq!(v["code"], 11, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("unavailable"), "{v}");
    assert!(t.elapsed() < Duration::from_secs(10));
    // DEL and CHECK work without the cluster store.
    assert_eq!(finish(spawn("DEL", &c, "d5")).0, 0);
    assert_eq!(
        addr(&add(&c, "d6").1).ip(),
        "10.61.0.6".parse::<std::net::IpAddr>().unwrap()
    );
    etcd.restart();
    let (code, v) = add(&c, "d7");
    assert_eq!(code, 0, "{v}");
    assert_eq!(addr(&v), "10.61.0.9/29".parse().unwrap());
}

/// `kill -9` of cni-ipam processes at random points (many of them mid-claim) on two
/// nodes: no block is owned twice, every cached block is owned by its node, and a
/// claimed-but-uncached block is only an unused block of the node (`adopt_owned`).
fn kill9_mid_claim(backend: &Backend, prefix: &str) {
    let url = backend.url(prefix);
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // /30 blocks: 2 usable addresses, so nearly every ADD claims.
    let confs: Vec<Value> = (0..2)
        .map(|i| conf(&url, &format!("k{i}"), dirs[i].path(), "10.62.0.0/24", 30))
        .collect();
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for round in 0..6 {
        let children: Vec<Child> = (0..8)
            .map(|k| spawn("ADD", &confs[k % 2], &format!("r{round}-{k}")))
            .collect();
        for mut ch in children {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(seed % 15));
            let _ = ch.kill(); // SIGKILL
            let _ = ch.wait();
        }
    }
    let recs = rt().block_on(records(&url));
    assert_no_block_twice(&recs);
    for (i, dir) in dirs.iter().enumerate() {
        let store = ipam::Store::open(dir.path().join("pods")).unwrap();
        let owned: BTreeSet<IpNetwork> = recs
            .get(&format!("k{i}"))
            .map(|r| r.blocks.iter().copied().collect())
            .unwrap_or_default();
        let cached: BTreeSet<IpNetwork> =
            local::cached_blocks(&store).unwrap().into_iter().collect();
        assert!(
            cached.is_subset(&owned),
            "cached {cached:?} owned {owned:?}"
        );
        rt().block_on(async {
            let s = connect(&url).await;
            let adopted = local::adopt_owned(&store, &s, &format!("k{i}"))
                .await
                .unwrap();
            eprintln!(
                "k{i}: {} block(s) owned, {} adopted after kill -9",
                owned.len(),
                adopted.len()
            );
        });
        let cached: BTreeSet<IpNetwork> =
            local::cached_blocks(&store).unwrap().into_iter().collect();
        assert_eq!(cached, owned);
    }
    // Allocation goes on normally afterwards, with no address twice.
    let mut all = BTreeSet::new();
    for (i, c) in confs.iter().enumerate() {
        for ip in adds(c, &format!("after{i}"), 10, 5) {
            assert!(all.insert(ip.ip()), "{ip} twice");
        }
    }
    assert_no_block_twice(&rt().block_on(records(&url)));
}

#[test]
fn file_kill9_mid_claim() {
    let d = tempfile::tempdir().unwrap();
    kill9_mid_claim(&Backend::file(d.path()), "");
}

#[test]
fn etcd_kill9_mid_claim() {
    kill9_mid_claim(&Backend::Etcd(Etcd::start()), "kill");
}

/// Not a test: `cargo test -p ipam --test cluster_plugin --release -- --ignored
/// --nocapture bench` prints ADDs per second (sequential, one process per ADD).
#[test]
#[ignore]
fn bench_adds_per_second() {
    const N: usize = 300;
    let run = |c: &Value, label: &str| {
        let t = Instant::now();
        for k in 0..N {
            let (code, v) = add(c, &format!("b{k}"));
            assert_eq!(code, 0, "{label}: {v}");
        }
        let rate = N as f64 / t.elapsed().as_secs_f64();
        println!("{label}: {N} ADDs in {:?}: {rate:.0}/s", t.elapsed());
        rate
    };
    let etcd = Etcd::start();
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let d3 = tempfile::tempdir().unwrap();
    let d4 = tempfile::tempdir().unwrap();
    let file_url = format!("file://{}", d1.path().join("cluster.json").display());
    run(
        &conf(&file_url, "bf", d2.path(), "10.90.0.0/16", 26),
        "cni-ipam cluster file /26",
    );
    run(
        &conf(&etcd.url("bench"), "be", d3.path(), "10.91.0.0/16", 26),
        "cni-ipam cluster etcd /26",
    );
    run(
        &conf(&etcd.url("bench2"), "be2", d4.path(), "10.92.0.0/16", 30),
        "cni-ipam cluster etcd /30 (a claim every 2nd ADD)",
    );
    let d6 = tempfile::tempdir().unwrap();
    let local_mode = json!({"cniVersion": "1.0.0", "name": "pods", "type": "cni-bridge",
        "ipam": {"type": "cni-ipam", "subnet": "10.94.0.0/16", "dataDir": d6.path()}});
    run(
        &local_mode,
        "cni-ipam host-local mode (same store, no cluster)",
    );
    let hl = Path::new("/usr/lib/cni/host-local");
    if hl.exists() {
        let d5 = tempfile::tempdir().unwrap();
        let c = json!({"cniVersion": "1.0.0", "name": "pods", "type": "bridge",
            "ipam": {"type": "host-local", "subnet": "10.93.0.0/16", "dataDir": d5.path()}});
        let t = Instant::now();
        for k in 0..N {
            let mut child = Command::new(hl)
                .env("CNI_COMMAND", "ADD")
                .env("CNI_CONTAINERID", format!("h{k}"))
                .env("CNI_IFNAME", "eth0")
                .env("CNI_NETNS", "/proc/self/ns/net")
                .env("CNI_PATH", "/usr/lib/cni")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(c.to_string().as_bytes())
                .unwrap();
            assert!(child.wait_with_output().unwrap().status.success());
        }
        println!(
            "host-local: {N} ADDs in {:?}: {:.0}/s",
            t.elapsed(),
            N as f64 / t.elapsed().as_secs_f64()
        );
    }
}

/// An empty block is released (uncached, then freed in the store); a used one is kept.
#[test]
fn file_release_if_unused() {
    let d = tempfile::tempdir().unwrap();
    let url = format!("file://{}", d.path().join("cluster.json").display());
    let c = conf(&url, "rel", d.path(), "10.63.0.0/24", 29);
    let a = addr(&add(&c, "u0").1);
    rt().block_on(async {
        let s = connect(&url).await;
        let store = ipam::Store::open(d.path().join("pods")).unwrap();
        let block: IpNetwork = "10.63.0.0/29".parse().unwrap();
        assert!(block.contains(a.ip()));
        assert!(!local::release_if_unused(&store, &s, "rel", block)
            .await
            .unwrap());
        assert_eq!(finish(spawn("DEL", &c, "u0")).0, 0);
        assert!(local::release_if_unused(&store, &s, "rel", block)
            .await
            .unwrap());
        assert!(local::cached_blocks(&store).unwrap().is_empty());
        assert!(s.node("rel").await.unwrap().unwrap().blocks.is_empty());
        // The next ADD claims again (the same, now free, block).
    });
    let again = addr(&add(&c, "u1").1);
    assert!(
        "10.63.0.0/29"
            .parse::<IpNetwork>()
            .unwrap()
            .contains(again.ip()),
        "{again}"
    );
}

/// Issue 14 item 2, through the binary: a node's block cache claimed from one store is
/// refused for good once the node reaches another store (the first was lost and
/// recreated, or replaced): its claim fails with 101 and so does every later ADD, even
/// one the cached blocks could serve. Before, the node went on with the new store.
fn cache_of_a_replaced_store_is_refused(url1: &str, url2: &str) {
    let da = tempfile::tempdir().unwrap();
    let c1 = conf(url1, "ra", da.path(), "10.83.0.0/24", 30);
    let c2 = conf(url2, "ra", da.path(), "10.83.0.0/24", 30);
    let (code, v) = add(&c1, "a1");
    assert_eq!(code, 0, "{v}");
    let (code, v) = add(&c1, "a2");
    assert_eq!(code, 0, "{v}");
    let block: IpNetwork = "10.83.0.0/30".parse().unwrap();
    assert!(block.contains(addr(&v).ip()));
    // The block is full: the next ADD claims, from what is now another store.
    let (code, v) = add(&c2, "a3");
    assert_eq!((code, &v["code"]), (1, &json!(101)), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.contains("lost or replaced") && msg.contains("blocks.json"),
        "{msg}"
    );
    // Refused for good, even where the cache has room, whatever the store.
    let (code, v) = finish(spawn("DEL", &c1, "a1"));
    assert_eq!(code, 0, "{v}");
    for c in [&c1, &c2] {
        let (code, v) = add(c, "a4");
        assert_eq!((code, &v["code"]), (1, &json!(101)), "{v}");
    }
    let store = ipam::Store::open(da.path().join("pods")).unwrap();
    assert!(store
        .get(&ipam::AllocKey::new("a4", "eth0"))
        .unwrap()
        .is_none());
}

#[test]
fn file_cache_of_a_replaced_store_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let u1 = format!("file://{}", d.path().join("one/cluster.json").display());
    let u2 = format!("file://{}", d.path().join("two/cluster.json").display());
    cache_of_a_replaced_store_is_refused(&u1, &u2);
}

#[test]
fn etcd_cache_of_a_replaced_store_is_refused() {
    let b = Backend::Etcd(Etcd::start());
    cache_of_a_replaced_store_is_refused(&b.url("one"), &b.url("two"));
}

/// Issue 14 item 2, through the binary: the file store deleted while its lock is
/// left: the second node's ADD is refused (101) instead of claiming the first node's
/// block from a new empty store; the first node goes on from its checked cache.
#[test]
fn file_store_deleted_second_node_is_refused_not_given_the_same_block() {
    let d = tempfile::tempdir().unwrap();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let path = d.path().join("cluster.json");
    let url = format!("file://{}", path.display());
    let ca = conf(&url, "la", da.path(), "10.84.0.0/24", 29);
    let cb = conf(&url, "lb", db.path(), "10.84.0.0/24", 29);
    let (code, v) = add(&ca, "a1");
    assert_eq!(code, 0, "{v}");
    let a1 = addr(&v);
    std::fs::remove_file(&path).unwrap();
    let (code, v) = add(&cb, "b1");
    assert_eq!((code, &v["code"]), (1, &json!(101)), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.contains("lost") && msg.contains("cluster.json.lock"),
        "{msg}"
    );
    assert!(!path.exists());
    let (code, v) = add(&ca, "a2");
    assert_eq!(code, 0, "{v}");
    assert_ne!(addr(&v), a1);
}

/// Issue 14 item 2, through the binary: a node's `blocks.json` edited to list another
/// node's block is checked against the store before it is used: the ADD is refused
/// (101, naming the block and both nodes), the block is removed from the cache, and
/// the next ADD gets an address of the node's own block.
fn cache_listing_another_nodes_block_is_refused(backend: &Backend, prefix: &str) {
    let url = backend.url(prefix);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ca = conf(&url, "fa", da.path(), "10.85.0.0/24", 28);
    let cb = conf(&url, "fb", db.path(), "10.85.0.0/24", 28);
    let (code, v) = add(&ca, "a1");
    assert_eq!(code, 0, "{v}");
    let (code, v) = add(&cb, "b1");
    assert_eq!(code, 0, "{v}");
    let recs = rt().block_on(records(&url));
    let (xa, xb) = (recs["fa"].blocks[0], recs["fb"].blocks[0]);
    assert!(xb.contains(addr(&v).ip()));
    // b's block first in a's cache, as a copy or a hand edit would leave it.
    let cache = da.path().join("pods/blocks.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    doc["blocks"] = json!([xb.to_string(), xa.to_string()]);
    std::fs::write(&cache, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (code, v) = add(&ca, "a2");
    assert_eq!((code, &v["code"]), (1, &json!(101)), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.contains(&xb.to_string()) && msg.contains("node fa") && msg.contains("node fb"),
        "{msg}"
    );
    let store = ipam::Store::open(da.path().join("pods")).unwrap();
    assert_eq!(local::cached_blocks(&store).unwrap(), vec![xa]);
    let (code, v) = add(&ca, "a2");
    assert_eq!(code, 0, "{v}");
    assert!(xa.contains(addr(&v).ip()), "{v}");
    let recs = rt().block_on(records(&url));
    assert_eq!(recs["fb"].blocks, vec![xb]);
    assert!(!recs["fa"].blocks.contains(&xb));
}

#[test]
fn file_cache_listing_another_nodes_block_is_refused() {
    let d = tempfile::tempdir().unwrap();
    cache_listing_another_nodes_block_is_refused(&Backend::file(d.path()), "");
}

#[test]
fn etcd_cache_listing_another_nodes_block_is_refused() {
    let b = Backend::Etcd(Etcd::start());
    cache_listing_another_nodes_block_is_refused(&b, "foreign");
}
