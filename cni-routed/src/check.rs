//! CHECK: the attachment described by `prevResult` is still in place: the veth (both
//! ends), the pod's addresses, gateway and routes, the host routes, masquerade.

use std::net::IpAddr;
use std::path::Path;

use cni_core::check::{self, failed};
use cni_core::netlink::{block_on, Netlink, RouteSpec};
use cni_core::netns::NetNs;
use cni_core::skel::{Call, Command, Target};
use cni_core::spec::result::CniResult;
use cni_core::{delegate, CniError};
use ipnetwork::IpNetwork;

use crate::config::RoutedConfig;
use crate::pod::{self, GATEWAY_V4};
use crate::Datapath;

pub fn check(dp: &Datapath, call: &Call, target: &Target) -> Result<(), CniError> {
    let cfg = RoutedConfig::from_conf(dp, &call.conf)?;
    let prev = call
        .conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
    let netns = target
        .netns
        .as_deref()
        .ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for CHECK"))?;

    delegate::run(&cfg.ipam, Command::Check, &call.stdin, &call.env)
        .map_err(|e| e.context(format!("IPAM {}", cfg.ipam)))?;

    let ips = check::pod_ips(prev, target.ifname.as_str(), netns)?;
    let veth = pod::host_veth_name(
        &call.conf.name,
        target.container_id.as_str(),
        target.ifname.as_str(),
    );
    let ns = NetNs::open(netns)?;
    block_on(check_links(prev, &ips, &veth, target, &ns, netns)).and_then(|r| r)?;

    if cfg.ip_masq {
        check::masq_present(&call.conf.name, &target.attachment(), &ips)?;
    }
    Ok(())
}

async fn check_links(
    prev: &CniResult,
    ips: &[IpNetwork],
    veth: &str,
    target: &Target,
    ns: &NetNs,
    netns: &Path,
) -> Result<(), CniError> {
    let host = Netlink::connect()?;
    let pod = Netlink::connect_in(ns)?;
    let ifname = target.ifname.as_str();

    let hv = host
        .link_by_name(veth)
        .await?
        .ok_or_else(|| failed(format!("host veth {veth} does not exist")))?;
    if !hv.up {
        return Err(failed(format!("host veth {veth} is down")));
    }
    let link = check::pod_link(&pod, prev, ifname, netns).await?;

    // The pod's addresses, and the host's route to each on the host end.
    let have = pod.addresses(link.index).await?;
    for v6 in [false, true] {
        let fam: Vec<IpNetwork> = ips.iter().filter(|a| a.is_ipv6() == v6).copied().collect();
        if fam.is_empty() {
            continue;
        }
        check::addresses_present(&have, &fam, ifname)?;
        let host_routes = host.routes(v6, None).await?;
        for addr in fam {
            let want = RouteSpec {
                oif: Some(hv.index),
                ..RouteSpec::new(pod::host_prefix(addr.ip()))
            };
            if !host_routes.iter().any(|r| want.matches(r)) {
                return Err(failed(format!(
                    "host route {} dev {veth} is missing",
                    want.dst
                )));
            }
        }
    }

    // The pod's gateway, then the routes of prevResult.
    if ips.iter().any(|a| a.is_ipv4()) {
        let gw = pod::host_prefix(IpAddr::V4(GATEWAY_V4));
        let routes = pod.routes(false, None).await?;
        if !routes
            .iter()
            .any(|r| r.dst == gw && r.oif == Some(link.index))
        {
            return Err(failed(format!(
                "route {gw} dev {ifname} (the gateway) is missing in {}",
                netns.display()
            )));
        }
    }
    check::routes_present(&pod, &prev.routes, netns).await
}
