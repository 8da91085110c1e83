//! The bridge datapath: pods on a Linux bridge through veth pairs, the gateway on the
//! bridge, optional masquerade and MAC spoof check. Behaves like the reference `bridge`
//! plugin (see README.md for every option).
//!
//! - [`config`]: the plugin's configuration, parsed once.
//! - [`attach`] (ADD), [`detach`] (DEL), [`check`] (CHECK), [`gc`] (GC, STATUS).
//!   Each also has a `*_with` form driven by an already-built [`config::BridgeConfig`],
//!   so a plugin built on this one sets its own defaults and calls in.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod attach;
pub mod check;
pub mod config;
pub mod detach;
pub mod gateway;
pub mod gc;

use cni_core::skel::{Call, Plugin, Target};
use cni_core::{CniError, CniResult};

/// The `cni-bridge` plugin.
pub struct BridgePlugin;

impl Plugin for BridgePlugin {
    fn add(&self, call: &Call, target: &Target) -> Result<CniResult, CniError> {
        attach::add(call, target)
    }
    fn del(&self, call: &Call, target: &Target) -> Result<(), CniError> {
        detach::del(call, target)
    }
    fn check(&self, call: &Call, target: &Target) -> Result<(), CniError> {
        check::check(call, target)
    }
    fn gc(&self, call: &Call) -> Result<(), CniError> {
        gc::gc(call)
    }
    fn status(&self, call: &Call) -> Result<(), CniError> {
        gc::status(call)
    }
    fn configures_netns(&self) -> bool {
        true
    }
}
