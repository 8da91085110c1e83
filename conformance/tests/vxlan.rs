//! `cni-vxlan`'s pod side end to end, with the built binaries. Each test has a *node*: a
//! network namespace whose default route leaves by an underlay veth of a known MTU; the
//! plugin runs inside it (`ip netns exec`, through a wrapper script), so the bridge, the
//! host veths and the underlay detection all happen in the node, not on this machine.
//! Pods are namespaces of their own. IPAM: `cni-ipam` in cluster mode (file store,
//! `reserveGateway`), or the reference `host-local`. Then the conformance suite.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use conformance::bins::{self, CniPath};
use conformance::fixture::Pod;
use conformance::netns::Netns;
use conformance::runner::{Invocation, Outcome};
use conformance::subnet::Subnet;
use conformance::suite::{self, Target};
use conformance::{inspect, names};
use ipnetwork::{IpNetwork, Ipv4Network};
use serde_json::{json, Value};

/// A node: a namespace with an underlay veth `up0` (192.168.99.1/24, given MTU) and,
/// unless told otherwise, the default route through it.
struct Node {
    netns: Netns,
    /// `exec ip netns exec <node> cni-vxlan "$@"`.
    plugin: PathBuf,
    cni_path: CniPath,
    _dir: tempfile::TempDir,
}

impl Node {
    fn new(tag: &str, underlay_mtu: u32, default_route: bool) -> Node {
        bins::our_bin("cni-vxlan");
        bins::our_bin("cni-ipam");
        let netns = Netns::new(tag);
        let mtu = underlay_mtu.to_string();
        netns.exec(&[
            "ip", "link", "add", "up0", "mtu", &mtu, "type", "veth", "peer", "name", "up1",
        ]);
        netns.exec(&["ip", "addr", "add", "192.168.99.1/24", "dev", "up0"]);
        netns.exec(&["ip", "link", "set", "up0", "up"]);
        netns.exec(&["ip", "link", "set", "up1", "up"]);
        if default_route {
            netns.exec(&["ip", "route", "add", "default", "via", "192.168.99.2"]);
        }
        let cni_path = CniPath::from_dirs(&[bins::our_bin_dir(), bins::ref_bin_dir()]);
        let dir = tempfile::Builder::new()
            .prefix("cni-vxnode-")
            .tempdir()
            .unwrap();
        let plugin = dir.path().join("cni-vxlan-in-node");
        std::fs::write(
            &plugin,
            format!(
                "#!/bin/sh\nexec ip netns exec {} {} \"$@\"\n",
                netns.name(),
                cni_path.dir().join("cni-vxlan").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Node {
            netns,
            plugin,
            cni_path,
            _dir: dir,
        }
    }

    fn run(&self, command: &str, pod: &Pod, conf: &Value) -> Outcome {
        Invocation::new(&self.plugin, command, self.cni_path.dir())
            .container_id(&pod.container_id)
            .ifname(&pod.ifname)
            .netns(pod.netns.path())
            .config(conf)
            .run()
    }

    /// The node's veth links (the underlay pair excluded): host ends of pods.
    fn pod_veths(&self) -> Vec<String> {
        let out = self
            .netns
            .exec(&["ip", "-j", "link", "show", "type", "veth"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .filter(|n| n != "up0" && n != "up1")
            .collect()
    }

    fn link_exists(&self, name: &str) -> bool {
        inspect::link_exists_in(&self.netns, name)
    }
}

/// MTU of `dev` in `ns`.
fn mtu(ns: &Netns, dev: &str) -> u64 {
    let v: Value =
        serde_json::from_str(&ns.exec(&["ip", "-j", "link", "show", "dev", dev])).unwrap();
    v[0]["mtu"].as_u64().unwrap()
}

/// The allocation entries (`ip-*`, `key-*`) of network `name`'s cni-ipam store.
fn ipam_entries(data_dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(data_dir.join(name))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ip-") || n.starts_with("key-"))
                .collect()
        })
        .unwrap_or_default()
}

/// The address files of network `name`'s reference host-local store.
fn host_local_entries(data_dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(data_dir.join(name))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A cni-vxlan config with cni-ipam in cluster mode: `subnet` as the pool cut in /28
/// blocks, a file store in `dir`.
fn cluster_conf(name: &str, subnet: &Subnet, dir: &Path, reserve_gateway: bool) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": name, "type": "cni-vxlan",
        "ipam": {
            "type": "cni-ipam", "pool": subnet.cidr(), "blockSize": 28, "nodeName": "node-a",
            "store": format!("file://{}/cluster.json", dir.display()),
            "dataDir": dir.display().to_string(), "reserveGateway": reserve_gateway
        }
    })
}

fn net_name(tag: &str) -> String {
    format!("vx-{}", names::unique("n", tag))
}

