//! The nftables rules `masq` and `macspoof` write, as the kernel holds them and nft(8)
//! shows them, expression by expression (each test in its own netns). Our own
//! nf_tables messages (`cni-core/src/nft/`) replaced libnftnl: these tests pin what
//! must not change with that, namely the rules (`nft -j` and the kernel's expressions
//! with their registers and bytes, `nft --debug=netlink`), their comments, rules made
//! by the older code or by hand (found, listed, deleted: an upgrade in place), and
//! the kernel's errno in our errors.

mod common;

use cni_core::hash::stable_hash;
use cni_core::spec::names::NetworkName;
use cni_core::{macspoof, masq, CniError};
use common::{att, net, TestNs};
use nix::errno::Errno;
use serde_json::{json, Value};

/// The comment our code writes for (`network`, `id`/eth0): see `nft::Tag`.
fn tag(kind: &str, network: &str, id: &str, detail: &str) -> String {
    format!(
        "{kind} net={:016x} att={:016x} {detail}",
        stable_hash(&[network]),
        stable_hash(&[network, id, "eth0"]),
    )
}

/// `nft -j list table`: the chains and the rules (handles removed).
fn objects(ns: &TestNs, family: &str, table: &str) -> (Vec<Value>, Vec<Value>) {
    let out = ns.exec(&["nft", "-j", "list", "table", family, table]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut chains = Vec::new();
    let mut rules = Vec::new();
    for o in v["nftables"].as_array().unwrap() {
        if let Some(c) = o.get("chain") {
            let mut c = c.clone();
            c.as_object_mut().unwrap().remove("handle");
            chains.push(c);
        }
        if let Some(r) = o.get("rule") {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("handle");
            rules.push(r);
        }
    }
    (chains, rules)
}

fn has_table(ns: &TestNs, family: &str, table: &str) -> bool {
    ns.kit
        .try_exec(&["nft", "list", "table", family, table])
        .is_ok()
}

/// `{"match": {"op": op, "left": {"payload": {protocol, field}}, "right": right}}`.
fn payload(op: &str, protocol: &str, field: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": {"payload": {"protocol": protocol, "field": field}},
                     "right": right}})
}

fn prefix(addr: &str, len: u8) -> Value {
    json!({"prefix": {"addr": addr, "len": len}})
}

