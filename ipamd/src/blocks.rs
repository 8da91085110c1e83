//! This node's blocks: the first block per pool family claimed at start (so the first
//! pod does not wait on the cluster store), the node-local block cache the `cni-ipam`
//! plugin reads, and the usage of the blocks from the node-local store.

use ipam::cluster::{local, ClusterStore, Pool};
use ipam::{IpamError, Store};
use ipnetwork::IpNetwork;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::metrics::Metrics;

/// Makes sure this node holds (in the cluster store and in its node-local block cache)
/// at least one block per family of the pool, so the first pod does not wait.
pub(crate) struct FirstBlocks {
    pub node: String,
    pub pool: Pool,
    /// The node-local store of the network (`<data dir>/<network>`), where the block
    /// cache lives.
    pub local: Store,
    done: AtomicBool,
}

impl FirstBlocks {
    pub(crate) fn new(node: String, pool: Pool, local: Store) -> FirstBlocks {
        FirstBlocks {
            node,
            pool,
            local,
            done: AtomicBool::new(false),
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// Forget that the blocks were checked (the node's record expired: check again).
    pub(crate) fn reset(&self) {
        self.done.store(false, Ordering::Relaxed);
    }

    /// Reconciles the cache with the cluster store, then claims what is missing. Errors
    /// are logged and counted; the lease loop calls again until it is done.
    pub(crate) async fn ensure(&self, store: &ClusterStore, metrics: &Metrics) {
        match self.try_ensure(store).await {
            Ok(blocks) => {
                metrics.set_blocks_owned(blocks.len());
                self.done.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                metrics.store_error();
                tracing::warn!(error = %e, node = %self.node, "cannot claim a first block; will retry");
            }
        }
    }

    async fn try_ensure(&self, store: &ClusterStore) -> Result<Vec<IpNetwork>, IpamError> {
        // Blocks claimed but not cached (a claim cut short by a crash): cache them.
        for b in local::adopt_owned(&self.local, store, &self.node).await? {
            tracing::info!(node = %self.node, block = %b, "owned block added to the cache");
        }
        // Cached blocks the store no longer lists as ours: take them back. A lapsed lease
        // alone never frees them (they stay bound to this node's name), so this happens
        // only after `ipamd remove-node` or the expired-node grace. One another node took
        // meanwhile is dropped from the cache, so this node never allocates from it
        // again; the pods that hold addresses in it keep them until deleted (logged with
        // their count: the operator should recreate them).
        for b in local::reclaim_cached(&self.local, store, &self.node).await? {
            let holders = self
                .local
                .list()
                .map(|all| {
                    all.iter()
                        .filter(|a| a.ips.iter().any(|ip| b.contains(ip.ip())))
                        .count()
                })
                .unwrap_or(0);
            local::uncache_block(&self.local, b)?;
            tracing::error!(node = %self.node, block = %b, pods = holders,
                "a block of this node was taken by another node after it was freed (node \
                 removed, or expired for longer than the expired-node grace): this node no \
                 longer allocates from it; its pods keep their addresses until deleted \
                 (recreate them)");
        }
        let before = local::cached_blocks(&self.local)?;
        let blocks = local::ensure_block(&self.local, store, &self.node, &self.pool, None).await?;
        for b in blocks.iter().filter(|b| !before.contains(b)) {
            tracing::info!(node = %self.node, block = %b, "claimed a first block");
        }
        Ok(blocks)
    }
}

/// Addresses allocated and left in `blocks`, per family: (family, allocated, free).
/// Reads the whole node-local store (run it on a timer, not per request).
/// With `reserve_gateway` the first host address of each block counts as not usable.
pub(crate) fn usage(
    store: &Store,
    blocks: &[IpNetwork],
    reserve_gateway: bool,
) -> Result<Vec<(&'static str, u128, u128)>, IpamError> {
    let allocs = store.list()?;
    let mut out = Vec::new();
    for (family, v6) in [("ipv4", false), ("ipv6", true)] {
        let mine: Vec<&IpNetwork> = blocks.iter().filter(|b| b.is_ipv6() == v6).collect();
        if mine.is_empty() {
            continue;
        }
        let capacity: u128 = mine
            .iter()
            .map(|b| usable(b, reserve_gateway))
            .fold(0, u128::saturating_add);
        let used = allocs
            .iter()
            .flat_map(|a| a.ips.iter())
            .filter(|ip| mine.iter().any(|b| b.contains(ip.ip())))
            .count() as u128;
        out.push((family, used, capacity.saturating_sub(used)));
    }
    Ok(out)
}

/// The addresses of a block pods can get (see `ipam::cluster::local`: not the IPv4
/// network and broadcast addresses, not the IPv6 subnet-router anycast address, and not
/// the first host address with `reserve_gateway`: 61 of a /26).
pub(crate) fn usable(b: &IpNetwork, reserve_gateway: bool) -> u128 {
    size(b)
        .saturating_sub(if b.is_ipv6() { 1 } else { 2 })
        .saturating_sub(u128::from(reserve_gateway))
}

/// The number of addresses in a block.
pub(crate) fn size(b: &IpNetwork) -> u128 {
    let total: u32 = if b.is_ipv6() { 128 } else { 32 };
    let host_bits = total.saturating_sub(u32::from(b.prefix()));
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::AllocKey;

    #[test]
    fn sizes() {
        assert_eq!(size(&"10.0.0.0/26".parse().unwrap()), 64);
        assert_eq!(size(&"fd00::/122".parse().unwrap()), 64);
        assert_eq!(size(&"::/0".parse().unwrap()), u128::MAX);
    }

    #[test]
    fn usage_counts_only_addresses_in_the_blocks() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let r = ipam::Range::new("t", "10.0.0.0/24".parse().unwrap(), None, None, None).unwrap();
        let sets =
            ipam::RangeSets::new("t", vec![ipam::RangeSet::new("t", vec![r]).unwrap()]).unwrap();
        s.allocate(&AllocKey::new("a", "eth0"), &sets, &[]).unwrap();
        s.allocate(
            &AllocKey::new("b", "eth0"),
            &sets,
            &["10.0.0.200".parse().unwrap()],
        )
        .unwrap();
        let u = usage(&s, &["10.0.0.0/26".parse().unwrap()], false).unwrap();
        assert_eq!(u, vec![("ipv4", 1, 61)]);
        let u = usage(&s, &["10.0.0.0/26".parse().unwrap()], true).unwrap();
        assert_eq!(
            u,
            vec![("ipv4", 1, 60)],
            "61 usable with a reserved gateway"
        );
        assert_eq!(usable(&"10.0.0.0/26".parse().unwrap(), true), 61);
    }
}
