//! The cluster side of IPAM: a pool cut into per-node blocks, node records with leases,
//! and the store that holds them (a flock-ed JSON file, or etcd v3).
//!
//! Who owns a block is decided only here, by compare-and-swap in the store; pod
//! addresses inside a block are handed out by the node-local [`crate::store::Store`], so
//! pods still get addresses while the cluster store is unreachable.

pub mod etcd;
pub mod file;
pub mod node;
pub mod pool;
pub mod url;

pub use node::{NodeEvent, NodeInfo, NodeRecord};
pub use pool::Pool;
pub use url::StoreUrl;

use ipnetwork::IpNetwork;
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

impl ClusterStore {
    /// Connects (etcd) or opens (file) the store `url` names.
    pub async fn connect(url: &StoreUrl) -> Result<ClusterStore, IpamError> {
        let _ = url;
        todo!()
    }

    /// Creates or updates `info`'s node record and (re)starts its lease for `ttl`.
    /// The node's blocks are kept.
    pub async fn register(&self, info: &NodeInfo, ttl: Duration) -> Result<NodeRecord, IpamError> {
        let _ = (info, ttl);
        todo!()
    }

    /// Extends the node's lease by `ttl` from now. A node whose record is gone (expired)
    /// gets `IpamError::NotFound` and must register again.
    pub async fn renew(&self, node: &str, ttl: Duration) -> Result<(), IpamError> {
        let _ = (node, ttl);
        todo!()
    }

    /// Every live node record.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, IpamError> {
        todo!()
    }

    pub async fn node(&self, name: &str) -> Result<Option<NodeRecord>, IpamError> {
        let _ = name;
        todo!()
    }

    /// Claims for `node` the first free block of `pool` in the wanted family
    /// (compare-and-swap: two nodes never get the same block). Fails with a clear error
    /// when `max_blocks` is reached or the pool is exhausted (code 11 when another node's
    /// lease expires soon and will free space).
    pub async fn claim_block(
        &self,
        node: &str,
        pool: &Pool,
        v6: bool,
        max_blocks: Option<usize>,
    ) -> Result<IpNetwork, IpamError> {
        let _ = (node, pool, v6, max_blocks);
        todo!()
    }

    /// Gives `block` back to the pool if `node` owns it; returns whether it did.
    pub async fn release_block(&self, node: &str, block: IpNetwork) -> Result<bool, IpamError> {
        let _ = (node, block);
        todo!()
    }

    /// Removes a node record and frees its blocks.
    pub async fn remove_node(&self, name: &str) -> Result<(), IpamError> {
        let _ = name;
        todo!()
    }

    /// Removes every node whose lease has expired and frees its blocks; returns their
    /// names. (etcd expires leases itself; this then only cleans up leftovers.)
    pub async fn expire(&self) -> Result<Vec<String>, IpamError> {
        todo!()
    }

    /// Watches node records: every later add, change and removal.
    pub async fn watch(&self) -> Result<NodeWatch, IpamError> {
        todo!()
    }
}
