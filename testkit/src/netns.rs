//! The one network namespace fixture of the workspace's tests.

use std::path::PathBuf;

use crate::{names, sh, try_sh};

/// A named network namespace (`ip netns add`) with its loopback up, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    deleted: bool,
}

impl Netns {
    /// A fresh namespace with a unique name built from `tag` (see [`names::unique`]).
    pub fn new(tag: &str) -> Netns {
        Netns::named(&names::unique("ns", tag))
    }

    /// A namespace called exactly `name` (the caller made it unique, e.g. from the test
    /// and the pid); a leftover of a killed run with the same name is replaced.
    pub fn named(name: &str) -> Netns {
        if PathBuf::from("/run/netns").join(name).exists() {
            let _ = try_sh("ip", &["netns", "del", name]);
        }
        sh("ip", &["netns", "add", name]);
        let ns = Netns {
            name: name.into(),
            deleted: false,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`: what `CNI_NETNS` gets, and what `setns` opens.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs a command inside the namespace (`ip netns exec`); panics on failure.
    pub fn exec(&self, argv: &[&str]) -> String {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(argv);
        sh("ip", &args)
    }

    /// Like [`Netns::exec`] but returns the failure.
    pub fn try_exec(&self, argv: &[&str]) -> Result<String, String> {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(argv);
        try_sh("ip", &args)
    }

    /// `ip -n <name> ARGS`; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Deletes the namespace now (e.g. to test DEL with the netns gone); what was
    /// inside (a pod's veth) goes with it.
    pub fn delete(&mut self) {
        if !self.deleted {
            sh("ip", &["netns", "del", &self.name]);
            self.deleted = true;
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = try_sh("ip", &["netns", "del", &self.name]);
        }
    }
}
