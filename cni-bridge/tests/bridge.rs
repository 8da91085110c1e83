//! End-to-end tests of the `cni-bridge` binary with the reference host-local IPAM.
//! They need root (netns, links); every test has its own netns, bridge, subnet and
//! data dir, removed by the `World` guard.

mod common;

use common::{result_ip, World};
use serde_json::{json, Value};
use testkit::{sh, try_sh};

#[test]
fn add_check_del_roundtrip() {
    let mut w = World::new("rt", 1);
    let p = w.pod();
    let conf = w.conf(json!({}));
    let res = w.add_ok(&conf, p);

    // Result shape: bridge, host veth, pod interface; the IP points at the pod one.
    let ifs = res["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3, "{res}");
    assert_eq!(ifs[0]["name"], w.bridge.as_str());
    let host_veth = ifs[1]["name"].as_str().unwrap().to_string();
    assert!(
        host_veth.starts_with("veth") && host_veth.len() == 12,
        "{host_veth}"
    );
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], w.pods[p].netns_path().as_str());
    assert_eq!(res["ips"][0]["interface"], 2);
    assert_eq!(res["ips"][0]["gateway"], w.gw().as_str());
    let ip = result_ip(&res);
    assert!(
        ip.starts_with(&format!("10.251.{}.", w.net)) && ip.ends_with("/24"),
        "{ip}"
    );

    // Real outcomes.
    let (_, addrs) = w.in_pod(p, &["-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains(&ip), "pod lacks {ip}: {addrs}");
    let br_addrs = try_sh("ip", &["-o", "addr", "show", "dev", &w.bridge]).unwrap_or_default();
    assert!(
        br_addrs.contains(&format!("{}/24", w.gw())),
        "bridge lacks gateway: {br_addrs}"
    );
    assert_eq!(w.ports(), vec![host_veth.clone()]);
    // The host end, made up on the bridge by the create request; arp_notify on the pod
    // end (set over netlink), read inside the pod's netns.
    let (_, link) = w.host_ip(&["-o", "link", "show", "dev", &host_veth]);
    assert!(
        link.contains(&format!("master {}", w.bridge)) && link.contains(",UP"),
        "{link}"
    );
    let notify = w.pods[p]
        .netns
        .try_exec(&["cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify"])
        .unwrap_or_default();
    assert_eq!(notify.trim(), "1", "arp_notify in the pod");
    assert!(w.ping_from(p, &w.gw()), "pod cannot ping the gateway");
    assert_eq!(w.reservations().len(), 1);

    // CHECK passes, then fails once the address is removed by hand.
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = res.clone();
    let o = w.run("CHECK", &check_conf, p);
    assert!(o.ok, "CHECK failed: {} {}", o.raw, o.stderr);
    let (ok, out) = w.in_pod(p, &["addr", "del", &ip, "dev", "eth0"]);
    assert!(ok, "{out}");
    let o = w.run("CHECK", &check_conf, p);
    assert!(!o.ok, "CHECK passed without the address");
    assert!(
        o.msg().contains(&ip),
        "CHECK error should name {ip}: {}",
        o.raw
    );

    // DEL removes the veth and the reservation; DEL twice is fine.
    let o = w.run("DEL", &conf, p);
    assert!(o.ok, "DEL: {} {}", o.raw, o.stderr);
    assert!(w.ports().is_empty(), "veth left: {:?}", w.ports());
    assert!(
        try_sh("ip", &["link", "show", &host_veth]).is_err(),
        "host veth still exists"
    );
    assert!(
        !w.in_pod(p, &["link", "show", "eth0"]).0,
        "eth0 still in pod"
    );
    assert!(w.reservations().is_empty(), "{:?}", w.reservations());
    let o = w.run("DEL", &conf, p);
    assert!(o.ok, "second DEL: {} {}", o.raw, o.stderr);
}

#[test]
fn del_after_netns_is_gone() {
    let mut w = World::new("gone", 2);
    let p = w.pod();
    let conf = w.conf(json!({}));
    w.add_ok(&conf, p);
    assert_eq!(w.reservations().len(), 1);
    w.pods[p].netns.delete();
    let o = w.run("DEL", &conf, p);
    assert!(o.ok, "DEL without netns: {} {}", o.raw, o.stderr);
    assert!(w.reservations().is_empty());
    // The kernel destroys a netns (and the veth with it) asynchronously.
    assert!(
        (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            w.ports().is_empty()
        }),
        "veth left on the bridge: {:?}",
        w.ports()
    );
    // And without CNI_NETNS at all.
    let vars = vec![
        ("CNI_COMMAND", "DEL".to_string()),
        ("CNI_CONTAINERID", w.pods[p].container.clone()),
        ("CNI_IFNAME", "eth0".to_string()),
    ];
    let o = w.run_env(&conf, &vars);
    assert!(o.ok, "DEL with no CNI_NETNS: {} {}", o.raw, o.stderr);
}

