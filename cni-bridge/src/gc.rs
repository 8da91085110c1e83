//! GC and STATUS.

use cni_core::skel::{Call, Command};
use cni_core::{delegate, macspoof, masq, CniError};
use tracing::warn;

use crate::config::BridgeConfig;

/// Delegates GC to IPAM, then drops the masquerade and macspoof rules of this network
/// whose attachment is not in `cni.dev/valid-attachments`.
pub fn gc(call: &Call) -> Result<(), CniError> {
    gc_with(call, &BridgeConfig::from_conf(&call.conf)?)
}

/// GC driven by an already-built configuration.
pub fn gc_with(call: &Call, cfg: &BridgeConfig) -> Result<(), CniError> {
    let mut first_err = None;
    if let Some(plugin) = &cfg.ipam {
        if let Err(e) = delegate::run(plugin, Command::Gc, &call.stdin, &call.env) {
            first_err.get_or_insert(e.context(format!("IPAM {plugin}")));
        }
    }
    match &call.conf.valid_attachments {
        Some(keep) => {
            let name = &call.conf.name;
            if let Err(e) = masq::gc(name, keep) {
                first_err.get_or_insert(e.context("masquerade GC").into());
            }
            if let Err(e) = macspoof::gc(name, keep) {
                first_err.get_or_insert(e.context("macspoof GC").into());
            }
        }
        // Without the list we cannot tell what is live: keep everything.
        None => warn!("GC without cni.dev/valid-attachments: keeping all rules"),
    }
    first_err.map_or(Ok(()), Err)
}

/// Ready when the IPAM plugin is (no IPAM: always ready).
pub fn status(call: &Call) -> Result<(), CniError> {
    status_with(call, &BridgeConfig::from_conf(&call.conf)?)
}

/// STATUS driven by an already-built configuration.
pub fn status_with(call: &Call, cfg: &BridgeConfig) -> Result<(), CniError> {
    match &cfg.ipam {
        Some(plugin) => delegate::run(plugin, Command::Status, &call.stdin, &call.env),
        None => Ok(()),
    }
}