#[test]
fn rules_expression_by_expression() {
    let ns = TestNs::new("nftexpr");
    let n = NetworkName::parse("exprnet").unwrap();
    let mac: cni_core::netlink::MacAddr = "02:00:00:00:00:0a".parse().unwrap();
    ns.ns
        .run(|| {
            let pool = [net("10.66.0.0/16"), net("fd66::/48")];
            masq::add(&n, &att("ctr-a"), net("10.66.1.5/32"), &pool).unwrap();
            masq::add(&n, &att("ctr-a"), net("fd66::5/64"), &pool).unwrap();
            masq::add(&n, &att("ctr-b"), net("10.66.1.6/24"), &[]).unwrap();
            macspoof::add(&n, &att("ctr-a"), "veth1234abcd", mac).unwrap();
        })
        .unwrap();

    let (chains, rules) = objects(&ns, "ip", "cni_masq");
    assert_eq!(
        chains,
        vec![
            json!({"family": "ip", "table": "cni_masq", "name": "postrouting",
                    "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"})
        ]
    );
    let rule = |family: &str, table: &str, chain: &str, comment: String, expr: Vec<Value>| {
        json!({"family": family, "table": table, "chain": chain, "comment": comment,
               "expr": expr})
    };
    let masq_v4 = |comment, expr| rule("ip", "cni_masq", "postrouting", comment, expr);
    assert_eq!(
        rules,
        vec![
            masq_v4(
                tag("cni-masq", "exprnet", "ctr-a", "src=10.66.1.5/32"),
                vec![
                    payload("==", "ip", "saddr", json!("10.66.1.5")),
                    payload("!=", "ip", "daddr", json!("10.66.1.5")),
                    payload("!=", "ip", "daddr", prefix("10.66.0.0", 16)),
                    payload("!=", "ip", "daddr", prefix("224.0.0.0", 4)),
                    json!({"masquerade": null}),
                ]
            ),
            masq_v4(
                tag("cni-masq", "exprnet", "ctr-b", "src=10.66.1.6/24"),
                vec![
                    payload("==", "ip", "saddr", json!("10.66.1.6")),
                    payload("!=", "ip", "daddr", prefix("10.66.1.0", 24)),
                    payload("!=", "ip", "daddr", prefix("224.0.0.0", 4)),
                    json!({"masquerade": null}),
                ]
            ),
        ]
    );

    let (chains, rules) = objects(&ns, "ip6", "cni_masq");
    assert_eq!(chains[0]["type"], "nat");
    assert_eq!(chains[0]["prio"], 100);
    assert_eq!(
        rules,
        vec![rule(
            "ip6",
            "cni_masq",
            "postrouting",
            tag("cni-masq", "exprnet", "ctr-a", "src=fd66::5/64"),
            vec![
                payload("==", "ip6", "saddr", json!("fd66::5")),
                payload("!=", "ip6", "daddr", prefix("fd66::", 64)),
                payload("!=", "ip6", "daddr", prefix("fd66::", 48)),
                payload("!=", "ip6", "daddr", prefix("ff00::", 8)),
                json!({"masquerade": null}),
            ]
        )]
    );

    let (chains, rules) = objects(&ns, "bridge", "cni_macspoof");
    assert_eq!(
        chains,
        vec![
            json!({"family": "bridge", "table": "cni_macspoof", "name": "prerouting",
                    "type": "filter", "hook": "prerouting", "prio": -300,
                    "policy": "accept"})
        ]
    );
    assert_eq!(
        rules,
        vec![rule(
            "bridge",
            "cni_macspoof",
            "prerouting",
            tag(
                "cni-macspoof",
                "exprnet",
                "ctr-a",
                "dev=veth1234abcd mac=02:00:00:00:00:0a"
            ),
            vec![
                json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}},
                                 "right": "veth1234abcd"}}),
                payload("!=", "ether", "saddr", json!("02:00:00:00:00:0a")),
                json!({"drop": null}),
            ]
        )]
    );

    // The kernel's own expressions, registers and bytes: what libnftnl sent before
    // (captured from the `nftnl`-based code, nft 1.0.6).
    let debug = ns.exec(&["nft", "--debug=netlink", "list", "ruleset"]);
    for block in [
        "  [ payload load 4b @ network header + 12 => reg 1 ]\n\
         \x20 [ cmp eq reg 1 0x0601420a ]\n\
         \x20 [ payload load 4b @ network header + 16 => reg 1 ]\n\
         \x20 [ bitwise reg 1 = ( reg 1 & 0x00ffffff ) ^ 0x00000000 ]\n\
         \x20 [ cmp neq reg 1 0x0001420a ]\n\
         \x20 [ payload load 4b @ network header + 16 => reg 1 ]\n\
         \x20 [ bitwise reg 1 = ( reg 1 & 0x000000f0 ) ^ 0x00000000 ]\n\
         \x20 [ cmp neq reg 1 0x000000e0 ]\n\
         \x20 [ masq ]\n",
        "  [ payload load 16b @ network header + 8 => reg 1 ]\n\
         \x20 [ cmp eq reg 1 0x000066fd 0x00000000 0x00000000 0x05000000 ]\n\
         \x20 [ payload load 16b @ network header + 24 => reg 1 ]\n\
         \x20 [ bitwise reg 1 = ( reg 1 & 0xffffffff 0xffffffff 0x00000000 0x00000000 ) \
         ^ 0x00000000 0x00000000 0x00000000 0x00000000 ]\n",
        "  [ meta load iifname => reg 1 ]\n\
         \x20 [ cmp eq reg 1 0x68746576 0x34333231 0x64636261 0x00000000 ]\n\
         \x20 [ payload load 6b @ link header + 6 => reg 1 ]\n\
         \x20 [ cmp neq reg 1 0x00000002 0x00000a00 ]\n\
         \x20 [ immediate reg 0 drop ]\n\
         \x20 userdata = { \\x00^cni-macspoof net=",
    ] {
        assert!(debug.contains(block), "{block}\nnot in\n{debug}");
    }

    ns.ns
        .run(|| {
            masq::del(&n, &att("ctr-a")).unwrap();
            masq::del(&n, &att("ctr-b")).unwrap();
            macspoof::del(&n, &att("ctr-a")).unwrap();
        })
        .unwrap();
    for (family, table) in [
        ("ip", "cni_masq"),
        ("ip6", "cni_masq"),
        ("bridge", "cni_macspoof"),
    ] {
        assert!(!has_table(&ns, family, table), "{family} {table} left");
    }
}

