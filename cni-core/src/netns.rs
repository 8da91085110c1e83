//! Network namespaces: open one by path, tell whether it is the caller's own (the host
//! guard of [`crate::skel`]), and run code inside it on the calling thread.
//!
//! The namespace a thread lives in (its "home", where [`NetNs::run`] returns it) is
//! opened once per thread and kept: an ADD used to open `/proc/thread-self/ns/net` for
//! the host guard and again for every `run` (each open is a procfs lookup, an `fstatfs`
//! and an ioctl). The home is the namespace the thread was in when it first asked; inside
//! a `run` (nested) the way back is opened afresh, as before. A thread that enters a
//! namespace without [`NetNs::run`] (a raw `setns`) must do so before its first call
//! here; the suite's only such threads (tests' helpers) are made for that and never call
//! this module.

use std::cell::{Cell, OnceCell};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::sched::{setns, CloneFlags};

use crate::kernel_error::{KernelError, Kind};

/// `NSFS_MAGIC` from `linux/magic.h`: the file system of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `NS_GET_NSTYPE` ioctl (`_IO(0xb7, 0x3)`), Linux >= 4.11.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the netns at `path` (e.g. `/var/run/netns/x` or `/proc/<pid>/ns/net`).
    /// A missing path or a file that is not a network namespace is an error that names it.
    pub fn open(path: &Path) -> Result<NetNs, KernelError> {
        let _timing = crate::timing::phase("netns.open");
        let file = File::open(path).map_err(|e| {
            KernelError::io(Kind::File, format!("opening netns {}", path.display()), e)
        })?;
        let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| {
            KernelError::io(
                Kind::File,
                format!("statfs on netns {}", path.display()),
                e.into(),
            )
        })?;
        #[allow(clippy::unnecessary_cast)] // the magic's type differs between libcs
        if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
            return Err(KernelError::invalid(
                format!("opening netns {}", path.display()),
                "not a network namespace (not on nsfs)",
            ));
        }
        // nsfs also holds mount, pid, ... namespaces: ask the kernel which kind this is.
        // SAFETY: the ioctl takes no argument and the fd is valid for the call.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind >= 0 && kind != libc::CLONE_NEWNET {
            return Err(KernelError::invalid(
                format!("opening netns {}", path.display()),
                "a namespace, but not a network namespace",
            ));
        }
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The calling thread's current network namespace, opened afresh.
    pub fn current() -> Result<NetNs, KernelError> {
        // thread-self, not self: setns() acts per thread, and the process's main thread
        // may sit in another namespace than the caller.
        NetNs::open(Path::new("/proc/thread-self/ns/net"))
    }

    /// The namespace the calling thread is in now: its home (opened once per thread,
    /// see the module doc) unless it is inside a [`NetNs::run`].
    fn here() -> Result<Rc<NetNs>, KernelError> {
        if DEPTH.get() > 0 {
            return NetNs::current().map(Rc::new);
        }
        HOME.with(|home| {
            if let Some(h) = home.get() {
                return Ok(Rc::clone(h));
            }
            let h = Rc::new(NetNs::current()?);
            let _ = home.set(Rc::clone(&h));
            Ok(h)
        })
    }

    /// The namespace's identity: device and inode of its nsfs file, the same whatever
    /// path (bind mount, `/proc/<pid>/ns/net`, symlink) names it.
    pub fn id(&self) -> Result<(u64, u64), KernelError> {
        let st = nix::sys::stat::fstat(&self.file).map_err(|e| {
            KernelError::io(
                Kind::File,
                format!("fstat on netns {}", self.path.display()),
                e.into(),
            )
        })?;
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // types differ per libc
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// True when this is the network namespace the calling thread runs in: the one the
    /// plugin itself (the "host" side) lives in.
    pub fn is_current(&self) -> Result<bool, KernelError> {
        Ok(self.id()? == NetNs::here()?.id()?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Enters this namespace on the calling thread, runs `f`, and returns to the
    /// namespace the thread was in. Sockets opened inside stay bound to this namespace.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, KernelError> {
        // Have the way back before leaving: afterwards /proc/thread-self names the target.
        let origin = NetNs::here()?;
        setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|e| {
            KernelError::from_errno(format!("entering netns {}", self.path.display()), e)
        })?;
        // The guard returns even when `f` unwinds, so the thread never stays behind.
        let guard = Restore {
            origin: &origin,
            restored: false,
        };
        DEPTH.set(DEPTH.get() + 1);
        let out = f();
        guard.finish()?;
        Ok(out)
    }
}

thread_local! {
    /// The calling thread's home namespace, once asked for (see the module doc).
    static HOME: OnceCell<Rc<NetNs>> = const { OnceCell::new() };
    /// How many [`NetNs::run`] the calling thread is inside.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Returns the thread to `origin` when a [`NetNs::run`] ends (also by unwinding).
struct Restore<'a> {
    origin: &'a NetNs,
    restored: bool,
}

impl Restore<'_> {
    fn finish(mut self) -> Result<(), KernelError> {
        self.restored = true;
        setns(&self.origin.file, CloneFlags::CLONE_NEWNET).map_err(|e| {
            KernelError::from_errno(
                format!("returning to netns {}", self.origin.path.display()),
                e,
            )
        })?;
        // Only once back home: a thread that could not return stays "inside", so that
        // the next `run` opens its real way back.
        DEPTH.set(DEPTH.get().saturating_sub(1));
        Ok(())
    }
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if !self.restored && setns(&self.origin.file, CloneFlags::CLONE_NEWNET).is_ok() {
            DEPTH.set(DEPTH.get().saturating_sub(1));
        }
    }
}
