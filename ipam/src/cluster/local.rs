//! The node-local side of cluster IPAM, shared by `cni-ipam` (cluster mode) and
//! `ipamd`: the cache of the blocks this node owns, kept in the network's node-local
//! store directory, and allocation from it.
//!
//! ```text
//! <store dir>/blocks.json   {"blocks": ["10.244.0.0/26", "fd00:244::/122", ...],
//!                            "store": "<cluster store identity>", "node": "<name>",
//!                            "verified": "<fingerprint>", "refused": "<why>"}
//!                           blocks in claim order; written atomically and durably
//!                           under the store's lock (a cache of an older build has
//!                           only "blocks": it is checked at its first contact with
//!                           the store)
//! <store dir>/claim.lock    flock(2)-ed while a block is claimed from the cluster store,
//!                           so concurrent ADDs on one node claim one block, not many
//! ```
//!
//! Pods are allocated from the cached blocks first, so they get addresses while the
//! cluster store is down; only when every cached block of a family is full is the
//! cluster store contacted to claim one more block. Within a block every address is
//! usable except, for IPv4, the block's network and broadcast addresses, and for IPv6
//! the block's first (subnet-router anycast) address: the pod's prefix length is the
//! block's, so these are the network/broadcast addresses from the pod's point of view.
//! No gateway is returned (the datapath provides its own), unless the network asks for
//! `reserveGateway` ([`BlockLayout`]): then the block's first host address is never
//! allocated and is every address's gateway (the node's address on its bridge or VXLAN
//! device, the same on every node's view: see `cni_core::node::Peer::gateway_v4`).
//!
//! Integrity: the cache records the identity of the cluster store its blocks were
//! claimed from and the node they were claimed for, and a fingerprint of what was last
//! checked against the store (a claim by compare-and-swap, or [`verify_cache`]). Every
//! claim first checks the store's identity: a cache of another store (the store was lost
//! and recreated, or replaced) is refused for good (`refused`, code 101: every later
//! ADD refuses it too, naming what to do). A cache whose content is not the one last
//! checked (edited by hand, copied, or written by an older build) is checked block by
//! block before it is used: a block the store says belongs to another node is removed
//! from the cache and refused (code 101, naming the block and both nodes); a block the
//! store no longer lists (this node's lease lapsed) is claimed back. When the store
//! cannot be reached, a checked cache is used as it is: it is this node's own record of
//! claims that succeeded; an unchecked one too (WARN), since refusing would stop every
//! pod while the store is down.
//!
//! Crash safety: the block is claimed in the cluster store (the truth) *before* it is
//! written to the cache. A crash in between leaves a block owned by the node but not in
//! its cache: never owned twice, at worst unused. [`reclaim_cached`] and
//! [`adopt_owned`] reconcile the two.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;

use super::{ClusterStore, Pool};
use crate::durable::{lock_exclusive, read_optional, replace_file};
use crate::error::IpamError;
use crate::range::{ip_to_u128, Range, RangeSet, RangeSets};
use crate::store::{AllocKey, AllocMeta, Store};

/// How [`allocate_in`] claims one more block of a family (`true`: IPv6), given the cache
/// as it read it.
pub(crate) type ClaimFn<'a> = dyn FnMut(bool, &[IpNetwork]) -> Result<IpNetwork, IpamError> + 'a;

/// The cache file's name inside the store directory.
pub(crate) const CACHE_FILE: &str = "blocks.json";
/// The claim lock's name inside the store directory.
pub(crate) const CLAIM_LOCK: &str = "claim.lock";
/// At most this many blocks are claimed by one allocation before giving up.
const MAX_CLAIMS_PER_ALLOCATION: usize = 8;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    #[serde(default)]
    blocks: Vec<IpNetwork>,
    /// The identity of the cluster store the blocks were claimed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    store: Option<String>,
    /// The node they were claimed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    /// [`Cache::fingerprint`] of the content last checked against the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    verified: Option<String>,
    /// Why the cache is refused (it belongs to another store); set once found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
}

impl Cache {
    fn fingerprint(&self) -> String {
        let data = serde_json::to_vec(&(&self.store, &self.node, &self.blocks)).unwrap_or_default();
        let mut h: u64 = 0xcbf29ce484222325;
        for b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("{h:016x}")
    }

