//! Fixtures that tie the harness together: a [`TestNet`] is one test's network (bridge
//! name, subnet, data dir, `CNI_PATH`, cleanup guards); a [`Pod`] is a netns plus the
//! container id and interface name a runtime would pass.

use std::path::Path;

use serde_json::Value;

use crate::bins::CniPath;
use crate::config::{BridgeConf, IpamConf};
use crate::netns::{LinkGuard, Netns, NftGuard};
use crate::result::{self, ParsedResult};
use crate::subnet::Subnet;
use crate::{inspect, names};
use cni_runtime::{Invocation, Outcome};

/// A pod: its netns, container id and interface name.
#[derive(Debug)]
pub struct Pod {
    pub netns: Netns,
    pub container_id: String,
    pub ifname: String,
}

impl Pod {
    pub fn new(tag: &str) -> Pod {
        Pod {
            netns: Netns::new(tag),
            container_id: names::container_id(tag),
            ifname: "eth0".into(),
        }
    }
    /// The global addresses of the pod's interface, seen with `ip -j addr`.
    pub fn addrs(&self) -> Vec<ipnetwork::IpNetwork> {
        inspect::addrs(&self.netns, &self.ifname)
    }
    /// Pings `ip` from the pod.
    pub fn ping(&self, ip: impl Into<std::net::IpAddr>) -> bool {
        inspect::ping(&self.netns, ip.into())
    }
}

/// One test's network. Dropping it deletes the bridge and any masquerade rule left for
/// its subnet; the data dir is a temp dir. Drop the pods first (declare them after).
#[derive(Debug)]
pub struct TestNet {
    pub tag: String,
    /// Network name (`name` in the config).
    pub name: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub data_dir: tempfile::TempDir,
    pub cni_path: CniPath,
    _bridge_guard: LinkGuard,
    _nft_guard: NftGuard,
}

impl TestNet {
    pub fn new(tag: &str) -> TestNet {
        TestNet::with_path(tag, CniPath::new())
    }

    /// Like [`TestNet::new`] with the plugins of `cni_path`.
    pub fn with_path(tag: &str, cni_path: CniPath) -> TestNet {
        let bridge = names::unique("cbr", tag);
        let subnet = Subnet::for_test(tag);
        TestNet {
            tag: tag.into(),
            name: format!("conf-{}", names::unique("n", tag)),
            _bridge_guard: LinkGuard(bridge.clone()),
            _nft_guard: NftGuard(subnet.prefix()),
            bridge,
            subnet,
            data_dir: tempfile::Builder::new()
                .prefix("cni-data-")
                .tempdir()
                .expect("tempdir"),
            cni_path,
        }
    }

    /// A config of `plugin` (`cni-bridge` or `bridge`) delegating to `ipam`
    /// (`cni-ipam` or `host-local`) on this network: `isGateway`, the whole subnet.
    pub fn conf_with(&self, version: &str, plugin: &str, ipam: &str) -> BridgeConf {
        let ipam = IpamConf::new(ipam, &self.subnet.cidr(), self.data_dir.path());
        BridgeConf::new(version, &self.name, plugin, &self.bridge, ipam)
    }

    /// Always `cni-bridge` + `cni-ipam` (for tests that name our binaries).
    pub fn ours(&self, version: &str) -> BridgeConf {
        self.conf_with(version, "cni-bridge", "cni-ipam")
    }

    /// The plugin pair under test: `cni-bridge` + `cni-ipam`, or, when
    /// `CONFORMANCE_PAIR=reference`, the reference `bridge` + `host-local` (to calibrate
    /// the tests themselves: the reference must pass what it implements).
    pub fn conf(&self, version: &str) -> BridgeConf {
        if std::env::var("CONFORMANCE_PAIR").as_deref() == Ok("reference") {
            self.conf_with(version, "bridge", "host-local")
        } else {
            self.conf_with(version, "cni-bridge", "cni-ipam")
        }
    }

    /// A new pod (netns) for this network.
    pub fn pod(&self) -> Pod {
        Pod::new(&self.tag)
    }

