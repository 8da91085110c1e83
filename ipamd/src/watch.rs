//! Following the other nodes: the cluster store's watch plus a periodic full resync,
//! diffed into [`PeerEvent`]s by [`PeerSet`]. This node is reported only as
//! [`PeerEvent::Local`].

use ipam::cluster::{ClusterStore, NodeEvent, NodeRecord};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use crate::events::PeerEvent;
use crate::metrics::Metrics;

/// What the handler has been told about the remote nodes. Pure: no I/O.
#[derive(Debug)]
pub(crate) struct PeerSet {
    me: String,
    /// This node's record as last reported.
    own: Option<NodeRecord>,
    peers: BTreeMap<String, NodeRecord>,
}

/// Whether two records differ in anything a datapath cares about (the lease expiry,
/// which moves on every renew, does not count).
fn same(a: &NodeRecord, b: &NodeRecord) -> bool {
    a.info == b.info && a.blocks == b.blocks
}

impl PeerSet {
    pub(crate) fn new(me: impl Into<String>) -> PeerSet {
        PeerSet {
            me: me.into(),
            own: None,
            peers: BTreeMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }

    /// One change from the watch.
    pub(crate) fn apply(&mut self, ev: NodeEvent) -> Option<PeerEvent> {
        match ev {
            NodeEvent::Upsert(rec) => self.upsert(rec),
            NodeEvent::Removed(name) => self.peers.remove(&name).map(PeerEvent::Removed),
        }
    }

    fn upsert(&mut self, rec: NodeRecord) -> Option<PeerEvent> {
        if rec.info.name == self.me {
            if self.own.as_ref().is_some_and(|o| same(o, &rec)) {
                return None;
            }
            self.own = Some(rec.clone());
            return Some(PeerEvent::Local(rec));
        }
        match self.peers.insert(rec.info.name.clone(), rec.clone()) {
            None => Some(PeerEvent::Added(rec)),
            Some(old) if same(&old, &rec) => None,
            Some(old) => Some(PeerEvent::Changed { old, new: rec }),
        }
    }

    /// A full listing: the events that bring the handler from what it knows to `all`,
    /// then a [`PeerEvent::Resync`] with the whole set.
    pub(crate) fn resync(&mut self, all: Vec<NodeRecord>) -> Vec<PeerEvent> {
        let mut out = Vec::new();
        let mut seen: BTreeMap<String, NodeRecord> = BTreeMap::new();
        for rec in all {
            if rec.info.name == self.me {
                out.extend(self.upsert(rec));
            } else {
                seen.insert(rec.info.name.clone(), rec);
            }
        }
        let gone: Vec<String> = self
            .peers
            .keys()
            .filter(|k| !seen.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            if let Some(rec) = self.peers.remove(&name) {
                out.push(PeerEvent::Removed(rec));
            }
        }
        for rec in seen.into_values() {
            out.extend(self.upsert(rec));
        }
        out.push(PeerEvent::Resync(self.peers.values().cloned().collect()));
        out
    }
}

/// Runs until `stop` turns true: a full listing at start and every `resync`, the watch
/// in between (re-opened after a pause when it ends or fails). Events go to `tx`.
pub(crate) async fn run(
    store: Arc<ClusterStore>,
    me: String,
    resync: Duration,
    tx: mpsc::Sender<PeerEvent>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut set = PeerSet::new(me);
    let mut tick = tokio::time::interval(resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stream = None;
    loop {
        if stream.is_none() {
            match store.watch().await {
                Ok(w) => stream = Some(w),
                Err(e) => {
                    metrics.store_error();
                    tracing::warn!(error = %e, "cannot watch the cluster store; retrying");
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                match store.nodes().await {
                    Ok(all) => {
                        for ev in set.resync(all) {
                            if send(&tx, &metrics, ev).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        metrics.store_error();
                        tracing::warn!(error = %e, "cannot list nodes for resync");
                    }
                }
                metrics.set_nodes_known(set.len() + 1);
            }
            ev = next(&mut stream) => {
                match ev {
                    Some(ev) => {
                        if let Some(pe) = set.apply(ev) {
                            if send(&tx, &metrics, pe).await.is_err() {
                                return;
                            }
                        }
                        metrics.set_nodes_known(set.len() + 1);
                    }
                    None => {
                        tracing::warn!("cluster store watch ended; re-opening");
                        stream = None;
                        tokio::select! {
                            _ = stop.changed() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        }
    }
}

async fn next(stream: &mut Option<ipam::cluster::NodeWatch>) -> Option<NodeEvent> {
    match stream {
        Some(s) => s.next().await,
        // No watch: wait for the resync tick (or stop) instead.
        None => std::future::pending().await,
    }
}

async fn send(
    tx: &mpsc::Sender<PeerEvent>,
    metrics: &Metrics,
    ev: PeerEvent,
) -> Result<(), mpsc::error::SendError<PeerEvent>> {
    metrics.event(ev.kind());
    tx.send(ev).await
}

/// Feeds every event of `rx` to `handler`, in order, until the channel closes; in
/// between, the handler's own work ([`crate::events::PeerHandler::wake`]).
pub(crate) async fn deliver<H: crate::events::PeerHandler>(
    mut rx: mpsc::Receiver<PeerEvent>,
    mut handler: H,
) {
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => handler.handle(ev).await,
                None => return,
            },
            () = handler.wake() => handler.on_wake().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::cluster::NodeInfo;

    fn rec(name: &str, blocks: &[&str], expiry: u64) -> NodeRecord {
        NodeRecord {
            info: NodeInfo {
                name: name.into(),
                underlay_ip: None,
                backend: Default::default(),
            },
            blocks: blocks.iter().map(|b| b.parse().unwrap()).collect(),
            lease_expiry: expiry,
        }
    }

    #[test]
    fn self_is_reported_as_local_and_renewals_are_not_changes() {
        let mut s = PeerSet::new("me");
        let me = rec("me", &["10.0.0.0/26"], 1);
        assert_eq!(
            s.apply(NodeEvent::Upsert(me.clone())),
            Some(PeerEvent::Local(me))
        );
        assert_eq!(
            s.apply(NodeEvent::Upsert(rec("me", &["10.0.0.0/26"], 5))),
            None
        );
        let a = rec("a", &["10.0.0.0/26"], 1);
        assert_eq!(
            s.apply(NodeEvent::Upsert(a.clone())),
            Some(PeerEvent::Added(a.clone()))
        );
        assert_eq!(
            s.apply(NodeEvent::Upsert(rec("a", &["10.0.0.0/26"], 9))),
            None
        );
        let a2 = rec("a", &["10.0.0.0/26", "10.0.0.64/26"], 9);
        match s.apply(NodeEvent::Upsert(a2.clone())) {
            Some(PeerEvent::Changed { new, .. }) => assert_eq!(new, a2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.apply(NodeEvent::Removed("a".into())),
            Some(PeerEvent::Removed(_))
        ));
        assert_eq!(s.apply(NodeEvent::Removed("a".into())), None);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn resync_diffs_and_ends_with_the_full_set() {
        let mut s = PeerSet::new("me");
        s.apply(NodeEvent::Upsert(rec("a", &[], 1)));
        s.apply(NodeEvent::Upsert(rec("b", &[], 1)));
        let evs = s.resync(vec![
            rec("me", &[], 1),
            rec("b", &["10.0.0.0/26"], 2),
            rec("c", &[], 1),
        ]);
        let kinds: Vec<_> = evs.iter().map(PeerEvent::kind).collect();
        assert_eq!(
            kinds,
            vec!["local", "removed", "changed", "added", "resync"]
        );
        match evs.last() {
            Some(PeerEvent::Resync(all)) => assert_eq!(all.len(), 2),
            other => panic!("{other:?}"),
        }
    }
}
