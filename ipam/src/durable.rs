//! Durable file primitives: every state entry becomes visible whole or not at all.
//!
//! The node-local store ([`crate::store`]) keeps its state in the *metadata* of one
//! directory: symbolic links whose targets carry the data. A symlink is created with its
//! target in one step ([`create_symlink`], exclusive: `EEXIST` when the name is taken),
//! replaced in one step ([`replace_symlink`], a temp symlink `rename(2)`-d over the name),
//! and both become durable with a single [`sync_dir`] of the directory: there is no file
//! content to fsync.
//!
//! [`replace_file`] is the classic temp file + fsync + rename + fsync directory, for the
//! few stand-alone state files (the cluster file store, the block cache).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::IpamError;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The longest symlink target this module writes (Linux: `PATH_MAX` minus the NUL).
pub const MAX_TARGET: usize = 4095;

/// A name for a temp entry, unique in this process and across processes:
/// `<prefix><pid>-<n>`.
pub fn temp_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}-{n}", std::process::id())
}

/// Exclusive create of the symlink `path` -> `target`: `Ok(false)` when `path` exists
/// (whatever it is). Not durable until the directory is synced.
pub fn create_symlink(target: &str, path: &Path) -> Result<bool, IpamError> {
    match std::os::unix::fs::symlink(target, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(IpamError::io("symlink", path, e)),
    }
}

/// Atomically replaces (or creates) the entry `path` with a symlink to `target`: the
/// temp symlink `tmp` is created and renamed over `path`. Not durable until the directory
/// is synced.
pub fn replace_symlink(target: &str, path: &Path, tmp: &Path) -> Result<(), IpamError> {
    std::os::unix::fs::symlink(target, tmp).map_err(|e| IpamError::io("symlink", tmp, e))?;
    fs::rename(tmp, path).map_err(|e| {
        let _ = fs::remove_file(tmp);
        IpamError::io("rename", path, e)
    })
}

/// What an entry of the store directory turned out to be when read as a symlink.
pub enum Link {
    /// No such entry.
    Missing,
    /// A symlink and its target (raw bytes: checked by the caller).
    Target(Vec<u8>),
    /// Something else (a regular file, a directory): never written by the store.
    NotALink,
}

/// `readlink(2)` of `path`.
pub fn read_symlink(path: &Path) -> Result<Link, IpamError> {
    match fs::read_link(path) {
        Ok(t) => Ok(Link::Target(t.as_os_str().as_bytes().to_vec())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Link::Missing),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Link::NotALink),
        Err(e) => Err(IpamError::io("readlink", path, e)),
    }
}

/// fsync a directory.
pub fn sync_dir(dir: &Path) -> Result<(), IpamError> {
    let _timing = cni_core::timing::phase("ipam.fsync-dir");
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

/// Atomically and durably replaces the single file `path` with `data`: a sibling temp
/// file (`.<name>.tmp-<pid>-<n>`) is written and fsynced, renamed over `path`, and the
/// directory fsynced. For stand-alone state files (the cluster file store, the block
/// cache) that have no store `tmp/` directory of their own.
pub fn replace_file(path: &Path, data: &[u8]) -> Result<(), IpamError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let write = || -> Result<(), IpamError> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| IpamError::io("create", &tmp, e))?;
        f.write_all(data)
            .map_err(|e| IpamError::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| IpamError::io("fsync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| IpamError::io("rename", path, e))
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir)
}

/// Takes an exclusive `flock(2)` on `path` (created if needed), blocking; retried on
/// EINTR. Unlocked when the returned guard drops.
pub fn lock_exclusive(path: &Path) -> Result<nix::fcntl::Flock<File>, IpamError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| IpamError::io("open", path, e))?;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EINTR)) => file = f,
            Err((_, errno)) => {
                return Err(IpamError::io("flock", path, std::io::Error::from(errno)))
            }
        }
    }
}
