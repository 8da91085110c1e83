//! The datapath handler: follows the other nodes with a [`NodeSide`] (vxlan, ipip,
//! host-gw) and the [`Reconciler`], which sends the kernel only what differs.
//!
//! - The first full picture (the first [`PeerEvent::Resync`]) is reconciled against a
//!   dump of the kernel, so a restarted daemon whose routes, neighbours and FDB entries
//!   are still right sends nothing. Until then, events only update the picture.
//! - After that, one event costs the netlink requests of one node's difference (a node
//!   joining: its FDB, neighbour and routes, a handful of messages), never a resync.
//! - Every resync tick repairs the devices (a deleted VXLAN device is created again) and
//!   puts back whatever was deleted behind the daemon's back.

use cni_core::netlink::Netlink;
use cni_core::node::{NodeSide, Object, Peer, Reconciler};
use ipam::cluster::NodeRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use crate::events::{PeerEvent, PeerHandler};
use crate::metrics::Metrics;

/// A [`PeerHandler`] that programs the kernel through a [`NodeSide`].
pub struct DatapathHandler<D: NodeSide> {
    side: D,
    nl: Netlink,
    rec: Reconciler,
    /// This node, from [`PeerEvent::Local`].
    me: Option<Peer>,
    /// The remote nodes as last told.
    peers: BTreeMap<String, Peer>,
    /// Peers whose objects the side refused, with the reason (logged once per change).
    refused: BTreeMap<String, String>,
    /// The first full reconcile against the kernel has run.
    synced: bool,
    metrics: Arc<Metrics>,
}

/// A node record as the datapath sees it.
pub fn peer_of(rec: &NodeRecord) -> Peer {
    Peer {
        name: rec.info.name.clone(),
        underlay: rec.info.underlay_ip,
        blocks: rec.blocks.clone(),
        backend: rec.info.backend.clone(),
    }
}

impl<D: NodeSide> DatapathHandler<D> {
    /// `nl` must be a connection in the node's namespace (opened on the daemon's runtime).
    pub fn new(side: D, nl: Netlink, metrics: Arc<Metrics>) -> Self {
        DatapathHandler {
            side,
            rec: Reconciler::new(nl.clone()),
            nl,
            me: None,
            peers: BTreeMap::new(),
            refused: BTreeMap::new(),
            synced: false,
            metrics,
        }
    }

    /// What `peer` needs, or `None` when the side refuses it (logged on change, counted).
    fn objects(&mut self, peer: &Peer) -> Option<BTreeSet<Object>> {
        let out = match self.side.objects(peer) {
            Ok(o) => {
                if self.refused.remove(&peer.name).is_some() {
                    tracing::info!(node = %peer.name, "node accepted again");
                }
                Some(o)
            }
            Err(e) => {
                let why = e.to_string();
                if self.refused.get(&peer.name) != Some(&why) {
                    tracing::error!(node = %peer.name, reason = %why, "node refused: nothing programmed toward it");
                }
                self.refused.insert(peer.name.clone(), why);
                None
            }
        };
        self.metrics.set_peers_refused(self.refused.len());
        out
    }

    /// Brings one peer's objects to what it needs now.
    async fn program(&mut self, peer: &Peer) {
        let want = self.objects(peer).unwrap_or_default();
        let done = self.rec.set_peer(&peer.name, want).await;
        self.metrics.datapath_applied(&done, self.rec.installed());
    }

    async fn forget(&mut self, name: &str) {
        self.refused.remove(name);
        self.metrics.set_peers_refused(self.refused.len());
        let done = self.rec.remove_peer(name).await;
        self.metrics.datapath_applied(&done, self.rec.installed());
    }

    /// Devices repaired, then every peer reconciled against a kernel dump.
    async fn full(&mut self) {
        let Some(me) = self.me.clone() else {
            tracing::warn!("this node's record is not known yet: datapath resync postponed");
            return;
        };
        let start = Instant::now();
        if let Err(e) = self.side.ensure(&self.nl, &me).await {
            self.metrics.datapath_error();
            tracing::error!(datapath = self.side.name(), error = %e, "cannot set up this node's devices");
            return;
        }
        let peers: Vec<Peer> = self.peers.values().cloned().collect();
        self.refused.retain(|name, _| self.peers.contains_key(name));
        let mut want = BTreeMap::new();
        for p in &peers {
            if let Some(o) = self.objects(p) {
                want.insert(p.name.clone(), o);
            }
        }
        match self.rec.resync(want, &self.side.devices()).await {
            Ok(done) => {
                // The first resync is always logged; later ones only when they sent something.
                let first = !self.synced;
                self.synced = true;
                self.metrics.datapath_resynced();
                self.metrics.datapath_applied(&done, self.rec.installed());
                if first || done.requests() > 0 {
                    tracing::info!(
                        datapath = self.side.name(),
                        peers = peers.len(),
                        objects = self.rec.installed(),
                        added = done.added,
                        replaced = done.replaced,
                        removed = done.removed,
                        failed = done.failed,
                        elapsed_ms = start.elapsed().as_millis() as u64,
                        "datapath resync"
                    );
                }
            }
            Err(e) => {
                self.metrics.datapath_error();
                tracing::error!(datapath = self.side.name(), error = %e, "datapath resync failed");
            }
        }
    }
}

impl<D: NodeSide> PeerHandler for DatapathHandler<D> {
    async fn handle(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Local(rec) => {
                let me = peer_of(&rec);
                self.me = Some(me.clone());
                if self.synced {
                    match self.side.ensure(&self.nl, &me).await {
                        // A recreated device lost every entry on it.
                        Ok(true) => self.full().await,
                        Ok(false) => {}
                        Err(e) => {
                            self.metrics.datapath_error();
                            tracing::error!(error = %e, "cannot update this node's devices");
                        }
                    }
                }
            }
            PeerEvent::Added(rec) | PeerEvent::Changed { new: rec, .. } => {
                let p = peer_of(&rec);
                self.peers.insert(p.name.clone(), p.clone());
                if self.synced {
                    self.program(&p).await;
                }
            }
            PeerEvent::Removed(rec) => {
                self.peers.remove(&rec.info.name);
                if self.synced {
                    self.forget(&rec.info.name).await;
                }
            }
            PeerEvent::Resync(all) => {
                self.peers = all
                    .iter()
                    .map(|r| (r.info.name.clone(), peer_of(r)))
                    .collect();
                self.full().await;
            }
        }
    }

    fn node_backend(&self) -> BTreeMap<String, String> {
        self.side.backend()
    }
}
