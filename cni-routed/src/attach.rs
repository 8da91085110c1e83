//! ADD's steps particular to the routed veth (the transaction is `cni_core::attach`):
//! before IPAM, refuse an attachment whose host end already exists and find the MTU
//! (the underlay's, which may fail with nothing to undo); while IPAM runs, make the
//! veth (peer born in the pod) and set the host end up (fixed MAC, proxy ARP); with
//! IPAM's answer, the pod's /32 addresses, its gateway and routes, the host's /32
//! routes. The host end is recorded for undo only once this ADD has created it.

use std::net::IpAddr;

use cni_core::attach::{Ctx, Links, Made};
use cni_core::netlink::{HostEnd, Ipv4Conf, Link, MacAddr, Netlink, RouteSpec, VethPair};
use cni_core::spec::fields::MIN_MTU;
use cni_core::spec::result::CniResult;
use cni_core::{sysctl, veth, CniError};
use tracing::debug;

use crate::config::RoutedConfig;
use crate::pod::{self, GATEWAY_V4, GATEWAY_V6, HOST_MAC};
use crate::Datapath;

/// `RT_SCOPE_LINK`.
const SCOPE_LINK: u8 = 253;

/// What ADD finds before IPAM runs (for [`crate::Routed`]'s links).
pub struct Prepared {
    /// The host end's name.
    veth: String,
    mtu: u32,
}

/// Before anything is allocated: the host end must not exist (it would be another
/// netns's attachment of the same container and ifname); the pod MTU.
pub(crate) async fn prepare(
    dp: &Datapath,
    cfg: &RoutedConfig,
    ctx: &Ctx<'_>,
) -> Result<Prepared, CniError> {
    let veth = pod::host_veth_name(
        &ctx.call.conf.name,
        ctx.target.container_id.as_str(),
        ctx.ifname,
    );
    if ctx.host.link_by_name(&veth).await?.is_some() {
        return Err(CniError::invalid_config(format!(
            "host interface {veth} of container {} / {} already exists (attached in \
             another netns?): DEL that attachment first",
            ctx.target.container_id.as_str(),
            ctx.ifname
        )));
    }
    let mtu = pod_mtu(dp, cfg, ctx.host).await?;
    Ok(Prepared { veth, mtu })
}

/// The configured MTU, else the underlay's minus the datapath's overhead.
async fn pod_mtu(dp: &Datapath, cfg: &RoutedConfig, host: &Netlink) -> Result<u32, CniError> {
    if let Some(m) = cfg.mtu {
        return Ok(m);
    }
    // The underlay's link only: its addresses do not matter to the MTU (one address
    // dump less per ADD).
    let u = host.underlay_link(&cfg.underlay).await?;
    match u.mtu.checked_sub(dp.overhead) {
        Some(m) if m >= MIN_MTU => Ok(m),
        _ => Err(CniError::invalid_config(format!(
            "underlay {} has MTU {}, too small for {}'s {} bytes of overhead: set \"mtu\"",
            u.name, u.mtu, dp.name, dp.overhead
        ))),
    }
}

/// The part of ADD that needs no address: the veth (peer born in the pod), the host
/// end with its fixed MAC, proxy ARP, up.
pub(crate) async fn links(
    ctx: &Ctx<'_>,
    Prepared { veth, mtu }: Prepared,
    made: &mut Made,
) -> Result<Links, CniError> {
    let (host, ifname) = (ctx.host, ctx.ifname);
    // The pod end's MAC is picked here (random, as the kernel would) so that the pod end
    // needs no lookup after the create.
    let pod_mac = MacAddr::random();
    // The host end is made with its fixed MAC and up by the create request itself: no
    // RTM_SETLINKs after it. Up before the settings below is safe: the host end has no
    // carrier (so no IPv6 link-local address, no DAD, no traffic) until the pod end goes
    // up, with its addresses, in `configure`.
    let pair = VethPair {
        host_name: &veth,
        peer_name: ifname,
        peer_ns: ctx.ns,
        mtu: Some(mtu),
        peer_mac: Some(pod_mac),
        host: HostEnd {
            mac: Some(HOST_MAC),
            master: None,
            up: true,
        },
    };
    let host_veth = host
        .create_veth_pair(&pair)
        .await
        .map_err(|e| e.context(format!("creating veth {veth} <-> {ifname}")))?;
    // Only now: a failed create may be a concurrent ADD's veth, which is not ours to undo.
    made.veth = Some(veth.clone());
    let hv = host_veth.index;
    // The pod's IPv4 gateway is answered by proxy ARP, at once (not after the default
    // random delay of up to 0.8 s). Both over netlink (no /proc/sys path walk);
    // accept_dad has no netlink setter.
    host.set_ipv4_conf(hv, &[(Ipv4Conf::ProxyArp, 1)]).await?;
    host.set_arp_proxy_delay(hv, 0).await?;
    // The link-local gateway address must be usable at once; absent without IPv6. Set
    // before the host end gets carrier (when the pod end goes up), which is when the
    // kernel makes the link-local address and would start DAD on it.
    if let Err(e) = sysctl::set(&format!("net.ipv6.conf.{veth}.accept_dad"), "0") {
        debug!(error = %e, "accept_dad not set on the host end (IPv6 disabled?)");
    }
    let pod_index = ctx.pod_index(&host_veth).await?;
    Ok(Links {
        master: None,
        master_mac_fixed: false,
        host_veth: Link {
            mac: Some(HOST_MAC),
            ..host_veth
        },
        pod_index,
        pod_mac,
        mtu,
    })
}