    /// Whether the content is the one last checked against the store (an empty cache
    /// has nothing to check).
    fn is_verified(&self) -> bool {
        self.blocks.is_empty() || self.verified.as_deref() == Some(self.fingerprint().as_str())
    }
}

fn cache_path(store: &Store) -> PathBuf {
    store.dir().join(CACHE_FILE)
}

fn read_cache(store: &Store) -> Result<Cache, IpamError> {
    let path = cache_path(store);
    let Some(bytes) = read_optional(&path)? else {
        return Ok(Cache::default());
    };
    serde_json::from_slice::<Cache>(&bytes).map_err(|e| IpamError::corrupt(&path, e.to_string()))
}

/// The blocks cached for this node, in claim order (no lock needed: the file is
/// replaced atomically). A corrupt cache is an error naming the file.
pub fn cached_blocks(store: &Store) -> Result<Vec<IpNetwork>, IpamError> {
    read_cache(store).map(|c| c.blocks)
}

/// Writes `cache` (the caller holds the store's lock).
fn store_cache(store: &Store, cache: &Cache) -> Result<(), IpamError> {
    let path = cache_path(store);
    let bytes = serde_json::to_vec_pretty(cache)
        .map_err(|e| IpamError::config(format!("cannot encode {}: {e}", path.display())))?;
    replace_file(&path, &bytes)
}

/// Changes the cached blocks with `f` under the store's lock. A cache that was checked
/// stays checked (our own change); one that was not stays unchecked.
fn write_cache(
    store: &Store,
    f: impl FnOnce(&mut Vec<IpNetwork>) -> bool,
) -> Result<bool, IpamError> {
    let _lock = store.lock()?;
    let mut cache = read_cache(store)?;
    let checked = cache.is_verified();
    if !f(&mut cache.blocks) {
        return Ok(false);
    }
    if checked {
        cache.verified = Some(cache.fingerprint());
    }
    store_cache(store, &cache)?;
    Ok(true)
}

/// What every ADD checks without the cluster store: the cache is not refused and was
/// claimed for `node`. Returns whether its content is the one last checked against
/// the store (if not, [`verify_cache`] should run before it is used).
pub(crate) fn check_cache_offline(store: &Store, node: &str) -> Result<bool, IpamError> {
    let cache = read_cache(store)?;
    if let Some(why) = &cache.refused {
        return Err(IpamError::corrupt(&cache_path(store), why.clone()));
    }
    if let Some(n) = cache.node.as_deref().filter(|n| *n != node) {
        return Err(IpamError::corrupt(
            &cache_path(store),
            format!(
                "it holds the blocks of node {n}, not of this node {node}: never used; \
                 remove it (this node's blocks are taken back from the cluster store)"
            ),
        ));
    }
    Ok(cache.is_verified())
}

/// Checks the cache against the cluster store (see the module docs), holding the
/// node's claim lock: the store's identity, then (unless the content is the one last
/// checked) every block's owner.
pub(crate) async fn verify_cache(
    store: &Store,
    cluster: &ClusterStore,
    node: &str,
) -> Result<(), IpamError> {
    let _lock = claim_lock(store).await?;
    verify_locked(store, cluster, node).await
}

async fn claim_lock(store: &Store) -> Result<nix::fcntl::Flock<std::fs::File>, IpamError> {
    let lock_path = store.dir().join(CLAIM_LOCK);
    let p = lock_path.clone();
    tokio::task::spawn_blocking(move || lock_exclusive(&p))
        .await
        .map_err(|e| IpamError::io("flock", &lock_path, std::io::Error::other(e.to_string())))?
}