    /// The invocation of `conf`'s plugin for `command` on `pod` (netns given unless the
    /// pod's netns was deleted).
    pub fn invocation(&self, command: &str, pod: &Pod, conf: &Value) -> Invocation {
        let ty = conf["type"].as_str().expect("config has a type");
        let mut inv = Invocation::new(self.cni_path.plugin(ty), command, self.cni_path.dir())
            .container_id(&pod.container_id)
            .ifname(&pod.ifname)
            .config(conf);
        if !pod.netns.is_deleted() {
            inv = inv.netns(pod.netns.path());
        }
        inv
    }

    pub fn run(&self, command: &str, pod: &Pod, conf: &Value) -> Outcome {
        self.invocation(command, pod, conf).run()
    }

    /// ADD, asserting success and the result's shape for `conf`'s version, and that the
    /// pod's interface in the result carries the netns path as `sandbox`. Returns the raw
    /// result (for `prevResult`) and the parsed one.
    pub fn add(&self, pod: &Pod, conf: &Value) -> (Value, ParsedResult) {
        let raw = self.run("ADD", pod, conf).expect_ok();
        let version = conf["cniVersion"].as_str().unwrap_or("");
        let parsed = result::parse(&raw, version).unwrap_or_else(|e| panic!("bad result: {e}"));
        if !parsed.interfaces.is_empty() {
            let sandbox = pod.netns.path().display().to_string();
            let iface = parsed
                .interfaces
                .iter()
                .find(|i| i.name == pod.ifname)
                .unwrap_or_else(|| panic!("no interface {} in {raw}", pod.ifname));
            assert_eq!(
                iface.sandbox.as_deref(),
                Some(sandbox.as_str()),
                "sandbox in {raw}"
            );
        }
        (raw, parsed)
    }

    /// DEL (with `prevResult` if given), asserting success.
    pub fn del(&self, pod: &Pod, conf: &Value, prev: Option<&Value>) {
        self.run("DEL", pod, &with_prev(conf, prev)).expect_ok();
    }

    /// CHECK with `prevResult`.
    pub fn check(&self, pod: &Pod, conf: &Value, prev: &Value) -> Outcome {
        self.run("CHECK", pod, &with_prev(conf, Some(prev)))
    }

    /// GC with `cni.dev/valid-attachments` set to `valid` (no container env).
    pub fn gc(&self, conf: &Value, valid: &[&Pod]) -> Outcome {
        let mut conf = conf.clone();
        conf["cni.dev/valid-attachments"] = crate::config::valid_attachments(
            valid
                .iter()
                .map(|p| (p.container_id.as_str(), p.ifname.as_str())),
        );
        let ty = conf["type"]
            .as_str()
            .expect("config has a type")
            .to_string();
        Invocation::new(self.cni_path.plugin(&ty), "GC", self.cni_path.dir())
            .config(&conf)
            .run()
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }
}

/// `conf` with `prevResult` set (when given).
pub fn with_prev(conf: &Value, prev: Option<&Value>) -> Value {
    let mut c = conf.clone();
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c
}

/// Asserts that the pod holds exactly the IPv4 address of `res` (`ip -j addr` in its
/// netns), inside `subnet`, and returns it.
pub fn assert_attached(pod: &Pod, res: &ParsedResult, subnet: &Subnet) -> ipnetwork::IpNetwork {
    let ip = res.the_ipv4().address;
    let std::net::IpAddr::V4(v4) = ip.ip() else {
        unreachable!()
    };
    assert!(subnet.contains(v4), "{ip} is not in {}", subnet.cidr());
    assert_eq!(ip.prefix(), 24, "prefix of {ip}");
    let seen: Vec<_> = pod.addrs().into_iter().filter(|a| a.is_ipv4()).collect();
    assert_eq!(
        seen,
        vec![ip],
        "addresses of {} in {}",
        pod.ifname,
        pod.netns.name()
    );
    ip
}

/// Asserts that `pod`'s interface is gone from its netns (after DEL).
pub fn assert_detached(pod: &Pod) {
    assert!(
        !inspect::link_exists_in(&pod.netns, &pod.ifname),
        "{} still in {} after DEL",
        pod.ifname,
        pod.netns.name()
    );
}
