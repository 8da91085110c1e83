//! Test harness of the conformance suite and of the end-to-end tests.
//!
//! Everything here drives the *built* plugin binaries the way a runtime does (env +
//! JSON on stdin) and inspects the outcome with the system tools (`ip`, `nft`, `ping`):
//! the harness never trusts the code under test to judge itself, so it does not use
//! `cni-core`'s conversion code to read results either.
//!
//! - [`names`], [`sh`], [`netns::Netns`]: from the workspace's [`testkit`] (unique names,
//!   running a tool, the network namespace fixture);
//! - [`netns`]: cleanup guards (links, nftables rules);
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

/// Running a tool and unique names: the workspace's [`testkit`].
pub use testkit::{names, sh, try_sh};