async fn verify_locked(store: &Store, cluster: &ClusterStore, node: &str) -> Result<(), IpamError> {
    let id = cluster.identity().await?;
    let path = cache_path(store);
    let cache = read_cache(store)?;
    if let Some(why) = cache.refused {
        return Err(IpamError::corrupt(&path, why));
    }
    if let Some(theirs) = cache.store.as_ref().filter(|s| **s != id) {
        let why = format!(
            "it lists blocks [{}] claimed from cluster store {theirs}, but {} is store {id}: \
             the store they came from was lost or replaced, and they may now be another \
             node's. Refused for good: restore that store; or remove {} once no pod uses an \
             address of those blocks",
            cache
                .blocks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            cluster.describe(),
            path.display()
        );
        tracing::error!(%node, cache = %path.display(), %why, "block cache refused");
        {
            let _l = store.lock()?;
            let mut c = read_cache(store)?;
            c.refused = Some(why.clone());
            store_cache(store, &c)?;
        }
        return Err(IpamError::corrupt(&path, why));
    }
    if let Some(n) = cache.node.as_deref().filter(|n| *n != node) {
        return Err(IpamError::corrupt(
            &path,
            format!("it holds the blocks of node {n}, not of this node {node}"),
        ));
    }
    let mut foreign = Vec::new();
    let mut unchecked = false;
    if !(cache.is_verified() && cache.store.is_some()) {
        for b in &cache.blocks {
            match cluster.owner_of(*b).await? {
                Some(o) if o == node => {}
                Some(o) => foreign.push((*b, o)),
                None => match cluster.claim_exact(node, *b).await {
                    Ok(true) => {
                        tracing::info!(%node, block = %b, "claimed back a cached block the cluster store no longer listed");
                    }
                    Ok(false) => {
                        let o = cluster
                            .owner_of(*b)
                            .await?
                            .unwrap_or_else(|| "another node".into());
                        foreign.push((*b, o));
                    }
                    // Not registered (yet): checked again at the next contact.
                    Err(IpamError::NotFound(_)) => unchecked = true,
                    Err(e) => return Err(e),
                },
            }
        }
    }
    {
        let _l = store.lock()?;
        let mut c = read_cache(store)?;
        let before = (
            c.blocks.clone(),
            c.store.clone(),
            c.node.clone(),
            c.verified.clone(),
        );
        c.blocks.retain(|b| !foreign.iter().any(|(f, _)| f == b));
        c.store = Some(id);
        c.node = Some(node.to_string());
        if !unchecked {
            c.verified = Some(c.fingerprint());
        }
        // Written only when something changed (a claim's check usually changes nothing).
        if before
            != (
                c.blocks.clone(),
                c.store.clone(),
                c.node.clone(),
                c.verified.clone(),
            )
        {
            store_cache(store, &c)?;
        }
    }
    if foreign.is_empty() {
        return Ok(());
    }
    let list = foreign
        .iter()
        .map(|(b, o)| format!("block {b} is cached by node {node} but owned by node {o}"))
        .collect::<Vec<_>>()
        .join("; ");
    tracing::error!(%node, cache = %path.display(), %list, "foreign blocks removed from the cache");
    Err(IpamError::corrupt(
        &path,
        format!(
            "{list}: removed from the cache, never used (addresses of pods already in them \
             may be duplicated: check them)"
        ),
    ))
}

/// Adds `block` to the cache (durably, under the store's lock); `false` if it was there.
pub(crate) fn cache_block(store: &Store, block: IpNetwork) -> Result<bool, IpamError> {
    write_cache(store, |b| {
        if b.contains(&block) {
            return false;
        }
        b.push(block);
        true
    })
}

/// Removes `block` from the cache; `false` if it was not there. The caller decides
/// what becomes of allocations in it (`ipamd`: a block another node took).
pub fn uncache_block(store: &Store, block: IpNetwork) -> Result<bool, IpamError> {
    write_cache(store, |b| {
        let n = b.len();
        b.retain(|x| *x != block);
        b.len() != n
    })
}

/// Releases `block` if no address of it is reserved: removes it from the cache (under
/// the store's lock, so no ADD can take an address of it meanwhile: an ADD that read the
/// cache before sees the block gone and retries elsewhere), then gives it back to the
/// cluster store. Returns whether it did. For `ipamd`'s "empty block, after a grace
/// period" release.
pub async fn release_if_unused(
    store: &Store,
    cluster: &ClusterStore,
    node: &str,
    block: IpNetwork,
) -> Result<bool, IpamError> {
    let range = block_range(block)?;
    let uncached = {
        let _lock = store.lock()?;
        let mut used = false;
        for ip in RangeSet::new("block", vec![range])?.candidates(None) {
            if store.owner_of(ip)?.is_some() {
                used = true;
                break;
            }
        }
        if used {
            false
        } else {
            let mut cache = read_cache(store)?;
            let checked = cache.is_verified();
            let n = cache.blocks.len();
            cache.blocks.retain(|b| *b != block);
            if cache.blocks.len() != n {
                if checked {
                    cache.verified = Some(cache.fingerprint());
                }
                store_cache(store, &cache)?;
            }
            true
        }
    };
    if !uncached {
        return Ok(false);
    }
    cluster.release_block(node, block).await
}

