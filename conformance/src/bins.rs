//! Where the binaries are.
//!
//! Our plugins (`cni-bridge`, `cni-ipam`) are looked up, in order:
//! 1. in `$CNI_BIN_DIR` if set (scripts/test.sh sets it to `target/release`);
//! 2. else in `<workspace>/target/release` and `<workspace>/target/debug` (honouring
//!    `$CARGO_TARGET_DIR`), taking the directory whose `cni-bridge` is the newest, so a
//!    stale release build never shadows a fresh debug one.
//!
//! `cargo test` does not build the other crates' binaries: build them first
//! (`cargo build --release --workspace --bins`).
//!
//! The reference plugins are in `$CNI_REF_DIR`, else `/usr/lib/cni` (Debian's
//! `containernetworking-plugins`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Our binaries.
pub const OURS: [&str; 2] = ["cni-bridge", "cni-ipam"];

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The directory holding our built binaries (see the module doc).
pub fn our_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("CNI_BIN_DIR") {
            return PathBuf::from(d);
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        let candidates = [target.join("release"), target.join("debug")];
        candidates
            .iter()
            .filter_map(|d| mtime(&d.join("cni-bridge")).map(|t| (t, d.clone())))
            .max_by_key(|(t, _)| *t)
            .map(|(_, d)| d)
            .unwrap_or_else(|| candidates[0].clone())
    })
    .clone()
}

/// The path of one of our binaries; panics with a hint when it was not built.
pub fn our_bin(name: &str) -> PathBuf {
    let p = our_bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not found: build it first (cargo build --release --workspace --bins) \
         or set CNI_BIN_DIR",
        p.display()
    );
    p
}

/// The reference plugins' directory.
pub fn ref_bin_dir() -> PathBuf {
    std::env::var_os("CNI_REF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cni"))
}

/// The path of a reference plugin; panics with a hint when it is not installed.
pub fn ref_bin(name: &str) -> PathBuf {
    let p = ref_bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not found: apt-get install containernetworking-plugins",
        p.display()
    );
    p
}

/// A temporary directory of symlinks to our binaries and every reference plugin: the
/// `CNI_PATH` of a test, so any plugin can delegate to any IPAM plugin.
#[derive(Debug)]
pub struct CniPath {
    dir: tempfile::TempDir,
}

impl CniPath {
    pub fn new() -> CniPath {
        let dir = tempfile::Builder::new()
            .prefix("cni-path-")
            .tempdir()
            .expect("tempdir");
        if let Ok(rd) = std::fs::read_dir(ref_bin_dir()) {
            for e in rd.flatten() {
                let _ = std::os::unix::fs::symlink(e.path(), dir.path().join(e.file_name()));
            }
        }
        // Ours are linked whether built or not: a missing one fails when it is run, with
        // a hint (see `CniPath::plugin`), and tests of the reference plugins still run.
        for b in OURS {
            let _ = std::os::unix::fs::symlink(our_bin_dir().join(b), dir.path().join(b));
        }
        CniPath { dir }
    }

    /// A temporary directory of symlinks to every file of `dirs`; the first directory
    /// holding a name wins (as `CNI_PATH` lookup does).
    pub fn from_dirs(dirs: &[PathBuf]) -> CniPath {
        let dir = tempfile::Builder::new()
            .prefix("cni-path-")
            .tempdir()
            .expect("tempdir");
        for d in dirs {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    let target = dir.path().join(e.file_name());
                    if std::fs::symlink_metadata(&target).is_err() {
                        let p = std::fs::canonicalize(e.path()).unwrap_or(e.path());
                        let _ = std::os::unix::fs::symlink(p, target);
                    }
                }
            }
        }
        CniPath { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The plugin binary of type `ty` in this path; panics with a hint when it is missing.
    pub fn plugin(&self, ty: &str) -> PathBuf {
        if OURS.contains(&ty) {
            our_bin(ty);
        }
        self.dir.path().join(ty)
    }
}

impl Default for CniPath {
    fn default() -> Self {
        Self::new()
    }
}
