//! Durable file primitives: every state entry becomes visible whole or not at all.
//!
//! The node-local store ([`crate::store`]) keeps its state in the *metadata* of one
//! directory: symbolic links whose targets carry the data. A symlink is created with its
//! target in one step ([`create_symlink`], exclusive: `EEXIST` when the name is taken),
//! replaced in one step ([`replace_symlink`], a temp symlink `rename(2)`-d over the name),
//! and both become durable with a single [`sync_dir`] of the directory: there is no file
//! content to fsync. [`link_entry`] and [`replace_with_link`] give an existing symlink a
//! second name (`link(2)`: no inode allocated, which on a journal-less ext4 is what an
//! entry costs most), falling back to a symlink of its own where hard links are refused.
//!
//! Hints (the allocation cursor) are regular files of one fixed-size record rewritten in
//! place ([`Hint`], [`write_hint`]): no inode allocated or freed per write, no
//! fsync, and a lost or garbled hint reads as absent.
//!
//! [`replace_file`] is the classic temp file + fsync + rename + fsync directory, for the
//! few stand-alone state files (the cluster file store, the block cache).
//!
//! Modes never depend on the umask: every directory is created [`DIR_MODE`] (0755) and
//! every file (lock files, temp files before their rename) [`FILE_MODE`] (0644); a umask
//! can only make them tighter. Symlink modes are not used by Linux (always 0777).
//! [`check_state_path`] refuses a state path that is relative or that resolves through
//! a symlink to somewhere else than where it is named.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::IpamError;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Mode of every directory the store creates (before the umask, which only tightens).
pub(crate) const DIR_MODE: u32 = 0o755;
/// Mode of every file the store creates (before the umask, which only tightens).
pub(crate) const FILE_MODE: u32 = 0o644;

/// `mkdir -p` with [`DIR_MODE`] for every directory it creates, whatever the umask.
pub(crate) fn create_dir_all(dir: &Path) -> Result<(), IpamError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| IpamError::io("create directory", dir, e))
}

/// Refuses (`InvalidConfig`, 7, naming `field`) a state path that is relative, holds
/// `.` or `..`, or whose existing part resolves through a symlink to anywhere else than
/// where it is named (a `dataDir` symlinked to `/etc` must not make the store write
/// there). The part that does not exist yet is created later by the store itself.
pub(crate) fn check_state_path(field: &str, path: &Path) -> Result<(), IpamError> {
    let refuse = |why: String| {
        IpamError::config(format!(
            "{field}: {} {why}; name the real absolute directory",
            path.display()
        ))
    };
    if !path.is_absolute() {
        return Err(refuse(
            "is relative (it would depend on the runtime's working directory)".into(),
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Err(refuse("contains '.' or '..'".into()));
    }
    // The common case in one syscall: the path exists and no component is a symlink.
    // Otherwise (missing, a symlink somewhere, openat2 not available) the walk below
    // finds the deepest existing part and says what resolves where.
    if resolves_without_symlinks(path) {
        return Ok(());
    }
    // The deepest existing ancestor (the path itself included) must be its own
    // canonical path: then no component of it is a symlink.
    let mut existing = path;
    loop {
        match fs::symlink_metadata(existing) {
            Ok(_) => break,
            Err(e)
                if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                match existing.parent() {
                    Some(p) => existing = p,
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(IpamError::io("stat", existing, e)),
        }
    }
    let real = fs::canonicalize(existing).map_err(|e| IpamError::io("resolve", existing, e))?;
    if real != existing {
        return Err(refuse(format!(
            "resolves through a symlink: {} is {}",
            existing.display(),
            real.display()
        )));
    }
    Ok(())
}

/// Whether the absolute, normalized `path` exists and resolves without following any
/// symlink: one `openat2(2)` with `RESOLVE_NO_SYMLINKS` (which refuses a symlink in any
/// component, the last included), the `O_PATH` descriptor closed at once. `false` also
/// when it cannot tell (missing, `ENOSYS` before Linux 5.6, refused by a seccomp filter).
fn resolves_without_symlinks(path: &Path) -> bool {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(nix::fcntl::AT_FDCWD, path, how).is_ok()
}

/// Opens the directory `dir` (read-only, for its metadata and fsync).
pub(crate) fn open_dir(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
}

/// Opens (creating it and its missing parents, [`DIR_MODE`], if needed) the directory
/// `dir` for reading its metadata: one `open(2)` when it exists (no `mkdir` that fails
/// with `EEXIST`, no `stat` of every parent).
pub(crate) fn open_or_create_dir(dir: &Path) -> Result<File, IpamError> {
    let open = || open_dir(dir);
    match open() {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            create_dir_all(dir)?;
            open().map_err(|e| IpamError::io("open directory", dir, e))
        }
        Err(e) => Err(IpamError::io("open directory", dir, e)),
    }
}

/// The longest symlink target this module writes (Linux: `PATH_MAX` minus the NUL).
pub(crate) const MAX_TARGET: usize = 4095;

/// A name for a temp entry, unique in this process and across processes:
/// `<prefix><pid>-<n>`.
pub(crate) fn temp_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}-{n}", std::process::id())
}

