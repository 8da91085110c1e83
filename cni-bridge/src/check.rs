//! CHECK's part particular to the bridge (the rest is `cni_core::attach::check`): the
//! bridge, the pod interface's host end on it, the pod's addresses and routes.

use cni_core::attach::Ctx;
use cni_core::check::{self, failed};
use cni_core::spec::result::CniResult;
use cni_core::CniError;
use ipnetwork::IpNetwork;

use crate::config::BridgeConfig;

pub(crate) async fn links(
    cfg: &BridgeConfig,
    ctx: &Ctx<'_>,
    prev: &CniResult,
    ips: &[IpNetwork],
) -> Result<(), CniError> {
    let (host, pod, ifname, netns) = (ctx.host, ctx.pod, ctx.ifname, ctx.netns);

    // The bridge.
    let bridge = host
        .link_by_name(&cfg.bridge)
        .await?
        .ok_or_else(|| failed(format!("bridge {} does not exist", cfg.bridge)))?;
    if bridge.kind.as_deref() != Some("bridge") {
        return Err(failed(format!("{} is not a bridge", cfg.bridge)));
    }
    if bridge.promisc != cfg.promisc_mode {
        return Err(failed(format!(
            "bridge {} promiscuous mode is {}, configuration says promiscMode={}",
            cfg.bridge,
            if bridge.promisc { "on" } else { "off" },
            cfg.promisc_mode
        )));
    }

    // The pod interface, then its host end (the veth peer, found by the kernel's
    // IFLA_LINK, not by name): on the bridge. Other interfaces of prevResult that are
    // not in the sandbox belong to other plugins of the chain (e.g. the `bandwidth`
    // plugin's ifb device) and are not ours to check, as in the reference plugin.
    let link = check::pod_link(pod, prev, ifname, netns).await?;
    let host_end = match link.peer {
        Some(i) => host.link_by_index(i).await?,
        None => None,
    }
    .filter(|l| l.kind.as_deref() == Some("veth"))
    .ok_or_else(|| failed(format!("{ifname} has no veth peer in the host namespace")))?;
    if host_end.master != Some(bridge.index) {
        return Err(failed(format!(
            "host veth {} is not on bridge {}",
            host_end.name, cfg.bridge
        )));
    }
    for i in prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_none() && i.name != cfg.bridge && i.name != host_end.name)
    {
        tracing::debug!(interface = %i.name, "CHECK: not ours (another plugin of the chain); skipped");
    }

    // The pod's addresses, its routes.
    let have = pod.addresses(link.index).await?;
    check::addresses_present(&have, ips, ifname)?;
    check::routes_present(pod, &prev.routes, netns).await
}