/// Rules in the shape the older (libnftnl) code wrote, made here by nft(8) with the same
/// comments, are found, listed and deleted; a foreign rule in the same chain stays, and
/// so does its table.
#[test]
fn rules_made_before_are_listed_and_deleted() {
    let ns = TestNs::new("nftupgr");
    let n = NetworkName::parse("upgrnet").unwrap();
    let masq_comment = tag("cni-masq", "upgrnet", "ctr-old", "src=10.70.0.5/24");
    let spoof_comment = tag(
        "cni-macspoof",
        "upgrnet",
        "ctr-old",
        "dev=vethold mac=02:00:00:00:00:0b",
    );
    let quoted = |c: &str| format!("\"{c}\"");
    for cmd in [
        vec!["add", "table", "ip", "cni_masq"],
        vec![
            "add",
            "chain",
            "ip",
            "cni_masq",
            "postrouting",
            "{ type nat hook postrouting priority 100; policy accept; }",
        ],
        vec![
            "add",
            "rule",
            "ip",
            "cni_masq",
            "postrouting",
            "ip",
            "saddr",
            "10.70.0.5",
            "ip",
            "daddr",
            "!=",
            "10.70.0.0/24",
            "ip",
            "daddr",
            "!=",
            "224.0.0.0/4",
            "masquerade",
            "comment",
            &quoted(&masq_comment),
        ],
        vec![
            "add",
            "rule",
            "ip",
            "cni_masq",
            "postrouting",
            "ip",
            "saddr",
            "10.70.0.9",
            "masquerade",
            "comment",
            "\"someone else's\"",
        ],
        vec!["add", "table", "bridge", "cni_macspoof"],
        vec![
            "add",
            "chain",
            "bridge",
            "cni_macspoof",
            "prerouting",
            "{ type filter hook prerouting priority -300; policy accept; }",
        ],
        vec![
            "add",
            "rule",
            "bridge",
            "cni_macspoof",
            "prerouting",
            "iifname",
            "vethold",
            "ether",
            "saddr",
            "!=",
            "02:00:00:00:00:0b",
            "drop",
            "comment",
            &quoted(&spoof_comment),
        ],
    ] {
        let mut argv = vec!["nft"];
        argv.extend(cmd);
        ns.exec(&argv);
    }
    let old = att("ctr-old");
    let mac: cni_core::netlink::MacAddr = "02:00:00:00:00:0b".parse().unwrap();
    ns.ns
        .run(|| {
            assert_eq!(masq::list(&n, &old).unwrap(), vec![net("10.70.0.5/24")]);
            assert_eq!(
                macspoof::list(&n, &old).unwrap(),
                vec![("vethold".to_string(), mac)]
            );
            // Re-ADDs find the old rules: nothing added.
            masq::add(&n, &old, net("10.70.0.5/24"), &[]).unwrap();
            macspoof::add(&n, &old, "vethold", mac).unwrap();
        })
        .unwrap();
    assert_eq!(objects(&ns, "ip", "cni_masq").1.len(), 2);
    assert_eq!(objects(&ns, "bridge", "cni_macspoof").1.len(), 1);
    ns.ns
        .run(|| {
            masq::del(&n, &old).unwrap();
            macspoof::gc(&n, &[]).unwrap();
            assert!(masq::list(&n, &old).unwrap().is_empty());
        })
        .unwrap();
    let (_, rules) = objects(&ns, "ip", "cni_masq");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["comment"], "someone else's");
    assert!(!has_table(&ns, "bridge", "cni_macspoof"));
}

