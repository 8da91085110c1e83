//! The etcd v3 cluster store: compare-and-swap transactions, node records bound to
//! leases, watches.
//!
//! ```text
//! <prefix>/nodes/<name>            JSON node record (info, leaseExpiry, ttl), put with
//!                                  the node's lease; leaseExpiry is that of the last
//!                                  write (a renewal is a keep-alive, no write)
//! <prefix>/blocks/<cidr, / as _>   the owner node's name (no lease: see below)
//! <prefix>/expired/<name>          unix time at which an `expire` pass first saw node
//!                                  <name> hold blocks without a record (no lease)
//! <prefix>/id                      the store's identity (random, created once by the
//!                                  first client that asks for it, no lease)
//! ```
//!
//! A block has one key, so it cannot be owned twice. The identity lets a node tell the
//! store its cached blocks came from from a new one (etcd wiped or its data lost): see
//! [`super::local`].
//!
//! A claim is one transaction: `create_revision(block) == 0` (nobody holds it) and
//! `lease(node key) == the node's lease` (the node is alive), then put the block. The
//! block key is deliberately *not* bound to the lease: a node whose lease lapses (daemon
//! frozen or stopped longer than the TTL, store unreachable) may still have pods using
//! addresses of its blocks, so its blocks stay its own (see [`super`]): its record
//! vanishes with the lease (peers stop routing to it), its block keys stay, nobody else
//! can claim them, and it takes them back when it registers again
//! ([`super::local::reclaim_cached`], `claim_exact`: already its own). `expire` frees
//! them after the expired-node grace, `remove_node` at once. (Blocks put by an older
//! build with the owner's lease still vanish with it, as before; a re-registration with
//! another TTL rewrites them without one.) `NodeRecord.blocks` is always assembled from
//! the block keys, which are the truth.

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use super::node::{NodeInfo, NodeRecord};
use super::pool::Pool;
use super::{check_max_blocks, diff, exhausted_error, now_unix, pick_block, NodeWatch, StoredNode};
use crate::error::IpamError;

/// Deadline of one etcd request (connect included).
pub(super) const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times a claim retries after losing a compare-and-swap race.
const CLAIM_ATTEMPTS: usize = 64;

pub struct EtcdStore {
    pub(crate) prefix: String,
    /// Boxed: the client is large and `ClusterStore` is an enum.
    client: Box<Client>,
    endpoints: Vec<String>,
}

/// Everything under the prefix at one revision.
pub(crate) struct Snapshot {
    pub(crate) revision: i64,
    /// name -> (record without blocks, lease id, mod revision)
    nodes: BTreeMap<String, (StoredNode, i64, i64)>,
    /// block -> owner
    blocks: BTreeMap<IpNetwork, String>,
    /// node -> (expired since, unix s; mod revision of its `expired/` marker)
    expired: BTreeMap<String, (u64, i64)>,
}

impl Snapshot {
    pub(crate) fn records(&self) -> BTreeMap<String, NodeRecord> {
        let mut out: BTreeMap<String, NodeRecord> = self
            .nodes
            .iter()
            .map(|(k, (n, _, _))| {
                let mut r = n.record.clone();
                r.blocks.clear();
                (k.clone(), r)
            })
            .collect();
        for (b, owner) in &self.blocks {
            if let Some(r) = out.get_mut(owner) {
                r.blocks.push(*b);
            }
        }
        for r in out.values_mut() {
            r.blocks.sort();
        }
        out
    }

    /// The owners of blocks that have no record (their lease expired), with their blocks.
    pub(crate) fn expired_holders(&self) -> BTreeMap<String, Vec<IpNetwork>> {
        let mut out: BTreeMap<String, Vec<IpNetwork>> = BTreeMap::new();
        for (b, owner) in &self.blocks {
            if !self.nodes.contains_key(owner) {
                out.entry(owner.clone()).or_default().push(*b);
            }
        }
        out
    }
}

