//! Release of empty blocks: a block this node owns that has had no allocation for
//! `--block-release-grace` goes back to the pool, except the node's last block of a
//! family (the first pod must not wait on the cluster store).
//!
//! Since when a block is empty is tracked in memory: a restart only delays a release.
//! The release itself is [`ipam::cluster::local::release_if_unused`], race-free
//! against ADD (the block leaves the node-local cache under the store lock, and only if
//! no address of it is reserved, before it is released in the cluster store).

use ipam::cluster::{local, ClusterStore};
use ipam::{IpamError, Store};
use ipnetwork::IpNetwork;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Since when each cached block has been empty.
#[derive(Debug, Default)]
pub(crate) struct EmptyBlocks {
    since: HashMap<IpNetwork, Instant>,
}

impl EmptyBlocks {
    pub(crate) fn new() -> EmptyBlocks {
        EmptyBlocks::default()
    }

    /// Records what was observed at `now`: `blocks` are the node's cached blocks (that
    /// it owns), in claim order, each with whether an allocation uses it. Returns the
    /// blocks to release: empty for longer than `grace`, newest first, never the last
    /// block of a family.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        blocks: &[(IpNetwork, bool)],
        grace: Duration,
    ) -> Vec<IpNetwork> {
        self.since
            .retain(|b, _| blocks.iter().any(|(x, used)| x == b && !used));
        for (b, used) in blocks {
            if !used {
                self.since.entry(*b).or_insert(now);
            }
        }
        let mut due = Vec::new();
        for v6 in [false, true] {
            let mut left = blocks.iter().filter(|(b, _)| b.is_ipv6() == v6).count();
            for (b, _) in blocks.iter().rev().filter(|(b, _)| b.is_ipv6() == v6) {
                if left <= 1 {
                    break;
                }
                let expired = self
                    .since
                    .get(b)
                    .is_some_and(|t| now.saturating_duration_since(*t) > grace);
                if expired {
                    due.push(*b);
                    left -= 1;
                }
            }
        }
        due
    }

    /// Forgets `block` (released, or found in use).
    pub(crate) fn forget(&mut self, block: &IpNetwork) {
        self.since.remove(block);
    }
}

/// The cached blocks that `owned` lists, in cache (claim) order, each with whether an
/// allocation of the node-local store uses it. Reads the whole store.
pub(crate) fn observe_cache(
    store: &Store,
    owned: &[IpNetwork],
) -> Result<Vec<(IpNetwork, bool)>, IpamError> {
    let allocs = store.list()?;
    Ok(local::cached_blocks(store)?
        .into_iter()
        .filter(|b| owned.contains(b))
        .map(|b| {
            let used = allocs
                .iter()
                .any(|a| a.ips.iter().any(|n| b.contains(n.ip())));
            (b, used)
        })
        .collect())
}

/// Releases the `due` blocks that are still unused; returns how many were released.
pub(crate) async fn release(
    store: &Store,
    cluster: &ClusterStore,
    node: &str,
    due: &[IpNetwork],
    empty: &mut EmptyBlocks,
    metrics: &Metrics,
    grace: Duration,
) -> usize {
    let mut n = 0;
    for b in due {
        empty.forget(b);
        match local::release_if_unused(store, cluster, node, *b).await {
            Ok(true) => {
                n += 1;
                metrics.block_released();
                tracing::info!(%node, block = %b, ?grace, "empty block released");
            }
            Ok(false) => {
                tracing::debug!(%node, block = %b, "block in use again or not owned: kept")
            }
            Err(e) => {
                metrics.store_error();
                tracing::warn!(error = %e, %node, block = %b, "cannot release an empty block");
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn releases_after_grace_but_never_the_last_of_a_family() {
        let g = Duration::from_secs(10);
        let t0 = Instant::now();
        let (a, b, c) = (net("10.0.0.0/28"), net("10.0.0.16/28"), net("fd00::/124"));
        let mut e = EmptyBlocks::new();
        let obs = [(a, false), (b, false), (c, false)];
        assert!(e.observe(t0, &obs, g).is_empty());
        assert!(e.observe(t0 + g, &obs, g).is_empty());
        // Both v4 blocks are due, only the newest goes; the lone v6 block stays.
        assert_eq!(e.observe(t0 + g * 2, &obs, g), vec![b]);
        // With the other one released, the last v4 block stays.
        e.forget(&b);
        assert!(e
            .observe(t0 + g * 3, &[(a, false), (c, false)], g)
            .is_empty());
    }

    #[test]
    fn a_block_in_use_is_never_due_and_its_clock_restarts() {
        let g = Duration::from_secs(10);
        let t0 = Instant::now();
        let (a, b) = (net("10.0.0.0/28"), net("10.0.0.16/28"));
        let mut e = EmptyBlocks::new();
        assert!(e.observe(t0, &[(a, false), (b, false)], g).is_empty());
        // b gets a pod: not due, whatever its age; a is, b is kept.
        assert_eq!(e.observe(t0 + g * 2, &[(a, false), (b, true)], g), vec![a]);
        e.forget(&a);
        // b empties again: its grace starts over.
        let t1 = t0 + g * 3;
        let obs = [(a, true), (b, false)];
        assert!(e.observe(t1, &obs, g).is_empty());
        assert!(e.observe(t1 + g, &obs, g).is_empty());
        assert_eq!(e.observe(t1 + g * 2, &obs, g), vec![b]);
    }
}
