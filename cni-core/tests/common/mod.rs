//! The network namespace each kernel test of `cni-core` works in: the test kit's
//! [`Netns`] (named from the test and the pid, deleted on drop, also when the test
//! fails), with our own handle on it for `NetNs::run` and netlink inside.
#![allow(dead_code)]

use cni_core::netlink::Netlink;
use cni_core::netns::NetNs;
use cni_core::spec::config::Attachment;
use cni_core::spec::names::{ContainerId, IfName};
use ipnetwork::IpNetwork;
use testkit::Netns;

/// A network or address with its prefix, e.g. `net("10.0.0.2/24")`.
pub fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// The attachment (`id`, `eth0`).
pub fn att(id: &str) -> Attachment {
    att_on(id, "eth0")
}

/// The attachment (`id`, `ifname`).
pub fn att_on(id: &str, ifname: &str) -> Attachment {
    Attachment {
        container_id: ContainerId::parse(id).unwrap(),
        ifname: IfName::parse(ifname).unwrap(),
    }
}

pub struct TestNs {
    pub kit: Netns,
    pub ns: NetNs,
}

impl TestNs {
    /// `cnicore-<tag>-<pid>`: `tag` unique within the test binary.
    pub fn new(tag: &str) -> TestNs {
        let kit = Netns::named(&format!("cnicore-{tag}-{}", std::process::id()));
        let ns = NetNs::open(&kit.path()).unwrap();
        TestNs { kit, ns }
    }

    /// Runs a command inside the namespace and returns its stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        self.kit.exec(args)
    }

    /// A netlink connection inside the namespace.
    pub fn nl(&self) -> Netlink {
        Netlink::connect_in(&self.ns).unwrap()
    }
}
