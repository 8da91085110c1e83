//! `ipamd`, the node daemon of the suite, as a library the thin `main` calls.
//!
//! - [`cli`]: flags and subcommands (clap, env vars too).
//! - [`run`]: the daemon, composed of the loops below.
//! - [`lease`]: register, renew every ttl/3, register again after expiry; expiry of
//!   dead nodes.
//! - [`blocks`]: the first block per family, the node-local block cache, usage.
//! - [`watch`]: remote node changes (store watch + periodic resync) -> [`events`].
//! - [`events`]: **the datapath seam**: [`events::PeerEvent`], [`events::PeerHandler`].
//! - [`datapath`]: the handler that programs vxlan / ipip / host-gw through
//!   `cni_core::node` (built from the flags by [`backends`]).
//! - [`families`]: which families a datapath carries over which underlay, checked at
//!   start.
//! - [`bgp`]: `--datapath bgp`: the BGP speaker's handler (export, mesh), learned
//!   routes into the kernel, `/bgp/peers` and `bgp-peers`.
//! - [`gc`]: release of reservations whose netns is gone.
//! - [`release`]: release of blocks empty for a grace period (never a family's last).
//! - [`metrics`], [`http`]: Prometheus metrics and `/healthz` on a loopback address.
//! - [`inspect`]: `nodes`, `blocks`, `usage`, `pod`, `release`.
//! - [`bench`]: timing of `cni-ipam` ADDs with and without a block claim.

pub mod backends;
pub mod bench;
pub mod bgp;
pub mod blocks;
pub mod cli;
pub mod datapath;
pub mod error;
pub mod events;
pub mod families;
pub mod gc;
pub mod http;
pub mod inspect;
pub mod lease;
pub mod metrics;
pub mod release;
pub mod run;
pub mod watch;

pub use error::Error;
pub use events::{LogHandler, PeerEvent, PeerHandler};