/// How the addresses of a block are handed out (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockLayout {
    /// `ipam.reserveGateway`: the first host address (network + 1) of every block is
    /// never allocated and is returned as the gateway of the block's addresses.
    pub reserve_gateway: bool,
}

impl BlockLayout {
    /// The usable addresses of `block` as a range; its `gateway` (never allocated) is
    /// set only with [`BlockLayout::reserve_gateway`].
    pub(crate) fn range(&self, block: IpNetwork) -> Result<Range, IpamError> {
        let bits: u8 = if block.is_ipv4() { 32 } else { 128 };
        if block.prefix() > bits - 2 || block.ip() != block.network() {
            return Err(IpamError::config(format!(
                "block {block} is not a block network of at least 4 addresses"
            )));
        }
        let net = ip_to_u128(block.network());
        let last = ip_to_u128(block.broadcast());
        let end = if block.is_ipv4() { last - 1 } else { last };
        Ok(Range {
            subnet: block,
            start: from_u128(net + 1, block.ip()),
            end: from_u128(end, block.ip()),
            gateway: self.gateway(block),
        })
    }

    /// The gateway of the addresses of the block containing `addr` (an allocated
    /// address carries its block's prefix length): network + 1, or `None` without
    /// [`BlockLayout::reserve_gateway`].
    pub(crate) fn gateway(&self, addr: IpNetwork) -> Option<IpAddr> {
        self.reserve_gateway
            .then(|| from_u128(ip_to_u128(addr.network()) + 1, addr.ip()))
    }
}

/// The usable addresses of `block` as a range without gateway (see the module docs).
pub(crate) fn block_range(block: IpNetwork) -> Result<Range, IpamError> {
    BlockLayout::default().range(block)
}

fn from_u128(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from((v & 0xffff_ffff) as u32)),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(v)),
    }
}

/// One range set per family of `pool` (IPv4 first), each made of the cached blocks of
/// that family inside the pool; `Err(v6)` names a family with no cached block yet.
fn sets_for(
    pool: &Pool,
    layout: BlockLayout,
    blocks: &[IpNetwork],
) -> Result<Result<Vec<(bool, RangeSet)>, bool>, IpamError> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        if !pool.has_family(v6) {
            continue;
        }
        let ranges = blocks
            .iter()
            .filter(|b| b.is_ipv6() == v6 && pool.contains(**b))
            .map(|b| layout.range(*b))
            .collect::<Result<Vec<_>, _>>()?;
        if ranges.is_empty() {
            return Ok(Err(v6));
        }
        let field = if v6 {
            "cluster blocks (IPv6)"
        } else {
            "cluster blocks (IPv4)"
        };
        out.push((v6, RangeSet::new(field, ranges)?));
    }
    Ok(Ok(out))
}

