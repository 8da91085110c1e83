//! The cluster side of IPAM: a pool cut into per-node blocks, node records with leases,
//! and the store that holds them (a flock-ed JSON file, or etcd v3).
//!
//! Who owns a block is decided only here, by compare-and-swap in the store; pod
//! addresses inside a block are handed out by the node-local [`crate::store::Store`], so
//! pods still get addresses while the cluster store is unreachable.
//!
//! A block stays bound to its node's *name*, not to the node's lease (Calico keeps a
//! block's affinity until its IPAM GC confirms the block is empty): a node whose lease
//! expires leaves the live view (peers remove their routes toward it), but its blocks
//! are never handed to another node while its pods may still hold addresses in them.
//! The node takes them back when it registers again. They go back to the pool only when
//! the node releases them (an empty block), when the node is removed (`remove_node`,
//! `ipamd remove-node`), or when the node stayed expired for the grace given to
//! [`ClusterStore::expire`] (`ipamd --expired-node-grace`, 24 h by default, like
//! flannel's subnet leases; 0: never).

mod etcd;
mod file;
pub mod local;
mod node;
mod pool;
#[allow(unsafe_code)] // getauxval, glibc's __nss_configure_lookup: see the SAFETY notes
mod static_nss;
mod url;

pub use node::{NodeEvent, NodeInfo, NodeRecord};
pub use pool::Pool;
pub use url::StoreUrl;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::error::IpamError;

/// A connected cluster store. An enum rather than a trait object: two backends, async
/// methods, no boxing.
pub enum ClusterStore {
    File(file::FileStore),
    Etcd(etcd::EtcdStore),
}

/// A stream of node changes (an etcd watch, or polling of the file store).
pub struct NodeWatch {
    pub rx: tokio::sync::mpsc::Receiver<NodeEvent>,
}

impl NodeWatch {
    /// The next change; `None` when the store connection is gone for good.
    pub async fn next(&mut self) -> Option<NodeEvent> {
        self.rx.recv().await
    }
}

/// How often the file store's watch polls the file.
pub const FILE_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// A node record as both backends store it: the record plus the TTL it renews with
/// (used to tell a node that missed renewals from a healthy one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredNode {
    #[serde(flatten)]
    pub(crate) record: NodeRecord,
    /// Seconds.
    #[serde(default)]
    pub(crate) ttl: u64,
}

impl StoredNode {
    pub(crate) fn new(info: NodeInfo, ttl: Duration) -> StoredNode {
        StoredNode {
            record: NodeRecord {
                info,
                blocks: Vec::new(),
                lease_expiry: expiry_after(ttl),
            },
            ttl: ttl.as_secs().max(1),
        }
    }
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `lease_expiry` (unix seconds) of a lease of `ttl` (at least 1 s) renewed now,
/// rounded up: a record is live while `lease_expiry > now_unix()`, so an expiry of
/// `now_unix() + ttl` (rounded down) would make a 3 s lease renewed at x.99 s lapse
/// after 2.01 s, and a renewal a little late under load would drop the node from every
/// reader's view (and let `expire` free its blocks) although it renewed within its TTL.
pub(crate) fn expiry_after(ttl: Duration) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let up = u64::from(now.subsec_nanos() > 0);
    now.as_secs() + up + ttl.as_secs().max(1)
}

/// Refuses a claim once `node` holds `mine` blocks of the family and `max` is reached.
pub(crate) fn check_max_blocks(
    node: &str,
    pool: &Pool,
    v6: bool,
    mine: usize,
    max: Option<usize>,
) -> Result<(), IpamError> {
    match max {
        Some(max) if mine >= max => Err(IpamError::PoolExhausted(format!(
            "node {node} already holds {mine} {} block(s) of pool {pool} (maxBlocksPerNode {max})",
            if v6 { "IPv6" } else { "IPv4" }
        ))),
        _ => Ok(()),
    }
}

/// The first block of `pool` in the family that nobody owns.
pub(crate) fn pick_block(pool: &Pool, v6: bool, owned: &BTreeSet<IpNetwork>) -> Option<IpNetwork> {
    pool.blocks(v6).find(|b| !owned.contains(b))
}

