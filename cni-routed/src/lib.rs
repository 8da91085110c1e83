//! The routed datapath (Calico-style routed veth, no bridge) and its host-gw node side.
//!
//! Pod side: a veth pair per attachment, the peer born in the pod with its addresses
//! as /32 (/128) and every route via a link-local gateway (`169.254.1.1`, answered by
//! the host end; IPv6: the host end's fixed link-local address); the host end carries a
//! fixed MAC, proxy ARP, and a /32 route to the pod. `cni-ipip` reuses all of it with
//! another [`Datapath`] (its tunnel overhead); the node side differs per datapath.
//!
//! - [`config`]: the plugin's configuration, parsed once.
//! - [`attach`] (ADD), [`detach`] (DEL), [`check`] (CHECK), [`gc`] (GC, STATUS).
//! - [`pod`]: the names and addresses both ends agree on.
//! - [`node`]: host-gw routes toward other nodes, and the shared `directRouting` rule.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod attach;
pub mod check;
pub mod config;
pub mod detach;
pub mod gc;
pub mod node;
pub mod pod;

use cni_core::skel::{Call, Plugin, Target};
use cni_core::{CniError, CniResult};

/// What tells one routed datapath from another on the pod side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datapath {
    /// The plugin's type name, in messages and logs ("cni-routed", "cni-ipip").
    pub name: &'static str,
    /// Bytes of encapsulation between pods of two nodes: the pod MTU is the underlay's
    /// minus this when `mtu` is not configured.
    pub overhead: u32,
    /// The host device IPv6 needs between nodes (`cni-ipip`: `sit0`): without it, ADD
    /// refuses an IPv6 address from IPAM instead of attaching a pod that cannot reach
    /// other nodes over it.
    pub ipv6_needs: Option<&'static str>,
}

/// `cni-routed`: plain routes between nodes, no encapsulation.
pub const ROUTED: Datapath = Datapath {
    name: "cni-routed",
    overhead: 0,
    ipv6_needs: None,
};

/// A routed-veth CNI plugin for one [`Datapath`].
pub struct RoutedPlugin {
    pub datapath: Datapath,
}

impl RoutedPlugin {
    pub const fn new(datapath: Datapath) -> RoutedPlugin {
        RoutedPlugin { datapath }
    }
}

impl Plugin for RoutedPlugin {
    fn add(&self, call: &Call, target: &Target) -> Result<CniResult, CniError> {
        attach::add(&self.datapath, call, target)
    }
    fn del(&self, call: &Call, target: &Target) -> Result<(), CniError> {
        detach::del(&self.datapath, call, target)
    }
    fn check(&self, call: &Call, target: &Target) -> Result<(), CniError> {
        check::check(&self.datapath, call, target)
    }
    fn gc(&self, call: &Call) -> Result<(), CniError> {
        gc::gc(&self.datapath, call)
    }
    fn status(&self, call: &Call) -> Result<(), CniError> {
        gc::status(&self.datapath, call)
    }
    fn configures_netns(&self) -> bool {
        true
    }
}
