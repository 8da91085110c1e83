//! ADD's steps particular to the bridge (the transaction is `cni_core::attach`): while
//! IPAM runs, ensure the bridge and make the veth (peer born in the pod) with its host
//! end on the bridge and up; with IPAM's answer, the gateway on the bridge, the pod's
//! addresses and routes. A bridge this ADD created is undone with it (e.g. when IPAM
//! refused its configuration), unless another pod's port joined it meanwhile.

use cni_core::attach::{Ctx, Links, Made};
use cni_core::netlink::{BridgeSpec, HostEnd, Ipv4Conf, Link, MacAddr, Netlink, VethPair};
use cni_core::spec::result::CniResult;
use cni_core::{sysctl, veth, CniError};
use tracing::debug;

use crate::config::BridgeConfig;
use crate::gateway;

/// Index of the pod interface in the result's `interfaces` (bridge, host veth, pod).
pub const POD_IFACE: usize = 2;

/// How many host veth names to try when a random name is taken.
const VETH_NAME_TRIES: usize = 4;

/// The part of ADD that needs no address: the bridge, the veth (peer born in the pod),
/// the host end on the bridge and up. `mtu`: the pod's, else the bridge's.
pub(crate) async fn links(
    cfg: &BridgeConfig,
    ctx: &Ctx<'_>,
    mtu: Option<u32>,
    made: &mut Made,
) -> Result<Links, CniError> {
    let host = ctx.host;
    let spec = BridgeSpec {
        name: cfg.bridge.clone(),
        mtu,
        mac: None,
        promisc: cfg.promisc_mode,
        vlan_filtering: cfg.vlan.is_some(),
    };
    // Whether this ADD created the bridge (undone with it on failure).
    let (br, created) = host
        .ensure_bridge_created(&spec)
        .await
        .map_err(|e| e.context(format!("bridge {}", cfg.bridge)))?;
    if created {
        made.master = Some(br.clone());
    }

    // The veth: host end `vethXXXXXXXX`, peer born in the pod as CNI_IFNAME.
    let mtu = mtu.unwrap_or(if br.mtu > 0 { br.mtu } else { 1500 });
    // The pod end's MAC is ours to pick (as the kernel would: random, locally
    // administered), so that it needs no lookup after the create.
    let pod_mac = cfg.mac.unwrap_or_else(MacAddr::random);
    // The host end is made on the bridge and up by the create request itself (the pod
    // end has no carrier until it goes up with its addresses, so nothing flows through
    // the port before hairpin and vlan below are set).
    let host_end = HostEnd {
        mac: None,
        master: Some(br.index),
        up: true,
    };
    let host_veth = create_veth(host, ctx, &cfg.bridge, pod_mac, mtu, host_end, made).await?;
    let pod_index = ctx.pod_index(&host_veth).await?;

    let hv = host_veth.index;
    if cfg.hairpin_mode {
        host.set_hairpin(hv, true)
            .await
            .map_err(|e| e.context("hairpin mode"))?;
    }
    if let Some(vid) = cfg.vlan {
        host.set_port_vlan(hv, vid)
            .await
            .map_err(|e| e.context(format!("vlan {vid}")))?;
    }
    Ok(Links {
        master_mac_fixed: br.mac == Some(spec.pinned_mac()),
        master: Some(br),
        host_veth,
        pod_index,
        pod_mac,
        mtu,
    })
}

/// The veth pair, its host end named `vethXXXXXXXX` (random) and made as `host_end`
/// says, the peer born in the pod as `CNI_IFNAME` with `pod_mac`.
async fn create_veth(
    host: &Netlink,
    ctx: &Ctx<'_>,
    bridge: &str,
    pod_mac: MacAddr,
    mtu: u32,
    host_end: HostEnd,
    rb: &mut Made,
) -> Result<Link, CniError> {
    let ifname = ctx.ifname;
    let mut last_err = None;
    for _ in 0..VETH_NAME_TRIES {
        // A random name is free but for a one in 2^32 chance: no lookup first; a taken
        // name fails the create, which is told apart below.
        let name = veth::random_name("veth");
        rb.veth = Some(name.clone());
        let pair = VethPair {
            host_name: &name,
            peer_name: ifname,
            peer_ns: ctx.ns,
            mtu: Some(mtu),
            peer_mac: Some(pod_mac),
            host: host_end,
        };
        match host.create_veth_pair(&pair).await {
            Ok(link) => return Ok(link),
            // Another ADD took the name first (`ifname` was checked free in the pod).
            Err(e) if e.is_exists() => {
                debug!(name, "host veth name taken, trying another");
                rb.veth = None;
                last_err = Some(CniError::from(e));
            }
            Err(e) => {
                return Err(e
                    .context(format!(
                        "creating veth {name} <-> {ifname} on bridge {bridge}"
                    ))
                    .into());
            }
        }
    }
    Err(last_err
        .unwrap_or_else(|| CniError::internal("no free host veth name"))
        .context("creating veth"))
}

/// The part of ADD that needs IPAM's answer: the gateway on the bridge, then inside the
/// pod sysctls, addresses, up (announces them: arp_notify), routes.
pub(crate) async fn configure(
    cfg: &BridgeConfig,
    ctx: &Ctx<'_>,
    links: &Links,
    result: &mut CniResult,
) -> Result<(), CniError> {
    let ifname = ctx.ifname;
    let gws = gateway::plan(result, POD_IFACE, cfg.is_gateway, cfg.is_default_gateway)?;
    if let Some(br) = &links.master {
        for gw in &gws {
            gateway::ensure_on_bridge(ctx.host, &cfg.bridge, br.index, *gw, cfg.force_address)
                .await?;
        }
    }
    if cfg.is_gateway {
        sysctl::enable_forwarding(
            gws.iter().any(|g| g.is_ipv4()),
            gws.iter().any(|g| g.is_ipv6()),
        )?;
    }

    let has_v6 = result.ips.iter().any(|i| i.address.is_ipv6());
    if has_v6 && !cfg.enable_dad {
        let key = format!("net.ipv6.conf.{ifname}.accept_dad");
        ctx.ns
            .run(|| sysctl::set(&key, "0"))
            .and_then(|r| r)
            .map_err(|e| e.context(format!("disabling DAD on {ifname} (enabledad=false)")))?;
    }
    let pod_index = links.pod_index;
    if result.ips.iter().any(|i| i.address.is_ipv4()) {
        // Over the pod's netlink socket: no entry into the pod's netns (a /proc/sys
        // write needs one), before the up that sends the gratuitous ARP.
        if let Err(e) = ctx
            .pod
            .set_ipv4_conf(pod_index, &[(Ipv4Conf::ArpNotify, 1)])
            .await
        {
            debug!(error = %e, "arp_notify not set");
        }
    }
    veth::address_and_up(ctx.pod, pod_index, ifname, &result.ips).await?;
    // A route without a gateway goes through the address's gateway of its family.
    veth::add_pod_routes(ctx.pod, pod_index, &result.routes, |r| {
        r.gw.or_else(|| {
            result
                .ips
                .iter()
                .filter_map(|i| i.gateway)
                .find(|g| g.is_ipv6() == r.dst.is_ipv6())
        })
    })
    .await
}