impl EtcdStore {
    pub(crate) async fn connect(
        endpoints: &[String],
        prefix: &str,
    ) -> Result<EtcdStore, IpamError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(OP_TIMEOUT)
            .with_timeout(OP_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), OP_TIMEOUT);
        let what = endpoints.join(",");
        // Endpoint names resolve through /etc/hosts and DNS in a static binary.
        super::static_nss::files_and_dns_when_static();
        let client = timed(&what, "connect", Client::connect(endpoints, Some(opts))).await?;
        Ok(EtcdStore {
            prefix: prefix.trim_end_matches('/').to_string(),
            client: Box::new(client),
            endpoints: endpoints.to_vec(),
        })
    }

    pub(crate) fn describe(&self) -> String {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        format!("etcd://{}{}", hosts.join(","), self.prefix)
    }

    fn node_key(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.prefix)
    }

    fn expired_key(&self, name: &str) -> String {
        format!("{}/expired/{name}", self.prefix)
    }

    fn block_key(&self, block: IpNetwork) -> String {
        format!(
            "{}/blocks/{}",
            self.prefix,
            block.to_string().replace('/', "_")
        )
    }

    fn err(&self, op: &str, key: &str, e: impl std::fmt::Display) -> IpamError {
        IpamError::StoreUnavailable(format!("etcd {}: {op} {key}: {e}", self.describe()))
    }

    /// Runs `fut` with the request deadline, mapping errors to `StoreUnavailable`.
    async fn call<T>(
        &self,
        op: &str,
        key: &str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, IpamError> {
        match tokio::time::timeout(OP_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.err(op, key, e)),
            Err(_) => Err(self.err(op, key, format!("no answer within {OP_TIMEOUT:?}"))),
        }
    }

    pub(crate) async fn snapshot(&self) -> Result<Snapshot, IpamError> {
        let mut c = Client::clone(&self.client);
        let prefix = format!("{}/", self.prefix);
        let resp = self
            .call(
                "get",
                &prefix,
                c.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut snap = Snapshot {
            revision,
            nodes: BTreeMap::new(),
            blocks: BTreeMap::new(),
            expired: BTreeMap::new(),
        };
        for kv in resp.kvs() {
            self.apply_put(
                &mut snap,
                kv.key(),
                kv.value(),
                kv.lease(),
                kv.mod_revision(),
            )?;
        }
        Ok(snap)
    }

    fn apply_put(
        &self,
        snap: &mut Snapshot,
        key: &[u8],
        value: &[u8],
        lease: i64,
        mod_rev: i64,
    ) -> Result<(), IpamError> {
        let key = String::from_utf8_lossy(key);
        let corrupt = |reason: String| IpamError::CorruptRecord {
            what: format!("etcd key {key}"),
            reason,
        };
        if let Some(name) = key.strip_prefix(&format!("{}/nodes/", self.prefix)) {
            let mut n: StoredNode =
                serde_json::from_slice(value).map_err(|e| corrupt(e.to_string()))?;
            n.record.blocks.clear();
            snap.nodes.insert(name.to_string(), (n, lease, mod_rev));
        } else if let Some(b) = key.strip_prefix(&format!("{}/blocks/", self.prefix)) {
            let block = parse_block(b).ok_or_else(|| corrupt("not a block key".into()))?;
            let owner = String::from_utf8(value.to_vec()).map_err(|e| corrupt(e.to_string()))?;
            snap.blocks.insert(block, owner);
        } else if let Some(name) = key.strip_prefix(&format!("{}/expired/", self.prefix)) {
            let since = String::from_utf8_lossy(value).trim().parse().unwrap_or(0);
            snap.expired.insert(name.to_string(), (since, mod_rev));
        }
        Ok(())
    }

    fn apply_delete(&self, snap: &mut Snapshot, key: &[u8]) {
        let key = String::from_utf8_lossy(key);
        if let Some(name) = key.strip_prefix(&format!("{}/nodes/", self.prefix)) {
            snap.nodes.remove(name);
        } else if let Some(b) = key.strip_prefix(&format!("{}/blocks/", self.prefix)) {
            if let Some(block) = parse_block(b) {
                snap.blocks.remove(&block);
            }
        } else if let Some(name) = key.strip_prefix(&format!("{}/expired/", self.prefix)) {
            snap.expired.remove(name);
        }
    }

    fn encode(&self, n: &StoredNode) -> Result<Vec<u8>, IpamError> {
        let mut n = n.clone();
        n.record.blocks.clear();
        serde_json::to_vec(&n).map_err(|e| {
            IpamError::config(format!("cannot encode node {}: {e}", n.record.info.name))
        })
    }

    /// One keep-alive of `lease`: the TTL it now has, `None` when the lease is gone.
    async fn keep_alive(&self, key: &str, lease: i64) -> Result<Option<i64>, IpamError> {
        if !self.keep_alive_once(key, lease).await? {
            return Ok(None);
        }
        let mut c = Client::clone(&self.client);
        let ttl = self
            .call("lease time-to-live", key, c.lease_time_to_live(lease, None))
            .await?
            .ttl();
        Ok((ttl > 0).then_some(ttl))
    }

    /// One keep-alive of `lease` (renewed by its granted TTL): `false` when it is gone.
    async fn keep_alive_once(&self, key: &str, lease: i64) -> Result<bool, IpamError> {
        let mut c = Client::clone(&self.client);
        match tokio::time::timeout(OP_TIMEOUT, c.lease_keep_alive(lease)).await {
            // `lease_keep_alive` sent one keep-alive and checked its answer (ttl > 0).
            Ok(Ok((_keeper, _stream))) => Ok(true),
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => Ok(false),
            Ok(Err(e)) => Err(self.err("lease keep-alive", key, e)),
            Err(_) => Err(self.err("lease keep-alive", key, "timed out")),
        }
    }

    pub(crate) async fn register(
        &self,
        info: &NodeInfo,
        ttl: Duration,
    ) -> Result<NodeRecord, IpamError> {
        let key = self.node_key(&info.name);
        let ttl_s = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        for _ in 0..8 {
            let mut c = Client::clone(&self.client);
            let got = self.call("get", &key, c.get(key.clone(), None)).await?;
            let existing = got.kvs().first().map(|kv| (kv.lease(), kv.mod_revision()));
            if let Some((lease, mod_rev)) = existing {
                let granted = self
                    .call(
                        "lease time-to-live",
                        &key,
                        c.lease_time_to_live(lease, None),
                    )
                    .await?
                    .granted_ttl();
                if granted > 0 && granted != ttl_s {
                    // Another TTL (e.g. the plugin registered the node before `ipamd`):
                    // move the record and its blocks to a new lease.
                    if self.migrate(info, &key, lease, mod_rev, ttl_s).await? {
                        return self.record_of(&info.name).await;
                    }
                    continue;
                }
                // The key exists, so its lease is alive: keep it (and the blocks on it).
                if let Some(left) = self.keep_alive(&key, lease).await? {
                    let stored = StoredNode {
                        record: NodeRecord {
                            info: info.clone(),
                            blocks: Vec::new(),
                            lease_expiry: now_unix() + u64::try_from(left).unwrap_or(0),
                        },
                        // The lease's TTL (what a renewal extends it by), not what is left.
                        ttl: u64::try_from(granted).unwrap_or(0),
                    };
                    let txn = self.put_if_unchanged(&key, mod_rev, &stored, lease)?;
                    if self
                        .call("txn register", &key, c.txn(txn))
                        .await?
                        .succeeded()
                    {
                        return self.record_of(&info.name).await;
                    }
                    continue;
                }
            }
            let grant = self
                .call("lease grant", &key, c.lease_grant(ttl_s, None))
                .await?;
            let lease = grant.id();
            let granted = u64::try_from(grant.ttl()).unwrap_or(0);
            let stored = StoredNode {
                record: NodeRecord {
                    info: info.clone(),
                    blocks: Vec::new(),
                    lease_expiry: now_unix() + granted,
                },
                ttl: granted,
            };
            let cmp = match existing {
                Some((_, mod_rev)) => Compare::mod_revision(key.clone(), CompareOp::Equal, mod_rev),
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            };
            // Back from an expiry: its blocks are its own again, the marker goes.
            let txn = Txn::new().when([cmp]).and_then([
                TxnOp::put(
                    key.clone(),
                    self.encode(&stored)?,
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::delete(self.expired_key(&info.name), None),
            ]);
            if self
                .call("txn register", &key, c.txn(txn))
                .await?
                .succeeded()
            {
                return self.record_of(&info.name).await;
            }
            let _ = self.call("lease revoke", &key, c.lease_revoke(lease)).await;
        }
        Err(IpamError::StoreUnavailable(format!(
            "etcd {}: register {key}: too much contention",
            self.describe()
        )))
    }

    /// Moves node `info.name` (record and blocks) from lease `old` to a new lease of
    /// `ttl_s` in one transaction that fails if any block key changed since it was read
    /// (so no block claimed meanwhile is left on the old lease), then revokes `old`.
    async fn migrate(
        &self,
        info: &NodeInfo,
        key: &str,
        old: i64,
        mod_rev: i64,
        ttl_s: i64,
    ) -> Result<bool, IpamError> {
        let mut c = Client::clone(&self.client);
        let snap = self.snapshot().await?;
        let grant = self
            .call("lease grant", key, c.lease_grant(ttl_s, None))
            .await?;
        let lease = grant.id();
        let granted = u64::try_from(grant.ttl()).unwrap_or(0);
        let stored = StoredNode {
            record: NodeRecord {
                info: info.clone(),
                blocks: Vec::new(),
                lease_expiry: now_unix() + granted,
            },
            ttl: granted,
        };
        let blocks_prefix = format!("{}/blocks/", self.prefix);
        let mut cmps = vec![
            Compare::mod_revision(key, CompareOp::Equal, mod_rev),
            Compare::mod_revision(blocks_prefix.clone(), CompareOp::Less, snap.revision + 1)
                .with_prefix(),
        ];
        let mut ops = vec![TxnOp::put(
            key,
            self.encode(&stored)?,
            Some(PutOptions::new().with_lease(lease)),
        )];
        for (b, o) in &snap.blocks {
            if *o == info.name {
                let bkey = self.block_key(*b);
                cmps.push(Compare::value(bkey.clone(), CompareOp::Equal, o.as_str()));
                // Without a lease (an older build bound blocks to the node's lease).
                ops.push(TxnOp::put(bkey, o.as_str(), None));
            }
        }
        let txn = Txn::new().when(cmps).and_then(ops);
        if self
            .call("txn migrate lease", key, c.txn(txn))
            .await?
            .succeeded()
        {
            // Nothing is bound to the old lease any more.
            let _ = self.call("lease revoke", key, c.lease_revoke(old)).await;
            Ok(true)
        } else {
            let _ = self.call("lease revoke", key, c.lease_revoke(lease)).await;
            Ok(false)
        }
    }

    async fn record_of(&self, name: &str) -> Result<NodeRecord, IpamError> {
        self.snapshot()
            .await?
            .records()
            .remove(name)
            .ok_or_else(|| {
                IpamError::NotFound(format!("node {name} vanished from {}", self.node_key(name)))
            })
    }

    /// Renews `node`'s lease: one read of its record (for the lease id) and one lease
    /// keep-alive, nothing written. The record is not rewritten: etcd serves a keep-alive
    /// on the leader without a raft proposal and without an event for the watchers, so a
    /// renewal costs the cluster nothing per watching node (a rewrite of the record made
    /// every renewal one raft write and one watch event at every `ipamd`: 100 writes/s
    /// and 100,000 events/s at 1,000 nodes renewing every 10 s). The record's
    /// `leaseExpiry` therefore keeps the expiry of its last write; the lease's own TTL is
    /// the truth, read for listings ([`EtcdStore::live_expiry`]).
    pub(crate) async fn renew(&self, node: &str, _ttl: Duration) -> Result<(), IpamError> {
        let key = self.node_key(node);
        let mut c = Client::clone(&self.client);
        let got = self
            .call(
                "get",
                &key,
                c.get(key.clone(), Some(GetOptions::new().with_keys_only())),
            )
            .await?;
        let gone = || {
            IpamError::NotFound(format!(
                "node {node} has no record at etcd key {key} (lease expired?): register again"
            ))
        };
        let Some(kv) = got.kvs().first() else {
            return Err(gone());
        };
        if !self.keep_alive_once(&key, kv.lease()).await? {
            return Err(gone());
        }
        Ok(())
    }

    /// `leaseExpiry` of `nodes` from their leases' remaining TTL (one time-to-live request
    /// each), since renewals do not rewrite the records. A lease already gone gives
    /// `now`. For an operator's listing (`ipamd nodes`), never for a loop over every
    /// node. (Liveness itself is the record's existence: it goes with its lease.)
    async fn live_expiry(&self, nodes: &mut [(StoredNode, i64)]) -> Result<(), IpamError> {
        let mut c = Client::clone(&self.client);
        for (n, lease) in nodes.iter_mut() {
            let key = self.node_key(&n.record.info.name);
            let left = self
                .call(
                    "lease time-to-live",
                    &key,
                    c.lease_time_to_live(*lease, None),
                )
                .await?
                .ttl();
            n.record.lease_expiry = now_unix() + u64::try_from(left).unwrap_or(0);
        }
        Ok(())
    }

    /// Every live node record with its `leaseExpiry` read from its lease.
    pub(crate) async fn records_live_expiry(
        &self,
    ) -> Result<BTreeMap<String, NodeRecord>, IpamError> {
        let snap = self.snapshot().await?;
        let mut recs = snap.records();
        let mut nodes: Vec<(StoredNode, i64)> = snap
            .nodes
            .values()
            .map(|(n, lease, _)| (n.clone(), *lease))
            .collect();
        self.live_expiry(&mut nodes).await?;
        for (n, _) in nodes {
            if let Some(r) = recs.get_mut(&n.record.info.name) {
                r.lease_expiry = n.record.lease_expiry;
            }
        }
        Ok(recs)
    }

    /// A transaction that rewrites node record `key` on `lease` only if nobody changed it
    /// since `mod_rev`.
    fn put_if_unchanged(
        &self,
        key: &str,
        mod_rev: i64,
        stored: &StoredNode,
        lease: i64,
    ) -> Result<Txn, IpamError> {
        Ok(Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, mod_rev)])
            .and_then([TxnOp::put(
                key,
                self.encode(stored)?,
                Some(PutOptions::new().with_lease(lease)),
            )]))
    }

    pub(crate) async fn claim_block(
        &self,
        node: &str,
        pool: &Pool,
        v6: bool,
        max_blocks: Option<usize>,
    ) -> Result<IpNetwork, IpamError> {
        let node_key = self.node_key(node);
        for _ in 0..CLAIM_ATTEMPTS {
            let snap = self.snapshot().await?;
            let Some((_, lease, _)) = snap.nodes.get(node) else {
                return Err(IpamError::NotFound(format!(
                    "node {node} has no record at etcd key {node_key}: register it before claiming blocks"
                )));
            };
            let lease = *lease;
            let mine = snap
                .blocks
                .iter()
                .filter(|(b, o)| o.as_str() == node && b.is_ipv6() == v6 && pool.contains(**b))
                .count();
            check_max_blocks(node, pool, v6, mine, max_blocks)?;
            let owned: BTreeSet<IpNetwork> = snap.blocks.keys().copied().collect();
            let Some(block) = pick_block(pool, v6, &owned) else {
                return Err(exhausted_error(pool, v6, &snap.expired_holders()));
            };
            let bkey = self.block_key(block);
            if self.try_claim(&bkey, &node_key, node, lease).await? {
                return Ok(block);
            }
            tracing::debug!(%node, %block, "block claim lost a race: retrying");
        }
        Err(IpamError::TryAgain(format!(
            "etcd {}: claiming a block of pool {pool} for node {node} lost {CLAIM_ATTEMPTS} races in a row: try again later",
            self.describe()
        )))
    }

    async fn try_claim(
        &self,
        bkey: &str,
        node_key: &str,
        node: &str,
        lease: i64,
    ) -> Result<bool, IpamError> {
        let mut c = Client::clone(&self.client);
        // The block is bound to the node's name, not to its lease (see the module doc).
        let txn = Txn::new()
            .when([
                Compare::create_revision(bkey, CompareOp::Equal, 0),
                Compare::lease(node_key, CompareOp::Equal, lease),
            ])
            .and_then([TxnOp::put(bkey, node, None)]);
        Ok(self.call("txn claim", bkey, c.txn(txn)).await?.succeeded())
    }

    /// The store's identity: `<prefix>/id`, created (compare-and-swap on its absence)
    /// if the store has none yet.
    pub(crate) async fn identity(&self) -> Result<String, IpamError> {
        let key = format!("{}/id", self.prefix);
        let mut c = Client::clone(&self.client);
        let fresh = super::file::new_identity();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), fresh.clone(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.call("txn identity", &key, c.txn(txn)).await?;
        if resp.succeeded() {
            tracing::info!(store = %self.describe(), id = %fresh, "cluster store identity recorded");
            return Ok(fresh);
        }
        for op in resp.op_responses() {
            if let etcd_client::TxnOpResponse::Get(g) = op {
                if let Some(kv) = g.kvs().first() {
                    return Ok(String::from_utf8_lossy(kv.value()).trim().to_string());
                }
            }
        }
        Err(IpamError::StoreUnavailable(format!(
            "etcd {}: no answer for {key}",
            self.describe()
        )))
    }

    /// The node whose key holds `block`.
    pub(crate) async fn owner_of(&self, block: IpNetwork) -> Result<Option<String>, IpamError> {
        Ok(self.snapshot().await?.blocks.remove(&block))
    }

    pub(crate) async fn claim_exact(
        &self,
        node: &str,
        block: IpNetwork,
    ) -> Result<bool, IpamError> {
        let node_key = self.node_key(node);
        let bkey = self.block_key(block);
        let snap = self.snapshot().await?;
        let Some((_, lease, _)) = snap.nodes.get(node) else {
            return Err(IpamError::NotFound(format!(
                "node {node} has no record at etcd key {node_key}: register it before claiming blocks"
            )));
        };
        match snap.blocks.get(&block) {
            Some(o) => Ok(o == node),
            None => self.try_claim(&bkey, &node_key, node, *lease).await,
        }
    }

    pub(crate) async fn release_block(
        &self,
        node: &str,
        block: IpNetwork,
    ) -> Result<bool, IpamError> {
        let bkey = self.block_key(block);
        let mut c = Client::clone(&self.client);
        let txn = Txn::new()
            .when([Compare::value(bkey.clone(), CompareOp::Equal, node)])
            .and_then([TxnOp::delete(bkey.clone(), None)]);
        Ok(self
            .call("txn release", &bkey, c.txn(txn))
            .await?
            .succeeded())
    }

    pub(crate) async fn remove_node(&self, name: &str) -> Result<(), IpamError> {
        let key = self.node_key(name);
        let mut c = Client::clone(&self.client);
        let got = self.call("get", &key, c.get(key.clone(), None)).await?;
        if let Some(kv) = got.kvs().first() {
            let lease = kv.lease();
            if lease != 0 {
                // Deletes the record and every block bound to the lease at once.
                if let Err(e) = self.call("lease revoke", &key, c.lease_revoke(lease)).await {
                    tracing::warn!(error = %e, "lease revoke failed; deleting keys");
                }
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::delete(key.clone(), None)]);
            self.call("txn remove", &key, c.txn(txn)).await?;
        }
        // Its blocks (not bound to the lease), and its expiry marker.
        let snap = self.snapshot().await?;
        for (b, o) in &snap.blocks {
            if o == name {
                self.release_block(name, *b).await?;
            }
        }
        let marker = self.expired_key(name);
        self.call("delete", &marker, c.delete(marker.clone(), None))
            .await?;
        Ok(())
    }

    /// See [`super::ClusterStore::expire`].
    pub(crate) async fn expire(&self, grace: Duration) -> Result<Vec<String>, IpamError> {
        let snap = self.snapshot().await?;
        let holders = snap.expired_holders();
        let now = now_unix();
        let mut freed = Vec::new();
        let mut c = Client::clone(&self.client);
        for (name, blocks) in &holders {
            let node_key = self.node_key(name);
            let marker = self.expired_key(name);
            let absent = Compare::create_revision(node_key.clone(), CompareOp::Equal, 0);
            let Some((since, mod_rev)) = snap.expired.get(name).copied() else {
                // First seen expired: its blocks stay its own from now on, for the grace.
                let txn = Txn::new()
                    .when([
                        absent,
                        Compare::create_revision(marker.clone(), CompareOp::Equal, 0),
                    ])
                    .and_then([TxnOp::put(marker.clone(), now.to_string(), None)]);
                if self
                    .call("txn expired", &marker, c.txn(txn))
                    .await?
                    .succeeded()
                {
                    let shown: Vec<String> = blocks.iter().map(ToString::to_string).collect();
                    tracing::info!(node = %name, blocks = %shown.join(","), grace = ?grace,
                        "node without a live record holds blocks: they stay its own (no other \
                         node gets them) until it registers again, the grace ends or it is removed");
                }
                continue;
            };
            if grace.is_zero() || now < since.saturating_add(grace.as_secs().max(1)) {
                continue;
            }
            // The grace is over: its blocks go back to the pool, unless it registered
            // again in between (then its record exists and the transaction fails).
            let mut ops: Vec<TxnOp> = blocks
                .iter()
                .map(|b| TxnOp::delete(self.block_key(*b), None))
                .collect();
            ops.push(TxnOp::delete(marker.clone(), None));
            let mut cmps = vec![
                absent,
                Compare::mod_revision(marker.clone(), CompareOp::Equal, mod_rev),
            ];
            for b in blocks {
                cmps.push(Compare::value(
                    self.block_key(*b),
                    CompareOp::Equal,
                    name.as_str(),
                ));
            }
            let txn = Txn::new().when(cmps).and_then(ops);
            if self
                .call("txn free expired", &marker, c.txn(txn))
                .await?
                .succeeded()
            {
                freed.push(name.clone());
            }
        }
        // Markers of nodes that are back (or hold nothing any more).
        for name in snap.expired.keys() {
            if !holders.contains_key(name) {
                let marker = self.expired_key(name);
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        marker.clone(),
                        CompareOp::Greater,
                        0,
                    )])
                    .and_then([TxnOp::delete(marker.clone(), None)]);
                self.call("txn expired", &marker, c.txn(txn)).await?;
            }
        }
        Ok(freed)
    }

    pub(crate) async fn watch(&self) -> Result<NodeWatch, IpamError> {
        let snap = self.snapshot().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let me = EtcdStore {
            prefix: self.prefix.clone(),
            client: Box::new(Client::clone(&self.client)),
            endpoints: self.endpoints.clone(),
        };
        tokio::spawn(async move { me.watch_loop(snap, tx).await });
        Ok(NodeWatch { rx })
    }

    async fn watch_loop(self, mut snap: Snapshot, tx: tokio::sync::mpsc::Sender<super::NodeEvent>) {
        let prefix = format!("{}/", self.prefix);
        let mut last = snap.records();
        loop {
            if tx.is_closed() {
                return;
            }
            let mut c = Client::clone(&self.client);
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(snap.revision + 1);
            let stream =
                tokio::time::timeout(OP_TIMEOUT, c.watch(prefix.clone(), Some(opts))).await;
            let mut stream = match stream {
                Ok(Ok(s)) => s,
                other => {
                    let e = match other {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_string(),
                    };
                    tracing::warn!(store = %self.describe(), error = %e, "etcd watch: cannot start; retrying");
                    self.resync(&mut snap, &mut last, &tx).await;
                    continue;
                }
            };
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = tx.closed() => return,
                };
                match msg {
                    Ok(Some(resp)) => {
                        if resp.canceled() || resp.compact_revision() > 0 {
                            tracing::warn!("etcd watch canceled (compaction?): resyncing");
                            break;
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            match ev.event_type() {
                                EventType::Put => {
                                    if let Err(e) = self.apply_put(
                                        &mut snap,
                                        kv.key(),
                                        kv.value(),
                                        kv.lease(),
                                        kv.mod_revision(),
                                    ) {
                                        tracing::warn!(error = %e, "etcd watch: ignored record");
                                    }
                                }
                                EventType::Delete => self.apply_delete(&mut snap, kv.key()),
                            }
                            snap.revision = snap.revision.max(kv.mod_revision());
                        }
                        if let Some(h) = resp.header() {
                            snap.revision = snap.revision.max(h.revision());
                        }
                        let now = snap.records();
                        for ev in diff(&last, &now) {
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                        last = now;
                    }
                    Ok(None) | Err(_) => {
                        tracing::warn!(store = %self.describe(), "etcd watch lost; re-establishing");
                        break;
                    }
                }
            }
            self.resync(&mut snap, &mut last, &tx).await;
        }
    }

    /// After a lost watch: wait, read everything again, report what changed meanwhile.
    async fn resync(
        &self,
        snap: &mut Snapshot,
        last: &mut BTreeMap<String, NodeRecord>,
        tx: &tokio::sync::mpsc::Sender<super::NodeEvent>,
    ) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if tx.is_closed() {
                return;
            }
            match self.snapshot().await {
                Ok(s) => {
                    *snap = s;
                    let now = snap.records();
                    for ev in diff(last, &now) {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    *last = now;
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "etcd resync failed; retrying"),
            }
        }
    }
}

fn parse_block(s: &str) -> Option<IpNetwork> {
    let (a, p) = s.rsplit_once('_')?;
    format!("{a}/{p}").parse().ok()
}

async fn timed<T>(
    what: &str,
    op: &str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, IpamError> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(IpamError::StoreUnavailable(format!(
            "etcd {what}: {op}: {e}"
        ))),
        Err(_) => Err(IpamError::StoreUnavailable(format!(
            "etcd {what}: {op}: no answer within {OP_TIMEOUT:?}"
        ))),
    }
}
