//! Durable file primitives: every state file becomes visible whole or not at all.
//!
//! - [`Durable::create_new`]: write a temp file, fsync it, then `link(2)` it to its name,
//!   which fails with `EEXIST` when the name is taken: an exclusive create whose content
//!   is complete from the first moment the name exists.
//! - [`Durable::replace`]: write a temp file, fsync it, `rename(2)` it over the name.
//! - [`sync_dir`]: fsync a directory so the names created or removed in it persist.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::IpamError;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Temp files live in one directory of the same file system as the targets.
#[derive(Clone, Debug)]
pub struct Durable {
    tmp_dir: PathBuf,
}

impl Durable {
    pub fn new(tmp_dir: PathBuf) -> Self {
        Durable { tmp_dir }
    }

    fn write_temp(&self, data: &[u8]) -> Result<PathBuf, IpamError> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp_dir.join(format!("{}-{n}", std::process::id()));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| IpamError::io("create", &path, e))?;
        f.write_all(data)
            .map_err(|e| IpamError::io("write", &path, e))?;
        f.sync_all().map_err(|e| IpamError::io("fsync", &path, e))?;
        Ok(path)
    }

    /// Creates `path` with `data` unless it exists: `Ok(false)` when it does.
    pub fn create_new(&self, path: &Path, data: &[u8]) -> Result<bool, IpamError> {
        self.prepare(data)?.link_to(path)
    }

    /// A complete, fsynced temp file holding `data`, to be linked to one or more
    /// candidate names (written once however many names are probed).
    pub fn prepare(&self, data: &[u8]) -> Result<Prepared, IpamError> {
        Ok(Prepared {
            path: self.write_temp(data)?,
        })
    }

    /// Atomically replaces (or creates) `path` with `data`.
    pub fn replace(&self, path: &Path, data: &[u8]) -> Result<(), IpamError> {
        let tmp = self.write_temp(data)?;
        fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            IpamError::io("rename", path, e)
        })
    }
}

/// A temp file from [`Durable::prepare`]; removed on drop.
pub struct Prepared {
    path: PathBuf,
}

impl Prepared {
    /// Exclusive create of `path` with the prepared content: `Ok(false)` when it exists.
    pub fn link_to(&self, path: &Path) -> Result<bool, IpamError> {
        match fs::hard_link(&self.path, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(IpamError::io("link", path, e)),
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// fsync a directory.
pub fn sync_dir(dir: &Path) -> Result<(), IpamError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IpamError::io("fsync directory", dir, e))
}

/// Reads a whole file; `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, IpamError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IpamError::io("read", path, e)),
    }
}

/// Removes a file; `Ok(false)` when it was already gone.
pub fn remove_optional(path: &Path) -> Result<bool, IpamError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(IpamError::io("remove", path, e)),
    }
}