/// The pod's IPv4 address and gateway from a 1.0.0 result.
fn addr_and_gw(result: &Value) -> (Ipv4Network, Ipv4Addr) {
    let ip = &result["ips"][0];
    let addr: Ipv4Network = ip["address"].as_str().unwrap().parse().unwrap();
    let gw: Ipv4Addr = ip["gateway"]
        .as_str()
        .unwrap_or_else(|| panic!("no gateway in {result}"))
        .parse()
        .unwrap();
    (addr, gw)
}

fn assert_default_route_via(pod: &Pod, gw: Ipv4Addr) {
    let routes = inspect::routes(&pod.netns);
    assert!(
        routes.iter().any(|(dst, via, dev)| dst == "default"
            && via.as_deref() == Some(gw.to_string().as_str())
            && dev == "eth0"),
        "no default route via {gw} in the pod: {routes:?}"
    );
}

#[test]
fn cluster_ipam_pods_get_the_gateway_and_the_underlay_mtu() {
    let node = Node::new("vxcl", 1400, true);
    let subnet = Subnet::for_test("vxcl");
    let dir = tempfile::tempdir().unwrap();
    let name = net_name("vxcl");
    let conf = cluster_conf(&name, &subnet, dir.path(), true);
    let a = Pod::new("vxcl");
    let b = Pod::new("vxcl");

    let res_a = node.run("ADD", &a, &conf).expect_ok();
    let res_b = node.run("ADD", &b, &conf).expect_ok();
    let (addr_a, gw) = addr_and_gw(&res_a);
    let (addr_b, gw_b) = addr_and_gw(&res_b);
    let block = Ipv4Network::new(addr_a.network(), 28).unwrap();
    assert_eq!(addr_a.prefix(), 28, "{res_a}");
    assert!(
        subnet.contains(addr_a.ip()),
        "{addr_a} outside the pool {}",
        subnet.cidr()
    );
    assert_eq!(
        gw,
        Ipv4Addr::from(u32::from(block.network()) + 1),
        "gateway = block's first host"
    );
    assert_eq!(gw_b, gw, "same block, same gateway");
    assert!(
        addr_a.ip() != gw && addr_b.ip() != gw,
        "a pod got the gateway"
    );

    // In the pods: the address, the default route via the gateway, MTU 1400 - 50.
    assert!(
        a.addrs().contains(&IpNetwork::V4(addr_a)),
        "{:?}",
        a.addrs()
    );
    assert_default_route_via(&a, gw);
    assert_eq!(mtu(&a.netns, "eth0"), 1350);
    // On the node: the gateway on the bridge (the pod's prefix), the bridge's MTU.
    let br = inspect::addrs(&node.netns, "cni-vx0");
    assert!(
        br.contains(&format!("{gw}/28").parse().unwrap()),
        "bridge has {br:?}"
    );
    assert_eq!(mtu(&node.netns, "cni-vx0"), 1350);
    assert_eq!(node.pod_veths().len(), 2);
    assert!(a.ping(gw), "pod a cannot ping its gateway {gw}");
    assert!(
        a.ping(addr_b.ip()),
        "pod a cannot ping pod b {}",
        addr_b.ip()
    );

    let mut check = conf.clone();
    check["prevResult"] = res_a.clone();
    node.run("CHECK", &a, &check).expect_ok();

    for (p, r) in [(&a, &res_a), (&b, &res_b)] {
        let mut del = conf.clone();
        del["prevResult"] = r.clone();
        node.run("DEL", p, &del).expect_ok();
        node.run("DEL", p, &conf).expect_ok();
    }
    assert!(!inspect::link_exists_in(&a.netns, "eth0"));
    assert!(!inspect::link_exists_in(&b.netns, "eth0"));
    assert!(
        node.pod_veths().is_empty(),
        "veths left: {:?}",
        node.pod_veths()
    );
    assert!(
        ipam_entries(dir.path(), &name).is_empty(),
        "addresses not released"
    );
}

#[test]
fn host_local_pods_with_the_configured_mtu() {
    let node = Node::new("vxhl", 1400, true);
    let subnet = Subnet::for_test("vxhl");
    let dir = tempfile::tempdir().unwrap();
    let name = net_name("vxhl");
    let conf = json!({
        "cniVersion": "1.0.0", "name": name, "type": "cni-vxlan", "bridge": "vxbr0", "mtu": 1280,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet.cidr()}]],
                 "dataDir": dir.path().display().to_string()}
    });
    let a = Pod::new("vxhl");
    let res = node.run("ADD", &a, &conf).expect_ok();
    let (addr, gw) = addr_and_gw(&res);
    assert_eq!(gw, subnet.gateway());
    assert!(a.addrs().contains(&IpNetwork::V4(addr)));
    assert_default_route_via(&a, gw);
    assert_eq!(mtu(&a.netns, "eth0"), 1280, "the configured mtu wins");
    assert!(inspect::addrs(&node.netns, "vxbr0").contains(&format!("{gw}/24").parse().unwrap()));
    assert!(!node.link_exists("cni-vx0"), "bridge option ignored");
    assert!(a.ping(gw));
    assert_eq!(host_local_entries(dir.path(), &name).len(), 1);

    let mut del = conf.clone();
    del["prevResult"] = res;
    node.run("DEL", &a, &del).expect_ok();
    assert!(!inspect::link_exists_in(&a.netns, "eth0"));
    assert!(node.pod_veths().is_empty());
    assert!(
        host_local_entries(dir.path(), &name).is_empty(),
        "address not released"
    );
}

