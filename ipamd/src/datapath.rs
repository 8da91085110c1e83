//! The datapath handler: follows the other nodes with a [`NodeSide`] (vxlan, ipip,
//! host-gw) and the [`Reconciler`], which sends the kernel only what differs.
//!
//! - The first full picture (the first [`PeerEvent::Resync`]) is reconciled against a
//!   dump of the kernel, so a restarted daemon whose routes, neighbours and FDB entries
//!   are still right sends nothing. Until then, events only update the picture.
//! - After that, one event costs the netlink requests of one node's difference (a node
//!   joining: its FDB, neighbour and routes, a handful of messages), never a resync.
//! - Kernel notifications ([`KernelWatch`], see [`DatapathHandler::watch_kernel`]) repair
//!   at once: an owned route, neighbour or FDB entry deleted or changed behind the
//!   daemon's back is put back (targeted, no dump); a device of ours deleted or changed,
//!   or a socket overrun, runs the full repair (devices, then a resync against a dump);
//!   a new underlay address is applied to the devices and handed to the lease, which
//!   republishes the node.
//! - After a full repair caused by a device or underlay change (a device recreated, the
//!   VXLAN `local` changed in place, the underlay's address moved), one more full
//!   resync runs [`VERIFY_AFTER`] later: a dump compared with what is wanted, which
//!   sends nothing when the kernel is right. Whatever the kernel or another agent did
//!   to our entries while the device and the underlay settled, unnoticed or not (a
//!   notification lost to an overrun, or sent for a device index we had not learned
//!   yet), is put back then, not at the next `--resync` tick.
//! - Every resync tick does the full repair too: the backstop, not the mechanism.
//! - A node that leaves the store is kept programmed for a short grace
//!   ([`DatapathHandler::watch_kernel`]'s `removal_grace`): a node whose lease lapsed in
//!   a store hiccup re-registers within it, and its pods never lose traffic. A record
//!   that comes back without blocks (re-registered, blocks not reclaimed yet) changes
//!   nothing either. After the grace it is removed from the kernel.
//! - This node's own record without blocks (it re-registers after its lease lapsed)
//!   keeps the device addresses of its last blocks: the VTEP address is never removed
//!   and re-added, so the kernel never flushes the routes and neighbours on it.

use cni_core::netlink::{Netlink, Underlay};
use cni_core::node::{Interest, KernelChanges, KernelWatch, NodeSide, Object, Peer, Reconciler};
use ipam::cluster::NodeRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::events::{PeerEvent, PeerHandler};
use crate::metrics::Metrics;

/// How long after a full repair caused by a device or underlay change the kernel is
/// checked once more (see the module docs).
pub(crate) const VERIFY_AFTER: Duration = Duration::from_millis(500);

/// A [`PeerHandler`] that programs the kernel through a [`NodeSide`].
pub(crate) struct DatapathHandler<D: NodeSide> {
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
    /// The first full picture of the nodes ([`PeerEvent::Resync`]) has arrived: a first
    /// reconcile postponed for lack of this node's record runs once the record is known.
    pictured: bool,
    metrics: Arc<Metrics>,
    /// Kernel notifications, once [`DatapathHandler::watch_kernel`] started them.
    kernel: Option<KernelWatch>,
    /// A batch of notifications taken by `wake`, handled by `on_wake`.
    pending: Option<KernelChanges>,
    /// The underlay as last read.
    underlay: Option<Underlay>,
    /// This node's underlay address, for the lease (republished on change).
    underlay_tx: Option<watch::Sender<IpAddr>>,
    underlay_rx: Option<watch::Receiver<IpAddr>>,
    /// Nodes gone from the store, still programmed until the instant given.
    tombstones: BTreeMap<String, Instant>,
    removal_grace: Duration,
    /// When to check the kernel once more after a device or underlay change.
    verify_at: Option<Instant>,
}

/// A node record as the datapath sees it.
pub(crate) fn peer_of(rec: &NodeRecord) -> Peer {
    Peer {
        name: rec.info.name.clone(),
        underlay: rec.info.underlay_ip,
        blocks: rec.blocks.clone(),
        backend: rec.info.backend.clone(),
    }
}

impl<D: NodeSide> DatapathHandler<D> {
    /// `nl` must be a connection in the node's namespace (opened on the daemon's runtime).
    pub(crate) fn new(side: D, nl: Netlink, metrics: Arc<Metrics>) -> Self {
        DatapathHandler {
            side,
            rec: Reconciler::new(nl.clone()),
            nl,
            me: None,
            peers: BTreeMap::new(),
            refused: BTreeMap::new(),
            synced: false,
            pictured: false,
            metrics,
            kernel: None,
            pending: None,
            underlay: None,
            underlay_tx: None,
            underlay_rx: None,
            tombstones: BTreeMap::new(),
            removal_grace: Duration::ZERO,
            verify_at: None,
        }
    }