#[test]
fn failure_after_ipam_undoes_everything() {
    let mut w = World::new("undo", 3);
    let p = w.pod();
    // The bridge already has another address of the pod subnet: without forceAddress the
    // gateway cannot be set, which happens after IPAM allocated.
    sh("ip", &["link", "add", &w.bridge, "type", "bridge"]);
    let other = format!("10.251.{}.200/24", w.net);
    sh("ip", &["addr", "add", &other, "dev", &w.bridge]);
    let conf = w.conf(json!({"ipMasq": true, "macspoofchk": true}));
    let o = w.run("ADD", &conf, p);
    assert!(!o.ok, "ADD should fail: {}", o.raw);
    assert!(
        o.msg().contains("forceAddress"),
        "message should tell what to fix: {}",
        o.raw
    );
    assert!(
        w.reservations().is_empty(),
        "reservation left: {:?}",
        w.reservations()
    );
    assert!(w.ports().is_empty(), "veth left: {:?}", w.ports());
    assert!(
        !w.in_pod(p, &["link", "show", "eth0"]).0,
        "eth0 left in the pod"
    );
    let (_, links) = w.in_pod(p, &["-o", "link"]);
    assert_eq!(links.lines().count(), 1, "only lo should remain: {links}");

    // With forceAddress the gateway replaces the old address.
    let conf = w.conf(json!({"forceAddress": true}));
    w.add_ok(&conf, p);
    let br_addrs = try_sh("ip", &["-o", "addr", "show", "dev", &w.bridge]).unwrap_or_default();
    assert!(br_addrs.contains(&format!("{}/24", w.gw())), "{br_addrs}");
    assert!(!br_addrs.contains(&other), "{br_addrs}");
}

