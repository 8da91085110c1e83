//! The embedded cluster store: one JSON file under `flock`, written atomically and
//! durably. Enough for one machine or a shared file system.
//!
//! ```text
//! <path>         {"nodes": {"<name>": {NodeRecord fields..., "ttl": <seconds>}}}
//! <path>.lock    flock(2)-ed (exclusive) around every read-modify-write
//! ```
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
use super::{check_max_blocks, exhausted_error, now_unix, pick_block, StoredNode};
use crate::durable::{lock_exclusive, read_optional, replace_file};
use crate::error::IpamError;

#[derive(Clone, Debug)]
pub struct FileStore {
    pub(crate) path: PathBuf,
    lock_path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Doc {
    #[serde(default)]
    nodes: BTreeMap<String, StoredNode>,
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

    fn read(&self) -> Result<Doc, IpamError> {
        let Some(bytes) = read_optional(&self.path)? else {
            return Ok(Doc::default());
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            // Never written whole: rename makes that impossible, so this is corruption.
            return Err(IpamError::corrupt(&self.path, "the file is empty"));
        }
        serde_json::from_slice(&bytes).map_err(|e| IpamError::corrupt(&self.path, e.to_string()))
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
        let _lock = lock_exclusive(&self.lock_path)?;
        let mut doc = self.read()?;
        let (changed, r) = f(&mut doc)?;
        if changed {
            self.write(&doc)?;
        }
        Ok(r)
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
            let expiry = now_unix() + ttl.as_secs().max(1);
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
                    n.record.lease_expiry = now + ttl.as_secs().max(1);
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
                let all: Vec<&StoredNode> = doc.nodes.values().collect();
                return Err(exhausted_error(pool, v6, node, &all, now));
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

    pub(crate) fn expire(&self) -> Result<Vec<String>, IpamError> {
        self.update(|doc| {
            let now = now_unix();
            let dead: Vec<String> = doc
                .nodes
                .iter()
                .filter(|(_, n)| n.record.lease_expiry <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for d in &dead {
                doc.nodes.remove(d);
            }
            Ok((!dead.is_empty(), dead))
        })
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
