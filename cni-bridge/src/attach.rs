//! ADD: put a pod on the bridge through a veth pair.
//!
//! Order: refuse an interface name already taken in the pod (before anything is
//! allocated, so a repeated ADD never releases the first one's address); start IPAM and,
//! while it runs (it waits on fsync), ensure the bridge and make the veth (peer born in
//! the pod) with its host end on the bridge and up; then, with IPAM's answer, gateway on
//! the bridge, pod addresses and routes, macspoof, masquerade. On failure [`Rollback`]
//! undoes what was made and releases the allocation if IPAM made one; a bridge this ADD
//! created goes too (e.g. when IPAM refused its configuration), unless another pod's
//! port joined it meanwhile.

use std::path::Path;

use cni_core::netlink::{block_on, BridgeSpec, Link, MacAddr, Netlink};
use cni_core::netns::NetNs;
use cni_core::skel::{Call, Command, Target};
use cni_core::spec::config::Attachment;
use cni_core::spec::result::{CniResult, Interface};
use cni_core::{delegate, macspoof, masq, sysctl, veth, CniError};
use tracing::{debug, info, warn};

use crate::config::BridgeConfig;
use crate::gateway;

/// Index of the pod interface in the result's `interfaces` (bridge, host veth, pod).
pub const POD_IFACE: usize = 2;

/// How many host veth names to try when a random name is taken.
const VETH_NAME_TRIES: usize = 4;

/// A look at IPAM's answer before anything is configured with it (see [`add_with`]).
pub type IpamCheck<'a> = &'a dyn Fn(&CniResult) -> Result<(), CniError>;

/// ADD with the configuration read from the call.
pub fn add(call: &Call, target: &Target) -> Result<CniResult, CniError> {
    let cfg = BridgeConfig::from_conf(&call.conf)?;
    add_with(call, target, &cfg, &|_| Ok(()))
}

/// ADD driven by an already-built configuration, so a plugin built on this one decides
/// its own defaults. `ipam_check` sees IPAM's result (before gateways are filled in);
/// its error fails the ADD, which is then undone like any other failure.
pub fn add_with(
    call: &Call,
    target: &Target,
    cfg: &BridgeConfig,
    ipam_check: IpamCheck<'_>,
) -> Result<CniResult, CniError> {
    let netns = target
        .netns
        .as_deref()
        .ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for ADD"))?;
    let ns = NetNs::open(netns)?;
    block_on(add_async(call, target, cfg, ipam_check, &ns, netns)).and_then(|r| r)
}

