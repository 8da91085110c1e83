//! `ipamd`, the node daemon of the suite, as a library the thin `main` calls: its
//! public face is the command line ([`Cli`], [`Command`]) and [`execute`]; the modules
//! are private, so the compiler reports what nobody uses. Composition (which datapath,
//! which metrics and HTTP views) happens only in `backends` (`run` is the daemon's
//! loops, generic over the datapath's handler). No module imports one that imports it.
//!
//! - `cli`: flags and subcommands (clap, env vars too).
//! - `run`: the daemon, composed of the loops below.
//! - `lease`: register, renew every ttl/5, register again after expiry; expiry of
//!   dead nodes (every ttl/3).
//! - `blocks`: the first block per family, the node-local block cache, usage.
//! - `watch`: remote node changes (store watch + periodic resync) -> `events`.
//! - `events`: **the datapath seam**: `events::PeerEvent`, `events::PeerHandler`.
//! - `datapath`: the handler that programs vxlan / ipip / host-gw through
//!   `cni_core::node` (built from the flags by `backends`).
//! - `families`: which families a datapath carries over which underlay, checked at
//!   start.
//! - `bgp`: `--datapath bgp`: the BGP speaker's handler (export, mesh), learned
//!   routes into the kernel, `/bgp/peers` and `bgp-peers`.
//! - `gc`: release of reservations whose netns is gone.
//! - `release`: release of blocks empty for a grace period (never a family's last).
//! - `metrics`, `http`: Prometheus metrics and `/healthz` on a loopback address.
//! - `inspect`: `nodes`, `blocks`, `usage`, `pod`, `release`.
//! - `bench`: timing of `cni-ipam` ADDs with and without a block claim.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// Private modules: what is not re-exported here says so (`pub(crate)`).
#![warn(unreachable_pub)]

mod backends;
mod bench;
mod bgp;
mod blocks;
mod cli;
mod datapath;
mod error;
mod events;
mod families;
mod gc;
mod http;
mod inspect;
mod lease;
mod metrics;
mod release;
mod run;
mod watch;

pub use cli::{Cli, Command};
pub use error::Error;

/// Carries out one `ipamd` command; what it prints for the operator goes to `out`.
pub async fn execute(command: &Command, out: &mut std::io::Stdout) -> Result<(), Error> {
    match command {
        Command::Run(a) => backends::run(a.clone()).await,
        Command::Nodes(a) => inspect::nodes(a, out).await,
        Command::Blocks(a) => inspect::blocks(a, out).await,
        Command::Usage(a) => inspect::usage(a, out).await,
        Command::Pod(a) => inspect::pod(a, out),
        Command::Release(a) => inspect::release(a, out),
        Command::RemoveNode(a) => inspect::remove_node(a, out).await,
        Command::Bench(a) => bench::run(a, out).await,
        Command::BgpPeers(a) => bgp::status::bgp_peers(a, out).await,
    }
}
