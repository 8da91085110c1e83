//! Network namespace fixtures and cleanup guards. Every guard cleans up in `Drop`, so
//! a failing (panicking) test leaves nothing behind. The namespace itself is the
//! workspace's one fixture, [`testkit::Netns`].

use crate::try_sh;
pub use testkit::Netns;

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
