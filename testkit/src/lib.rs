//! The test kit every crate's tests share (a dev-dependency; it depends on no crate of
//! the workspace, so the code under test never judges itself through it):
//!
//! - [`sh`] / [`try_sh`]: run a system tool (`ip`, `nft`, `ping`, ...) to set up or to
//!   look, with its stdout as the answer and its stderr in the failure;
//! - [`names`]: unique, short names for namespaces, links and containers (tests run in
//!   parallel, next to other test binaries and leftovers of killed runs);
//! - [`Netns`]: a named network namespace with loopback up, deleted on drop (also when
//!   the test fails).

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
