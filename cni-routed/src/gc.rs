//! GC and STATUS.

use cni_core::skel::{Call, Command};
use cni_core::{delegate, masq, CniError};
use tracing::warn;

use crate::config::RoutedConfig;
use crate::Datapath;

/// Delegates GC to IPAM, then drops the masquerade rules of this network whose
/// attachment is not in `cni.dev/valid-attachments`. Host veths need no GC: each dies
/// with its pod's netns.
pub fn gc(dp: &Datapath, call: &Call) -> Result<(), CniError> {
    let cfg = RoutedConfig::from_conf(dp, &call.conf)?;
    let mut first_err = None;
    if let Err(e) = delegate::run(&cfg.ipam, Command::Gc, &call.stdin, &call.env) {
        first_err.get_or_insert(e.context(format!("IPAM {}", cfg.ipam)));
    }
    match &call.conf.valid_attachments {
        Some(keep) => {
            if let Err(e) = masq::gc(&call.conf.name, keep) {
                first_err.get_or_insert(e.context("masquerade GC").into());
            }
        }
        // Without the list we cannot tell what is live: keep everything.
        None => warn!("GC without cni.dev/valid-attachments: keeping all rules"),
    }
    first_err.map_or(Ok(()), Err)
}

/// Ready when the IPAM plugin is.
pub fn status(dp: &Datapath, call: &Call) -> Result<(), CniError> {
    let cfg = RoutedConfig::from_conf(dp, &call.conf)?;
    delegate::run(&cfg.ipam, Command::Status, &call.stdin, &call.env)
}