async fn add_async(
    call: &Call,
    target: &Target,
    cfg: &BridgeConfig,
    ipam_check: IpamCheck<'_>,
    ns: &NetNs,
    netns: &Path,
) -> Result<CniResult, CniError> {
    let host = Netlink::connect()?;
    let pod = Netlink::connect_in(ns)?;
    let ifname = target.ifname.as_str();

    veth::ensure_ifname_free(&pod, ifname, netns).await?;

    // IPAM (which waits on fsync) runs while the links are made, as the reference does
    // them before IPAM too; the addresses come once it has answered.
    let pending = match &cfg.ipam {
        Some(plugin) => Some(
            delegate::add_start(plugin, &call.stdin, &call.env)
                .map_err(|e| e.context(format!("IPAM {plugin}")))?,
        ),
        None => None,
    };
    let mut rb = Rollback::default();
    let links = prepare(target, cfg, ns, netns, &host, &pod, &mut rb).await;
    let ipam_result = match (&cfg.ipam, pending) {
        (Some(plugin), Some(p)) => delegate::add_finish(plugin, p, call.conf.cni_version)
            .map_err(|e| e.context(format!("IPAM {plugin}"))),
        _ => Ok(CniResult::default()),
    };
    rb.ipam = cfg.ipam.is_some() && ipam_result.is_ok();
    let attach = Attach {
        call,
        target,
        cfg,
        ipam_check,
        ns,
        netns,
        host: &host,
        pod: &pod,
    };
    let outcome = match (links, ipam_result) {
        (Ok(links), Ok(result)) => attach.run(result, links, &mut rb).await,
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

/// What [`prepare`] made: the bridge, the host end on it, the pod end.
struct Links {
    bridge: Link,
    host_veth: Link,
    pod_link: Link,
    pod_mac: MacAddr,
    mtu: u32,
}

/// The part of ADD that needs no address: the bridge, the veth (peer born in the pod),
/// the host end on the bridge and up.
async fn prepare(
    target: &Target,
    cfg: &BridgeConfig,
    ns: &NetNs,
    netns: &Path,
    host: &Netlink,
    pod: &Netlink,
    rb: &mut Rollback,
) -> Result<Links, CniError> {
    let ifname = target.ifname.as_str();
    // Whether this ADD created the bridge (undone with it on failure).
    let (br, created) = host
        .ensure_bridge_created(&BridgeSpec {
            name: cfg.bridge.clone(),
            mtu: cfg.mtu,
            mac: None,
            promisc: cfg.promisc_mode,
            vlan_filtering: cfg.vlan.is_some(),
        })
        .await
        .map_err(|e| e.context(format!("bridge {}", cfg.bridge)))?;
    if created {
        rb.bridge = Some(br.index);
    }

    // The veth: host end `vethXXXXXXXX`, peer born in the pod as CNI_IFNAME.
    let mtu = cfg.mtu.unwrap_or(if br.mtu > 0 { br.mtu } else { 1500 });
    let host_veth = create_veth(host, pod, ns, ifname, cfg.mac, mtu, rb).await?;
    let pod_link = pod.link_by_name(ifname).await?.ok_or_else(|| {
        CniError::internal(format!(
            "{ifname} not found in {} after creating it",
            netns.display()
        ))
    })?;
    let pod_mac = match (pod_link.mac, cfg.mac) {
        (Some(m), _) => m,
        (None, Some(m)) => m,
        (None, None) => return Err(CniError::internal(format!("{ifname} has no MAC address"))),
    };

    // The host end, on the bridge.
    let hv = host_veth.index;
    host.set_master(hv, br.index)
        .await
        .map_err(|e| e.context(format!("attaching {} to {}", host_veth.name, cfg.bridge)))?;
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
    host.set_up(hv)
        .await
        .map_err(|e| e.context(format!("setting {} up", host_veth.name)))?;
    Ok(Links {
        bridge: br,
        host_veth,
        pod_link,
        pod_mac,
        mtu,
    })
}

async fn create_veth(
    host: &Netlink,
    pod: &Netlink,
    ns: &NetNs,
    ifname: &str,
    mac: Option<MacAddr>,
    mtu: u32,
    rb: &mut Rollback,
) -> Result<Link, CniError> {
    let mut last_err = None;
    for _ in 0..VETH_NAME_TRIES {
        // A random name is free but for a one in 2^32 chance: no lookup first; a taken
        // name fails the create, which is told apart below.
        let name = format!("veth{:08x}", rand::random::<u32>());
        rb.veth = Some(name.clone());
        match host.create_veth(&name, ifname, ns, Some(mtu), mac).await {
            Ok(link) => return Ok(link),
            Err(e) => {
                // Another ADD may have taken the name first.
                if host.link_by_name(&name).await?.is_some()
                    && pod.link_by_name(ifname).await?.is_none()
                {
                    debug!(name, "host veth name taken, trying another");
                    rb.veth = None;
                    last_err = Some(e);
                    continue;
                }
                return Err(e.context(format!("creating veth {name} <-> {ifname}")));
            }
        }
    }
    Err(last_err
        .unwrap_or_else(|| CniError::internal("no free host veth name"))
        .context("creating veth"))
}

/// What an ADD has made after IPAM, so that a failure can undo it.
#[derive(Default)]
struct Rollback {
    /// Index of the bridge when it did not exist before this ADD.
    bridge: Option<u32>,
    /// Host veth name, recorded before creating the pair.
    veth: Option<String>,
    /// IPAM has allocated: release on undo.
    ipam: bool,
    macspoof: bool,
    masq: bool,
}

struct Attach<'a> {
    call: &'a Call,
    target: &'a Target,
    cfg: &'a BridgeConfig,
    ipam_check: IpamCheck<'a>,
    ns: &'a NetNs,
    netns: &'a Path,
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
        let cfg = self.cfg;
        let ifname = self.target.ifname.as_str();
        let Links {
            bridge: br,
            host_veth,
            pod_link,
            pod_mac,
            mtu,
        } = links;

        if cfg.ipam.is_some() && result.ips.is_empty() {
            return Err(CniError::internal(format!(
                "IPAM {} returned no IP address",
                cfg.ipam.as_deref().unwrap_or_default()
            )));
        }
        (self.ipam_check)(&result)?;
        let gws = gateway::plan(
            &mut result,
            POD_IFACE,
            cfg.is_gateway,
            cfg.is_default_gateway,
        )?;
        for gw in &gws {
            gateway::ensure_on_bridge(self.host, &cfg.bridge, br.index, *gw, cfg.force_address)
                .await?;
        }
        if cfg.is_gateway {
            sysctl::enable_forwarding(
                gws.iter().any(|g| g.is_ipv4()),
                gws.iter().any(|g| g.is_ipv6()),
            )?;
        }

        // Inside the pod: sysctls, addresses, up (announces them: arp_notify), routes.
        let has_v6 = result.ips.iter().any(|i| i.address.is_ipv6());
        if has_v6 && !cfg.enable_dad {
            let key = format!("net.ipv6.conf.{ifname}.accept_dad");
            self.ns
                .run(|| sysctl::set(&key, "0"))
                .and_then(|r| r)
                .map_err(|e| e.context(format!("disabling DAD on {ifname} (enabledad=false)")))?;
        }
        if result.ips.iter().any(|i| i.address.is_ipv4()) {
            let key = format!("net.ipv4.conf.{ifname}.arp_notify");
            if let Err(e) = self.ns.run(|| sysctl::set(&key, "1")).and_then(|r| r) {
                debug!(error = %e, "arp_notify not set");
            }
        }
        veth::address_and_up(self.pod, pod_link.index, ifname, &result.ips).await?;
        // A route without a gateway goes through the address's gateway of its family.
        veth::add_pod_routes(self.pod, pod_link.index, &result.routes, |r| {
            r.gw.or_else(|| {
                result
                    .ips
                    .iter()
                    .filter_map(|i| i.gateway)
                    .find(|g| g.is_ipv6() == r.dst.is_ipv6())
            })
        })
        .await?;
        let name = &self.call.conf.name;
        if cfg.macspoofchk {
            rb.macspoof = true;
            macspoof::add(name, &self.att(), &host_veth.name, pod_mac)
                .map_err(|e| e.context("macspoofchk"))?;
        }
        if cfg.ip_masq {
            rb.masq = true;
            // Never between pods of this network (the IPAM subnets / the cluster pool).
            let pod_nets = masq::pod_networks(&self.call.conf);
            for ip in &result.ips {
                masq::add(name, &self.att(), ip.address, &pod_nets)
                    .map_err(|e| e.context(format!("ipMasq for {}", ip.address)))?;
            }
        }

        // The bridge's MAC may change when its first port joins: read it again.
        let br_now = self
            .host
            .link_by_index(br.index)
            .await?
            .unwrap_or_else(|| br.clone());
        // The host end's MAC does not change on joining the bridge: no need to read it again.
        let host_now = host_veth;
        let [host_iface, pod_iface] =
            veth::result_interfaces(&host_now, ifname, pod_mac, mtu, self.netns);
        result.interfaces = vec![
            Interface {
                name: br_now.name.clone(),
                mac: br_now.mac.map(|m| m.to_string()),
                ..Default::default()
            },
            host_iface,
            pod_iface,
        ];
        result.fill_dns(self.call.conf.dns.as_ref());
        info!(
            container = %self.target.container_id,
            ifname,
            host_veth = %host_now.name,
            bridge = %cfg.bridge,
            ips = ?result.ips.iter().map(|i| i.address.to_string()).collect::<Vec<_>>(),
            "attached"
        );
        // A plugin later in a chain keeps what came before it (SPEC "ADD").
        Ok(result.chained_after(self.call.conf.prev_result.as_ref()))
    }
}

