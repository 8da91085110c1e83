//! Test harness of the conformance suite and of the end-to-end tests.
//!
//! Everything here drives the *built* plugin binaries the way a runtime does (env +
//! JSON on stdin) and inspects the outcome with the system tools (`ip`, `nft`, `ping`):
//! the harness never trusts the code under test to judge itself, so it does not use
//! `cni-core`'s conversion code to read results either.
//!
//! - [`names`]: unique, short names for netns, links and containers;
//! - [`netns`]: network namespace fixtures and cleanup guards (links, nftables rules);
//! - [`bins`]: where our binaries and the reference plugins are, and a `CNI_PATH` with both;
//! - [`runner`]: run a plugin (env + stdin), get its exit status, result or CNI error
//!   (the [`cni_runtime`] crate's, under the name the tests use);
//! - [`config`]: config builders for `cni-bridge` / `bridge` and `cni-ipam` / `host-local`;
//! - [`subnet`]: a private /24 per test that nothing else on the machine uses;
//! - [`result`]: result-shape checks per spec version;
//! - [`inspect`]: addresses, routes, pings, nftables rules;
//! - [`fixture`]: [`fixture::TestNet`] and [`fixture::Pod`], which tie it all together;
//! - [`snapshot`]: host resources before/after, for leak checks;
//! - [`multinode`]: nodes on an underlay running `ipamd`, pods of the datapath plugins, UML;
//! - [`suite`]: the conformance cases and their report (`cni-conformance run`).

pub mod bins;
pub mod config;
pub mod fixture;
pub mod inspect;
pub mod multinode;
pub mod names;
pub mod netns;
pub mod result;
pub mod snapshot;
pub mod subnet;
pub mod suite;

/// Every CNI spec version, oldest first (the runtime's own list: the harness does not
/// depend on the code under test).
pub use cni_runtime::VERSIONS;

/// Running one plugin: [`cni_runtime`]'s runner.
pub mod runner {
    pub use cni_runtime::{ErrorObject, Invocation, Outcome, TIMEOUT};
}

/// True for the versions that have CHECK (0.4.0 and later).
pub fn has_check(version: &str) -> bool {
    cni_runtime::Version::parse(version).is_some_and(cni_runtime::Version::has_check)
}

/// True for the versions that have GC and STATUS (1.1.0 and later).
pub fn has_gc(version: &str) -> bool {
    cni_runtime::Version::parse(version).is_some_and(cni_runtime::Version::has_gc_status)
}

/// Runs a command to completion and returns its stdout; panics with its stderr on failure.
/// For test set-up and inspection only (`ip`, `nft`, ...).
pub fn sh(prog: &str, args: &[&str]) -> String {
    match try_sh(prog, args) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`sh`] but returns the failure as an error.
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
