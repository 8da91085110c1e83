//! The host guard (issue 14.1), for all four datapath plugins: a `CNI_NETNS` that is the
//! namespace the plugin itself runs in is never treated as a pod. A namespace created
//! here stands in for the host (the plugin runs inside it through `ip netns exec`, and
//! the same namespace is passed as `CNI_NETNS`); the real host namespace is never used.
//!
//! - ADD and CHECK are refused with code 4 naming CNI_NETNS, and nothing is created in
//!   the stand-in host (links, IPv4 addresses and routes, nftables) nor in the store;
//! - DEL with `CNI_IFNAME=eth0` of a container never added succeeds and leaves the
//!   stand-in host's own `eth0` with its address and routes;
//! - DEL of a container added elsewhere, with the host as `CNI_NETNS`, still releases
//!   its address (the range holds one address: the next ADD gets it).

use std::io::Write;
use std::process::{Command, Stdio};

use conformance::bins::{self, CniPath};
use conformance::netns::Netns;
use conformance::subnet::Subnet;
use serde_json::{json, Value};

/// What a run of the plugin inside `host` gave: exit success and stdout as JSON.
struct Run {
    ok: bool,
    out: Value,
    raw: String,
}

fn run_in(host: &Netns, path: &CniPath, plugin: &str, env: &[(&str, &str)], conf: &Value) -> Run {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", host.name()])
        .arg(path.plugin(plugin))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_PATH", path.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("spawn plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(conf).unwrap())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let raw = String::from_utf8_lossy(&o.stdout).into_owned();
    Run {
        ok: o.status.success(),
        out: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw: format!("{raw} / {}", String::from_utf8_lossy(&o.stderr)),
    }
}

fn env<'a>(cmd: &'a str, cid: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
    ]
}