    /// Follows the kernel's notifications (in the namespace of the calling thread: the
    /// daemon's) and the underlay `underlay` (whose address this node publishes). A node
    /// removed from the store stays programmed for `removal_grace` (0: removed at once)
    /// unless it comes back. Without this the handler repairs only on resync ticks.
    pub(crate) fn watch_kernel(mut self, underlay: Underlay, removal_grace: Duration) -> Self {
        let interest = Interest {
            devices: self.side.devices(),
            underlay: Some(underlay.index),
        };
        match KernelWatch::start(interest) {
            Ok(w) => self.kernel = Some(w),
            Err(e) => tracing::warn!(error = %e,
                "cannot follow kernel notifications: repairs wait for the periodic resync"),
        }
        let (tx, rx) = watch::channel(underlay.addr);
        self.underlay_tx = Some(tx);
        self.underlay_rx = Some(rx);
        self.underlay = Some(underlay);
        self.removal_grace = removal_grace;
        self
    }

    /// Tells the kernel watch which devices are ours now (an index changes when a
    /// device is recreated).
    fn update_interest(&self) {
        if let Some(k) = &self.kernel {
            k.set_interest(Interest {
                devices: self.side.devices(),
                underlay: self.underlay.as_ref().map(|u| u.index),
            });
        }
    }

    /// Acts on a batch of kernel notifications.
    async fn kernel_changed(&mut self, ch: KernelChanges) {
        // The underlay is followed from the start (a new address must be published
        // whether or not anything is programmed yet).
        let underlay_moved = ch.underlay && self.underlay_changed().await;
        if !self.synced || self.me.is_none() {
            // Nothing installed yet: the first resync programs everything anyway.
            return;
        }
        let mut why = Vec::new();
        if ch.overrun {
            why.push("notifications were lost (socket overrun)".to_string());
        }
        if !ch.devices.is_empty() {
            why.push(format!("device(s) {:?} changed", ch.devices));
        }
        if underlay_moved {
            why.push("the underlay changed".to_string());
        }
        if !why.is_empty() {
            let start = Instant::now();
            self.full().await;
            tracing::debug!(reason = %why.join("; "), elapsed_ms = start.elapsed().as_millis() as u64,
                "repaired after kernel notifications");
            if underlay_moved || !ch.devices.is_empty() {
                self.verify_at = Some(Instant::now() + VERIFY_AFTER);
            }
            return;
        }
        if ch.objects.is_empty() {
            return;
        }
        let start = Instant::now();
        let done = self.rec.repair(&ch.objects).await;
        self.metrics.datapath_applied(&done, self.rec.installed());
        if done.requests() > 0 {
            self.metrics.datapath_repaired();
            tracing::info!(
                datapath = self.side.name(),
                repaired = done.added + done.replaced,
                failed = done.failed,
                elapsed_ms = start.elapsed().as_millis() as u64,
                "kernel entries put back"
            );
        }
    }

    /// Reads the underlay again; true when it changed (the side is told, and a new
    /// address goes to the lease for republishing).
    async fn underlay_changed(&mut self) -> bool {
        let Some(old) = self.underlay.clone() else {
            return false;
        };
        match self.nl.underlay_now(&old).await {
            Ok(Some(new)) if new != old => {
                if new.addr != old.addr {
                    tracing::info!(
                        interface = %new.name,
                        old = %old.addr,
                        new = %new.addr,
                        "this node's underlay address changed: moving the devices to it and \
                         republishing the node"
                    );
                    if let Some(tx) = &self.underlay_tx {
                        tx.send_replace(new.addr);
                    }
                } else {
                    tracing::info!(interface = %new.name, subnets = ?new.networks, mtu = new.mtu,
                        "the underlay's subnets or MTU changed");
                }
                self.side.set_underlay(new.clone());
                self.underlay = Some(new);
                true
            }
            Ok(Some(_)) => false,
            Ok(None) => {
                tracing::warn!(interface = %old.name, address = %old.addr,
                    "the underlay interface is gone or has no global address: keeping the last one");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the underlay");
                false
            }
        }
    }

