//! DEL: best effort and idempotent. Removes the pod interface (which takes the host end
//! and its routes with it), the host end if it outlived its pod, the masquerade rules,
//! then releases the IPAM allocation. Succeeds when the netns, the interface or the
//! allocation is gone.

use cni_core::netlink::{block_on, Netlink};
use cni_core::skel::{Call, Command, Target};
use cni_core::veth::del_in_netns;
use cni_core::{delegate, masq, CniError};
use tracing::{debug, info, warn};

use crate::config::RoutedConfig;
use crate::pod;
use crate::Datapath;

pub fn del(dp: &Datapath, call: &Call, target: &Target) -> Result<(), CniError> {
    let cfg = RoutedConfig::from_conf(dp, &call.conf)?;
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
    let veth = pod::host_veth_name(&call.conf.name, target.container_id.as_str(), ifname);
    keep(block_on(del_host_veth(&veth)).and_then(|r| r));

    // Rules are removed whatever the configuration says now (it may have changed since
    // ADD); a failure only counts when the option is on.
    match masq::del(&call.conf.name, &target.attachment()) {
        Err(e) if cfg.ip_masq => keep(Err(e.context("removing masquerade rules").into())),
        Err(e) => debug!(error = %e, "masquerade cleanup (option off) failed"),
        Ok(()) => {}
    }

    // Release the address last, so it is never handed out while still routed here.
    keep(
        delegate::run(&cfg.ipam, Command::Del, &call.stdin, &call.env)
            .map_err(|e| e.context(format!("IPAM {}", cfg.ipam))),
    );

    match first_err {
        Some(e) => Err(e),
        None => {
            info!(container = %target.container_id, ifname, "detached");
            Ok(())
        }
    }
}

/// The host end, when it outlived its pod end (a DEL without the netns while the
/// namespace is still held elsewhere): its routes go with it.
async fn del_host_veth(veth: &str) -> Result<(), CniError> {
    let host = Netlink::connect()?;
    if let Some(l) = host.link_by_name(veth).await? {
        debug!(veth, "host end still there; deleting it");
        host.delete_link(l.index).await?;
    }
    Ok(())
}
