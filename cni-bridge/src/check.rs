//! CHECK: the attachment described by `prevResult` is still in place.

use std::path::Path;

use cni_core::check::{self, failed};
use cni_core::netlink::{block_on, Netlink};
use cni_core::netns::NetNs;
use cni_core::skel::{Call, Command, Target};
use cni_core::spec::result::CniResult;
use cni_core::{delegate, CniError};

use crate::config::BridgeConfig;

/// CHECK with the configuration read from the call.
pub fn check(call: &Call, target: &Target) -> Result<(), CniError> {
    check_with(call, target, &BridgeConfig::from_conf(&call.conf)?)
}

/// CHECK driven by an already-built configuration.
pub fn check_with(call: &Call, target: &Target, cfg: &BridgeConfig) -> Result<(), CniError> {
    let prev = call
        .conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
    let netns = target
        .netns
        .as_deref()
        .ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for CHECK"))?;

    if let Some(plugin) = &cfg.ipam {
        delegate::run(plugin, Command::Check, &call.stdin, &call.env)
            .map_err(|e| e.context(format!("IPAM {plugin}")))?;
    }

    let ns = NetNs::open(netns)?;
    block_on(check_links(cfg, prev, target, &ns, netns)).and_then(|r| r)?;

    if cfg.ip_masq {
        let ips = check::pod_ips(prev, target.ifname.as_str(), netns)?;
        check::masq_present(&call.conf.name, &target.attachment(), &ips)?;
    }
    Ok(())
}

async fn check_links(
    cfg: &BridgeConfig,
    prev: &CniResult,
    target: &Target,
    ns: &NetNs,
    netns: &Path,
) -> Result<(), CniError> {
    let host = Netlink::connect()?;
    let pod = Netlink::connect_in(ns)?;
    let ifname = target.ifname.as_str();

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
    let ips = check::pod_ips(prev, ifname, netns)?;
    let link = check::pod_link(&pod, prev, ifname, netns).await?;
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
    check::addresses_present(&have, &ips, ifname)?;
    check::routes_present(&pod, &prev.routes, netns).await
}
