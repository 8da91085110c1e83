//! The reconciler: brings the kernel to the desired [`Object`]s, per peer
//! (incremental) or all at once against a dump (resync).
//!
//! SKELETON: bodies are filled in by the cni-core node-side work (see the module docs).

use std::collections::{BTreeMap, BTreeSet};

use super::Object;
use crate::netlink::Netlink;
use crate::spec::error::CniError;

/// What one reconciliation sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub replaced: usize,
    pub removed: usize,
    /// Requests the kernel refused (logged; the next resync tries again).
    pub failed: usize,
}

impl Applied {
    /// Netlink requests sent.
    pub fn requests(&self) -> usize {
        self.added + self.replaced + self.removed + self.failed
    }
}

/// Holds what has been installed for each peer.
pub struct Reconciler {
    nl: Netlink,
    installed: BTreeMap<String, BTreeSet<Object>>,
}

impl Reconciler {
    pub fn new(nl: Netlink) -> Reconciler {
        Reconciler {
            nl,
            installed: BTreeMap::new(),
        }
    }

    /// Objects currently installed, all peers.
    pub fn installed(&self) -> usize {
        self.installed.values().map(BTreeSet::len).sum()
    }

    /// Incremental: `want` is everything `peer` needs now; only the difference to what
    /// was installed for it is sent (replace for a changed key, delete for a gone one).
    pub async fn set_peer(&mut self, peer: &str, want: BTreeSet<Object>) -> Applied {
        let _ = (&self.nl, peer, want);
        Applied::default()
    }

    /// Removes everything installed for `peer`.
    pub async fn remove_peer(&mut self, peer: &str) -> Applied {
        let _ = peer;
        Applied::default()
    }

    /// Full: `want` for every peer. The kernel is dumped (routes with
    /// [`super::RTPROT_IPAMD`] in the main table, both families; permanent neighbours and
    /// FDB entries on `devices`), compared with `want`, and only the difference is sent;
    /// an owned entry nobody wants is deleted.
    pub async fn resync(
        &mut self,
        want: BTreeMap<String, BTreeSet<Object>>,
        devices: &[u32],
    ) -> Result<Applied, CniError> {
        let _ = (want, devices);
        Err(CniError::internal("Reconciler::resync: not implemented yet"))
    }
}
