//! ADD: a routed veth pair.
//!
//! Order: refuse an attachment whose pod interface or host end already exists (before
//! anything is allocated, so a repeated ADD never releases the first one's address);
//! find the MTU (the underlay's, which may fail with nothing to undo); start IPAM and,
//! while it runs (it waits on fsync), make the veth (peer born in the pod) and set the
//! host end up (fixed MAC, proxy ARP); then, with IPAM's answer, the pod's /32 addresses,
//! its gateway and routes, the host's /32 routes, masquerade. On failure [`Rollback`]
//! undoes what was made and releases the allocation if IPAM made one.

use std::net::IpAddr;
use std::path::Path;

use cni_core::netlink::{block_on, Link, MacAddr, Netlink, RouteSpec};
use cni_core::netns::NetNs;
use cni_core::skel::{Call, Command, Target};
use cni_core::spec::config::Attachment;
use cni_core::spec::fields::MIN_MTU;
use cni_core::spec::result::CniResult;
use cni_core::{delegate, masq, sysctl, veth, CniError};
use tracing::{debug, info, warn};

use crate::config::RoutedConfig;
use crate::pod::{self, GATEWAY_V4, GATEWAY_V6, HOST_MAC};
use crate::Datapath;

/// `RT_SCOPE_LINK`.
const SCOPE_LINK: u8 = 253;

pub fn add(dp: &Datapath, call: &Call, target: &Target) -> Result<CniResult, CniError> {
    let cfg = RoutedConfig::from_conf(dp, &call.conf)?;
    let netns = target
        .netns
        .as_deref()
        .ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for ADD"))?;
    let ns = NetNs::open(netns)?;
    block_on(add_async(dp, call, target, &cfg, &ns, netns)).and_then(|r| r)
}

async fn add_async(
    dp: &Datapath,
    call: &Call,
    target: &Target,
    cfg: &RoutedConfig,
    ns: &NetNs,
    netns: &Path,
) -> Result<CniResult, CniError> {
    let host = Netlink::connect()?;
    let pod = Netlink::connect_in(ns)?;
    let ifname = target.ifname.as_str();
    let veth = pod::host_veth_name(&call.conf.name, target.container_id.as_str(), ifname);

    veth::ensure_ifname_free(&pod, ifname, netns).await?;
    if host.link_by_name(&veth).await?.is_some() {
        return Err(CniError::invalid_config(format!(
            "host interface {veth} of container {} / {ifname} already exists (attached in \
             another netns?): DEL that attachment first",
            target.container_id.as_str()
        )));
    }
    let mtu = pod_mtu(dp, cfg, &host).await?;

    // IPAM (which waits on fsync) runs while the veth is made.
    let pending = delegate::add_start(&cfg.ipam, &call.stdin, &call.env)
        .map_err(|e| e.context(format!("IPAM {}", cfg.ipam)))?;
    let mut rb = Rollback::default();
    let links = prepare(ifname, &veth, mtu, ns, netns, &host, &pod, &mut rb).await;
    let ipam_result = delegate::add_finish(&cfg.ipam, pending, call.conf.cni_version)
        .map_err(|e| e.context(format!("IPAM {}", cfg.ipam)));
    rb.ipam = ipam_result.is_ok();
    let attach = Attach {
        call,
        target,
        cfg,
        netns,
        ns,
        host: &host,
        pod: &pod,
    };
    let outcome = match (links, ipam_result) {
        (Ok(links), Ok(result)) => match refuse_family(dp, &host, &result).await {
            Ok(()) => attach.run(result, links, &mut rb).await,
            Err(e) => Err(e),
        },
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    };
    match outcome {
        Ok(r) => Ok(r),
        Err(e) => {
            warn!(error = %e, "ADD failed; undoing");
            rb.undo(&attach).await;
            Err(e)
        }
    }
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

/// The configured MTU, else the underlay's minus the datapath's overhead.
async fn pod_mtu(dp: &Datapath, cfg: &RoutedConfig, host: &Netlink) -> Result<u32, CniError> {
    if let Some(m) = cfg.mtu {
        return Ok(m);
    }
    let u = host.underlay(&cfg.underlay).await?;
    match u.mtu.checked_sub(dp.overhead) {
        Some(m) if m >= MIN_MTU => Ok(m),
        _ => Err(CniError::invalid_config(format!(
            "underlay {} has MTU {}, too small for {}'s {} bytes of overhead: set \"mtu\"",
            u.name, u.mtu, dp.name, dp.overhead
        ))),
    }
}

/// What [`prepare`] made.
struct Links {
    host_veth: Link,
    pod_link: Link,
    pod_mac: MacAddr,
    mtu: u32,
}

/// The part of ADD that needs no address: the veth (peer born in the pod), the host
/// end with its fixed MAC, proxy ARP, up.
#[allow(clippy::too_many_arguments)]
async fn prepare(
    ifname: &str,
    veth: &str,
    mtu: u32,
    ns: &NetNs,
    netns: &Path,
    host: &Netlink,
    pod: &Netlink,
    rb: &mut Rollback,
) -> Result<Links, CniError> {
    let host_veth = host
        .create_veth(veth, ifname, ns, Some(mtu), None)
        .await
        .map_err(|e| e.context(format!("creating veth {veth} <-> {ifname}")))?;
    // Only now: a failed create may be a concurrent ADD's veth, which is not ours to undo.
    rb.veth = Some(veth.to_string());
    let hv = host_veth.index;
    host.set_mac(hv, HOST_MAC).await?;
    // The pod's IPv4 gateway is answered by proxy ARP, at once (not after the default
    // random delay of up to 0.8 s).
    for (key, value) in [
        (format!("net.ipv4.conf.{veth}.proxy_arp"), "1"),
        (format!("net.ipv4.neigh.{veth}.proxy_delay"), "0"),
    ] {
        sysctl::set(&key, value)?;
    }
    // The link-local gateway address must be usable at once; absent without IPv6.
    if let Err(e) = sysctl::set(&format!("net.ipv6.conf.{veth}.accept_dad"), "0") {
        debug!(error = %e, "accept_dad not set on the host end (IPv6 disabled?)");
    }
    host.set_up(hv)
        .await
        .map_err(|e| e.context(format!("setting {veth} up")))?;
    let pod_link = pod.link_by_name(ifname).await?.ok_or_else(|| {
        CniError::internal(format!(
            "{ifname} not found in {} after creating it",
            netns.display()
        ))
    })?;
    let pod_mac = pod_link
        .mac
        .ok_or_else(|| CniError::internal(format!("{ifname} has no MAC address")))?;
    Ok(Links {
        host_veth: Link {
            mac: Some(HOST_MAC),
            ..host_veth
        },
        pod_link,
        pod_mac,
        mtu,
    })
}

/// What an ADD has made, so that a failure can undo it.
#[derive(Default)]
struct Rollback {
    /// Host veth name, once created.
    veth: Option<String>,
    /// IPAM has allocated: release on undo.
    ipam: bool,
    masq: bool,
}

struct Attach<'a> {
    call: &'a Call,
    target: &'a Target,
    cfg: &'a RoutedConfig,
    netns: &'a Path,
    ns: &'a NetNs,
    host: &'a Netlink,
    pod: &'a Netlink,
}

