//! The embedded cluster store: one JSON file under `flock`, written atomically and
//! durably. Enough for one machine or a shared file system.
//!
//! ```text
//! <path>         {"id": "<store identity>",
//!                 "nodes": {"<name>": {NodeRecord fields..., "ttl": <seconds>}}}
//! <path>.lock    flock(2)-ed (exclusive) around every read-modify-write; holds the
//!                store identity once the store was written (a file of an older build
//!                gets one at its next write)
//! ```
//!
//! New or lost: a missing `<path>` is a new, empty store only while `<path>.lock`
//! records no identity. When the lock records one, the store existed and was lost
//! (deleted, moved): every access is refused (code 101, naming both files and what to
//! do) instead of starting over empty and handing out blocks nodes still use. Node
//! caches record the identity too (see [`super::local`]), so a store recreated from
//! nothing (lock file gone as well) is told from the one a node's blocks came from.
//!
//! A block listed under two nodes is refused on every read (code 101, naming the block
//! and both nodes): never used, never "repaired" by guessing.
//!
//! Every mutation reads the document, decides (block ownership included) and writes it
//! back (temp file, fsync, rename, fsync directory) while holding the lock, so two
//! writers never both see a block as free. Readers without the lock only ever see a
//! complete document. A document that does not parse is reported naming the file and
//! never reset.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::node::{NodeInfo, NodeRecord};
use super::pool::Pool;
use super::{check_max_blocks, exhausted_error, expiry_after, now_unix, pick_block, StoredNode};
use crate::durable::{lock_exclusive, read_optional, replace_file};
use crate::error::IpamError;