#[test]
fn failing_ipam_leaves_nothing() {
    let mut w = World::new("fipam", 4);
    let p = w.pod();
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fail-ipam");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"pool exhausted (test)\"}'\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.extra_path = Some(dir.path().to_path_buf());
    let conf = w.conf(json!({"ipam": {"type": "fail-ipam"}}));
    let o = w.run("ADD", &conf, p);
    assert!(!o.ok);
    assert_eq!(
        o.err_code(),
        Some(11),
        "IPAM's error is passed on: {}",
        o.raw
    );
    assert!(o.msg().contains("pool exhausted"), "{}", o.raw);
    assert!(w.ports().is_empty());
    assert!(!w.in_pod(p, &["link", "show", "eth0"]).0);
    // The bridge is created only once IPAM has answered: a refused ADD leaves none.
    assert!(
        !w.host_ip(&["link", "show", &w.bridge]).0,
        "failed ADD left bridge {}",
        w.bridge
    );

    // The real host-local refusing its configuration (code 7 from IPAM): same.
    w.extra_path = None;
    let conf =
        w.conf(json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.251.4.0/33"}]]}}));
    let o = w.run("ADD", &conf, p);
    assert!(!o.ok, "{}", o.raw);
    assert!(o.msg().contains("IPAM"), "{}", o.raw);
    assert!(
        !w.host_ip(&["link", "show", &w.bridge]).0,
        "bridge left: {}",
        o.raw
    );
    assert!(!w.in_pod(p, &["link", "show", "eth0"]).0);
    *w.last_conf.lock().unwrap() = None;
}

/// DEL with CNI_IFNAME=lo (a runtime confused about the interface) succeeds every
/// time and leaves the pod's loopback as it is (it used to fail with 999 forever).
#[test]
fn del_of_lo_succeeds_and_keeps_lo() {
    let mut w = World::new("dello", 15);
    let p = w.pod();
    let conf = w.conf(json!({}));
    let vars = |cmd: &str| {
        vec![
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", w.pods[p].container.clone()),
            ("CNI_NETNS", w.pods[p].netns_path()),
            ("CNI_IFNAME", "lo".to_string()),
        ]
    };
    for _ in 0..2 {
        let o = w.run_env(&conf, &vars("DEL"));
        assert!(o.ok, "DEL of lo: {} {}", o.raw, o.stderr);
    }
    let (ok, lo) = w.in_pod(p, &["-o", "addr", "show", "dev", "lo"]);
    assert!(ok && lo.contains("127.0.0.1/8"), "lo changed: {lo}");
    assert!(w.in_pod(p, &["link", "show", "lo"]).1.contains("UP"));
    // ADD with lo is refused (taken), before anything is allocated.
    let o = w.run_env(&conf, &vars("ADD"));
    assert_eq!(o.err_code(), Some(7), "{}", o.raw);
    assert!(w.reservations().is_empty(), "{:?}", w.reservations());
}

#[test]
fn bridge_name_taken_by_non_bridge() {
    let mut w = World::new("nbr", 5);
    let p = w.pod();
    let peer = format!("{}p", w.bridge);
    sh(
        "ip",
        &[
            "link", "add", &w.bridge, "type", "veth", "peer", "name", &peer,
        ],
    );
    let conf = w.conf(json!({}));
    let o = w.run("ADD", &conf, p);
    assert!(!o.ok, "ADD on a non-bridge should fail: {}", o.raw);
    assert!(
        o.msg().contains(&w.bridge),
        "error should name the bridge: {}",
        o.raw
    );
    assert!(w.reservations().is_empty(), "{:?}", w.reservations());
    assert!(!w.in_pod(p, &["link", "show", "eth0"]).0);
    let all = try_sh("ip", &["-o", "link", "show", "type", "veth"]).unwrap_or_default();
    assert_eq!(
        all.lines()
            .filter(|l| l.contains(&format!("master {}", w.bridge)))
            .count(),
        0
    );
}

#[test]
fn repeated_add_is_refused_and_keeps_the_first() {
    let mut w = World::new("again", 6);
    let p = w.pod();
    let conf = w.conf(json!({}));
    let res = w.add_ok(&conf, p);
    let ip = result_ip(&res);
    let o = w.run("ADD", &conf, p);
    assert!(!o.ok, "second ADD should fail: {}", o.raw);
    assert_eq!(o.err_code(), Some(7), "{}", o.raw);
    assert!(o.msg().contains("already exists"), "{}", o.raw);
    assert_eq!(w.ports().len(), 1, "{:?}", w.ports());
    assert_eq!(w.reservations().len(), 1, "first reservation kept");
    let (_, addrs) = w.in_pod(p, &["-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains(&ip));
}

#[test]
fn default_gateway_mac_and_mtu() {
    let mut w = World::new("dgw", 7);
    let p = w.pod();
    let mac = "0a:58:0a:fb:07:42";
    let conf = w.conf(json!({
        "isDefaultGateway": true,
        "mtu": 1400,
        "hairpinMode": true,
        "runtimeConfig": {"mac": mac},
        "ipam": {
            "type": "host-local",
            "dataDir": w.data.path(),
            "ranges": [[{"subnet": w.subnet()}]],
            "routes": [{"dst": "192.168.251.0/24"}]
        }
    }));
    let res = w.add_ok(&conf, p);
    assert_eq!(res["interfaces"][2]["mac"], mac, "{res}");
    let (_, link) = w.in_pod(p, &["link", "show", "eth0"]);
    assert!(link.contains(mac) && link.contains("mtu 1400"), "{link}");
    let host_veth = res["interfaces"][1]["name"].as_str().unwrap().to_string();
    let hl = try_sh("ip", &["-d", "link", "show", &host_veth]).unwrap_or_default();
    assert!(hl.contains("mtu 1400"), "{hl}");
    assert!(hl.contains("hairpin on"), "{hl}");
    let (_, routes) = w.in_pod(p, &["route", "show"]);
    assert!(
        routes.contains(&format!("default via {}", w.gw())),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("192.168.251.0/24 via {}", w.gw())),
        "{routes}"
    );
    let rs = res["routes"].as_array().unwrap();
    assert!(rs.iter().any(|r| r["dst"] == "0.0.0.0/0"), "{res}");
    assert_eq!(sh("sysctl", &["-n", "net.ipv4.ip_forward"]).trim(), "1");

    // CHECK sees the routes; deleting the default route makes it fail.
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = res.clone();
    assert!(w.run("CHECK", &check_conf, p).ok);
    assert!(w.in_pod(p, &["route", "del", "default"]).0);
    let o = w.run("CHECK", &check_conf, p);
    assert!(!o.ok && o.msg().contains("0.0.0.0/0"), "{}", o.raw);
}

#[test]
fn concurrent_adds_create_one_bridge() {
    let mut w = World::new("conc", 8);
    let a = w.pod();
    let b = w.pod();
    let conf = w.conf(json!({}));
    *w.last_conf.lock().unwrap() = Some(conf.clone());
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| w.run_env(&conf, &vars(&w, a, "ADD")));
        let tb = s.spawn(|| w.run_env(&conf, &vars(&w, b, "ADD")));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert!(ra.ok, "A: {} {}", ra.raw, ra.stderr);
    assert!(rb.ok, "B: {} {}", rb.raw, rb.stderr);
    assert_eq!(w.ports().len(), 2, "{:?}", w.ports());
    let ip_b = result_ip(&rb.stdout);
    let ip_b = ip_b.split('/').next().unwrap();
    assert!(
        w.ping_from(a, ip_b),
        "pod A cannot reach pod B ({ip_b}):\n{}",
        w.diag(&[a, b])
    );
    assert!(w.ping_from(b, &w.gw()), "{}", w.diag(&[b]));
}

fn vars(w: &World, pod: usize, cmd: &str) -> Vec<(&'static str, String)> {
    let p = &w.pods[pod];
    vec![
        ("CNI_COMMAND", cmd.to_string()),
        ("CNI_CONTAINERID", p.container.clone()),
        ("CNI_NETNS", p.netns_path()),
        ("CNI_IFNAME", p.ifname.clone()),
    ]
}

#[test]
fn masquerade_and_macspoof_rules_follow_the_attachment() {
    let mut w = World::new("masq", 9);
    let p = w.pod();
    let conf = w.conf(json!({"ipMasq": true, "macspoofchk": true}));
    let res = w.add_ok(&conf, p);
    let ip = result_ip(&res);
    let ip = ip.split('/').next().unwrap().to_string();
    let host_veth = res["interfaces"][1]["name"].as_str().unwrap().to_string();
    let rules = try_sh("nft", &["list", "ruleset"]).unwrap_or_default();
    assert!(rules.contains(&ip), "no masquerade rule for {ip}: {rules}");
    assert!(
        rules.contains(&host_veth),
        "no macspoof rule for {host_veth}: {rules}"
    );

    let mut check_conf = conf.clone();
    check_conf["prevResult"] = res.clone();
    let o = w.run("CHECK", &check_conf, p);
    assert!(o.ok, "CHECK: {} {}", o.raw, o.stderr);

    // GC with no valid attachment drops them (GC is 1.1.0; IPAM left out: host-local
    // 1.1.1 does not speak 1.1.0).
    let gc_conf = json!({
        "cniVersion": "1.1.0", "name": w.name, "type": "cni-bridge", "bridge": w.bridge,
        "cni.dev/valid-attachments": []
    });
    let o = w.run_env(&gc_conf, &[("CNI_COMMAND", "GC".to_string())]);
    assert!(o.ok, "GC: {} {}", o.raw, o.stderr);
    let rules = try_sh("nft", &["list", "ruleset"]).unwrap_or_default();
    assert!(!rules.contains(&ip), "GC left the masquerade rule: {rules}");
    assert!(
        !rules.contains(&host_veth),
        "GC left the macspoof rule: {rules}"
    );

    // ADD again after DEL puts them back; DEL removes them.
    assert!(w.run("DEL", &conf, p).ok);
    let res = w.add_ok(&conf, p);
    let ip = result_ip(&res).split('/').next().unwrap().to_string();
    assert!(sh("nft", &["list", "ruleset"]).contains(&ip));
    let o = w.run("DEL", &conf, p);
    assert!(o.ok, "DEL: {} {}", o.raw, o.stderr);
    let rules = try_sh("nft", &["list", "ruleset"]).unwrap_or_default();
    assert!(
        !rules.contains(&ip),
        "DEL left the masquerade rule: {rules}"
    );
}

#[test]
fn bad_config_is_code_7() {
    let mut w = World::new("bad", 10);
    let p = w.pod();
    for (extra, needle) in [
        (json!({"vlan": 5000}), "vlan"),
        (json!({"mtu": 10}), "mtu"),
        (json!({"isGateway": "yes"}), "isGateway"),
        (json!({"bridge": "this-name-is-too-long"}), "bridge"),
        (
            json!({"hairpinMode": true, "promiscMode": true}),
            "hairpinMode",
        ),
        (json!({"runtimeConfig": {"mac": "not-a-mac"}}), "MAC"),
    ] {
        let conf = w.conf(extra.clone());
        let o = w.run("ADD", &conf, p);
        assert!(!o.ok, "{extra} accepted");
        assert_eq!(o.err_code(), Some(7), "{extra}: {}", o.raw);
        assert!(
            o.msg().contains(needle),
            "{extra}: message should mention {needle}: {}",
            o.raw
        );
    }
    assert!(w.reservations().is_empty());
    assert!(!w.in_pod(p, &["link", "show", "eth0"]).0);
    *w.last_conf.lock().unwrap() = None;
}

#[test]
fn layer2_only_without_ipam() {
    let mut w = World::new("l2", 11);
    let p = w.pod();
    let mut conf = w.conf(json!({"isGateway": false, "promiscMode": true}));
    if let Some(m) = conf.as_object_mut() {
        m.remove("ipam");
    }
    let res = w.add_ok(&conf, p);
    let br = try_sh("ip", &["link", "show", &w.bridge]).unwrap_or_default();
    assert!(br.contains("PROMISC"), "{br}");
    let mut check = conf.clone();
    check["prevResult"] = res.clone();
    let o = w.run("CHECK", &check, p);
    assert!(o.ok, "CHECK: {} {}", o.raw, o.stderr);
    check["promiscMode"] = json!(false);
    let o = w.run("CHECK", &check, p);
    assert!(!o.ok && o.msg().contains("promisc"), "{}", o.raw);
    assert!(
        res.get("ips")
            .is_none_or(|v: &Value| v.as_array().is_none_or(|a| a.is_empty())),
        "{res}"
    );
    assert_eq!(w.ports().len(), 1);
    let (_, link) = w.in_pod(p, &["link", "show", "eth0"]);
    assert!(link.contains("UP"), "{link}");
    assert!(w.run("DEL", &conf, p).ok);
    assert!(w.ports().is_empty());
}

#[test]
fn dual_stack_in_a_node_netns() {
    let mut w = World::new("ds", 12);
    w.in_node();
    let p = w.pod();
    let v6net = "fd5b:cb:12::/64";
    let conf = w.conf(json!({
        "isDefaultGateway": true,
        "ipMasq": true,
        "ipam": {
            "type": "host-local",
            "dataDir": w.data.path(),
            "ranges": [[{"subnet": w.subnet()}], [{"subnet": v6net}]]
        }
    }));
    let res = w.add_ok(&conf, p);
    let ips = res["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{res}");
    let v6 = ips
        .iter()
        .find(|i| i["address"].as_str().unwrap().contains(':'))
        .unwrap();
    let v6addr = v6["address"].as_str().unwrap().to_string();
    let v6gw = v6["gateway"].as_str().unwrap().to_string();
    assert_eq!(v6gw, "fd5b:cb:12::1");
    assert_eq!(v6["interface"], 2);

    // enabledad=false: the address is usable at once (not tentative).
    let (_, a) = w.in_pod(p, &["-6", "-o", "addr", "show", "dev", "eth0"]);
    assert!(a.contains(&v6addr), "{a}");
    assert!(!a.contains("tentative"), "DAD should be off: {a}");
    let dad = w.pods[p]
        .netns
        .exec(&["sysctl", "-n", "net.ipv6.conf.eth0.accept_dad"]);
    assert_eq!(dad.trim(), "0");
    // Both gateways on the bridge, both default routes in the pod, forwarding in the node.
    let (_, br) = w.host_ip(&["-o", "addr", "show", "dev", &w.bridge]);
    assert!(
        br.contains(&format!("{}/24", w.gw())) && br.contains("fd5b:cb:12::1/64"),
        "{br}"
    );
    let (_, r6) = w.in_pod(p, &["-6", "route", "show", "default"]);
    assert!(r6.contains("via fd5b:cb:12::1"), "{r6}");
    let (_, r4) = w.in_pod(p, &["route", "show", "default"]);
    assert!(r4.contains(&format!("via {}", w.gw())), "{r4}");
    let fwd = w.host_sh(&[
        "sysctl",
        "-n",
        "net.ipv6.conf.all.forwarding",
        "net.ipv4.ip_forward",
    ]);
    assert_eq!(
        fwd.1.split_whitespace().collect::<Vec<_>>(),
        vec!["1", "1"],
        "{}",
        fwd.1
    );
    // The bridge's own v6 address may still be tentative for a moment.
    assert!(
        (0..30).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            w.ping_from(p, &v6gw)
        }),
        "pod cannot ping {v6gw}"
    );
    assert!(w.ping_from(p, &w.gw()));
    // Masquerade rules for both families, in the node.
    let (_, rules) = w.host_sh(&["nft", "list", "ruleset"]);
    let v4 = result_ip(&res);
    assert!(rules.contains(v4.split('/').next().unwrap()), "{rules}");
    assert!(rules.contains(v6addr.split('/').next().unwrap()), "{rules}");

    let mut check_conf = conf.clone();
    check_conf["prevResult"] = res.clone();
    let o = w.run("CHECK", &check_conf, p);
    assert!(o.ok, "CHECK: {} {}", o.raw, o.stderr);

    let o = w.run("DEL", &conf, p);
    assert!(o.ok, "DEL: {} {}", o.raw, o.stderr);
    assert!(w.ports().is_empty());
    assert!(w.reservations().is_empty(), "{:?}", w.reservations());
    let (_, rules) = w.host_sh(&["nft", "list", "ruleset"]);
    assert!(
        !rules.contains(v6addr.split('/').next().unwrap()),
        "{rules}"
    );
}

