//! The result cache, like libcni's: one JSON file per attachment,
//! `<dir>/results/<network>-<container id>-<ifname>`, written after a successful ADD,
//! read as `prevResult` for CHECK and DEL, removed after DEL.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::RtError;

/// One cached attachment (libcni's `cniCacheV1` shape, with `config` as JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedAttachment {
    pub kind: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    #[serde(rename = "ifName")]
    pub ifname: String,
    #[serde(rename = "networkName")]
    pub network: String,
    #[serde(rename = "netns", default)]
    pub netns: String,
    #[serde(rename = "cniArgs", default)]
    pub cni_args: Vec<(String, String)>,
    #[serde(rename = "capabilityArgs", default)]
    pub capability_args: Map<String, Value>,
    #[serde(default)]
    pub result: Value,
}

/// The cache directory (libcni's default: `/var/lib/cni`).
#[derive(Clone, Debug)]
pub struct ResultCache {
    pub dir: PathBuf,
}

impl ResultCache {
    pub fn new(dir: impl Into<PathBuf>) -> ResultCache {
        ResultCache { dir: dir.into() }
    }

    fn results(&self) -> PathBuf {
        self.dir.join("results")
    }

    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.results()
            .join(format!("{network}-{container_id}-{ifname}"))
    }

    /// Writes atomically (temp file + rename).
    pub fn put(&self, a: &CachedAttachment) -> Result<(), RtError> {
        let dir = self.results();
        std::fs::create_dir_all(&dir)
            .map_err(|e| RtError::Cache(format!("{}: {e}", dir.display())))?;
        let path = self.path(&a.network, &a.container_id, &a.ifname);
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec(a)
            .map_err(|e| RtError::Cache(format!("{}: {e}", path.display())))?;
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| RtError::Cache(format!("{}: {e}", path.display())))
    }

    pub fn get(&self, network: &str, container_id: &str, ifname: &str) -> Option<CachedAttachment> {
        let text = std::fs::read(self.path(network, container_id, ifname)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) {
        let _ = std::fs::remove_file(self.path(network, container_id, ifname));
    }

    /// Every cached attachment of `network`.
    pub fn list(&self, network: &str) -> Vec<CachedAttachment> {
        let mut v: Vec<CachedAttachment> = std::fs::read_dir(self.results())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|t| serde_json::from_slice::<CachedAttachment>(&t).ok())
            .filter(|a| a.network == network)
            .collect();
        v.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        v
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
