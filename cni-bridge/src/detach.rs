//! DEL: best effort and idempotent. Removes the pod interface (which takes the host end
//! with it), the macspoof and masquerade rules of the attachment, then releases the
//! IPAM allocation. Succeeds when the netns, the interface or the allocation is gone.

use cni_core::skel::{Call, Command, Target};
use cni_core::veth::del_in_netns;
use cni_core::{delegate, macspoof, masq, CniError};
use tracing::{debug, info, warn};

use crate::config::BridgeConfig;

/// DEL with the configuration read from the call.
pub fn del(call: &Call, target: &Target) -> Result<(), CniError> {
    del_with(call, target, &BridgeConfig::from_conf(&call.conf)?)
}

/// DEL driven by an already-built configuration.
pub fn del_with(call: &Call, target: &Target, cfg: &BridgeConfig) -> Result<(), CniError> {
    let ifname = target.ifname.as_str();
    let mut first_err: Option<CniError> = None;
    let mut keep = |r: Result<(), CniError>| {
        if let Err(e) = r {
            warn!(error = %e, "DEL step failed");
            first_err.get_or_insert(e);
        }
    };

    if let Some(path) = target.netns.as_deref() {
        keep(del_in_netns(path, ifname));
    }

    // Rules are removed whatever the configuration says now (it may have changed since
    // ADD); a failure only counts when the option is on.
    let name = &call.conf.name;
    let att = target.attachment();
    match macspoof::del(name, &att) {
        Err(e) if cfg.macspoofchk => keep(Err(e.context("removing macspoof rules").into())),
        Err(e) => debug!(error = %e, "macspoof cleanup (option off) failed"),
        Ok(()) => {}
    }
    match masq::del(name, &att) {
        Err(e) if cfg.ip_masq => keep(Err(e.context("removing masquerade rules").into())),
        Err(e) => debug!(error = %e, "masquerade cleanup (option off) failed"),
        Ok(()) => {}
    }

    // Release the address last, so it is never handed out while still configured.
    if let Some(plugin) = &cfg.ipam {
        keep(
            delegate::run(plugin, Command::Del, &call.stdin, &call.env)
                .map_err(|e| e.context(format!("IPAM {plugin}"))),
        );
    }

    match first_err {
        Some(e) => Err(e),
        None => {
            info!(container = %target.container_id, ifname, "detached");
            Ok(())
        }
    }
}