#[test]
fn cluster_ipam_without_reserve_gateway_is_code_7_and_leaves_nothing() {
    let node = Node::new("vxng", 1400, true);
    let subnet = Subnet::for_test("vxng");
    let dir = tempfile::tempdir().unwrap();
    let name = net_name("vxng");
    let conf = cluster_conf(&name, &subnet, dir.path(), false);
    let a = Pod::new("vxng");
    let e = node.run("ADD", &a, &conf).expect_code(7);
    assert!(
        e.msg.contains("cni-vxlan needs a gateway from IPAM")
            && e.msg.contains("ipam.reserveGateway: true"),
        "{e:?}"
    );
    assert!(
        !inspect::link_exists_in(&a.netns, "eth0"),
        "pod interface left"
    );
    assert!(
        node.pod_veths().is_empty(),
        "veth left: {:?}",
        node.pod_veths()
    );
    assert!(
        ipam_entries(dir.path(), &name).is_empty(),
        "allocation not released"
    );
    // The node's first ADD created the bridge: a failed ADD takes it away again.
    assert!(!node.link_exists("cni-vx0"), "bridge cni-vx0 left");
    node.run("DEL", &a, &conf).expect_ok();
}

#[test]
fn failed_add_after_ipam_leaves_nothing() {
    let node = Node::new("vxfail", 1400, true);
    let subnet = Subnet::for_test("vxfail");
    let dir = tempfile::tempdir().unwrap();
    let name = net_name("vxfail");
    let mut conf = cluster_conf(&name, &subnet, dir.path(), true);
    // An existing link that is not a bridge: the ADD fails while IPAM has allocated.
    conf["bridge"] = json!("up1");
    let a = Pod::new("vxfail");
    let out = node.run("ADD", &a, &conf);
    assert!(
        !out.success(),
        "ADD onto a veth as bridge succeeded: {}",
        out.describe()
    );
    assert!(
        !inspect::link_exists_in(&a.netns, "eth0"),
        "pod interface left"
    );
    assert!(
        node.pod_veths().is_empty(),
        "veth left: {:?}",
        node.pod_veths()
    );
    assert!(
        ipam_entries(dir.path(), &name).is_empty(),
        "allocation not released"
    );
}

#[test]
fn no_underlay_fails_before_anything_is_made() {
    let node = Node::new("vxnou", 1400, false);
    let subnet = Subnet::for_test("vxnou");
    let dir = tempfile::tempdir().unwrap();
    let name = net_name("vxnou");
    let conf = cluster_conf(&name, &subnet, dir.path(), true);
    let a = Pod::new("vxnou");
    // No default route yet: try again later (11), or configure the way out.
    let e = node.run("ADD", &a, &conf).expect_code(11);
    assert!(
        e.msg.contains("mtu"),
        "the message names the way out: {e:?}"
    );
    assert!(!node.link_exists("cni-vx0"), "bridge made");
    assert!(!inspect::link_exists_in(&a.netns, "eth0"));
    assert!(ipam_entries(dir.path(), &name).is_empty(), "IPAM ran");
    // With the underlay named explicitly it works.
    let mut conf = conf;
    conf["underlayInterface"] = json!("up0");
    let res = node.run("ADD", &a, &conf).expect_ok();
    assert_eq!(mtu(&a.netns, "eth0"), 1350, "{res}");
    node.run("DEL", &a, &conf).expect_ok();
    assert!(node.pod_veths().is_empty());
}

/// The conformance suite against `cni-vxlan` + `cni-ipam` (host-local ranges, which carry
/// a gateway), every version: no case may fail. `mtu` is set so the run does not depend
/// on this machine's default route (underlay detection is covered above).
#[test]
fn cni_vxlan_passes_the_suite() {
    bins::our_bin("cni-vxlan");
    bins::our_bin("cni-ipam");
    let mut t = Target::new(
        "cni-vxlan",
        "cni-ipam",
        vec![bins::our_bin_dir(), bins::ref_bin_dir()],
    );
    t.template = Some(json!({
        "type": "cni-vxlan", "bridge": "set-by-suite", "ipMasq": false, "mtu": 1450,
        "ipam": {"type": "cni-ipam"}
    }));
    let report = suite::run(&t);
    println!("{}", report.table());
    assert_eq!(report.versions, conformance::VERSIONS.to_vec());
    let failures: Vec<String> = report
        .failures()
        .iter()
        .map(|r| format!("{} {}: {}", r.case, r.version, r.verdict.reason()))
        .collect();
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    let (_, _, skipped) = report.counts();
    assert_eq!(skipped, 0, "cni-vxlan reports 1.1.0: nothing is skipped");
}
