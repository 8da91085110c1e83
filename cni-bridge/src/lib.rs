//! The bridge datapath: pods on a Linux bridge through veth pairs, the gateway on the
//! bridge, optional masquerade and MAC spoof check. Behaves like the reference `bridge`
//! plugin (see README.md for every option).
//!
//! The transaction (ADD and its undo, DEL, CHECK, GC, STATUS) is `cni_core::attach`'s;
//! this crate supplies the bridge's steps as [`Bridge`].
//!
//! - [`config`]: the plugin's configuration, parsed once.
//! - [`gateway`]: which address the pod routes through, and that address on the bridge.
//! - `attach` (ADD's links and addresses), `check` (CHECK of the links).
//!
//! A plugin built on this one (`cni-vxlan`) reads [`config::BridgeFields`] with its own
//! defaults and wraps [`Bridge`] in its own datapath.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod attach;
mod check;
pub mod config;
pub mod gateway;

use cni_core::attach::{Ctx, Links, Made, Shared, VethDatapath, VethPlugin};
use cni_core::spec::config::NetConf;
use cni_core::spec::result::CniResult;
use cni_core::CniError;
use ipnetwork::IpNetwork;

pub use attach::POD_IFACE;
use config::BridgeConfig;

/// The `cni-bridge` plugin.
pub struct BridgePlugin;

impl VethPlugin for BridgePlugin {
    type Datapath = Bridge;
    fn datapath(&self, conf: &NetConf) -> Result<Bridge, CniError> {
        Ok(Bridge::new(BridgeConfig::from_conf(conf)?))
    }
}

/// The bridge's steps of the veth transaction, for one configuration.
#[derive(Clone, Debug)]
pub struct Bridge {
    cfg: BridgeConfig,
}

impl Bridge {
    pub fn new(cfg: BridgeConfig) -> Bridge {
        Bridge { cfg }
    }
    pub fn config(&self) -> &BridgeConfig {
        &self.cfg
    }
}

impl VethDatapath for Bridge {
    /// The pod's (and a new bridge's) MTU; `None`: the bridge's.
    type Prepared = Option<u32>;

    fn shared(&self) -> Shared<'_> {
        Shared {
            ipam: self.cfg.ipam.as_deref(),
            ip_masq: self.cfg.ip_masq,
            macspoofchk: Some(self.cfg.macspoofchk),
        }
    }
    async fn prepare(&self, _ctx: &Ctx<'_>) -> Result<Option<u32>, CniError> {
        Ok(self.cfg.mtu)
    }
    async fn links(
        &self,
        ctx: &Ctx<'_>,
        mtu: Option<u32>,
        made: &mut Made,
    ) -> Result<Links, CniError> {
        attach::links(&self.cfg, ctx, mtu, made).await
    }
    async fn configure(
        &self,
        ctx: &Ctx<'_>,
        links: &Links,
        result: &mut CniResult,
    ) -> Result<(), CniError> {
        attach::configure(&self.cfg, ctx, links, result).await
    }
    async fn check(
        &self,
        ctx: &Ctx<'_>,
        prev: &CniResult,
        ips: &[IpNetwork],
    ) -> Result<(), CniError> {
        check::links(&self.cfg, ctx, prev, ips).await
    }
}
