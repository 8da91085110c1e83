//! Pods of a multi-node test: a netns attached by a datapath plugin that runs inside
//! its node's namespace, as a runtime on that node would run it. The plugin is started
//! through a small wrapper script (`ip netns exec <node> <plugin>`), so the harness's
//! [`Invocation`](cni_runtime::Invocation) (clean env, stdin, timeout) is reused as is.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::bins::CniPath;
use crate::fixture::{with_prev, Pod};
use crate::result;
use cni_runtime::{Invocation, Outcome};

use super::topology::NodeNs;

/// The CNI version the multi-node tests speak.
pub const VERSION: &str = "1.1.0";

/// Writes `dir/<ns>-<plugin>`: a script that runs `plugin` inside netns `ns`.
pub fn wrapper(dir: &Path, ns: &str, plugin: &Path) -> PathBuf {
    let name = plugin.file_name().expect("plugin name").to_string_lossy();
    let p = dir.join(format!("{ns}-{name}"));
    let script = format!(
        "#!/bin/sh\nexec ip netns exec '{ns}' '{}' \"$@\"\n",
        plugin.display()
    );
    std::fs::write(&p, script).expect("write wrapper");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// The network config of a datapath plugin with cluster IPAM.
#[derive(Clone, Debug)]
pub struct NetConf {
    pub network: String,
    pub plugin: String,
    pub pool: String,
    pub block_size: u8,
    pub store: String,
}

impl NetConf {
    /// The config for a pod on node `node` whose node-local store is `data_dir`.
    pub fn for_node(&self, node: &str, data_dir: &Path) -> Value {
        json!({
            "cniVersion": VERSION,
            "name": self.network,
            "type": self.plugin,
            "ipam": {
                "type": "cni-ipam",
                "pool": self.pool,
                "blockSize": self.block_size,
                "nodeName": node,
                "store": self.store,
                "dataDir": data_dir.display().to_string(),
                "reserveGateway": true,
            }
        })
    }
}

/// A pod attached by a plugin that runs inside its node: ADD when made, CHECK and DEL
/// with the ADD result as `prevResult`, and a best-effort DEL on drop when the test did
/// not detach it (e.g. it failed), so the node-local store and the host end of the veth
/// go; the netns goes with `Pod`. [`MnPod`] (IPv4) and the dual-stack pods build on it.
#[derive(Debug)]
pub struct Attached {
    pub pod: Pod,
    /// The node it runs on (`node1`, ...) and that node's netns.
    pub node: String,
    pub node_ns: String,
    /// The ADD result (for CHECK's and DEL's `prevResult`).
    pub result: Value,
    conf: Value,
    plugin: PathBuf,
    cni_path: PathBuf,
    attached: bool,
}

impl Attached {
    /// ADD through `plugin` (a path; run inside `node`'s netns through a wrapper written
    /// to `wrapper_dir`), with config `conf`; asserts success.
    pub fn add(
        tag: &str,
        node: &NodeNs,
        plugin: &Path,
        wrapper_dir: &Path,
        cni_path: &CniPath,
        conf: Value,
    ) -> Attached {
        let mut p = Attached {
            pod: Pod::new(&format!("{tag}-{}", node.name)),
            node: node.name.clone(),
            node_ns: node.ns().to_string(),
            result: Value::Null,
            conf,
            plugin: wrapper(wrapper_dir, node.ns(), plugin),
            cni_path: cni_path.dir().to_path_buf(),
            attached: false,
        };
        p.result = p.run("ADD", &p.conf.clone()).expect_ok();
        p.attached = true;
        p
    }

    /// Asserts that the pod's `eth0` holds `ip` (an address of its result).
    pub fn assert_holds(&self, ip: IpAddr) {
        let seen = self.pod.addrs();
        assert!(
            seen.iter().any(|a| a.ip() == ip),
            "pod {} on {}: result address {ip} not on eth0 (has {seen:?})",
            self.ns(),
            self.node
        );
    }

    /// Runs the plugin with `command` on this pod.
    pub fn run(&self, command: &str, conf: &Value) -> Outcome {
        let mut inv = Invocation::new(&self.plugin, command, &self.cni_path)
            .container_id(&self.pod.container_id)
            .ifname(&self.pod.ifname)
            .config(conf);
        if !self.pod.netns.is_deleted() {
            inv = inv.netns(self.pod.netns.path());
        }
        inv.run()
    }

    /// CHECK with the ADD result as `prevResult`.
    pub fn check(&self) -> Outcome {
        self.run("CHECK", &with_prev(&self.conf, Some(&self.result)))
    }

    /// DEL (with `prevResult`), asserting success.
    pub fn del(&mut self) {
        let conf = with_prev(&self.conf, Some(&self.result));
        self.run("DEL", &conf).expect_ok();
        self.attached = false;
    }

    /// DEL, asserting success and that the pod's `eth0` is gone (`label` for messages).
    pub fn detach(&mut self, label: &str) {
        self.del();
        assert!(
            !crate::inspect::link_exists_in(&self.pod.netns, "eth0"),
            "eth0 still in pod {label} after DEL"
        );
    }

    /// The netns name of the pod.
    pub fn ns(&self) -> &str {
        self.pod.netns.name()
    }

    /// The MTU of the pod's `eth0`.
    pub fn mtu(&self) -> u32 {
        super::kernel::link_mtu(self.ns(), "eth0").unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if self.attached {
            let conf = with_prev(&self.conf, Some(&self.result));
            let _ = Invocation::new(&self.plugin, "DEL", &self.cni_path)
                .container_id(&self.pod.container_id)
                .ifname(&self.pod.ifname)
                .netns(self.pod.netns.path())
                .config(&conf)
                .try_run();
        }
    }
}

/// An attached pod with one IPv4 address (the [`Attached`] pod's fields and methods
/// through `Deref`).
#[derive(Debug)]
pub struct MnPod {
    attached: Attached,
    /// Its IPv4 address (from the result, checked on its `eth0`).
    pub ip: Ipv4Addr,
    /// The prefix length the result gave.
    pub prefix: u8,
}

impl std::ops::Deref for MnPod {
    type Target = Attached;
    fn deref(&self) -> &Attached {
        &self.attached
    }
}

impl std::ops::DerefMut for MnPod {
    fn deref_mut(&mut self) -> &mut Attached {
        &mut self.attached
    }
}

impl MnPod {
    /// [`Attached::add`], then the one IPv4 address of the result, which the pod must
    /// hold.
    pub fn add(
        tag: &str,
        node: &NodeNs,
        plugin: &Path,
        wrapper_dir: &Path,
        cni_path: &CniPath,
        conf: Value,
    ) -> MnPod {
        let attached = Attached::add(tag, node, plugin, wrapper_dir, cni_path, conf);
        let parsed =
            result::parse(&attached.result, VERSION).unwrap_or_else(|e| panic!("bad result: {e}"));
        let ip = parsed.the_ipv4().address;
        let IpAddr::V4(v4) = ip.ip() else {
            unreachable!()
        };
        attached.assert_holds(ip.ip());
        MnPod {
            attached,
            ip: v4,
            prefix: ip.prefix(),
        }
    }

    /// `<node>/<ip>` for messages.
    pub fn label(&self) -> String {
        format!("{}/{}", self.node, self.ip)
    }
}