/// A kernel refusal reaches the caller with its errno and what was being done: here a
/// `postrouting` chain of another type (filter, not nat) is in the way: the kernel
/// refuses to change a base chain's type (EOPNOTSUPP).
#[test]
fn kernel_refusal_keeps_errno_and_op() {
    let ns = TestNs::new("nfterr");
    let n = NetworkName::parse("errnet").unwrap();
    ns.exec(&["nft", "add", "table", "ip", "cni_masq"]);
    ns.exec(&[
        "nft",
        "add",
        "chain",
        "ip",
        "cni_masq",
        "postrouting",
        "{ type filter hook postrouting priority 0; policy accept; }",
    ]);
    let e = ns
        .ns
        .run(|| masq::add(&n, &att("ctr-e"), net("10.71.0.5/24"), &[]).unwrap_err())
        .unwrap();
    assert_eq!(e.errno(), Some(Errno::EOPNOTSUPP), "{e}");
    let comment = tag("cni-masq", "errnet", "ctr-e", "src=10.71.0.5/24");
    assert_eq!(
        e.op(),
        format!(
            "masquerading 10.71.0.5/24 of network errnet: adding rule {comment:?} to \
             nftables chain ip cni_masq postrouting"
        )
    );
    let c = CniError::from(e);
    assert!(
        c.msg.ends_with(": Operation not supported (os error 95)"),
        "{}",
        c.msg
    );
    // Nothing half-made: the transaction was refused as a whole.
    assert!(objects(&ns, "ip", "cni_masq").1.is_empty());
}

/// A GC removing more rules than one transaction holds (64 deletes, so that the ACKs
/// fit the socket's receive buffer) removes them all, and the table with the last.
#[test]
fn gc_of_many_rules_removes_them_all() {
    let ns = TestNs::new("nftmany");
    let n = NetworkName::parse("manynet").unwrap();
    let mut script = String::from(
        "add table ip cni_masq\n\
         add chain ip cni_masq postrouting { type nat hook postrouting priority 100; policy accept; }\n",
    );
    for i in 0..150u32 {
        let ip = format!("10.72.{}.{}", i / 200, i % 200 + 2);
        let comment = tag(
            "cni-masq",
            "manynet",
            &format!("ctr-{i}"),
            &format!("src={ip}/16"),
        );
        script += &format!(
            "add rule ip cni_masq postrouting ip saddr {ip} ip daddr != 10.72.0.0/16 \
             ip daddr != 224.0.0.0/4 masquerade comment \"{comment}\"\n"
        );
    }
    let file = std::env::temp_dir().join(format!("nft-many-{}.nft", std::process::id()));
    std::fs::write(&file, script).unwrap();
    let loaded = ns.kit.try_exec(&["nft", "-f", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    loaded.unwrap();
    assert_eq!(objects(&ns, "ip", "cni_masq").1.len(), 150);
    ns.ns
        .run(|| {
            let keep = att("ctr-7");
            masq::gc(&n, std::slice::from_ref(&keep)).unwrap();
            assert_eq!(masq::list(&n, &keep).unwrap(), vec![net("10.72.0.9/16")]);
        })
        .unwrap();
    assert_eq!(objects(&ns, "ip", "cni_masq").1.len(), 1);
    ns.ns.run(|| masq::gc(&n, &[]).unwrap()).unwrap();
    assert!(!has_table(&ns, "ip", "cni_masq"));
}