#[test]
fn vlan_ports_are_isolated() {
    let mut w = World::new("vlan", 13);
    w.in_node();
    let a = w.pod();
    let b = w.pod();
    let c = w.pod();
    let conf100 = w.conf(json!({"isGateway": false, "vlan": 100}));
    let conf200 = w.conf(json!({"isGateway": false, "vlan": 200}));
    // Kernels without CONFIG_BRIDGE_VLAN_FILTERING (this VM's): ADD must fail cleanly.
    let probe = format!("{}p", w.bridge);
    let filtering = w
        .host_ip(&[
            "link",
            "add",
            &probe,
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ])
        .0;
    w.host_ip(&["link", "del", &probe]);
    if !filtering {
        let o = w.run("ADD", &conf100, a);
        assert!(!o.ok, "vlan without kernel support accepted");
        assert!(o.msg().contains("vlan"), "{}", o.raw);
        assert!(w.reservations().is_empty());
        assert!(!w.in_pod(a, &["link", "show", "eth0"]).0);
        eprintln!("kernel has no bridge VLAN filtering: only the clean failure was checked");
        return;
    }
    let ra = w.add_ok(&conf100, a);
    let rb = w.add_ok(&conf100, b);
    let rc = w.add_ok(&conf200, c);
    let hv = ra["interfaces"][1]["name"].as_str().unwrap().to_string();
    let (_, vl) = w.host_sh(&["bridge", "vlan", "show", "dev", &hv]);
    assert!(
        vl.contains("100") && vl.contains("PVID") && vl.contains("Untagged"),
        "{vl}"
    );
    let ip = |r: &Value| result_ip(r).split('/').next().unwrap().to_string();
    assert!(w.ping_from(a, &ip(&rb)), "same VLAN should reach");
    assert!(
        w.pods[a]
            .netns
            .try_exec(&["ping", "-c1", "-W1", &ip(&rc)])
            .is_err(),
        "other VLAN reached"
    );
    for p in [a, b] {
        assert!(w.run("DEL", &conf100, p).ok);
    }
    assert!(w.run("DEL", &conf200, c).ok);
    assert!(w.ports().is_empty());
}

