//! Registration and the lease: register at start, renew every ttl/5 (counted from the
//! start of each renewal, so a slow one does not delay the next), and register again
//! when the record is gone (it expired while this node could not renew). The blocks of
//! an expired node stay its own in the store (see `ipam::cluster`), so registering
//! again finds them there; the node-local cache is checked against the store anyway
//! ([`crate::blocks::FirstBlocks`]).
//!
//! A failed renewal is retried after a short back-off ([`RETRY_MIN`] doubling up to
//! [`RETRY_MAX`]) until it succeeds or the store says the record is gone, so a store
//! that comes back finds the lease renewed within a second, not at the next tick.
//! A store that stops answering for less than four fifths of the TTL (minus the time of
//! the renewal it answers first) therefore never costs the lease: the outage may start
//! just before a renewal was due, when the lease has `ttl - ttl/5` left. The first failure is logged as the store lost, the next success
//! as regained (with how long it was gone).
//!
//! A re-registration keeps this node's datapath: it only rewrites the node record and
//! takes back the blocks of the node-local cache ([`crate::blocks::FirstBlocks`]); the
//! devices keep the addresses of the last blocks meanwhile (see `crate::datapath`).
//!
//! A new underlay address (seen by the datapath from netlink) re-registers the node with
//! it at once: the record is rewritten in place, on the same lease. The lease first
//! connects to the store again: a connection made from the old address hangs once that
//! address is gone (nothing answers it any more), and waiting for its keep-alive to
//! notice would cost the lease.

use cni_core::node::peer::{UNDERLAY_V4_KEY, UNDERLAY_V6_KEY};
use ipam::cluster::{ClusterStore, NodeInfo, NodeRecord, StoreUrl};
use ipam::IpamError;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::blocks::FirstBlocks;
use crate::metrics::Metrics;

/// First retry after a failed renewal.
pub(crate) const RETRY_MIN: Duration = Duration::from_millis(200);
/// Longest wait between retries of a failed renewal.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(1);

/// Everything the lease loop needs.
pub(crate) struct Lease {
    pub store: Arc<ClusterStore>,
    pub info: NodeInfo,
    pub ttl: Duration,
    pub metrics: Arc<Metrics>,
    pub first_blocks: FirstBlocks,
    /// New underlay addresses to publish (from the datapath), if it reports any.
    pub underlay_updates: Option<watch::Receiver<IpAddr>>,
    /// The store, to connect again from a new underlay address.
    pub url: StoreUrl,
}

/// How often the lease is renewed: a fifth of its TTL (at least 100 ms).
///
/// An outage of the store that starts just before a renewal was due finds the lease
/// with `ttl - interval` left. At ttl/3 that left no margin for the outage of 2/3 of the
/// TTL the chaos test makes (every lease expired in 1 of 5 runs); at ttl/5 it is 2/15 of
/// the TTL (0.8 s at a 6 s TTL, 4 s at the default 30 s), against 1/12 at ttl/4. A
/// renewal costs the store little: on etcd a lease keep-alive only (no raft write, no
/// watch event), on the file store one small rewrite of the file every ttl/5 per node.
/// Kubernetes renews node leases at a quarter of their duration.
pub(crate) fn renew_interval(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(100))
}

/// How often nodes whose lease expired are cleaned up ([`expire_loop`]): a third of the
/// TTL (at least 100 ms). Not tied to the renewals: it bounds how late an expired node
/// is noticed, which needs no margin, and each pass reads every node record.
pub(crate) fn expire_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(100))
}