/// Exclusive create of the symlink `path` -> `target`: `Ok(false)` when `path` exists
/// (whatever it is). Not durable until the directory is synced.
pub(crate) fn create_symlink(target: &str, path: &Path) -> Result<bool, IpamError> {
    match std::os::unix::fs::symlink(target, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(IpamError::io("symlink", path, e)),
    }
}

/// Atomically replaces (or creates) the entry `path` with a symlink to `target`: the
/// temp symlink `tmp` is created and renamed over `path`. Not durable until the directory
/// is synced.
pub(crate) fn replace_symlink(target: &str, path: &Path, tmp: &Path) -> Result<(), IpamError> {
    std::os::unix::fs::symlink(target, tmp).map_err(|e| IpamError::io("symlink", tmp, e))?;
    fs::rename(tmp, path).map_err(|e| {
        let _ = fs::remove_file(tmp);
        IpamError::io("rename", path, e)
    })
}

#[cfg(test)]
thread_local! {
    /// Tests: makes [`link_entry`] take its fallback path on this thread, as on a file
    /// system that refuses hard links.
    pub(crate) static REFUSE_HARD_LINKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `link(2)` of the entry `src` itself (a symlink is not followed: the new name is the
/// same symlink, no new inode).
fn hard_link(src: &Path, dst: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    if REFUSE_HARD_LINKS.with(std::cell::Cell::get) {
        return Err(std::io::Error::from_raw_os_error(libc::EPERM));
    }
    nix::unistd::linkat(
        nix::fcntl::AT_FDCWD,
        src,
        nix::fcntl::AT_FDCWD,
        dst,
        nix::fcntl::AtFlags::empty(),
    )
    .map_err(std::io::Error::from)
}

/// Exclusive create of `path` as a second name of the symlink `src`, whose target is
/// `target` (a hard link: no inode is allocated, and removing one name leaves the other
/// with its target). Where the file system refuses the hard link (`EPERM`, `EMLINK`,
/// `ENOTSUP`...), or `src` is gone, `path` becomes a new symlink to `target` instead:
/// the same entry for every reader. `Ok(false)` when `path` exists. Not durable until
/// the directory is synced.
pub(crate) fn link_entry(src: &Path, target: &str, path: &Path) -> Result<bool, IpamError> {
    match hard_link(src, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => {
            tracing::debug!(from = %src.display(), to = %path.display(), error = %e,
                "hard link refused: a symlink instead");
            create_symlink(target, path)
        }
    }
}

/// Atomically replaces (or creates) the entry `path` with a second name of the symlink
/// `src` (target `target`), see [`link_entry`]: linked (or symlinked) as `tmp`, renamed
/// over `path`. Not durable until the directory is synced.
pub(crate) fn replace_with_link(
    src: &Path,
    target: &str,
    path: &Path,
    tmp: &Path,
) -> Result<(), IpamError> {
    if !link_entry(src, target, tmp)? {
        return Err(IpamError::io(
            "link",
            tmp,
            std::io::Error::from(ErrorKind::AlreadyExists),
        ));
    }
    let renamed = fs::rename(tmp, path).map_err(|e| IpamError::io("rename", path, e));
    // rename(2) of two names of one inode does nothing (and succeeds): `path` already was
    // this entry, and `tmp` is still there.
    let _ = remove_optional(tmp);
    renamed
}

/// What an entry of the store directory turned out to be when read as a symlink.
pub(crate) enum Link {
    /// No such entry.
    Missing,
    /// A symlink and its target (raw bytes: checked by the caller).
    Target(Vec<u8>),
    /// Something else (a regular file, a directory): never written by the store.
    Other,
}

/// `readlink(2)` of `path`.
pub(crate) fn read_symlink(path: &Path) -> Result<Link, IpamError> {
    match fs::read_link(path) {
        Ok(t) => Ok(Link::Target(t.as_os_str().as_bytes().to_vec())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Link::Missing),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Link::Other),
        Err(e) => Err(IpamError::io("readlink", path, e)),
    }
}

/// Length of a hint file's record (see [`write_hint`]): an address's text (at most 45
/// bytes) padded with spaces and ended by a newline.
const HINT_LEN: usize = 64;

/// Writes the hint `text` (at most `HINT_LEN - 1` bytes) into the regular file `path`
/// in place: one fixed-size `pwrite(2)` at offset 0, so that after the first write no
/// inode is allocated or freed. Not synced: a crash may leave the previous hint or a
/// garbled one (read as absent). A symlink of an earlier build is replaced by the file;
/// a file of another length is cut to the record's. Created [`FILE_MODE`], and a file
/// writable by group or others is tightened.
pub(crate) fn write_hint(path: &Path, text: &str) -> Result<(), IpamError> {
    if text.len() >= HINT_LEN {
        return Err(IpamError::config(format!(
            "hint {text:?} longer than {} bytes",
            HINT_LEN - 1
        )));
    }
    let open = || {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            // O_NONBLOCK: a FIFO put there by hand fails (ENXIO) instead of blocking.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    let file = match open() {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            // A symlink of an earlier build: converted once.
            remove_optional(path)?;
            open().map_err(|e| IpamError::io("create", path, e))?
        }
        Err(e) => return Err(IpamError::io("open", path, e)),
    };
    let md = file
        .metadata()
        .map_err(|e| IpamError::io("stat", path, e))?;
    if !md.is_file() {
        return Err(IpamError::corrupt(path, "not a regular file".to_string()));
    }
    tighten_known(&file, path, &md);
    write_record(&file, path, md.len(), text)
}