    /// Removes the nodes whose grace ran out.
    async fn expire_tombstones(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .tombstones
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.tombstones.remove(&name);
            if let Some(p) = self.peers.remove(&name) {
                tracing::info!(node = %name, underlay = ?p.underlay, blocks = %show_blocks(&p),
                    "node gone: its routes and entries removed");
            }
            if self.synced {
                self.forget(&name).await;
            }
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
        self.update_interest();
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
                let mut me = peer_of(&rec);
                if me.blocks.is_empty() {
                    if let Some(old) = self.me.as_ref().filter(|o| !o.blocks.is_empty()) {
                        tracing::info!(node = %me.name, blocks = %show_blocks(old),
                            "this node's record has no block (re-registering): its devices keep \
                             the addresses of its last blocks");
                        me.blocks = old.blocks.clone();
                    }
                }
                self.me = Some(me.clone());
                if !self.synced {
                    // The first full picture came while this node had no record (its
                    // lease expired before it: a stalled disk or etcd), so its first
                    // reconcile was postponed; without this nothing would be programmed
                    // until the periodic resync.
                    if self.pictured {
                        tracing::info!(node = %me.name, "this node's record is known: first datapath resync");
                        self.full().await;
                    }
                } else {
                    match self.side.ensure(&self.nl, &me).await {
                        // A recreated device lost every entry on it.
                        Ok(true) => self.full().await,
                        Ok(false) => self.update_interest(),
                        Err(e) => {
                            self.metrics.datapath_error();
                            tracing::error!(error = %e, "cannot update this node's devices");
                        }
                    }
                }
            }
            PeerEvent::Added(rec) | PeerEvent::Changed { new: rec, .. } => {
                let p = peer_of(&rec);
                if self.tombstones.contains_key(&p.name) {
                    if p.blocks.is_empty() {
                        tracing::info!(node = %p.name, underlay = ?p.underlay,
                            "node registered again, no block reclaimed yet: its entries stay");
                        return;
                    }
                    self.tombstones.remove(&p.name);
                    tracing::info!(node = %p.name, underlay = ?p.underlay, blocks = %show_blocks(&p),
                        "node back within the removal grace");
                } else {
                    match self.peers.get(&p.name) {
                        None => tracing::info!(node = %p.name, underlay = ?p.underlay,
                            blocks = %show_blocks(&p), "node added"),
                        Some(old) if *old != p => tracing::info!(node = %p.name,
                            underlay = ?p.underlay, old_underlay = ?old.underlay,
                            blocks = %show_blocks(&p), old_blocks = %show_blocks(old),
                            "node changed"),
                        Some(_) => {}
                    }
                }
                self.peers.insert(p.name.clone(), p.clone());
                if self.synced {
                    self.program(&p).await;
                }
            }
            PeerEvent::Removed(rec) => {
                let name = rec.info.name.clone();
                if self.synced && !self.removal_grace.is_zero() && self.peers.contains_key(&name) {
                    tracing::info!(node = %name, underlay = ?rec.info.underlay_ip,
                        grace = ?self.removal_grace,
                        "node left the store: its entries stay for the grace in case it re-registers");
                    self.tombstones
                        .insert(name, Instant::now() + self.removal_grace);
                    return;
                }
                if let Some(p) = self.peers.remove(&name) {
                    tracing::info!(node = %name, underlay = ?p.underlay, blocks = %show_blocks(&p),
                        "node removed");
                }
                if self.synced {
                    self.forget(&name).await;
                }
            }
            PeerEvent::Resync(all) => {
                let mut peers: BTreeMap<String, Peer> = all
                    .iter()
                    .map(|r| (r.info.name.clone(), peer_of(r)))
                    .collect();
                // A node in its grace stays as last known (its record may be back
                // without blocks).
                for name in self.tombstones.keys() {
                    let back_with_blocks = peers.get(name).is_some_and(|p| !p.blocks.is_empty());
                    if !back_with_blocks {
                        if let Some(p) = self.peers.get(name) {
                            peers.insert(name.clone(), p.clone());
                        }
                    }
                }
                self.tombstones.retain(|name, _| {
                    !all.iter()
                        .any(|r| r.info.name == *name && !r.blocks.is_empty())
                });
                self.peers = peers;
                self.pictured = true;
                self.full().await;
            }
        }
    }

    fn node_backend(&self) -> BTreeMap<String, String> {
        self.side.backend()
    }

    async fn wake(&mut self) {
        let deadline = self
            .tombstones
            .values()
            .copied()
            .chain(self.verify_at)
            .min();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let kernel = async {
            match self.kernel.as_mut() {
                Some(k) => k.next().await,
                None => std::future::pending().await,
            }
        };
        let got = tokio::select! {
            c = kernel => Some(c),
            () = sleep => None,
        };
        match got {
            Some(Some(c)) => match &mut self.pending {
                Some(p) => p.merge(c),
                None => self.pending = Some(c),
            },
            Some(None) => {
                tracing::warn!("kernel notifications ended: repairs wait for the periodic resync");
                self.kernel = None;
            }
            None => {}
        }
    }

    async fn on_wake(&mut self) {
        self.expire_tombstones().await;
        if self.verify_at.is_some_and(|t| t <= Instant::now()) {
            self.verify_at = None;
            if self.synced {
                // Logged ("datapath resync") only when it had to send something.
                self.full().await;
            }
        }
        if let Some(c) = self.pending.take() {
            self.kernel_changed(c).await;
        }
    }

    fn underlay_updates(&mut self) -> Option<watch::Receiver<IpAddr>> {
        self.underlay_rx.take()
    }
}

fn show_blocks(p: &Peer) -> String {
    p.blocks
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
