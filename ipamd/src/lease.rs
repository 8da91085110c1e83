//! Registration and the lease: register at start, renew every ttl/3, register again
//! when the record is gone (it expired while this node could not renew), and claim a
//! first block again when that happened (an expired node's blocks were freed).

use ipam::cluster::{ClusterStore, NodeInfo, NodeRecord};
use ipam::IpamError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::blocks::FirstBlocks;
use crate::metrics::Metrics;

/// Everything the lease loop needs.
pub struct Lease {
    pub store: Arc<ClusterStore>,
    pub info: NodeInfo,
    pub ttl: Duration,
    pub metrics: Arc<Metrics>,
    pub first_blocks: FirstBlocks,
}

/// How often the lease is renewed: a third of its TTL (at least 100 ms).
pub fn renew_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(100))
}

impl Lease {
    /// Registers, retrying every second until it succeeds or `stop` turns true
    /// (`None` then). Then claims the first blocks (best effort: retried by [`Lease::run`]).
    pub async fn start(&self, stop: &mut watch::Receiver<bool>) -> Option<NodeRecord> {
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

    /// Renews until `stop` turns true. The lease is left to run out on its own after
    /// that (see the README: a restart within the TTL keeps the node's blocks).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(renew_interval(self.ttl));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
            }
            match self.store.renew(&self.info.name, self.ttl).await {
                Ok(()) => {
                    self.metrics.set_renew_ok(true);
                    if !self.first_blocks.done() {
                        self.first_blocks.ensure(&self.store, &self.metrics).await;
                    }
                }
                Err(IpamError::NotFound(why)) => {
                    tracing::warn!(node = %self.info.name, %why, "lease expired: registering again");
                    self.metrics.renew_failure();
                    self.first_blocks.reset();
                    if let Err(e) = self.register().await {
                        self.metrics.set_renew_ok(false);
                        tracing::warn!(error = %e, "cannot register again");
                    }
                }
                Err(e) => {
                    self.metrics.renew_failure();
                    self.metrics.store_error();
                    self.metrics.set_renew_ok(false);
                    tracing::warn!(error = %e, node = %self.info.name, "lease renewal failed");
                }
            }
        }
    }
}

/// Removes, every `every`, the nodes whose lease expired (their blocks become free).
/// Every daemon does it; the store's compare-and-swap makes that safe.
pub async fn expire_loop(
    store: Arc<ClusterStore>,
    every: Duration,
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
        match store.expire().await {
            Ok(gone) => {
                for name in gone {
                    tracing::info!(node = %name, "lease expired: node removed, its blocks freed");
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
    fn renews_at_a_third() {
        assert_eq!(
            renew_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            renew_interval(Duration::from_millis(150)),
            Duration::from_millis(100)
        );
    }
}