impl Attach<'_> {
    fn att(&self) -> Attachment {
        self.target.attachment()
    }

    async fn run(
        &self,
        mut result: CniResult,
        links: Links,
        rb: &mut Rollback,
    ) -> Result<CniResult, CniError> {
        let ifname = self.target.ifname.as_str();
        let Links {
            host_veth,
            pod_link,
            pod_mac,
            mtu,
        } = links;
        pod::plan(&mut result).map_err(|e| e.context(format!("IPAM {}", self.cfg.ipam)))?;
        let has_v4 = result.ips.iter().any(|i| i.address.is_ipv4());
        let has_v6 = result.ips.iter().any(|i| i.address.is_ipv6());

        // Inside the pod: addresses, up, the gateway, routes.
        if has_v6 {
            // A /128 behind a point-to-point veth has nobody to collide with.
            let key = format!("net.ipv6.conf.{ifname}.accept_dad");
            self.ns
                .run(|| sysctl::set(&key, "0"))
                .and_then(|r| r)
                .map_err(|e| e.context(format!("disabling DAD on {ifname}")))?;
        }
        let p = pod_link.index;
        veth::address_and_up(self.pod, p, ifname, &result.ips).await?;
        if has_v4 {
            let gw = pod::host_prefix(IpAddr::V4(GATEWAY_V4));
            self.pod
                .add_route(&RouteSpec {
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
                self.pod
                    .replace_neigh(p, gw, HOST_MAC)
                    .await
                    .map_err(|e| e.context(format!("gateway {gw} in the pod")))?;
            }
        }
        veth::add_pod_routes(self.pod, p, &result.routes, |r| r.gw).await?;

        // On the host: forwarding, a host route to each address.
        sysctl::enable_forwarding(has_v4, has_v6)?;
        for ip in &result.ips {
            self.host
                .add_route(&RouteSpec {
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
        if self.cfg.ip_masq {
            rb.masq = true;
            // Never between pods of this network (the IPAM subnets / the cluster pool).
            let pod_nets = masq::pod_networks(&self.call.conf);
            for ip in &result.ips {
                masq::add(&self.call.conf.name, &self.att(), ip.address, &pod_nets)
                    .map_err(|e| e.context(format!("ipMasq for {}", ip.address)))?;
            }
        }

        result.interfaces =
            veth::result_interfaces(&host_veth, ifname, pod_mac, mtu, self.netns).to_vec();
        result.fill_dns(self.call.conf.dns.as_ref());
        info!(
            container = %self.target.container_id,
            ifname,
            host_veth = %host_veth.name,
            mtu,
            ips = ?result.ips.iter().map(|i| i.address.to_string()).collect::<Vec<_>>(),
            "attached"
        );
        // A plugin later in a chain keeps what came before it (SPEC "ADD").
        Ok(result.chained_after(self.call.conf.prev_result.as_ref()))
    }
}

impl Rollback {
    /// Best effort: every step is tried, failures are logged.
    async fn undo(&self, a: &Attach<'_>) {
        if self.masq {
            if let Err(e) = masq::del(&a.call.conf.name, &a.att()) {
                warn!(error = %e, "undo: removing masquerade rules");
            }
        }
        if let Some(veth) = &self.veth {
            veth::undo_pair(a.host, a.pod, veth, a.target.ifname.as_str()).await;
        }
        if self.ipam {
            let plugin = &a.cfg.ipam;
            if let Err(e) = delegate::run(plugin, Command::Del, &a.call.stdin, &a.call.env) {
                warn!(error = %e, plugin, "undo: releasing IPAM allocation");
            }
        }
    }
}