/// Deletes the bridge this failed ADD created, unless a port is on it: another ADD that
/// found it meanwhile keeps it (one that found it but has not joined yet fails its own
/// join and undoes itself: the runtime retries it).
async fn undo_bridge(host: &Netlink, index: u32, name: &str) {
    let ports = match host.links().await {
        Ok(l) => l.into_iter().filter(|l| l.master == Some(index)).count(),
        Err(e) => {
            warn!(error = %e, bridge = name, "undo: listing the bridge's ports; keeping it");
            return;
        }
    };
    if ports > 0 {
        debug!(
            bridge = name,
            ports, "undo: bridge in use by other pods; kept"
        );
        return;
    }
    match host.delete_link(index).await {
        Ok(()) => info!(
            bridge = name,
            "undo: removed the bridge this failed ADD created"
        ),
        Err(e) => warn!(error = %e, bridge = name, "undo: removing the bridge"),
    }
}

impl Rollback {
    /// Best effort: every step is tried, failures are logged.
    async fn undo(&self, a: &Attach<'_>) {
        let name = &a.call.conf.name;
        let att = a.att();
        if self.macspoof {
            if let Err(e) = macspoof::del(name, &att) {
                warn!(error = %e, "undo: removing macspoof rules");
            }
        }
        if self.masq {
            if let Err(e) = masq::del(name, &att) {
                warn!(error = %e, "undo: removing masquerade rules");
            }
        }
        if let Some(veth) = &self.veth {
            veth::undo_pair(a.host, a.pod, veth, a.target.ifname.as_str()).await;
        }
        if let Some(index) = self.bridge {
            undo_bridge(a.host, index, &a.cfg.bridge).await;
        }
        if let (true, Some(plugin)) = (self.ipam, &a.cfg.ipam) {
            if let Err(e) = delegate::run(plugin, Command::Del, &a.call.stdin, &a.call.env) {
                warn!(error = %e, plugin, "undo: releasing IPAM allocation");
            }
        }
    }
}