#[test]
fn older_cni_versions() {
    let mut w = World::new("ver", 14);
    let p = w.pod();
    for v in ["0.3.1", "0.4.0", "1.0.0"] {
        let conf = w.conf(json!({"cniVersion": v}));
        let res = w.add_ok(&conf, p);
        assert_eq!(res["cniVersion"], v);
        assert_eq!(
            res["interfaces"].as_array().map(Vec::len),
            Some(3),
            "{v}: {res}"
        );
        if v == "0.3.1" {
            assert_eq!(res["ips"][0]["version"], "4", "{res}");
        }
        if v != "0.3.1" {
            let mut check = conf.clone();
            check["prevResult"] = res.clone();
            let o = w.run("CHECK", &check, p);
            assert!(o.ok, "{v} CHECK: {} {}", o.raw, o.stderr);
        }
        let o = w.run("DEL", &conf, p);
        assert!(o.ok, "{v} DEL: {} {}", o.raw, o.stderr);
    }
    // 0.2.0: no interfaces in the result, just ip4.
    let conf = w.conf(json!({"cniVersion": "0.2.0"}));
    let res = w.add_ok(&conf, p);
    assert!(
        res["ip4"]["ip"].as_str().unwrap().starts_with("10.251.14."),
        "{res}"
    );
    assert!(w.run("DEL", &conf, p).ok);
    assert!(w.reservations().is_empty());
}

