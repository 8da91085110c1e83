//! Masquerade rules against the kernel (each test in its own netns): traffic to the
//! network's own pod networks is never masqueraded, and the `cni_masq` table goes with
//! its last rule, also while other plugins add rules at the same time (and so does the
//! `cni_macspoof` table).

mod common;

use cni_core::masq;
use cni_core::spec::config::NetConf;
use cni_core::spec::names::NetworkName;
use common::{att, net, TestNs};
use serde_json::json;

impl TestNs {
    /// `nft list table <family> cni_masq` inside; `None` when there is no such table.
    fn table(&self, family: &str) -> Option<String> {
        self.kit
            .try_exec(&["nft", "list", "table", family, "cni_masq"])
            .ok()
    }
}

fn conf(v: serde_json::Value) -> NetConf {
    NetConf::parse(v.to_string().as_bytes()).unwrap()
}

#[test]
fn pod_networks_of_range_and_pool_ipam() {
    let range = conf(json!({
        "cniVersion": "1.0.0", "name": "n", "type": "cni-routed",
        "ipam": {"type": "cni-ipam", "subnet": "10.61.0.0/24",
                 "ranges": [[{"subnet": "10.62.0.0/24"}, {"subnet": "10.62.1.0/24"}],
                            [{"subnet": "fd61::/64"}]]},
        "runtimeConfig": {"ipRanges": [[{"subnet": "10.63.0.7/24"}]]}
    }));
    assert_eq!(
        masq::pod_networks(&range),
        vec![
            net("10.61.0.0/24"),
            net("10.62.0.0/24"),
            net("10.62.1.0/24"),
            net("10.63.0.0/24"),
            net("fd61::/64")
        ]
    );
    // Pool mode: the whole cluster pool (every node's blocks), not this node's block.
    let pool = conf(json!({
        "cniVersion": "1.0.0", "name": "n", "type": "cni-routed",
        "ipam": {"type": "cni-ipam", "pool": ["10.244.0.0/16", "fd00:244::/56"], "blockSize": 26}
    }));
    assert_eq!(
        masq::pod_networks(&pool),
        vec![net("10.244.0.0/16"), net("fd00:244::/56")]
    );
    let one = conf(json!({"cniVersion": "1.0.0", "name": "n", "type": "x",
                          "ipam": {"type": "cni-ipam", "pool": "10.245.0.0/16"}}));
    assert_eq!(masq::pod_networks(&one), vec![net("10.245.0.0/16")]);
    let none = conf(json!({"cniVersion": "1.0.0", "name": "n", "type": "x"}));
    assert!(masq::pod_networks(&none).is_empty());
}

#[test]
fn rule_skips_the_pod_networks() {
    let ns = TestNs::new("keep");
    let n = NetworkName::parse("keepnet").unwrap();
    ns.ns
        .run(|| {
            // A routed pod: its own address is a /32, the pool is what pods share.
            masq::add(
                &n,
                &att("ctr-a"),
                net("10.66.1.5/32"),
                &[net("10.66.0.0/16"), net("fd66::/48")],
            )
            .unwrap();
            masq::add(
                &n,
                &att("ctr-a"),
                net("fd66::5/128"),
                &[net("10.66.0.0/16"), net("fd66::/48")],
            )
            .unwrap();
        })
        .unwrap();
    let v4 = ns.table("ip").expect("ip cni_masq");
    assert!(
        v4.contains(
            "ip saddr 10.66.1.5 ip daddr != 10.66.1.5 ip daddr != 10.66.0.0/16 \
             ip daddr != 224.0.0.0/4 masquerade"
        ),
        "{v4}"
    );
    assert!(!v4.contains("fd66"), "{v4}");
    let v6 = ns.table("ip6").expect("ip6 cni_masq");
    assert!(
        v6.contains("ip6 saddr fd66::5 ip6 daddr != fd66::5 ip6 daddr != fd66::/48"),
        "{v6}"
    );
}

#[test]
fn last_del_and_gc_remove_the_table() {
    let ns = TestNs::new("last");
    let n = NetworkName::parse("lastnet").unwrap();
    let (a, b) = (att("ctr-a"), att("ctr-b"));
    ns.ns
        .run(|| {
            masq::add(&n, &a, net("10.67.0.2/24"), &[]).unwrap();
            masq::add(&n, &b, net("10.67.0.3/24"), &[]).unwrap();
        })
        .unwrap();
    ns.ns.run(|| masq::del(&n, &a).unwrap()).unwrap();
    let t = ns.table("ip").expect("b's rule keeps the table");
    assert!(t.contains("10.67.0.3") && !t.contains("10.67.0.2"), "{t}");
    ns.ns.run(|| masq::del(&n, &b).unwrap()).unwrap();
    assert_eq!(
        ns.table("ip"),
        None,
        "empty cni_masq table left after the last DEL"
    );
    // DEL again: nothing to do, no error.
    ns.ns.run(|| masq::del(&n, &b).unwrap()).unwrap();

    // GC removing the last rules removes the table too.
    ns.ns
        .run(|| {
            masq::add(&n, &a, net("10.67.0.2/24"), &[]).unwrap();
            masq::add(&n, &a, net("fd67::2/64"), &[]).unwrap();
            masq::gc(&n, &[]).unwrap();
        })
        .unwrap();
    assert_eq!(ns.table("ip"), None);
    assert_eq!(ns.table("ip6"), None);
}

/// Pods come and go at once: a DEL removing what it thinks is the last rule never takes
/// away a rule another ADD just added (the table is only removed by the kernel when the
/// chain is empty at commit time).
#[test]
fn table_removal_never_takes_a_concurrent_adds_rule() {
    let ns = TestNs::new("race");
    let n = NetworkName::parse("racenet").unwrap();
    let lost = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let (ns, n, lost) = (&ns, &n, &lost);
            s.spawn(move || {
                for i in 0..40u8 {
                    let a = att(&format!("ctr-{t}-{i}"));
                    let ip = net(&format!("10.68.{t}.{}/24", i + 2));
                    ns.ns
                        .run(|| {
                            masq::add(n, &a, ip, &[]).unwrap();
                            if masq::list(n, &a).unwrap().is_empty() {
                                lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            masq::del(n, &a).unwrap();
                        })
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(
        lost.into_inner(),
        0,
        "rules lost to a concurrent table removal"
    );
    assert_eq!(ns.table("ip"), None, "table left after every rule went");
}

/// The macspoof table (`bridge cni_macspoof`) goes with its last rule too.
#[test]
fn macspoof_table_goes_with_its_last_rule() {
    use cni_core::macspoof;
    let ns = TestNs::new("spoof");
    let n = NetworkName::parse("spoofnet").unwrap();
    let (a, b) = (att("ctr-a"), att("ctr-b"));
    let mac: cni_core::netlink::MacAddr = "02:00:00:00:00:0a".parse().unwrap();
    let table = || {
        ns.kit
            .try_exec(&["nft", "list", "table", "bridge", "cni_macspoof"])
            .is_ok()
    };
    ns.ns
        .run(|| {
            macspoof::add(&n, &a, "veth-a", mac).unwrap();
            macspoof::add(&n, &b, "veth-b", mac).unwrap();
            macspoof::del(&n, &a).unwrap();
        })
        .unwrap();
    assert!(table(), "b's rule keeps the table");
    ns.ns.run(|| macspoof::gc(&n, &[]).unwrap()).unwrap();
    assert!(
        !table(),
        "empty cni_macspoof table left after the last rule went"
    );
}
