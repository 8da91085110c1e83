//! The seam between the daemon and the datapaths: a typed stream of changes to the
//! other nodes (and to this node's own record, which gives tunnel addresses), and the
//! handler trait a datapath implements.
//!
//! The daemon turns the cluster store's watch and its periodic full resync into
//! [`PeerEvent`]s (see [`crate::watch`]) and hands each one, in order, to one
//! [`PeerHandler`]: [`crate::datapath::DatapathHandler`] (vxlan, ipip, host-gw) or
//! [`LogHandler`] (`--datapath none`), plugged in by [`crate::run::run_with_handler`].

use ipam::cluster::NodeRecord;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use tokio::sync::watch;

/// A change to the set of remote nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeerEvent {
    /// A node this daemon did not know appeared.
    Added(NodeRecord),
    /// A known node's record changed (underlay IP, backend data such as a VTEP MAC, or
    /// blocks). `old` is what the handler was last told.
    Changed { old: NodeRecord, new: NodeRecord },
    /// A node left (removed, or its lease expired). Its last known record.
    Removed(NodeRecord),
    /// The full set of remote nodes after a periodic resync, sorted by name. Sent after
    /// the Added/Changed/Removed events the resync produced, so a handler may either
    /// ignore it or use it to reconcile its kernel state (put back what was deleted
    /// behind its back) on a timer.
    Resync(Vec<NodeRecord>),
    /// This node's own record, when first seen and whenever it changes (its blocks give
    /// the addresses of its tunnel devices). Sent before the events of a resync.
    Local(NodeRecord),
}

impl PeerEvent {
    /// The metric label of this kind of event.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            PeerEvent::Added(_) => "added",
            PeerEvent::Changed { .. } => "changed",
            PeerEvent::Removed(_) => "removed",
            PeerEvent::Resync(_) => "resync",
            PeerEvent::Local(_) => "local",
        }
    }
}

/// What a datapath implements to follow the remote nodes. Events arrive one at a time,
/// in order; a slow handler only delays later events (the channel in front of it is
/// bounded, and a full resync repairs anything missed).
pub(crate) trait PeerHandler: Send + 'static {
    fn handle(&mut self, event: PeerEvent) -> impl Future<Output = ()> + Send;

    /// What this node publishes for its peers in its record's `backend` map (e.g.
    /// `"vtepMac"`), read once before the node registers.
    fn node_backend(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Resolves when the handler has work of its own besides peer events (kernel
    /// notifications, a timer); [`PeerHandler::on_wake`] then does it. Must be
    /// cancel-safe: [`crate::watch::deliver`] drops it when a peer event comes first.
    /// Default: never.
    fn wake(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// The work [`PeerHandler::wake`] announced.
    fn on_wake(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// This node's underlay address as the handler sees it change (taken once, before
    /// the node registers): the lease republishes the node record with each new one.
    fn underlay_updates(&mut self) -> Option<watch::Receiver<IpAddr>> {
        None
    }
}

/// The handler of this issue: logs each event at `info`.
#[derive(Debug, Default)]
pub(crate) struct LogHandler;

impl PeerHandler for LogHandler {
    async fn handle(&mut self, event: PeerEvent) {
        match &event {
            PeerEvent::Added(n) => tracing::info!(
                node = %n.info.name,
                underlay = ?n.info.underlay_ip,
                blocks = %join(n),
                "node added"
            ),
            PeerEvent::Changed { old, new } => tracing::info!(
                node = %new.info.name,
                underlay = ?new.info.underlay_ip,
                old_blocks = %join(old),
                blocks = %join(new),
                "node changed"
            ),
            PeerEvent::Removed(n) => tracing::info!(
                node = %n.info.name,
                blocks = %join(n),
                "node removed"
            ),
            PeerEvent::Resync(all) => tracing::debug!(nodes = all.len(), "peers resynced"),
            PeerEvent::Local(n) => tracing::debug!(blocks = %join(n), "this node's record"),
        }
    }
}

fn join(n: &NodeRecord) -> String {
    n.blocks
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
