//! CHECK: the attachment described by `prevResult` is still in place.

use std::path::Path;

use cni_core::netlink::{block_on, Netlink};
use cni_core::netns::NetNs;
use cni_core::skel::{Call, Command, Target};
use cni_core::spec::result::CniResult;
use cni_core::{delegate, masq, CniError};

use crate::attach::parse_mac;
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
        let have = masq::list(&call.conf.name, &target.attachment())?;
        for ip in pod_ips(prev, target, netns)? {
            if !have.iter().any(|h| h.ip() == ip.ip()) {
                return Err(failed(format!(
                    "masquerade rule for {} is missing",
                    ip.ip()
                )));
            }
        }
    }
    Ok(())
}

fn failed(msg: String) -> CniError {
    CniError::internal(format!("CHECK: {msg}"))
}

/// Index in `prev.interfaces` of the pod interface (our ifname, in a sandbox).
fn pod_iface(prev: &CniResult, target: &Target, netns: &Path) -> Result<usize, CniError> {
    let ifname = target.ifname.as_str();
    prev.interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some())
        .ok_or_else(|| {
            failed(format!(
                "prevResult lists no interface {ifname} in a sandbox (expected {})",
                netns.display()
            ))
        })
}

fn pod_ips(
    prev: &CniResult,
    target: &Target,
    netns: &Path,
) -> Result<Vec<ipnetwork::IpNetwork>, CniError> {
    let idx = pod_iface(prev, target, netns)?;
    Ok(prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == idx))
        .map(|ip| ip.address)
        .collect())
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

    // The host veth(s) of prevResult: on the bridge.
    for i in prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_none() && i.name != cfg.bridge)
    {
        let l = host
            .link_by_name(&i.name)
            .await?
            .ok_or_else(|| failed(format!("host veth {} does not exist", i.name)))?;
        if l.master != Some(bridge.index) {
            return Err(failed(format!(
                "host veth {} is not on bridge {}",
                i.name, cfg.bridge
            )));
        }
    }

    // The pod interface.
    let idx = pod_iface(prev, target, netns)?;
    let want = &prev.interfaces[idx];
    let link = pod.link_by_name(ifname).await?.ok_or_else(|| {
        failed(format!(
            "interface {ifname} does not exist in {}",
            netns.display()
        ))
    })?;
    if let Some(mac) = want.mac.as_deref() {
        let want_mac = parse_mac(mac);
        if want_mac.is_none() || link.mac != want_mac {
            return Err(failed(format!(
                "{ifname} has MAC {}, prevResult says {mac}",
                link.mac
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "none".into())
            )));
        }
    }

    // Its addresses.
    let have = pod.addresses(link.index).await?;
    for addr in pod_ips(prev, target, netns)? {
        if !have.contains(&addr) {
            return Err(failed(format!("address {addr} is missing on {ifname}")));
        }
    }

    // Its routes.
    for r in &prev.routes {
        let routes = pod.routes(r.dst.is_ipv6(), r.table).await?;
        let found = routes.iter().any(|k| {
            k.dst.ip() == r.dst.ip()
                && k.dst.prefix() == r.dst.prefix()
                && (r.gw.is_none() || k.gw == r.gw)
        });
        if !found {
            let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(failed(format!(
                "route {}{via} is missing in {}",
                r.dst,
                netns.display()
            )));
        }
    }
    Ok(())
}