/// Writes `text` as the hint record of the open regular file `file` (now `len` bytes
/// long) at offset 0, and cuts a file of another length to the record's.
fn write_record(file: &File, path: &Path, len: u64, text: &str) -> Result<(), IpamError> {
    use std::os::unix::fs::FileExt;
    let mut record = [b' '; HINT_LEN];
    record[..text.len()].copy_from_slice(text.as_bytes());
    record[HINT_LEN - 1] = b'\n';
    file.write_all_at(&record, 0)
        .map_err(|e| IpamError::io("write", path, e))?;
    if len != HINT_LEN as u64 {
        file.set_len(HINT_LEN as u64)
            .map_err(|e| IpamError::io("truncate", path, e))?;
    }
    Ok(())
}

/// A hint file opened once by an ADD: read where probing starts, then rewritten in place
/// through the same descriptor (one `open(2)` for both). The formats, mode and
/// tightening of [`write_hint`].
pub(crate) struct Hint {
    path: PathBuf,
    /// The regular file, when it is one (else the write goes through [`write_hint`],
    /// which converts an earlier build's symlink or reports what is wrong).
    file: Option<(File, u64)>,
    text: Option<String>,
}

impl Hint {
    pub(crate) fn open(path: &Path) -> Hint {
        use std::os::unix::fs::FileExt;
        let mut hint = Hint {
            path: path.to_path_buf(),
            file: None,
            text: None,
        };
        let open = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            // O_NONBLOCK: a FIFO put there by hand is never waited on.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path);
        match open {
            Ok(f) => {
                let Ok(md) = f.metadata() else { return hint };
                if !md.is_file() {
                    return hint;
                }
                tighten_known(&f, path, &md);
                let mut buf = [0u8; HINT_LEN * 2];
                if let Ok(n) = f.read_at(&mut buf, 0) {
                    hint.text = std::str::from_utf8(&buf[..n])
                        .ok()
                        .map(|t| t.trim().to_string());
                }
                hint.file = Some((f, md.len()));
            }
            // O_NOFOLLOW on a symlink: the format of earlier builds.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                if let Ok(Link::Target(t)) = read_symlink(path) {
                    hint.text = String::from_utf8(t).ok().map(|t| t.trim().to_string());
                }
            }
            Err(_) => {}
        }
        hint
    }

    /// The hint's text (`None`: absent or unreadable).
    pub(crate) fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// Rewrites the hint in place (see [`write_hint`]).
    pub(crate) fn write(&self, text: &str) -> Result<(), IpamError> {
        match &self.file {
            Some((file, len)) if text.len() < HINT_LEN => {
                write_record(file, &self.path, *len, text)
            }
            // Not a regular file (or too long: write_hint says so).
            _ => write_hint(&self.path, text),
        }
    }
}

