//! The network namespace each kernel test of `cni-core` works in: the test kit's
//! [`Netns`] (named from the test and the pid, deleted on drop, also when the test
//! fails), with our own handle on it for `NetNs::run` and netlink inside.
#![allow(dead_code)]

use cni_core::netlink::Netlink;
use cni_core::netns::NetNs;
use testkit::Netns;

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
