//! Address allocation: host-local compatible ranges and the node-local allocation store,
//! plus [`plugin::IpamPlugin`], the `cni-ipam` CNI plugin built on them.
//!
//! - [`config`]: the `ipam` section, parsed and validated ([`config::IpamConfig`]).
//! - [`range`]: [`range::Range`], [`range::RangeSet`], [`range::RangeSets`] and the
//!   candidate iteration over them.
//! - [`allocator`]: which range set each requested address belongs to.
//! - [`store`]: [`store::Store`], the per-network directory of small files (flock, durable
//!   atomic writes), keyed by [`store::AllocKey`] (container id, ifname).
//! - [`durable`]: the atomic-write primitives the store is made of.
//! - [`resolv`]: `resolvConf` to the result's `dns`.
//! - [`error`]: [`error::IpamError`] and its CNI codes.

pub mod allocator;
pub mod cluster;
pub mod config;
pub mod durable;
pub mod error;
pub mod plugin;
pub mod range;
pub mod resolv;
pub mod store;

pub use config::{ClusterIpamConfig, IpamConfig};
pub use error::IpamError;
pub use plugin::IpamPlugin;
pub use range::{Range, RangeSet, RangeSets};
pub use store::{AllocKey, AllocMeta, Allocation, Conflict, GcReport, Store};