/// The error of a claim that found no free block: `PoolExhausted` (code 102). Blocks a
/// node whose lease expired still holds are named with the way to free them (they are
/// never freed by a lapse alone: its pods may still use them).
pub(crate) fn exhausted_error(
    pool: &Pool,
    v6: bool,
    expired: &BTreeMap<String, Vec<IpNetwork>>,
) -> IpamError {
    let family = if v6 { "IPv6" } else { "IPv4" };
    let bp = pool.block_prefix(v6);
    let held: Vec<String> = expired
        .iter()
        .filter_map(|(name, blocks)| {
            let n = blocks
                .iter()
                .filter(|b| b.is_ipv6() == v6 && pool.contains(**b))
                .count();
            (n > 0).then(|| format!("{name} ({n})"))
        })
        .collect();
    if held.is_empty() {
        return IpamError::PoolExhausted(format!(
            "pool {pool} exhausted: every /{bp} {family} block is owned by a live node"
        ));
    }
    IpamError::PoolExhausted(format!(
        "pool {pool} exhausted: no free /{bp} {family} block; node(s) whose lease expired still \
         hold blocks of it: {} (kept for them until they register again or the expired-node \
         grace ends; `ipamd remove-node NAME` frees them once their pods are gone)",
        held.join(", ")
    ))
}

/// The events that turn `old` into `new`. A record whose lease expiry alone changed
/// (a renewal) is not reported.
pub(crate) fn diff(
    old: &BTreeMap<String, NodeRecord>,
    new: &BTreeMap<String, NodeRecord>,
) -> Vec<NodeEvent> {
    let mut out = Vec::new();
    for (name, rec) in new {
        match old.get(name) {
            Some(o) if o.info == rec.info && o.blocks == rec.blocks => {}
            _ => out.push(NodeEvent::Upsert(rec.clone())),
        }
    }
    for name in old.keys() {
        if !new.contains_key(name) {
            out.push(NodeEvent::Removed(name.clone()));
        }
    }
    out
}

fn check_name(name: &str) -> Result<(), IpamError> {
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
        return Err(IpamError::config(format!(
            "ipam.nodeName: {name:?} is not a valid node name (non-empty, no '/')"
        )));
    }
    Ok(())
}

/// Runs a file store operation off the async runtime (it blocks on `flock` and fsync).
async fn blocking<R: Send + 'static>(
    store: &file::FileStore,
    f: impl FnOnce(&file::FileStore) -> Result<R, IpamError> + Send + 'static,
) -> Result<R, IpamError> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| IpamError::StoreUnavailable(format!("file store task failed: {e}")))?
}

impl ClusterStore {
    /// Connects (etcd) or opens (file) the store `url` names.
    pub async fn connect(url: &StoreUrl) -> Result<ClusterStore, IpamError> {
        match url {
            StoreUrl::File(p) => Ok(ClusterStore::File(file::FileStore::open(p)?)),
            StoreUrl::Etcd { endpoints, prefix } => Ok(ClusterStore::Etcd(
                etcd::EtcdStore::connect(endpoints, prefix).await?,
            )),
        }
    }

    /// Creates or updates `info`'s node record and (re)starts its lease for `ttl`.
    /// The node's blocks are kept.
    ///
    /// etcd: a node whose key still exists keeps its lease (and the TTL it was granted
    /// with); only a node whose key is gone gets a new lease of `ttl`.
    pub async fn register(&self, info: &NodeInfo, ttl: Duration) -> Result<NodeRecord, IpamError> {
        check_name(&info.name)?;
        match self {
            ClusterStore::File(s) => {
                let info = info.clone();
                blocking(s, move |s| s.register(&info, ttl)).await
            }
            ClusterStore::Etcd(s) => s.register(info, ttl).await,
        }
    }

    /// Extends the node's lease by `ttl` from now. A node whose record is gone (expired)
    /// gets `IpamError::NotFound` and must register again.
    ///
    /// etcd: one keep-alive of the node's lease (which renews it by the TTL it was
    /// granted with); the record is not rewritten (no raft write, no watch event), so
    /// its `leaseExpiry` is that of its last write: [`ClusterStore::nodes_live_expiry`]
    /// reads the leases.
    pub async fn renew(&self, node: &str, ttl: Duration) -> Result<(), IpamError> {
        match self {
            ClusterStore::File(s) => {
                let node = node.to_string();
                blocking(s, move |s| s.renew(&node, ttl)).await
            }
            ClusterStore::Etcd(s) => s.renew(node, ttl).await,
        }
    }