/// How long a reconnection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Resolves when `updates` has a new value (`true`) or its sender is gone (`false`);
/// never without updates. Cancel-safe.
async fn changed(updates: &mut Option<watch::Receiver<IpAddr>>) -> bool {
    match updates.as_mut() {
        Some(u) => u.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// The wait before the next retry after `failures` failed renewals in a row.
pub(crate) fn retry_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(8);
    (RETRY_MIN * 2u32.pow(exp)).min(RETRY_MAX)
}

impl Lease {
    /// Registers, retrying every second until it succeeds or `stop` turns true
    /// (`None` then). Then claims the first blocks (best effort: retried by [`Lease::run`]).
    pub(crate) async fn start(&self, stop: &mut watch::Receiver<bool>) -> Option<NodeRecord> {
        loop {
            match self.register().await {
                Ok(rec) => return Some(rec),
                Err(e) => {
                    tracing::warn!(error = %e, node = %self.info.name, "cannot register; retrying");
                    tokio::select! {
                        _ = stop.changed() => return None,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn register(&self) -> Result<NodeRecord, IpamError> {
        let rec = self
            .store
            .register(&self.info, self.ttl)
            .await
            .inspect_err(|_| self.metrics.store_error())?;
        self.metrics.set_registered(true);
        self.metrics.set_renew_ok(true);
        tracing::info!(
            node = %self.info.name,
            underlay = ?self.info.underlay_ip,
            blocks = rec.blocks.len(),
            ttl = ?self.ttl,
            "registered"
        );
        self.first_blocks.ensure(&self.store, &self.metrics).await;
        Ok(rec)
    }

    /// A fresh store connection for the lease (kept when it cannot be made: renewals
    /// then retry on the old one).
    async fn reconnect(&mut self) {
        match tokio::time::timeout(CONNECT_TIMEOUT, ClusterStore::connect(&self.url)).await {
            Ok(Ok(s)) => self.store = Arc::new(s),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot connect to the cluster store again"),
            Err(_) => tracing::warn!("connecting to the cluster store again timed out"),
        }
    }

    /// One renewal. Bounded by the store's own request timeouts (etcd: 3 s per
    /// request), not by a shorter one of ours: on a slow store a renewal that is cut
    /// short and retried never completes, and the lease is lost to the retries. A
    /// request sent to a frozen store is answered as soon as it resumes.
    async fn renew(&self) -> Result<(), IpamError> {
        self.store.renew(&self.info.name, self.ttl).await
    }

    /// Renews until `stop` turns true. The lease is left to run out on its own after
    /// that (see the README: a restart within the TTL keeps the node's blocks).
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let every = renew_interval(self.ttl);
        let mut next = Instant::now() + every;
        let mut failures: u32 = 0;
        // When the store was first found unreachable, while it is.
        let mut lost_since: Option<Instant> = None;
        let mut updates = self.underlay_updates.take();
        // The underlay address the store has for this node.
        let mut published = self.info.underlay_ip;
        loop {
            // Wait for the next renewal (or a new underlay address), then renew or
            // republish; a new address that comes while a request is out cancels it (on a
            // connection from the address that just went it would only hang).
            let mut update = {
                let update = changed(&mut updates);
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep_until(next) => None,
                    ok = update => Some(ok),
                }
            };
            let mut result = None;
            // The next renewal is due `every` after this one starts, not after it ends:
            // a renewal slowed by a loaded store (fsync, CPU) must not push the next one
            // back by its own duration, or two slow ones in a row outlast the TTL.
            let started = Instant::now();
            if update.is_none() {
                let republish = published != self.info.underlay_ip;
                let op = async {
                    if republish {
                        self.register().await.map(|_| ())
                    } else {
                        self.renew().await
                    }
                };
                let changed_now = changed(&mut updates);
                tokio::select! {
                    _ = stop.changed() => return,
                    r = op => result = Some(r),
                    ok = changed_now => update = Some(ok),
                }
            }
            if let Some(ok) = update {
                if !ok {
                    updates = None;
                    continue;
                }
                let addr = updates.as_mut().map(|u| *u.borrow_and_update());
                if let Some(new) = addr.filter(|a| Some(*a) != self.info.underlay_ip) {
                    tracing::info!(node = %self.info.name, old = ?self.info.underlay_ip,
                        new = %new, "republishing this node with its new underlay address");
                    self.info.underlay_ip = Some(new);
                    // The per-family address the datapath published beside it too.
                    let key = if new.is_ipv6() {
                        UNDERLAY_V6_KEY
                    } else {
                        UNDERLAY_V4_KEY
                    };
                    if let Some(v) = self.info.backend.get_mut(key) {
                        *v = new.to_string();
                    }
                    self.reconnect().await;
                    // Registering an existing node rewrites its record on its lease.
                    failures = 0;
                    next = Instant::now();
                }
                continue;
            }
            let Some(result) = result else { continue };
            match result {
                Ok(()) => {
                    published = self.info.underlay_ip;
                    if let Some(since) = lost_since.take() {
                        tracing::info!(node = %self.info.name, down_for = ?since.elapsed(),
                            "cluster store reachable again: lease renewed");
                    }
                    failures = 0;
                    self.metrics.set_renew_ok(true);
                    if !self.first_blocks.done() {
                        self.first_blocks.ensure(&self.store, &self.metrics).await;
                    }
                    next = started + every;
                }
                Err(IpamError::NotFound(why)) => {
                    // The store answers again, with the news that the record is gone.
                    if let Some(since) = lost_since.take() {
                        tracing::info!(node = %self.info.name, down_for = ?since.elapsed(),
                            "cluster store reachable again");
                    }
                    tracing::warn!(node = %self.info.name, %why, "lease expired: registering again");
                    self.metrics.renew_failure();
                    self.first_blocks.reset();
                    match self.register().await {
                        Ok(rec) => {
                            published = self.info.underlay_ip;
                            failures = 0;
                            tracing::info!(node = %self.info.name, blocks = rec.blocks.len(),
                                "re-registered after the lease expired; the datapath was kept");
                            next = Instant::now() + every;
                        }
                        Err(e) => {
                            failures += 1;
                            self.metrics.set_renew_ok(false);
                            lost_since.get_or_insert_with(Instant::now);
                            tracing::warn!(error = %e, "cannot register again; retrying");
                            next = Instant::now() + retry_delay(failures);
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    self.metrics.renew_failure();
                    self.metrics.store_error();
                    self.metrics.set_renew_ok(false);
                    if lost_since.is_none() {
                        lost_since = Some(Instant::now());
                        tracing::warn!(error = %e, node = %self.info.name,
                            "cluster store lost: lease renewal failed; retrying every second at most \
                             (the datapath is kept)");
                    } else {
                        tracing::debug!(error = %e, failures, "lease renewal failed again");
                    }
                    next = Instant::now() + retry_delay(failures);
                }
            }
        }
    }
}

/// Every `every`, cleans up after nodes whose lease expired: one holding no block is
/// removed; one holding blocks keeps them (bound to its name: nobody else can claim
/// them) until it registers again, or for `grace` (zero: until `ipamd remove-node`),
/// after which they go back to the pool. Every daemon does it; the store's
/// compare-and-swap makes that safe.
pub(crate) async fn expire_loop(
    store: Arc<ClusterStore>,
    every: Duration,
    grace: Duration,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        match store.expire(grace).await {
            Ok(gone) => {
                for name in gone {
                    tracing::info!(node = %name, ?grace,
                        "node expired for longer than the expired-node grace: removed, its blocks freed");
                }
            }
            Err(e) => {
                metrics.store_error();
                tracing::warn!(error = %e, "cannot expire dead nodes");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_a_fifth() {
        for (ttl, every) in [
            (Duration::from_secs(30), Duration::from_secs(6)),
            (Duration::from_secs(6), Duration::from_millis(1200)),
            (Duration::from_secs(3), Duration::from_millis(600)),
            (Duration::from_secs(3600), Duration::from_secs(720)),
            (Duration::from_millis(150), Duration::from_millis(100)),
        ] {
            assert_eq!(renew_interval(ttl), every, "ttl {ttl:?}");
        }
    }

    #[test]
    fn a_store_outage_of_two_thirds_of_the_ttl_leaves_margin() {
        // The outage starts just before a renewal was due: the lease then has
        // `ttl - interval` left, which must outlast 2/3 of the TTL by a tenth of it.
        for ttl in [
            Duration::from_secs(3),
            Duration::from_secs(6),
            Duration::from_secs(30),
        ] {
            let left = ttl - renew_interval(ttl);
            assert!(left >= ttl * 2 / 3 + ttl / 10, "ttl {ttl:?}: {left:?} left");
        }
    }

    #[test]
    fn expires_dead_nodes_at_a_third() {
        assert_eq!(
            expire_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            expire_interval(Duration::from_millis(150)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn retries_back_off_to_a_second() {
        assert_eq!(retry_delay(1), Duration::from_millis(200));
        assert_eq!(retry_delay(2), Duration::from_millis(400));
        assert_eq!(retry_delay(3), Duration::from_millis(800));
        assert_eq!(retry_delay(4), RETRY_MAX);
        assert_eq!(retry_delay(100), RETRY_MAX);
    }
}
