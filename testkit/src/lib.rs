//! The test kit every crate's tests share (a dev-dependency; it depends on no crate of
//! the workspace, so the code under test never judges itself through it):
//!
//! - [`sh`] / [`try_sh`]: run a system tool (`ip`, `nft`, `ping`, ...) to set up or to
//!   look, with its stdout as the answer and its stderr in the failure;
//! - [`names`]: unique, short names for namespaces, links and containers (tests run in
//!   parallel, next to other test binaries and leftovers of killed runs);
//! - [`Netns`]: a named network namespace with loopback up, deleted on drop (also when
//!   the test fails);
//! - [`frr_dir`]: a directory FRR's daemons (user `frr`) can keep their state in,
//!   nothing world-writable.

pub mod names;
mod netns;

pub use netns::Netns;

/// Runs a command to completion and returns its stdout; panics with its stderr on failure.
/// For test set-up and inspection only (`ip`, `nft`, ...).
pub fn sh(prog: &str, args: &[&str]) -> String {
    match try_sh(prog, args) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`sh`] but returns the failure (with the command, its status, stderr and stdout)
/// as an error.
pub fn try_sh(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{prog} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// The directory for FRR's state in a test (config, pid files, zebra and vty sockets),
/// made if missing: FRR's daemons start as root and drop to user `frr` before they make
/// their pid files and sockets, so it is owned by `frr:frr` with mode 0750 (root, the
/// test, writes its config and reads its logs anyway). Every directory above it up to
/// the system temp dir (a tempdir is 0700) gets group and other *search* permission only
/// (e.g. 0711: `frr` may pass through, nobody may list or write). Nothing is made
/// world-writable. Panics when user `frr` does not exist (Debian package `frr`).
pub fn frr_dir(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let id = |flag: &str| -> u32 {
        sh("id", &[flag, "frr"])
            .trim()
            .parse()
            .expect("user frr (Debian package frr)")
    };
    std::fs::create_dir_all(dir).expect("mkdir FRR dir");
    std::os::unix::fs::chown(dir, Some(id("-u")), Some(id("-g"))).expect("chown FRR dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).expect("chmod FRR dir");
    let tmp = std::env::temp_dir();
    for d in dir.ancestors().skip(1) {
        if !d.starts_with(&tmp) || d == tmp {
            break;
        }
        let mode = std::fs::metadata(d).expect("stat").permissions().mode() & 0o7777;
        let searchable = (mode | 0o011) & !0o022;
        if searchable != mode {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(searchable))
                .expect("chmod a parent of the FRR dir");
        }
    }
    dir.to_path_buf()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    /// A fresh 0700 directory under the temp dir, removed on drop (testkit depends on
    /// no crate, tempfile included).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let name = format!("tk-frr-{:016x}", crate::names::unique_hash("frr_dir"));
            let d = std::env::temp_dir().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
            TempDir(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn frr_dir_belongs_to_frr_and_nothing_is_world_writable() {
        let top = TempDir::new();
        let dir = super::frr_dir(&top.0.join("a").join("frr"));
        let md = std::fs::metadata(&dir).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o750);
        assert_eq!(md.uid().to_string(), super::sh("id", &["-u", "frr"]).trim());
        assert_eq!(md.gid().to_string(), super::sh("id", &["-g", "frr"]).trim());
        // Its parents: 0700 before, searchable (not listable, not writable) after.
        for d in [top.0.join("a"), top.0.clone()] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode & 0o033, 0o011, "{}: {mode:o}", d.display());
        }
    }
}