    /// Every live node record.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, IpamError> {
        match self {
            ClusterStore::File(s) => blocking(s, |s| Ok(s.live()?.into_values().collect())).await,
            ClusterStore::Etcd(s) => Ok(s.snapshot().await?.records().into_values().collect()),
        }
    }

    /// Every live node record, its `leaseExpiry` read from the store's lease (etcd: one
    /// lease time-to-live request per node, renewals do not rewrite the records). For an
    /// operator's listing, not for a loop.
    pub async fn nodes_live_expiry(&self) -> Result<Vec<NodeRecord>, IpamError> {
        match self {
            ClusterStore::File(_) => self.nodes().await,
            ClusterStore::Etcd(s) => Ok(s.records_live_expiry().await?.into_values().collect()),
        }
    }

    pub async fn node(&self, name: &str) -> Result<Option<NodeRecord>, IpamError> {
        let mut all = match self {
            ClusterStore::File(s) => blocking(s, |s| s.live()).await?,
            ClusterStore::Etcd(s) => s.snapshot().await?.records(),
        };
        Ok(all.remove(name))
    }

    /// Claims for `node` the first free block of `pool` in the wanted family
    /// (compare-and-swap: two nodes never get the same block). Fails with a clear error
    /// when `max_blocks` is reached or the pool is exhausted (code 11 when another node's
    /// lease expires soon and will free space).
    ///
    /// `max_blocks` counts the node's blocks of that family in `pool`. The node must be
    /// registered (live), else `NotFound`.
    pub async fn claim_block(
        &self,
        node: &str,
        pool: &Pool,
        v6: bool,
        max_blocks: Option<usize>,
    ) -> Result<IpNetwork, IpamError> {
        if !pool.has_family(v6) {
            return Err(IpamError::config(format!(
                "ipam.pool: pool {pool} has no {} CIDR",
                if v6 { "IPv6" } else { "IPv4" }
            )));
        }
        let block = match self {
            ClusterStore::File(s) => {
                let (node, pool) = (node.to_string(), pool.clone());
                blocking(s, move |s| s.claim_block(&node, &pool, v6, max_blocks)).await?
            }
            ClusterStore::Etcd(s) => s.claim_block(node, pool, v6, max_blocks).await?,
        };
        tracing::info!(%node, %block, "claimed block");
        Ok(block)
    }

    /// Claims exactly `block` for `node` when it is free; `Ok(true)` also when the node
    /// already owns it, `Ok(false)` when another node does. Used to take back the blocks
    /// a node's local cache still lists after its record expired.
    pub async fn claim_exact(&self, node: &str, block: IpNetwork) -> Result<bool, IpamError> {
        match self {
            ClusterStore::File(s) => {
                let node = node.to_string();
                blocking(s, move |s| s.claim_exact(&node, block)).await
            }
            ClusterStore::Etcd(s) => s.claim_exact(node, block).await,
        }
    }

    /// The store's identity (a random id created with the store): what node caches
    /// record, so that blocks cached from a store that was lost or replaced are refused.
    pub async fn identity(&self) -> Result<String, IpamError> {
        match self {
            ClusterStore::File(s) => blocking(s, |s| s.identity()).await,
            ClusterStore::Etcd(s) => s.identity().await,
        }
    }

    /// The node that owns `block` (its record expired or not), if any.
    pub async fn owner_of(&self, block: IpNetwork) -> Result<Option<String>, IpamError> {
        match self {
            ClusterStore::File(s) => blocking(s, move |s| s.owner_of(block)).await,
            ClusterStore::Etcd(s) => s.owner_of(block).await,
        }
    }

    /// Gives `block` back to the pool if `node` owns it; returns whether it did.
    pub async fn release_block(&self, node: &str, block: IpNetwork) -> Result<bool, IpamError> {
        match self {
            ClusterStore::File(s) => {
                let node = node.to_string();
                blocking(s, move |s| s.release_block(&node, block)).await
            }
            ClusterStore::Etcd(s) => s.release_block(node, block).await,
        }
    }

    /// Removes a node record (live or expired) and frees its blocks.
    pub async fn remove_node(&self, name: &str) -> Result<(), IpamError> {
        match self {
            ClusterStore::File(s) => {
                let name = name.to_string();
                blocking(s, move |s| s.remove_node(&name)).await
            }
            ClusterStore::Etcd(s) => s.remove_node(name).await,
        }
    }

    /// Cleans up after nodes whose lease expired; returns the names of the nodes whose
    /// blocks it freed (or whose record it removed). A node holding no block is removed
    /// at once; one holding blocks keeps them (bound to its name, listed by
    /// [`ClusterStore::expired_holders`]) until it has been expired for `grace`
    /// (`Duration::ZERO`: forever, until [`ClusterStore::remove_node`]).
    ///
    /// File store: "expired since" is the record's `leaseExpiry`. etcd (the record
    /// vanishes with its lease): the first pass that sees a block whose owner has no
    /// record writes `<prefix>/expired/<name>` with the time; a re-registration deletes
    /// it. Every daemon runs this; compare-and-swap makes that safe, and a node that
    /// registers again in between keeps its blocks.
    pub async fn expire(&self, grace: Duration) -> Result<Vec<String>, IpamError> {
        match self {
            ClusterStore::File(s) => blocking(s, move |s| s.expire(grace)).await,
            ClusterStore::Etcd(s) => s.expire(grace).await,
        }
    }

    /// The nodes without a live record that still hold blocks, with their blocks.
    pub async fn expired_holders(&self) -> Result<BTreeMap<String, Vec<IpNetwork>>, IpamError> {
        match self {
            ClusterStore::File(s) => blocking(s, |s| s.expired_holders()).await,
            ClusterStore::Etcd(s) => Ok(s.snapshot().await?.expired_holders()),
        }
    }

    /// Watches node records: every later add, change and removal.
    ///
    /// Events are computed by diffing successive views of the live records, so a
    /// renewal alone (only `leaseExpiry` changed) produces no event, and a record whose
    /// lease expired is `Removed` (the file store reports it when its expiry passes,
    /// before `expire` deletes it). The file store is polled every
    /// [`FILE_WATCH_INTERVAL`]; etcd is watched, and the watch re-established (with a
    /// fresh read, so nothing is missed) after the store comes back. The stream ends
    /// only when the receiver is dropped.
    pub async fn watch(&self) -> Result<NodeWatch, IpamError> {
        match self {
            ClusterStore::File(s) => {
                let initial = blocking(s, |s| s.live()).await?;
                let (tx, rx) = tokio::sync::mpsc::channel(256);
                let s = s.clone();
                tokio::spawn(async move {
                    let mut last = initial;
                    loop {
                        tokio::time::sleep(FILE_WATCH_INTERVAL).await;
                        if tx.is_closed() {
                            return;
                        }
                        let now = match blocking(&s, |s| s.live()).await {
                            Ok(n) => n,
                            Err(e) => {
                                tracing::warn!(error = %e, "file store watch: cannot read");
                                continue;
                            }
                        };
                        for ev in diff(&last, &now) {
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                        last = now;
                    }
                });
                Ok(NodeWatch { rx })
            }
            ClusterStore::Etcd(s) => s.watch().await,
        }
    }

    /// A short description for logs: the file path or the etcd endpoints.
    pub fn describe(&self) -> String {
        match self {
            ClusterStore::File(s) => format!("file://{}", s.path().display()),
            ClusterStore::Etcd(s) => s.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record renewed now stays live (`lease_expiry > now_unix()`) for its whole TTL,
    /// whatever the fraction of the second it was renewed at.
    #[test]
    fn a_lease_is_never_shorter_than_its_ttl() {
        for _ in 0..50 {
            let t0 = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            let expiry = expiry_after(Duration::from_secs(3));
            // Live until the whole second `expiry` begins.
            assert!(
                Duration::from_secs(expiry) >= t0 + Duration::from_secs(3),
                "{expiry} < {t0:?} + 3 s"
            );
            std::thread::sleep(Duration::from_millis(7));
        }
    }

    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}

    /// `ipamd` shares one store in an `Arc` across tasks of a multi-threaded runtime.
    #[test]
    fn store_and_futures_are_send() {
        let s = ClusterStore::File(file::FileStore::for_tests());
        assert_send_sync(&s);
        let pool = Pool::new(vec!["10.0.0.0/24".parse().unwrap()], None, None).unwrap();
        assert_send(&s.claim_block("a", &pool, false, None));
        assert_send(&s.watch());
        assert_send(&s.register(
            &NodeInfo {
                name: "a".into(),
                underlay_ip: None,
                backend: Default::default(),
            },
            Duration::from_secs(1),
        ));
        assert_send(&s.renew("a", Duration::from_secs(1)));
        assert_send(&s.expire(Duration::ZERO));
        assert_send(&s.remove_node("a"));
        assert_send(&s.nodes());
    }
}