/// Allocates one address per family of `pool` for `key` from the cached blocks. When a
/// family has no cached block, or all of its blocks are full, `claim(v6, seen)` is called
/// (`seen`: the cache as this allocation read it)
/// (with the claim lock held and the cache re-read: see [`claim_into_cache`]) and the
/// allocation retried. Idempotent as [`Store::allocate`]. The blocks are laid out by
/// `layout` (e.g. the gateway reserved).
pub(crate) fn allocate_in(
    store: &Store,
    pool: &Pool,
    layout: BlockLayout,
    key: &AllocKey,
    requested: &[IpAddr],
    meta: &AllocMeta,
    claim: &mut ClaimFn<'_>,
) -> Result<Vec<IpNetwork>, IpamError> {
    // Read once for the refusal, the repeated ADD and the first pass (issue 17: it was
    // read three times); re-read after a claim or a retry.
    let cache = read_cache(store)?;
    if let Some(why) = cache.refused {
        return Err(IpamError::corrupt(&cache_path(store), why));
    }
    let mut first = Some(cache.blocks);
    // A repeated ADD is answered from the key entry, whatever the cache holds.
    if store.get(key)?.is_some() {
        if let Ok(Ok(sets)) = sets_for(pool, layout, first.as_deref().unwrap_or_default()) {
            let sets = RangeSets::new("cluster blocks", sets.into_iter().map(|s| s.1).collect())?;
            return store.allocate_with(key, &sets, requested, meta);
        }
    }
    let mut claims = 0;
    loop {
        let seen = match first.take() {
            Some(blocks) => blocks,
            None => cached_blocks(store)?,
        };
        let need = match sets_for(pool, layout, &seen)? {
            Ok(sets) => {
                let families: Vec<(bool, String)> =
                    sets.iter().map(|(v6, s)| (*v6, s.to_string())).collect();
                let sets =
                    RangeSets::new("cluster blocks", sets.into_iter().map(|s| s.1).collect())?;
                match store.allocate_with(key, &sets, requested, meta) {
                    Ok(ips) => {
                        // A block released (uncached under the store lock) between our
                        // read of the cache and the allocation must not be used.
                        let now = cached_blocks(store)?;
                        if ips.iter().all(|n| now.iter().any(|b| b.contains(n.ip()))) {
                            return Ok(ips);
                        }
                        tracing::info!(%key, "a block was released under the allocation: retrying");
                        store.release(key)?;
                        continue;
                    }
                    Err(IpamError::Exhausted { set }) => {
                        match families.iter().find(|(_, s)| *s == set) {
                            Some((v6, _)) => *v6,
                            None => return Err(IpamError::Exhausted { set }),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(v6) => v6,
        };
        if claims >= MAX_CLAIMS_PER_ALLOCATION {
            return Err(IpamError::PoolExhausted(format!(
                "claimed {claims} blocks of pool {pool} for one allocation and still found no free address"
            )));
        }
        claims += 1;
        let block = claim(need, &seen)?;
        tracing::debug!(%block, "allocation retried after a claim");
    }
}

/// Claims one more block of the family for `node` from `cluster` and caches it, holding
/// the node's claim lock. If another process cached a block of the family since `seen`
/// was read, returns that block instead of claiming (the caller just retries).
pub async fn claim_into_cache(
    store: &Store,
    cluster: &ClusterStore,
    node: &str,
    pool: &Pool,
    v6: bool,
    max_blocks: Option<usize>,
    seen: &[IpNetwork],
) -> Result<IpNetwork, IpamError> {
    let lock = claim_lock(store).await?;
    // The cache must be of this store and this node before anything is added to it.
    verify_locked(store, cluster, node).await?;
    let now = cached_blocks(store)?;
    if let Some(b) = now
        .iter()
        .find(|b| b.is_ipv6() == v6 && pool.contains(**b) && !seen.contains(b))
    {
        drop(lock);
        return Ok(*b);
    }
    // A block the node owns but never cached (a claim killed before its cache write) is
    // taken before a new one is claimed. Safe under the claim lock: every claim of this
    // node goes through it, so no claim is in flight.
    if let Some(rec) = cluster.node(node).await? {
        if let Some(b) = rec
            .blocks
            .iter()
            .find(|b| b.is_ipv6() == v6 && pool.contains(**b) && !now.contains(b))
        {
            tracing::info!(%node, block = %b, "adopting an owned block missing from the cache");
            cache_block(store, *b)?;
            drop(lock);
            return Ok(*b);
        }
    }
    let block = cluster.claim_block(node, pool, v6, max_blocks).await?;
    // Claimed in the store (the truth) before it is cached: a crash here leaves an
    // unused block owned by this node (see `adopt_owned`), never a block owned twice.
    cache_block(store, block)?;
    drop(lock);
    Ok(block)
}

/// Makes sure the node has at least one cached block of each family of `pool`,
/// claiming (and caching) one where it has none. What `ipamd` calls at start so the
/// first pod does not wait. Returns the cached blocks.
pub async fn ensure_block(
    store: &Store,
    cluster: &ClusterStore,
    node: &str,
    pool: &Pool,
    max_blocks: Option<usize>,
) -> Result<Vec<IpNetwork>, IpamError> {
    for v6 in [false, true] {
        if !pool.has_family(v6) {
            continue;
        }
        let seen = cached_blocks(store)?;
        if !seen.iter().any(|b| b.is_ipv6() == v6 && pool.contains(*b)) {
            claim_into_cache(store, cluster, node, pool, v6, max_blocks, &seen).await?;
        }
    }
    cached_blocks(store)
}

/// Re-claims every cached block in the cluster store (`claim_exact`): after a node's
/// lease lapsed (etcd frees the blocks of a dead lease) its blocks are taken back
/// unless another node got them meanwhile. Returns the cached blocks now owned by
/// another node: their pods' addresses may be duplicated and need attention (logged as
/// errors).
pub async fn reclaim_cached(
    store: &Store,
    cluster: &ClusterStore,
    node: &str,
) -> Result<Vec<IpNetwork>, IpamError> {
    verify_cache(store, cluster, node).await?;
    let mut lost = Vec::new();
    for block in cached_blocks(store)? {
        if !cluster.claim_exact(node, block).await? {
            tracing::error!(%node, %block, "a cached block is owned by another node");
            lost.push(block);
        }
    }
    Ok(lost)
}

/// Adds to the cache every block the cluster store says `node` owns but the cache lacks
/// (leftovers of a claim interrupted before it was cached). Returns them.
pub async fn adopt_owned(
    store: &Store,
    cluster: &ClusterStore,
    node: &str,
) -> Result<Vec<IpNetwork>, IpamError> {
    verify_cache(store, cluster, node).await?;
    let Some(rec) = cluster.node(node).await? else {
        return Ok(Vec::new());
    };
    let mut added = Vec::new();
    for b in rec.blocks {
        if cache_block(store, b)? {
            added.push(b);
        }
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_layout_has_no_gateway() {
        let r = block_range(net("10.0.0.64/26")).unwrap();
        assert_eq!((r.start, r.end), (ip("10.0.0.65"), ip("10.0.0.126")));
        assert_eq!(r.gateway, None);
        assert!(r.is_allocatable(ip("10.0.0.65")));
        assert_eq!(BlockLayout::default().gateway(net("10.0.0.70/26")), None);
    }

    #[test]
    fn reserved_gateway_is_first_host_and_never_allocatable() {
        let l = BlockLayout {
            reserve_gateway: true,
        };
        let r = l.range(net("10.0.0.64/26")).unwrap();
        assert_eq!(r.gateway, Some(ip("10.0.0.65")));
        assert!(!r.is_allocatable(ip("10.0.0.65")));
        assert!(r.is_allocatable(ip("10.0.0.66")));
        assert_eq!(l.gateway(net("10.0.0.100/26")), Some(ip("10.0.0.65")));
        let r6 = l.range(net("fd00::40/122")).unwrap();
        assert_eq!(r6.gateway, Some(ip("fd00::41")));
        assert_eq!(l.gateway(net("fd00::7f/122")), Some(ip("fd00::41")));
    }

    /// Allocates every address of a /29 block with the gateway reserved: 5 pods (8 minus
    /// network, gateway, broadcast), none of them the gateway; the 6th needs a new block.
    #[test]
    fn allocation_skips_the_reserved_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("n")).unwrap();
        let pool = Pool::new(vec![net("10.9.0.0/24")], Some(29), None).unwrap();
        let layout = BlockLayout {
            reserve_gateway: true,
        };
        let block = net("10.9.0.8/29");
        let mut claims = 0;
        let mut claim = |_v6: bool, _seen: &[IpNetwork]| {
            claims += 1;
            if claims > 1 {
                return Err(IpamError::PoolExhausted("test: one block only".into()));
            }
            cache_block(&store, block)?;
            Ok(block)
        };
        let mut got = Vec::new();
        for i in 0..5 {
            let key = AllocKey::new(format!("c{i}").as_str(), "eth0");
            let ips = allocate_in(
                &store,
                &pool,
                layout,
                &key,
                &[],
                &AllocMeta::default(),
                &mut claim,
            )
            .unwrap();
            assert_eq!(ips.len(), 1);
            assert_eq!(ips[0].prefix(), 29);
            assert_eq!(layout.gateway(ips[0]), Some(ip("10.9.0.9")));
            got.push(ips[0].ip());
        }
        assert!(
            !got.contains(&ip("10.9.0.9")),
            "gateway handed out: {got:?}"
        );
        let key = AllocKey::new("c5", "eth0");
        let e = allocate_in(
            &store,
            &pool,
            layout,
            &key,
            &[],
            &AllocMeta::default(),
            &mut claim,
        )
        .unwrap_err();
        assert!(matches!(e, IpamError::PoolExhausted(_)), "{e}");
        // Asking for the gateway by name is refused too.
        let key = AllocKey::new("c6", "eth0");
        assert!(allocate_in(
            &store,
            &pool,
            layout,
            &key,
            &[ip("10.9.0.9")],
            &AllocMeta::default(),
            &mut |_, _| Err(IpamError::PoolExhausted("none".into())),
        )
        .is_err());
    }
}
