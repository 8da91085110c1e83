//! Network namespace fixtures and cleanup guards. Every guard cleans up in `Drop`, so
//! a failing (panicking) test leaves nothing behind.

use std::path::PathBuf;

use crate::{names, sh, try_sh};

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    deleted: bool,
}

impl Netns {
    /// Creates a fresh namespace named after `tag` (unique; see [`names::unique`]) with
    /// its loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = names::unique("ns", tag);
        sh("ip", &["netns", "add", &name]);
        let ns = Netns {
            name,
            deleted: false,
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`: what `CNI_NETNS` gets.
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

    /// Deletes the namespace now (e.g. to test DEL with the netns gone). The pod's veth
    /// goes with it.
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

/// Deletes a host link (a bridge the plugin under test created) on drop, if it exists.
#[derive(Debug)]
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        if std::path::Path::new("/sys/class/net")
            .join(&self.0)
            .exists()
        {
            let _ = try_sh("ip", &["link", "del", &self.0]);
        }
    }
}

/// On drop, deletes every masquerade rule that mentions an address of `prefix` (e.g.
/// `"10.213.7."`): what a plugin may have left when the test failed before its DEL (or
/// what the reference plugin leaks). A rule that jumps to a per-pod chain (the reference
/// plugin's shape) is deleted with that chain. Only rules mentioning the test's own
/// subnet are touched.
#[derive(Debug)]
pub struct NftGuard(pub String);

impl Drop for NftGuard {
    fn drop(&mut self) {
        let Ok(rules) = crate::inspect::nft_rules() else {
            return;
        };
        let doomed = crate::inspect::masq_rules_matching(&rules, |r| r.mentions_prefix(&self.0));
        for r in &doomed {
            let h = r.handle.to_string();
            let _ = try_sh(
                "nft",
                &[
                    "delete", "rule", &r.family, &r.table, &r.chain, "handle", &h,
                ],
            );
        }
        for r in &doomed {
            let Some(t) = r.jump_target() else { continue };
            let still_used = crate::inspect::nft_rules()
                .unwrap_or_default()
                .iter()
                .any(|x| x.family == r.family && x.table == r.table && x.jump_target() == Some(t));
            if !still_used {
                let _ = try_sh("nft", &["flush", "chain", &r.family, &r.table, t]);
                let _ = try_sh("nft", &["delete", "chain", &r.family, &r.table, t]);
            }
        }
    }
}
