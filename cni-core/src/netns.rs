//! Network namespaces: open one by path and run code inside it on the calling thread.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::spec::error::CniError;

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the netns at `path` (e.g. `/var/run/netns/x` or `/proc/<pid>/ns/net`).
    /// A missing path or a file that is not a network namespace is an error that names it.
    pub fn open(path: &Path) -> Result<NetNs, CniError> {
        let _ = path;
        todo!()
    }

    /// The calling thread's current network namespace.
    pub fn current() -> Result<NetNs, CniError> {
        todo!()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Enters this namespace on the calling thread, runs `f`, and returns to the
    /// namespace the thread was in. Sockets opened inside stay bound to this namespace.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, CniError> {
        let _ = f;
        todo!()
    }
}
