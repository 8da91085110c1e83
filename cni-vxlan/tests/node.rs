//! Root-only kernel tests of the VXLAN node side: `Vxlan::ensure` in a network namespace
//! of its own (named from the test and the pid, removed by a guard) with an underlay
//! veth pair inside it. Checked with `ip -d link show` and `ip addr`, not with our code.

use std::collections::BTreeMap;

use cni_core::netlink::{Netlink, UnderlaySelect};
use cni_core::netns::NetNs;
use cni_core::node::peer::{vtep_mac_for, VTEP_MAC_KEY};
use cni_core::node::{NodeSide, Peer};
use cni_vxlan::config::VxlanOptions;
use cni_vxlan::node::Vxlan;
use serde_json::Value;
use testkit::Netns;

/// A namespace of the test's own (the test kit's fixture: deleted on drop, also when
/// the test fails) and our handle on it.
struct TestNs {
    kit: Netns,
    ns: NetNs,
}

impl TestNs {
    fn new(tag: &str) -> TestNs {
        let kit = Netns::named(&format!("cnivx-{tag}-{}", std::process::id()));
        let ns = NetNs::open(&kit.path()).unwrap();
        let t = TestNs { ns, kit };
        // The underlay: veth `under0` (192.168.78.1/24, MTU 1400) with its peer up.
        t.ip(&[
            "link", "add", "under0", "mtu", "1400", "type", "veth", "peer", "name", "under1",
        ]);
        t.ip(&["addr", "add", "192.168.78.1/24", "dev", "under0"]);
        t.ip(&["link", "set", "under0", "up"]);
        t.ip(&["link", "set", "under1", "up"]);
        t
    }

    /// `ip ARGS` inside the namespace; panics on failure.
    fn ip(&self, args: &[&str]) -> String {
        self.kit.ip(args)
    }

    fn link_json(&self, dev: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ip(&["-d", "-j", "link", "show", dev])).unwrap();
        v[0].clone()
    }

    fn v4_addrs(&self, dev: &str) -> Vec<String> {
        let v: Value =
            serde_json::from_str(&self.ip(&["-j", "-4", "addr", "show", "dev", dev])).unwrap();
        v[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| format!("{}/{}", i["local"].as_str().unwrap(), i["prefixlen"]))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn me(blocks: &[&str]) -> Peer {
    Peer {
        name: "node-a".into(),
        underlay: Some("192.168.78.1".parse().unwrap()),
        blocks: blocks.iter().map(|b| b.parse().unwrap()).collect(),
        backend: BTreeMap::new(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap()
}

#[test]
fn ensure_creates_keeps_and_recreates_the_device() {
    let t = TestNs::new("ensure");
    rt().block_on(async {
        let nl = Netlink::connect_in(&t.ns).unwrap();
        // The underlay as ipamd finds it: the interface of the default route.
        t.ip(&[
            "route",
            "add",
            "default",
            "via",
            "192.168.78.2",
            "dev",
            "under0",
        ]);
        let underlay = nl.underlay(&UnderlaySelect::DefaultRoute).await.unwrap();
        assert_eq!((underlay.name.as_str(), underlay.mtu), ("under0", 1400));
        let mut vx = Vxlan::new("node-a", underlay, &VxlanOptions::default()).unwrap();
        let mac = vtep_mac_for("node-a", 1);
        assert_eq!(vx.backend().get(VTEP_MAC_KEY), Some(&mac.to_string()));

        let a = me(&["10.30.0.64/26", "10.30.1.0/26"]);
        assert!(vx.ensure(&nl, &a).await.unwrap(), "first ensure creates");
        let link = t.link_json("cni-vx.1");
        let info = &link["linkinfo"]["info_data"];
        assert_eq!(link["linkinfo"]["info_kind"], "vxlan", "{link}");
        assert_eq!(link["address"], mac.to_string().as_str());
        assert_eq!(link["mtu"], 1350, "underlay 1400 - 50");
        assert_eq!(info["id"], 1);
        assert_eq!(info["port"], 8472);
        assert_eq!(info["local"], "192.168.78.1");
        assert_eq!(info["learning"], false, "{info}");
        assert_eq!(t.v4_addrs("cni-vx.1"), vec!["10.30.0.65/32"]);
        let index = link["ifindex"].as_u64().unwrap() as u32;
        assert_eq!(vx.devices(), vec![index]);

        // Nothing wrong: nothing changes.
        assert!(
            !vx.ensure(&nl, &a).await.unwrap(),
            "second ensure is a no-op"
        );
        assert_eq!(t.link_json("cni-vx.1")["ifindex"], index);
        assert_eq!(t.v4_addrs("cni-vx.1"), vec!["10.30.0.65/32"]);

        // The lowest block changes: the /32 follows.
        let b = me(&["10.30.1.0/26"]);
        assert!(!vx.ensure(&nl, &b).await.unwrap());
        assert_eq!(t.v4_addrs("cni-vx.1"), vec!["10.30.1.1/32"]);

        // Deleted behind our back: recreated, with its address.
        t.ip(&["link", "del", "cni-vx.1"]);
        assert!(
            vx.ensure(&nl, &b).await.unwrap(),
            "a deleted device is recreated"
        );
        assert_eq!(t.v4_addrs("cni-vx.1"), vec!["10.30.1.1/32"]);
        let new_index = t.link_json("cni-vx.1")["ifindex"].as_u64().unwrap() as u32;
        assert_eq!(vx.devices(), vec![new_index]);

        // A peer's objects point at the device.
        let peer = Peer {
            name: "node-b".into(),
            underlay: Some("192.168.78.9".parse().unwrap()),
            blocks: vec!["10.30.2.0/26".parse().unwrap()],
            backend: BTreeMap::from([(
                VTEP_MAC_KEY.to_string(),
                vtep_mac_for("node-b", 1).to_string(),
            )]),
        };
        assert_eq!(vx.objects(&peer).unwrap().len(), 3);
    });
}

#[test]
fn configured_name_vni_port_and_mtu() {
    let t = TestNs::new("opts");
    rt().block_on(async {
        let nl = Netlink::connect_in(&t.ns).unwrap();
        let underlay = nl
            .underlay(&UnderlaySelect::Interface("under0".into()))
            .await
            .unwrap();
        let opts = VxlanOptions {
            vni: 4242,
            port: 4789,
            device: Some("vxtest".into()),
            mtu: Some(1300),
            direct_routing: false,
        };
        let mut vx = Vxlan::new("node-z", underlay, &opts).unwrap();
        assert!(vx.ensure(&nl, &me(&[])).await.unwrap());
        let link = t.link_json("vxtest");
        assert_eq!(link["mtu"], 1300);
        assert_eq!(link["linkinfo"]["info_data"]["id"], 4242);
        assert_eq!(link["linkinfo"]["info_data"]["port"], 4789);
        assert_eq!(
            link["address"],
            vtep_mac_for("node-z", 4242).to_string().as_str()
        );
        assert!(t.v4_addrs("vxtest").is_empty(), "no block, no address");
        // A stray IPv4 address on our device is removed once the node has a block.
        t.ip(&["addr", "add", "10.31.9.9/32", "dev", "vxtest"]);
        assert!(!vx.ensure(&nl, &me(&["10.31.0.0/26"])).await.unwrap());
        assert_eq!(t.v4_addrs("vxtest"), vec!["10.31.0.1/32"]);
    });
}