/// The MAC of `dev` (in the pod's netns when `pod` is given) as the kernel reports it.
fn real_mac(w: &World, pod: Option<usize>, dev: &str) -> String {
    let (ok, out) = match pod {
        Some(p) => w.in_pod(p, &["-j", "link", "show", "dev", dev]),
        None => w.host_ip(&["-j", "link", "show", "dev", dev]),
    };
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

/// The result's MACs are the kernel's, though the plugin no longer reads them back after
/// making the links: the pod end gets a MAC the plugin picks (random, unicast, locally
/// administered, like the kernel's own), a bridge the plugin creates has a MAC fixed at
/// creation. A bridge made elsewhere without a MAC takes its port's MAC when the pod's
/// veth joins: the result reports the MAC after the join.
#[test]
fn result_macs_are_the_kernels() {
    let mut w = World::new("mac", 16);
    let conf = w.conf(json!({}));
    let mut pod_macs = Vec::new();
    for _ in 0..2 {
        let p = w.pod();
        let res = w.add_ok(&conf, p);
        let ifs = &res["interfaces"];
        assert_eq!(
            ifs[0]["mac"],
            real_mac(&w, None, &w.bridge).as_str(),
            "{res}"
        );
        let host_veth = ifs[1]["name"].as_str().unwrap();
        assert_eq!(
            ifs[1]["mac"],
            real_mac(&w, None, host_veth).as_str(),
            "{res}"
        );
        let mac = real_mac(&w, Some(p), "eth0");
        assert_eq!(ifs[2]["mac"], mac.as_str(), "{res}");
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(
            first & 0x03,
            0x02,
            "{mac}: not unicast + locally administered"
        );
        pod_macs.push(mac);
    }
    assert_ne!(pod_macs[0], pod_macs[1], "two pods got the same MAC");

    // A bridge made without a MAC (random: the kernel replaces it by its lowest port's).
    let mut w = World::new("mac2", 17);
    let (ok, out) = w.host_ip(&["link", "add", &w.bridge, "type", "bridge"]);
    assert!(ok, "{out}");
    let before = real_mac(&w, None, &w.bridge);
    let conf = w.conf(json!({}));
    let p = w.pod();
    let res = w.add_ok(&conf, p);
    let ifs = &res["interfaces"];
    let after = real_mac(&w, None, &w.bridge);
    assert_eq!(ifs[0]["mac"], after.as_str(), "{res}");
    assert_eq!(
        ifs[1]["mac"],
        after.as_str(),
        "bridge did not take its port's MAC: {res}"
    );
    assert_ne!(before, after, "{res}");
}
