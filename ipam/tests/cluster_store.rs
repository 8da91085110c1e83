//! The cluster store contract, one generic body per behaviour, run against both
//! backends: the flock-ed JSON file and a real etcd started on loopback.

mod cluster_util;

use cluster_util::{connect, Backend, Etcd};
use ipam::cluster::{ClusterStore, NodeEvent, NodeInfo, Pool};
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn info(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        underlay_ip: Some("192.0.2.1".parse().unwrap()),
        backend: [("vtepMac".to_string(), "02:00:00:00:00:01".to_string())].into(),
    }
}

fn pool(cidr: &str, bs: u8) -> Pool {
    Pool::new(vec![cidr.parse().unwrap()], Some(bs), None).unwrap()
}

async fn register_renew_expire(url: &str, etcd: bool) {
    let s = connect(url).await;
    let a = s
        .register(&info("a"), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(a.info, info("a"));
    assert!(a.blocks.is_empty());
    s.register(&info("b"), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(s.nodes().await.unwrap().len(), 2);
    // Blocks survive a re-registration.
    let p = pool("10.10.0.0/24", 26);
    let blk = s.claim_block("a", &p, false, None).await.unwrap();
    let again = s
        .register(&info("a"), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(again.blocks, vec![blk]);
    // a renews, b does not.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(4500) {
        s.renew("a", Duration::from_secs(2)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(s.node("b").await.unwrap().is_none(), "b outlived its lease");
    let e = s.renew("b", Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(e, ipam::IpamError::NotFound(_)), "{e}");
    // b held no block: its record goes (file store; etcd deleted it with the lease).
    let expired = s.expire(Duration::ZERO).await.unwrap();
    if !etcd {
        assert_eq!(expired, vec!["b".to_string()]);
    }
    let names: Vec<String> = s
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.info.name)
        .collect();
    assert_eq!(names, vec!["a".to_string()]);
    assert_eq!(s.node("a").await.unwrap().unwrap().blocks, vec![blk]);
    assert!(s.release_block("b", blk).await.is_ok_and(|r| !r));
    assert!(s.release_block("a", blk).await.unwrap());
    s.remove_node("a").await.unwrap();
    assert!(s.nodes().await.unwrap().is_empty());
}

/// 3 nodes (each its own thread, runtime and connection) claim 21 blocks each of a
/// 64-block pool at the same time: no block twice; then exhaustion and maxBlocks.
async fn racing_claims(url: String) {
    let p = pool("10.50.0.0/20", 26);
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let (url, p) = (url.clone(), p.clone());
            std::thread::spawn(move || {
                rt().block_on(async move {
                    let s = connect(&url).await;
                    let name = format!("n{i}");
                    s.register(&info(&name), Duration::from_secs(60))
                        .await
                        .unwrap();
                    let mut got = Vec::new();
                    for _ in 0..21 {
                        got.push(s.claim_block(&name, &p, false, None).await.unwrap());
                    }
                    (name, got)
                })
            })
        })
        .collect();
    let results: Vec<(String, Vec<IpNetwork>)> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let all: Vec<IpNetwork> = results.iter().flat_map(|r| r.1.clone()).collect();
    let distinct: BTreeSet<IpNetwork> = all.iter().copied().collect();
    assert_eq!(all.len(), 63);
    assert_eq!(distinct.len(), 63, "a block was given twice");
    assert!(all.iter().all(|b| p.is_block(*b)));
    let s = connect(&url).await;
    for (name, got) in &results {
        let mut got = got.clone();
        got.sort();
        assert_eq!(s.node(name).await.unwrap().unwrap().blocks, got, "{name}");
    }
    // maxBlocksPerNode
    let e = s.claim_block("n0", &p, false, Some(21)).await.unwrap_err();
    assert_eq!(e.code(), 102);
    assert!(e.to_string().contains("maxBlocksPerNode"), "{e}");
    // The last block, then exhaustion (nobody is about to expire: code 102).
    s.claim_block("n0", &p, false, None).await.unwrap();
    let e = s.claim_block("n1", &p, false, None).await.unwrap_err();
    assert_eq!(e.code(), 102, "{e}");
    assert!(e.to_string().contains("exhausted"), "{e}");
    // An unregistered node cannot claim.
    let e = s.claim_block("ghost", &p, false, None).await.unwrap_err();
    assert!(matches!(e, ipam::IpamError::NotFound(_)), "{e}");
}

async fn next_event(w: &mut ipam::cluster::NodeWatch, secs: u64) -> NodeEvent {
    tokio::time::timeout(Duration::from_secs(secs), w.next())
        .await
        .expect("no watch event in time")
        .expect("watch ended")
}

/// Issue 12: a node that stops renewing is Removed on the watch, but its blocks stay its
/// own: another node never gets them (the pool is exhausted, code 102 naming the
/// expired node and `remove-node`), the node takes them back when it registers again,
/// and they go back to the pool only after the expired-node grace or an explicit
/// removal.
async fn watch_and_expiry(url: &str) {
    let s = connect(url).await;
    let p = pool("10.70.0.0/24", 26); // 4 blocks
    let mut w = s.watch().await.unwrap();
    s.register(&info("x"), Duration::from_secs(2))
        .await
        .unwrap();
    match next_event(&mut w, 5).await {
        NodeEvent::Upsert(r) => assert_eq!(r.info.name, "x"),
        e => panic!("{e:?}"),
    }
    let bx = s.claim_block("x", &p, false, None).await.unwrap();
    match next_event(&mut w, 5).await {
        NodeEvent::Upsert(r) => assert_eq!((r.info.name.as_str(), r.blocks), ("x", vec![bx])),
        e => panic!("{e:?}"),
    }
    s.register(&info("y"), Duration::from_secs(60))
        .await
        .unwrap();
    for _ in 0..3 {
        s.claim_block("y", &p, false, None).await.unwrap();
    }
    // x misses its renewals: y's Upserts, then x's removal.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        assert!(Instant::now() < deadline, "x was never removed");
        match next_event(&mut w, 8).await {
            NodeEvent::Removed(n) if n == "x" => break,
            NodeEvent::Upsert(r) => assert_eq!(r.info.name, "y"),
            e => panic!("{e:?}"),
        }
    }
    assert!(s.node("x").await.unwrap().is_none());
    // Expiry passes (grace 1 h) keep x's block; y cannot get it.
    for _ in 0..2 {
        assert!(s
            .expire(Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty());
    }
    assert_eq!(s.owner_of(bx).await.unwrap().as_deref(), Some("x"));
    assert_eq!(
        s.expired_holders().await.unwrap(),
        [("x".to_string(), vec![bx])].into()
    );
    let e = s.claim_block("y", &p, false, None).await.unwrap_err();
    assert_eq!(e.code(), 102, "{e}");
    assert!(
        e.to_string().contains("x (1)") && e.to_string().contains("remove-node"),
        "{e}"
    );
    assert!(!s.claim_exact("y", bx).await.unwrap(), "y took x's block");
    // x comes back: its block is listed again, and claiming it back is a no-op.
    let back = s
        .register(&info("x"), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(back.blocks, vec![bx]);
    assert!(s.claim_exact("x", bx).await.unwrap());
    assert!(s.expired_holders().await.unwrap().is_empty());
    s.expire(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(s.node("x").await.unwrap().unwrap().blocks, vec![bx]);
    // It lapses again; with a 1 s grace the block is freed once the grace is over
    // (counted from the expiry: file store; from the first pass that saw it: etcd).
    let deadline = Instant::now() + Duration::from_secs(8);
    while s.node("x").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "x outlived its lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let freed = s.expire(Duration::from_secs(1)).await.unwrap();
        if freed == vec!["x".to_string()] {
            break;
        }
        assert!(freed.is_empty(), "{freed:?}");
        assert!(
            Instant::now() < deadline,
            "x's block never freed after the grace"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(s.owner_of(bx).await.unwrap(), None);
    assert_eq!(s.claim_block("y", &p, false, None).await.unwrap(), bx);
}

/// An expired node that holds blocks is freed by an explicit removal at once.
async fn removal_frees_an_expired_node(url: &str) {
    let s = connect(url).await;
    let p = pool("10.72.0.0/25", 26); // 2 blocks
    s.register(&info("r"), Duration::from_secs(1))
        .await
        .unwrap();
    let br = s.claim_block("r", &p, false, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    while s.node("r").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "r outlived its lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.expire(Duration::ZERO).await.unwrap();
    assert_eq!(s.owner_of(br).await.unwrap().as_deref(), Some("r"));
    s.remove_node("r").await.unwrap();
    assert_eq!(s.owner_of(br).await.unwrap(), None);
    assert!(s.expired_holders().await.unwrap().is_empty());
    s.register(&info("q"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s.claim_block("q", &p, false, None).await.unwrap(), br);
}

fn file_backend() -> (tempfile::TempDir, Backend) {
    let d = tempfile::tempdir().unwrap();
    let b = Backend::file(d.path());
    (d, b)
}

#[test]
fn file_register_renew_expire() {
    let (_d, b) = file_backend();
    rt().block_on(register_renew_expire(&b.url(""), false));
}

#[test]
fn etcd_register_renew_expire() {
    let b = Backend::Etcd(Etcd::start());
    rt().block_on(register_renew_expire(&b.url("rre"), true));
}

#[test]
fn file_racing_claims() {
    let (_d, b) = file_backend();
    rt().block_on(racing_claims(b.url("")));
}

#[test]
fn etcd_racing_claims() {
    let b = Backend::Etcd(Etcd::start());
    rt().block_on(racing_claims(b.url("race")));
}

#[test]
fn file_watch_and_expiry() {
    let (_d, b) = file_backend();
    rt().block_on(watch_and_expiry(&b.url("")));
}

#[test]
fn file_removal_frees_an_expired_node() {
    let (_d, b) = file_backend();
    rt().block_on(removal_frees_an_expired_node(&b.url("")));
}

#[test]
fn etcd_removal_frees_an_expired_node() {
    let b = Backend::Etcd(Etcd::start());
    rt().block_on(removal_frees_an_expired_node(&b.url("rm")));
}

#[test]
fn etcd_watch_and_expiry() {
    let b = Backend::Etcd(Etcd::start());
    rt().block_on(watch_and_expiry(&b.url("watch")));
}

#[test]
fn file_store_corruption_is_reported_not_reset() {
    let (d, b) = file_backend();
    let path = d.path().join("cluster.json");
    std::fs::write(&path, b"{\"nodes\": {\"a\": ").unwrap();
    rt().block_on(async {
        let s = connect(&b.url("")).await;
        let e = s
            .register(&info("a"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert_eq!(e.code(), 101);
    });
    assert_eq!(std::fs::read(&path).unwrap(), b"{\"nodes\": {\"a\": ");
}

#[test]
fn etcd_down_is_code_11_and_watch_survives_a_restart() {
    let mut etcd = Etcd::start();
    let url = etcd.url("restart");
    rt().block_on(async {
        let s = connect(&url).await;
        s.register(&info("r"), Duration::from_secs(30))
            .await
            .unwrap();
        let mut w = s.watch().await.unwrap();
        etcd.stop();
        let p = pool("10.80.0.0/24", 26);
        let t = Instant::now();
        let e = s.claim_block("r", &p, false, None).await.unwrap_err();
        assert_eq!(e.code(), 11, "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        // A fresh connection to a dead etcd fails the same way (or on first use).
        match ClusterStore::connect(&ipam::cluster::StoreUrl::parse(&url).unwrap()).await {
            Err(e) => assert_eq!(e.code(), 11),
            Ok(s2) => assert_eq!(s2.nodes().await.unwrap_err().code(), 11),
        }
        etcd.restart();
        let b = s.claim_block("r", &p, false, None).await.unwrap();
        match next_event(&mut w, 10).await {
            NodeEvent::Upsert(r) => assert_eq!(r.blocks, vec![b]),
            e => panic!("{e:?}"),
        }
    });
}

/// etcd: re-registering with another TTL moves the record to a new lease (the plugin
/// may have registered the node with its long `nodeTtl` first), so the daemon's short
/// TTL is what takes the node out of the live view when it dies; its blocks stay its own
/// until the expired-node grace ends.
#[test]
fn etcd_register_with_another_ttl_moves_blocks_to_the_new_lease() {
    let b = Backend::Etcd(Etcd::start());
    rt().block_on(async {
        let s = connect(&b.url("ttl")).await;
        let p = pool("10.71.0.0/24", 26);
        s.register(&info("m"), Duration::from_secs(3600))
            .await
            .unwrap();
        let blk = s.claim_block("m", &p, false, None).await.unwrap();
        let r = s
            .register(&info("m"), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(r.blocks, vec![blk]);
        s.register(&info("o"), Duration::from_secs(60))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(8);
        while s.node("m").await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "m outlived its 2 s lease");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_ne!(s.claim_block("o", &p, false, None).await.unwrap(), blk);
        s.expire(Duration::from_secs(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(s.expire(Duration::from_secs(1)).await.unwrap(), vec!["m"]);
        assert_eq!(s.claim_block("o", &p, false, None).await.unwrap(), blk);
    });
}

/// Issue 14 item 2: a `cluster.json` deleted while its `.lock` (which records the
/// store's identity) is still there is a lost store, refused (101, naming both files
/// and what to do), never a new empty store a second node claims the first node's
/// block from. Removing the lock too is the operator's explicit "start a new store".
#[test]
fn file_store_deleted_with_its_lock_left_is_lost_not_new() {
    let (d, b) = file_backend();
    let path = d.path().join("cluster.json");
    let lock = d.path().join("cluster.json.lock");
    rt().block_on(async {
        let s = connect(&b.url("")).await;
        s.register(&info("a"), Duration::from_secs(60))
            .await
            .unwrap();
        let p = pool("10.80.0.0/24", 26);
        let ba = s.claim_block("a", &p, false, None).await.unwrap();
        let id = s.identity().await.unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(std::fs::read_to_string(&lock).unwrap().trim(), id);
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["id"], id.as_str());
        std::fs::remove_file(&path).unwrap();
        let errs = [
            s.register(&info("b"), Duration::from_secs(60))
                .await
                .unwrap_err(),
            s.claim_block("b", &p, false, None).await.unwrap_err(),
            s.nodes().await.unwrap_err(),
            s.identity().await.unwrap_err(),
        ];
        for e in errs {
            assert_eq!(e.code(), 101, "{e}");
            let m = e.to_string();
            assert!(m.contains(&path.display().to_string()), "{m}");
            assert!(m.contains(&lock.display().to_string()), "{m}");
            assert!(m.contains(&id) && m.contains("lost"), "{m}");
        }
        assert!(!path.exists());
        // The operator starts over: a new store, with another identity.
        std::fs::remove_file(&lock).unwrap();
        s.register(&info("b"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(s.claim_block("b", &p, false, None).await.unwrap(), ba);
        assert_ne!(s.identity().await.unwrap(), id);
    });
}

/// Issue 14 item 2: a block listed under two nodes in `cluster.json` is refused on
/// every access (101, naming the block and both nodes), never handed out or used; a
/// file of the previous format (no identity) is read and gets one at its next write.
#[test]
fn file_store_block_owned_twice_is_refused_and_old_format_is_upgraded() {
    let (d, b) = file_backend();
    let path = d.path().join("cluster.json");
    rt().block_on(async {
        let s = connect(&b.url("")).await;
        let p = pool("10.81.0.0/24", 26);
        for n in ["a", "b"] {
            s.register(&info(n), Duration::from_secs(60)).await.unwrap();
        }
        let ba = s.claim_block("a", &p, false, None).await.unwrap();
        // The previous format: no "id", an empty lock file.
        let mut doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        doc.as_object_mut().unwrap().remove("id");
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        std::fs::write(d.path().join("cluster.json.lock"), b"").unwrap();
        assert_eq!(s.node("a").await.unwrap().unwrap().blocks, vec![ba]);
        let id = s.identity().await.unwrap();
        let now: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(now["id"], id.as_str());
        assert_eq!(
            now["nodes"]["a"]["blocks"],
            serde_json::json!([ba.to_string()])
        );
        // The same block under b too.
        let mut doc = now.clone();
        doc["nodes"]["b"]["blocks"] = serde_json::json!([ba.to_string()]);
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        let errs = [
            s.claim_block("b", &p, false, None).await.unwrap_err(),
            s.register(&info("c"), Duration::from_secs(60))
                .await
                .unwrap_err(),
            s.nodes().await.unwrap_err(),
            s.claim_exact("a", ba).await.unwrap_err(),
        ];
        for e in errs {
            assert_eq!(e.code(), 101, "{e}");
            let m = e.to_string();
            assert!(m.contains(&ba.to_string()), "{m}");
            assert!(m.contains("node a") && m.contains("node b"), "{m}");
        }
        // Untouched.
        let after: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(after, doc);
    });
}

/// The etcd store's identity: created once, the same for every client.
#[test]
fn etcd_identity_is_created_once() {
    let b = Backend::Etcd(Etcd::start());
    rt().block_on(async {
        let s1 = connect(&b.url("ident")).await;
        let s2 = connect(&b.url("ident")).await;
        let (a, c) = tokio::join!(s1.identity(), s2.identity());
        let (a, c) = (a.unwrap(), c.unwrap());
        assert_eq!(a, c);
        assert_eq!(s1.identity().await.unwrap(), a);
        let other = connect(&b.url("other")).await;
        assert_ne!(other.identity().await.unwrap(), a);
    });
}

/// etcd: a renewal is a lease keep-alive only. The record is not rewritten (no watch
/// event, `leaseExpiry` in the record unchanged), yet the node stays alive past its TTL
/// (an exhausted pool names no expired holder), `nodes_live_expiry` shows its renewed
/// lease, and once it stops renewing its record goes with its lease.
#[test]
fn etcd_renewal_is_a_keep_alive_only() {
    let b = Backend::Etcd(Etcd::start());
    rt().block_on(async {
        let s = connect(&b.url("renew")).await;
        let p = pool("10.72.0.0/24", 26); // 4 blocks
        s.register(&info("k"), Duration::from_secs(4))
            .await
            .unwrap();
        s.claim_block("k", &p, false, None).await.unwrap();
        s.register(&info("l"), Duration::from_secs(60))
            .await
            .unwrap();
        for _ in 0..3 {
            s.claim_block("l", &p, false, None).await.unwrap();
        }
        let before = s.node("k").await.unwrap().unwrap();
        let mut w = s.watch().await.unwrap();
        // Renew k for 3 s (past half its TTL: the record is not rewritten).
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            s.renew("k", Duration::from_secs(4)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        s.renew("k", Duration::from_secs(4)).await.unwrap();
        assert_eq!(
            s.node("k").await.unwrap().unwrap(),
            before,
            "record rewritten"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(300), w.next())
                .await
                .is_err(),
            "a renewal produced a watch event"
        );
        // Past its 4 s TTL since registration: alive only through the keep-alives.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        s.renew("k", Duration::from_secs(4)).await.unwrap();
        assert!(
            s.node("k").await.unwrap().is_some(),
            "k expired while renewing"
        );
        let e = s.claim_block("l", &p, false, None).await.unwrap_err();
        assert_eq!(e.code(), 102, "{e}");
        assert!(e.to_string().contains("owned by a live node"), "{e}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let live = s.nodes_live_expiry().await.unwrap();
        let k = live.iter().find(|r| r.info.name == "k").unwrap();
        assert!(k.lease_expiry >= now + 2, "{} < {now} + 2", k.lease_expiry);
        assert!(k.lease_expiry > before.lease_expiry, "lease not renewed");
        // k stops renewing: its record goes with its lease, its block stays its own (no
        // other node gets it while k's pods may hold its addresses).
        let deadline = Instant::now() + Duration::from_secs(8);
        while s.node("k").await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "k outlived its lease");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let e = s.claim_block("l", &p, false, None).await.unwrap_err();
        assert_eq!(e.code(), 102, "k's block was handed to l: {e}");
        assert!(e.to_string().contains("k (1)"), "{e}");
    });
}
