//! CHECK with the reference `bandwidth` plugin chained after `cni-bridge` and
//! `cni-vxlan` (pod side), egress shaping on: bandwidth adds its ifb device (`bwp…`) to
//! the result, which is not ours; our CHECK skips it (as the reference `bridge` does)
//! and still fails when our own host veth is taken off the bridge.

use cni_runtime::{CniConfig, NetworkConfigList, RtError, RuntimeConf};
use conformance::bins;
use conformance::fixture::TestNet;
use serde_json::{json, Value};

/// DELs the attachment on drop (a failing test leaves no bandwidth state).
struct Attached<'a> {
    rt: &'a CniConfig,
    list: &'a NetworkConfigList,
    conf: RuntimeConf,
}
impl Drop for Attached<'_> {
    fn drop(&mut self) {
        let _ = self.rt.del_network_list(self.list, &self.conf);
    }
}

fn chained_with_bandwidth(plugin: &str, tag: &str) {
    bins::ref_bin("bandwidth");
    let net = TestNet::new(tag);
    let pod = net.pod();
    let cache = tempfile::tempdir().unwrap();
    let rt = CniConfig::new(vec![bins::our_bin_dir(), bins::ref_bin_dir()], cache.path());
    let mut first = json!({
        "type": plugin, "bridge": net.bridge, "isGateway": true,
        "ipam": {"type": "cni-ipam", "dataDir": net.data_dir().display().to_string(),
                 "ranges": [[{"subnet": net.subnet.cidr(),
                              "gateway": net.subnet.gateway().to_string()}]]}
    });
    if plugin == "cni-vxlan" {
        // The pod side alone: MTU given, so no underlay is needed.
        first["mtu"] = json!(1400);
    }
    let list = NetworkConfigList::from_json(&json!({
        "cniVersion": "1.0.0",
        "name": net.name,
        "plugins": [first, {"type": "bandwidth", "capabilities": {"bandwidth": true}}]
    }))
    .unwrap();
    let mut conf = RuntimeConf::new(
        &pod.container_id,
        &pod.netns.path().display().to_string(),
        "eth0",
    );
    conf.capability_args.insert(
        "bandwidth".into(),
        json!({"ingressRate": 8_000_000, "ingressBurst": 80_000,
               "egressRate": 8_000_000, "egressBurst": 80_000}),
    );
    let _guard = Attached {
        rt: &rt,
        list: &list,
        conf: conf.clone(),
    };
    let res = rt
        .add_network_list(&list, &conf)
        .expect("ADD through the chain");
    let names: Vec<&str> = res["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("sandbox").is_none_or(Value::is_null))
        .filter_map(|i| i["name"].as_str())
        .collect();
    let ifb = names
        .iter()
        .find(|n| n.starts_with("bwp"))
        .unwrap_or_else(|| panic!("no ifb device in the result: {res}"));
    let veth = names
        .iter()
        .find(|n| **n != net.bridge && !n.starts_with("bwp"))
        .unwrap_or_else(|| panic!("no host veth in the result: {res}"))
        .to_string();
    assert!(conformance::inspect::host_link_exists(ifb), "{ifb} missing");

    rt.check_network_list(&list, &conf)
        .unwrap_or_else(|e| panic!("{plugin}: CHECK with bandwidth's {ifb} in prevResult: {e}"));

    // Our own veth off the bridge: CHECK fails, in our plugin, naming it.
    conformance::sh("ip", &["link", "set", &veth, "nomaster"]);
    match rt.check_network_list(&list, &conf) {
        Err(RtError::Plugin { plugin: p, error }) => {
            assert_eq!(p, plugin);
            assert!(
                error.msg.contains(&veth) && error.msg.contains("not on bridge"),
                "{error:?}"
            );
        }
        other => panic!("{plugin}: CHECK with the veth off the bridge: {other:?}"),
    }
    conformance::sh("ip", &["link", "set", &veth, "master", &net.bridge]);
    rt.check_network_list(&list, &conf)
        .expect("CHECK once back on the bridge");
    rt.del_network_list(&list, &conf)
        .expect("DEL through the chain");
    assert!(!conformance::inspect::host_link_exists(ifb), "{ifb} left");
}

#[test]
fn cni_bridge_then_bandwidth_egress_check() {
    chained_with_bandwidth("cni-bridge", "chkbwbr");
}

#[test]
fn cni_vxlan_then_bandwidth_egress_check() {
    chained_with_bandwidth("cni-vxlan", "chkbwvx");
}