/// fsync a directory.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), IpamError> {
    let _timing = cni_core::timing::phase("ipam.fsync-dir");
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IpamError::io("fsync directory", dir, e))
}

/// Reads a whole file; `Ok(None)` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, IpamError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IpamError::io("read", path, e)),
    }
}

/// Removes a file; `Ok(false)` when it was already gone.
pub(crate) fn remove_optional(path: &Path) -> Result<bool, IpamError> {
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
pub(crate) fn replace_file(path: &Path, data: &[u8]) -> Result<(), IpamError> {
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
    // A leftover of a crashed process that had our pid: never written through.
    let _ = fs::remove_file(&tmp);
    let write = || -> Result<(), IpamError> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
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

/// Removes group and other write permission from a file or directory an older build
/// created under a permissive umask (upgrade in place); a failure is only logged.
pub(crate) fn tighten(file: &File, path: &Path) {
    if let Ok(md) = file.metadata() {
        tighten_known(file, path, &md);
    }
}

/// [`tighten`] with the file's metadata already read (`md`: no second `fstat`).
pub(crate) fn tighten_known(file: &File, path: &Path, md: &fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = md.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        let new = mode & !0o022;
        match file.set_permissions(fs::Permissions::from_mode(new)) {
            Ok(()) => {
                tracing::info!(path = %path.display(), from = format!("{mode:o}"), to = format!("{new:o}"), "removed group/other write permission from a state file")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove group/other write permission")
            }
        }
    }
}

/// Takes an exclusive `flock(2)` on `path` (created if needed), blocking; retried on
/// EINTR. Unlocked when the returned guard drops.
pub(crate) fn lock_exclusive(path: &Path) -> Result<nix::fcntl::Flock<File>, IpamError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| IpamError::io("open", path, e))?;
    tighten(&file, path);
    // Its own phase in CNI_TRACE: under churn the tail of an ADD or DEL is the wait for
    // this lock while its holder is in a slow disk operation (README § Pod churn).
    let _timing = cni_core::timing::phase("ipam.lock-wait");
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