/// An IPv6 address for a datapath whose IPv6 needs a host device that is not there
/// (`cni-ipip` without `sit0`).
async fn refuse_family(dp: &Datapath, host: &Netlink, result: &CniResult) -> Result<(), CniError> {
    let (Some(ip), Some(dev)) = (
        result.ips.iter().find(|ip| ip.address.is_ipv6()),
        dp.ipv6_needs,
    ) else {
        return Ok(());
    };
    if host.link_by_name(dev).await?.is_some() {
        return Ok(());
    }
    Err(CniError::invalid_config(format!(
        "IPAM gave the IPv6 address {}, but {} carries IPv6 between nodes through {dev}, \
         and this node has none (no sit module): load it (modprobe sit), remove the IPv6 \
         range/pool from ipam, or use cni-vxlan (IPv4 and IPv6) or cni-routed (host-gw, BGP)",
        ip.address, dp.name
    )))
}

/// The part of ADD that needs IPAM's answer: inside the pod the addresses, up, the
/// gateway, routes; on the host forwarding and a host route to each address.
pub(crate) async fn configure(
    dp: &Datapath,
    cfg: &RoutedConfig,
    ctx: &Ctx<'_>,
    links: &Links,
    result: &mut CniResult,
) -> Result<(), CniError> {
    let (host, pod, ifname) = (ctx.host, ctx.pod, ctx.ifname);
    refuse_family(dp, host, result).await?;
    pod::plan(result).map_err(|e| e.context(format!("IPAM {}", cfg.ipam)))?;
    let has_v4 = result.ips.iter().any(|i| i.address.is_ipv4());
    let has_v6 = result.ips.iter().any(|i| i.address.is_ipv6());

    if has_v6 {
        // A /128 behind a point-to-point veth has nobody to collide with.
        let key = format!("net.ipv6.conf.{ifname}.accept_dad");
        ctx.ns
            .run(|| sysctl::set(&key, "0"))
            .and_then(|r| r)
            .map_err(|e| e.context(format!("disabling DAD on {ifname}")))?;
    }
    let p = links.pod_index;
    veth::address_and_up(pod, p, ifname, &result.ips).await?;
    if has_v4 {
        let gw = pod::host_prefix(IpAddr::V4(GATEWAY_V4));
        pod.add_route(&RouteSpec {
            oif: Some(p),
            scope: Some(SCOPE_LINK),
            ..RouteSpec::new(gw)
        })
        .await
        .map_err(|e| e.context(format!("adding route {gw} dev {ifname} in the pod")))?;
    }
    for (want, gw) in [
        (has_v4, IpAddr::V4(GATEWAY_V4)),
        (has_v6, IpAddr::V6(GATEWAY_V6)),
    ] {
        if want {
            // No ARP/NDP round trip before the first packet, and no dependence on
            // the host's own routes (proxy ARP answers only for routable targets).
            pod.replace_neigh(p, gw, HOST_MAC)
                .await
                .map_err(|e| e.context(format!("gateway {gw} in the pod")))?;
        }
    }
    veth::add_pod_routes(pod, p, &result.routes, |r| r.gw).await?;

    sysctl::enable_forwarding(has_v4, has_v6)?;
    let host_veth = &links.host_veth;
    for ip in &result.ips {
        host.add_route(&RouteSpec {
            oif: Some(host_veth.index),
            scope: ip.address.is_ipv4().then_some(SCOPE_LINK),
            ..RouteSpec::new(ip.address)
        })
        .await
        .map_err(|e| {
            e.context(format!(
                "host route {} dev {} (is the address routed to another pod?)",
                ip.address, host_veth.name
            ))
        })?;
    }
    Ok(())
}