/// What of the stand-in host a plugin could change: link names, IPv4 addresses, IPv4
/// routes of every table, the nftables ruleset.
fn snapshot(host: &Netns) -> String {
    let links: Vec<String> = host
        .exec(&["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    format!(
        "links {links:?}\naddrs\n{}\nroutes\n{}\nnft\n{}",
        host.exec(&["ip", "-4", "-o", "addr", "show"]),
        host.exec(&["ip", "-4", "route", "show", "table", "all"]),
        host.exec(&["nft", "list", "ruleset"])
    )
}

fn guard(plugin: &str, tag: &str) {
    let path = CniPath::from_dirs(&[bins::our_bin_dir(), bins::ref_bin_dir()]);
    let host = Netns::new(&format!("hg{tag}"));
    let subnet = Subnet::for_test(&format!("hg{tag}"));
    let store = tempfile::tempdir().unwrap();
    let data_dir = store.path().join("ipam");
    // The stand-in host's own eth0, with an address and a route of its own.
    host.exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer",
    ]);
    host.exec(&["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    host.exec(&["ip", "link", "set", "eth0", "up"]);
    host.exec(&["ip", "link", "set", "eth0peer", "up"]);
    host.exec(&["ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1"]);

    let only = subnet.host(10).to_string();
    let mut conf = json!({
        "cniVersion": "1.0.0",
        "name": format!("hg-{tag}"),
        "type": plugin,
        "ipMasq": true,
        "mtu": 1400,
        "ipam": {
            "type": "cni-ipam",
            "dataDir": data_dir,
            "ranges": [[{"subnet": subnet.cidr(), "gateway": subnet.gateway().to_string(),
                         "rangeStart": only, "rangeEnd": only}]]
        }
    });
    if plugin == "cni-bridge" || plugin == "cni-vxlan" {
        conf["bridge"] = json!(conformance::names::unique("hgbr", tag));
        conf["isGateway"] = json!(true);
    }
    let host_path = host.path().display().to_string();
    let before = snapshot(&host);

    // ADD into the host: refused with 4, nothing created, no reservation.
    let r = run_in(
        &host,
        &path,
        plugin,
        &env("ADD", "hg-never", &host_path),
        &conf,
    );
    assert!(
        !r.ok,
        "{plugin}: ADD into its own netns succeeded: {}",
        r.raw
    );
    assert_eq!(r.out["code"], 4, "{plugin}: {}", r.raw);
    assert!(
        r.out["msg"].as_str().unwrap_or("").contains("CNI_NETNS"),
        "{}",
        r.raw
    );
    assert_eq!(
        snapshot(&host),
        before,
        "{plugin}: ADD refused but the host changed"
    );
    assert!(!data_dir.exists(), "{plugin}: refused ADD reached IPAM");

    // CHECK against the host: refused with 4.
    let mut check = conf.clone();
    check["prevResult"] = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": host_path}],
        "ips": [{"address": "192.0.2.10/24", "interface": 0}]});
    let r = run_in(
        &host,
        &path,
        plugin,
        &env("CHECK", "hg-never", &host_path),
        &check,
    );
    assert!(!r.ok && r.out["code"] == 4, "{plugin}: CHECK: {}", r.raw);

    // DEL of a container never added, CNI_IFNAME=eth0: success, eth0 untouched, twice.
    for _ in 0..2 {
        let r = run_in(
            &host,
            &path,
            plugin,
            &env("DEL", "hg-never", &host_path),
            &conf,
        );
        assert!(
            r.ok,
            "{plugin}: DEL with the host as netns failed: {}",
            r.raw
        );
    }
    assert_eq!(snapshot(&host), before, "{plugin}: DEL changed the host");

    // A container added elsewhere (pod A), then DEL with the host as CNI_NETNS: its
    // address is released (pod B gets the range's only address), the host intact.
    let pod_a = Netns::new(&format!("hga{tag}"));
    let pod_b = Netns::new(&format!("hgb{tag}"));
    let a_path = pod_a.path().display().to_string();
    let b_path = pod_b.path().display().to_string();
    let r = run_in(&host, &path, plugin, &env("ADD", "hg-a", &a_path), &conf);
    assert!(r.ok, "{plugin}: ADD of pod A: {}", r.raw);
    assert!(r.raw.contains(&only), "{plugin}: {}", r.raw);
    let r = run_in(&host, &path, plugin, &env("ADD", "hg-b", &b_path), &conf);
    assert!(
        !r.ok,
        "{plugin}: the range has one address, B must wait: {}",
        r.raw
    );
    let r = run_in(&host, &path, plugin, &env("DEL", "hg-b", &b_path), &conf);
    assert!(r.ok, "{}", r.raw);
    let with_a = snapshot(&host);
    let r = run_in(&host, &path, plugin, &env("DEL", "hg-a", &host_path), &conf);
    assert!(r.ok, "{plugin}: DEL of A with the host as netns: {}", r.raw);
    let after = snapshot(&host);
    for keep in ["eth0", "192.0.2.10/24", "198.51.100.0/24 via 192.0.2.1"] {
        assert!(after.contains(keep), "{plugin}: host lost {keep}:\n{after}");
    }
    assert!(
        !after.contains(&format!("ip saddr {only}")),
        "{plugin}: A's masquerade rule left:\n{after}\nbefore:\n{with_a}"
    );
    let r = run_in(&host, &path, plugin, &env("ADD", "hg-b", &b_path), &conf);
    assert!(r.ok, "{plugin}: A's address was not released: {}", r.raw);
    assert!(r.raw.contains(&only), "{}", r.raw);
    let r = run_in(&host, &path, plugin, &env("DEL", "hg-b", &b_path), &conf);
    assert!(r.ok, "{}", r.raw);
    assert!(
        snapshot(&host).contains("192.0.2.10/24"),
        "{plugin}: host's eth0 address gone"
    );
}

#[test]
fn host_guard_cni_bridge() {
    guard("cni-bridge", "br");
}

#[test]
fn host_guard_cni_vxlan() {
    guard("cni-vxlan", "vx");
}

#[test]
fn host_guard_cni_routed() {
    guard("cni-routed", "rt");
}

#[test]
fn host_guard_cni_ipip() {
    guard("cni-ipip", "ip");
}
