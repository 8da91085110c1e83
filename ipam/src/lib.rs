//! Address allocation: host-local compatible ranges and the node-local allocation store,
//! plus [`IpamPlugin`], the `cni-ipam` CNI plugin built on them, and the [`cluster`]
//! side (blocks leased to nodes from a cluster store).
//!
//! The modules are private; what other crates use is re-exported here (and in
//! [`cluster`]), so the compiler reports what nobody uses.
//!
//! - `config`: the `ipam` section, parsed and validated ([`IpamConfig`]).
//! - `range`: [`Range`], [`RangeSet`], [`RangeSets`] and the candidate iteration over
//!   them.
//! - `allocator`: which range set each requested address belongs to.
//! - `store`: [`Store`], the per-network directory of small files (flock, durable atomic
//!   writes), keyed by [`AllocKey`] (container id, ifname).
//! - `durable`: the atomic-write primitives the store is made of.
//! - `resolv`: `resolvConf` to the result's `dns`.
//! - `error`: [`IpamError`] and its CNI codes.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// Private modules: what is not re-exported here says so (`pub(crate)`).
#![warn(unreachable_pub)]

mod allocator;
pub mod cluster;
mod config;
mod durable;
mod error;
mod plugin;
mod range;
mod resolv;
mod store;

pub use config::{ClusterIpamConfig, IpamConfig, DEFAULT_CLUSTER_STORE, DEFAULT_DATA_DIR};
pub use error::IpamError;
pub use plugin::IpamPlugin;
pub use range::{Range, RangeSet, RangeSets};
pub use store::{AllocKey, AllocMeta, Allocation, Conflict, GcReport, Store};
