//! The IPIP datapath (Calico's IPIP mode): the routed veth pod side of `cni-routed`
//! with the pod MTU 20 bytes below the underlay's, and a node side that reaches other
//! nodes through `tunl0` (`<block> via <node ip> dev tunl0 onlink`), and IPv6 blocks of
//! a dual-stack pool through `sit0` (`<block> via ::<node ipv4> dev sit0 onlink`).
//!
//! - [`node`]: [`node::Ipip`], the node side.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod node;

use cni_routed::{Datapath, RoutedPlugin};

/// The IPv4 header IPIP puts in front of every packet.
pub const OVERHEAD: u32 = 20;

/// `cni-ipip`'s pod side.
pub const IPIP: Datapath = Datapath {
    name: "cni-ipip",
    overhead: OVERHEAD,
    ipv6_needs: Some(node::SIT),
};

/// The `cni-ipip` plugin.
pub fn plugin() -> RoutedPlugin {
    RoutedPlugin::new(IPIP)
}