#[derive(Clone, Debug)]
pub struct FileStore {
    pub(crate) path: PathBuf,
    lock_path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Doc {
    /// The store's identity (absent in a file written by an older build, until its
    /// next write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default)]
    nodes: BTreeMap<String, StoredNode>,
}

/// A new random store identity (128 bits, hex).
pub(crate) fn new_identity() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl FileStore {
    /// Opens the store at `path` (its directory is created; the file appears at the first
    /// write).
    pub fn open(path: &Path) -> Result<FileStore, IpamError> {
        crate::durable::check_state_path("store", path)?;
        if let Some(dir) = path.parent() {
            crate::durable::create_dir_all(dir)?;
        }
        let mut lock = path.as_os_str().to_owned();
        lock.push(".lock");
        Ok(FileStore {
            path: path.to_path_buf(),
            lock_path: PathBuf::from(lock),
        })
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> FileStore {
        FileStore {
            path: PathBuf::from("/nonexistent/x.json"),
            lock_path: PathBuf::from("/nonexistent/x.json.lock"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity the lock file records (empty: none yet).
    fn recorded_identity(&self) -> Result<String, IpamError> {
        Ok(read_optional(&self.lock_path)?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default())
    }

    fn read(&self) -> Result<Doc, IpamError> {
        let Some(bytes) = read_optional(&self.path)? else {
            let id = self.recorded_identity()?;
            if !id.is_empty() {
                return Err(IpamError::corrupt(
                    &self.path,
                    format!(
                        "the file is missing, but {} records that cluster store {id} existed \
                         here: it was lost, and starting a new empty store would hand out \
                         blocks nodes still use. Restore {} from a backup; or, only once no \
                         node uses any block of it (every node's blocks.json removed), remove \
                         {} to start a new store",
                        self.lock_path.display(),
                        self.path.display(),
                        self.lock_path.display()
                    ),
                ));
            }
            return Ok(Doc::default());
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            // Never written whole: rename makes that impossible, so this is corruption.
            return Err(IpamError::corrupt(&self.path, "the file is empty"));
        }
        let doc: Doc = serde_json::from_slice(&bytes)
            .map_err(|e| IpamError::corrupt(&self.path, e.to_string()))?;
        let mut owner: BTreeMap<IpNetwork, &str> = BTreeMap::new();
        for (name, n) in &doc.nodes {
            for b in &n.record.blocks {
                match owner.insert(*b, name) {
                    Some(other) if other != name => {
                        return Err(IpamError::corrupt(
                            &self.path,
                            format!(
                                "block {b} is listed under both node {other} and node {name}: \
                                 refused (an address of it could be given twice); remove it \
                                 from the node whose pods do not use it"
                            ),
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(doc)
    }

    fn write(&self, doc: &Doc) -> Result<(), IpamError> {
        let bytes = serde_json::to_vec_pretty(doc).map_err(|e| {
            IpamError::config(format!("cannot encode {}: {e}", self.path.display()))
        })?;
        replace_file(&self.path, &bytes)
    }

    /// Read-modify-write under the lock; `f` returns whether it changed the document.
    fn update<R>(
        &self,
        f: impl FnOnce(&mut Doc) -> Result<(bool, R), IpamError>,
    ) -> Result<R, IpamError> {
        self.update_with_id(f).map(|(r, _)| r)
    }

    /// [`FileStore::update`], also returning the store's identity.
    fn update_with_id<R>(
        &self,
        f: impl FnOnce(&mut Doc) -> Result<(bool, R), IpamError>,
    ) -> Result<(R, String), IpamError> {
        let lock = lock_exclusive(&self.lock_path)?;
        let mut doc = self.read()?;
        let (mut changed, r) = f(&mut doc)?;
        let id = match &doc.id {
            Some(id) => id.clone(),
            None => {
                // A new store, or a file of an older build: it gets its identity now.
                let id = new_identity();
                doc.id = Some(id.clone());
                changed = true;
                tracing::info!(store = %self.path.display(), %id, "cluster store identity recorded");
                id
            }
        };
        if changed {
            self.write(&doc)?;
        }
        // Beside it, in the lock file: written after the store, so a crash in between
        // leaves a store whose lock does not know it yet (fixed at the next update),
        // never a lock that claims a store that was never written.
        if self.recorded_identity()? != id {
            use std::os::unix::fs::FileExt;
            lock.set_len(0)
                .and_then(|()| lock.write_all_at(format!("{id}\n").as_bytes(), 0))
                .and_then(|()| lock.sync_all())
                .map_err(|e| IpamError::io("write", &self.lock_path, e))?;
        }
        Ok((r, id))
    }

    /// The store's identity, created with the store if it is new.
    pub(crate) fn identity(&self) -> Result<String, IpamError> {
        self.update_with_id(|_| Ok((false, ()))).map(|(_, id)| id)
    }

    /// Which node's record lists `block` (expired records included).
    pub(crate) fn owner_of(&self, block: IpNetwork) -> Result<Option<String>, IpamError> {
        Ok(self
            .read()?
            .nodes
            .into_iter()
            .find(|(_, n)| n.record.blocks.contains(&block))
            .map(|(k, _)| k))
    }

    /// Live records (lease not expired), without taking the lock.
    pub(crate) fn live(&self) -> Result<BTreeMap<String, NodeRecord>, IpamError> {
        let now = now_unix();
        Ok(self
            .read()?
            .nodes
            .into_iter()
            .filter(|(_, n)| n.record.lease_expiry > now)
            .map(|(k, n)| (k, n.record))
            .collect())
    }

    pub(crate) fn register(&self, info: &NodeInfo, ttl: Duration) -> Result<NodeRecord, IpamError> {
        self.update(|doc| {
            let expiry = expiry_after(ttl);
            let entry = doc
                .nodes
                .entry(info.name.clone())
                .or_insert_with(|| StoredNode::new(info.clone(), ttl));
            entry.record.info = info.clone();
            entry.record.lease_expiry = expiry;
            entry.ttl = ttl.as_secs().max(1);
            Ok((true, entry.record.clone()))
        })
    }

    pub(crate) fn renew(&self, node: &str, ttl: Duration) -> Result<(), IpamError> {
        let path = self.path.clone();
        self.update(|doc| {
            let now = now_unix();
            match doc.nodes.get_mut(node) {
                Some(n) if n.record.lease_expiry > now => {
                    n.record.lease_expiry = expiry_after(ttl);
                    n.ttl = ttl.as_secs().max(1);
                    Ok((true, ()))
                }
                _ => Err(IpamError::NotFound(format!(
                    "node {node} has no live record in {}: register again",
                    path.display()
                ))),
            }
        })
    }

    pub(crate) fn claim_block(
        &self,
        node: &str,
        pool: &Pool,
        v6: bool,
        max_blocks: Option<usize>,
    ) -> Result<IpNetwork, IpamError> {
        let path = self.path.clone();
        self.update(|doc| {
            let now = now_unix();
            let Some(me) = doc.nodes.get(node).filter(|n| n.record.lease_expiry > now) else {
                return Err(IpamError::NotFound(format!(
                    "node {node} has no live record in {}: register it before claiming blocks",
                    path.display()
                )));
            };
            let mine = me
                .record
                .blocks
                .iter()
                .filter(|b| b.is_ipv6() == v6 && pool.contains(**b))
                .count();
            check_max_blocks(node, pool, v6, mine, max_blocks)?;
            // Every block in the document is owned, live record or not: a dead node's
            // blocks are freed only by `expire`/`remove_node`.
            let owned: BTreeSet<IpNetwork> = doc
                .nodes
                .values()
                .flat_map(|n| n.record.blocks.iter().copied())
                .collect();
            let Some(block) = pick_block(pool, v6, &owned) else {
                return Err(exhausted_error(pool, v6, &expired_holders(doc, now)));
            };
            if let Some(me) = doc.nodes.get_mut(node) {
                me.record.blocks.push(block);
                me.record.blocks.sort();
            }
            Ok((true, block))
        })
    }

    pub(crate) fn release_block(&self, node: &str, block: IpNetwork) -> Result<bool, IpamError> {
        self.update(|doc| {
            let Some(n) = doc.nodes.get_mut(node) else {
                return Ok((false, false));
            };
            let before = n.record.blocks.len();
            n.record.blocks.retain(|b| *b != block);
            let done = n.record.blocks.len() != before;
            Ok((done, done))
        })
    }

    pub(crate) fn remove_node(&self, name: &str) -> Result<(), IpamError> {
        self.update(|doc| {
            let removed = doc.nodes.remove(name).is_some();
            Ok((removed, ()))
        })
    }

    /// Removes the expired records that hold no block, and those expired for longer than
    /// `grace` (zero: never) with their blocks.
    pub(crate) fn expire(&self, grace: Duration) -> Result<Vec<String>, IpamError> {
        self.update(|doc| {
            let now = now_unix();
            let dead: Vec<String> = doc
                .nodes
                .iter()
                .filter(|(_, n)| {
                    let expiry = n.record.lease_expiry;
                    expiry <= now
                        && (n.record.blocks.is_empty()
                            || (!grace.is_zero()
                                && expiry.saturating_add(grace.as_secs().max(1)) <= now))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for d in &dead {
                doc.nodes.remove(d);
            }
            Ok((!dead.is_empty(), dead))
        })
    }

    /// Expired records that still hold blocks.
    pub(crate) fn expired_holders(&self) -> Result<BTreeMap<String, Vec<IpNetwork>>, IpamError> {
        Ok(expired_holders(&self.read()?, now_unix()))
    }

    /// Claims exactly `block` for `node` if it is free (or already the node's).
    pub(crate) fn claim_exact(&self, node: &str, block: IpNetwork) -> Result<bool, IpamError> {
        let path = self.path.clone();
        self.update(|doc| {
            if doc
                .nodes
                .iter()
                .any(|(k, n)| k != node && n.record.blocks.contains(&block))
            {
                return Ok((false, false));
            }
            let Some(me) = doc.nodes.get_mut(node) else {
                return Err(IpamError::NotFound(format!(
                    "node {node} has no record in {}: register it before claiming blocks",
                    path.display()
                )));
            };
            if me.record.blocks.contains(&block) {
                return Ok((false, true));
            }
            me.record.blocks.push(block);
            me.record.blocks.sort();
            Ok((true, true))
        })
    }
}

/// The records of `doc` expired at `now` that still hold blocks.
fn expired_holders(doc: &Doc, now: u64) -> BTreeMap<String, Vec<IpNetwork>> {
    doc.nodes
        .iter()
        .filter(|(_, n)| n.record.lease_expiry <= now && !n.record.blocks.is_empty())
        .map(|(k, n)| (k.clone(), n.record.blocks.clone()))
        .collect()
}
