//! The routed datapath (Calico-style routed veth, no bridge) and its host-gw node side.
//!
//! Pod side: a veth pair per attachment, the peer born in the pod with its addresses
//! as /32 (/128) and every route via a link-local gateway (`169.254.1.1`, answered by
//! the host end; IPv6: the host end's fixed link-local address); the host end carries a
//! fixed MAC, proxy ARP, and a /32 route to the pod. `cni-ipip` reuses all of it with
//! another [`Datapath`] (its tunnel overhead); the node side differs per datapath.
//!
//! The transaction (ADD and its undo, DEL, CHECK, GC, STATUS) is `cni_core::attach`'s;
//! this crate supplies the routed veth's steps as [`Routed`].
//!
//! - [`config`]: the plugin's configuration, parsed once.
//! - `attach` (ADD's links and addresses), `detach` (DEL's host side), `check`.
//! - [`pod`]: the names and addresses both ends agree on.
//! - [`node`]: host-gw routes toward other nodes, and the shared `directRouting` rule.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod attach;
mod check;
pub mod config;
mod detach;
pub mod node;
pub mod pod;

use cni_core::attach::{Ctx, Links, Made, Shared, VethDatapath, VethPlugin};
use cni_core::skel::{Call, Target};
use cni_core::spec::config::NetConf;
use cni_core::{CniError, CniResult};
use ipnetwork::IpNetwork;

pub use attach::Prepared;
use config::RoutedConfig;

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

impl VethPlugin for RoutedPlugin {
    type Datapath = Routed;
    fn datapath(&self, conf: &NetConf) -> Result<Routed, CniError> {
        Ok(Routed {
            cfg: RoutedConfig::from_conf(&self.datapath, conf)?,
            dp: self.datapath,
        })
    }
}

/// The routed veth's steps of the veth transaction, for one datapath and configuration.
pub struct Routed {
    dp: Datapath,
    cfg: RoutedConfig,
}

impl VethDatapath for Routed {
    type Prepared = Prepared;

    fn shared(&self) -> Shared<'_> {
        Shared {
            ipam: Some(&self.cfg.ipam),
            ip_masq: self.cfg.ip_masq,
            macspoofchk: None,
        }
    }
    async fn prepare(&self, ctx: &Ctx<'_>) -> Result<Prepared, CniError> {
        attach::prepare(&self.dp, &self.cfg, ctx).await
    }
    async fn links(
        &self,
        ctx: &Ctx<'_>,
        prepared: Prepared,
        made: &mut Made,
    ) -> Result<Links, CniError> {
        attach::links(ctx, prepared, made).await
    }
    async fn configure(
        &self,
        ctx: &Ctx<'_>,
        links: &Links,
        result: &mut CniResult,
    ) -> Result<(), CniError> {
        attach::configure(&self.dp, &self.cfg, ctx, links, result).await
    }
    async fn check(
        &self,
        ctx: &Ctx<'_>,
        prev: &CniResult,
        ips: &[IpNetwork],
    ) -> Result<(), CniError> {
        check::links(ctx, prev, ips).await
    }
    fn del_host_side(&self, call: &Call, target: &Target) -> Result<(), CniError> {
        detach::host_side(call, target)
    }
}
