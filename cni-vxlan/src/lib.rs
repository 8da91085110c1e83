//! The VXLAN datapath (flannel's vxlan model).
//!
//! Pod side: pods on a bridge exactly as `cni-bridge` puts them there (its lib does the
//! work), with this datapath's defaults: bridge `cni-vx0`, the node's gateway on the
//! bridge and the pods' default route through it, MTU = underlay − 50. The gateway must
//! come from IPAM (cni-ipam cluster mode with `reserveGateway`), because every other node
//! routes this node's blocks via it.
//!
//! Node side ([`node::Vxlan`], driven by `ipamd`): one VXLAN device carrying the node's
//! gateway as /32, and per remote node a route per block via its VTEP address `onlink`,
//! a permanent neighbour entry and a permanent FDB entry.
//!
//! - [`config`]: the configuration, parsed once (pod and node side).
//! - [`pod`]: the pod side, [`VxlanPlugin`]: `cni-bridge`'s steps with this datapath's
//!   MTU and checks.
//! - [`node`]: the VXLAN device and what is programmed toward each peer.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod config;
pub mod node;
pub mod pod;

pub use pod::VxlanPlugin;
