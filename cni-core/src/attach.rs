//! The veth attach transaction every veth plugin shares (`cni-bridge`, `cni-routed` and
//! the plugins built on them): a plugin supplies only its particular steps as a
//! [`VethDatapath`], and a [`VethPlugin`] (its configuration read into such a
//! datapath) is a whole CNI [`Plugin`].
//!
//! ADD: our in-process IPAM's thread is started first and reads its configuration,
//! but allocates only when let go below (`delegate::AddReady`); refuse an interface
//! name already taken in the pod (before anything is allocated, so a repeated ADD never
//! releases the first one's address); the datapath's [`VethDatapath::prepare`]
//! (look-ups that may fail with nothing to undo); let IPAM allocate (or start an exec'd
//! one) and, while it runs (it waits on fsync), the datapath's
//! [`VethDatapath::links`] (the veth, peer born in the pod, and what its host end
//! joins); with IPAM's answer the datapath's [`VethDatapath::configure`] (addresses,
//! routes), then the MAC spoof check and masquerade; the result. A failure anywhere
//! undoes, best effort, what [`Made`] records, and releases the allocation if IPAM made
//! one.
//!
//! DEL and GC are best effort ([`BestEffort`]): every step runs, the address is
//! released last. CHECK: IPAM's CHECK, the datapath's [`VethDatapath::check`] of the
//! links, masquerade.

use std::path::Path;

use ipnetwork::IpNetwork;
use tracing::{debug, info, warn};

use crate::netlink::{block_on, Link, MacAddr, Netlink};
use crate::netns::NetNs;
use crate::skel::{Call, Command, Plugin, Target};
use crate::spec::config::{Attachment, NetConf};
use crate::spec::error::CniError;
use crate::spec::result::{CniResult, Interface};
use crate::{check, delegate, macspoof, masq, veth};

/// The options the transaction itself acts on, from the datapath's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shared<'a> {
    /// IPAM plugin type (`ipam.type`); `None`: layer 2 only, no addresses.
    pub ipam: Option<&'a str>,
    /// `ipMasq`: masquerade what leaves the pod's addresses.
    pub ip_masq: bool,
    /// `macspoofchk`; `None`: the datapath has no MAC spoof check (nothing to clean up).
    pub macspoofchk: Option<bool>,
}

/// One ADD or CHECK at work: the call, its target and netlink in both namespaces.
pub struct Ctx<'a> {
    pub call: &'a Call,
    pub target: &'a Target,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a Path,
    pub ns: &'a NetNs,
    pub host: &'a Netlink,
    pub pod: &'a Netlink,
}

impl Ctx<'_> {
    pub fn attachment(&self) -> Attachment {
        self.target.attachment()
    }

    /// The index, inside the pod's netns, of the pod end of the pair just made whose host
    /// end is `host_veth`: the host end's `IFLA_LINK`, which the create's echo carries.
    /// Only a kernel that does not echo the create makes this look the pod end up. (Its
    /// MAC needs no lookup: the datapaths create it with one they picked,
    /// [`MacAddr::random`] when the configuration gives none.)
    pub async fn pod_index(&self, host_veth: &Link) -> Result<u32, CniError> {
        if let Some(index) = host_veth.peer {
            return Ok(index);
        }
        let ifname = self.ifname;
        let link = self.pod.link_by_name(ifname).await?.ok_or_else(|| {
            CniError::internal(format!(
                "{ifname} not found in {} after creating it",
                self.netns.display()
            ))
        })?;
        Ok(link.index)
    }
}

/// What [`VethDatapath::links`] made.
pub struct Links {
    /// The device the host end is a port of (the bridge): listed first in the result.
    pub master: Option<Link>,
    /// The master's MAC was set explicitly (a bridge this suite created or configured,
    /// [`crate::netlink::BridgeSpec::pinned_mac`]): it does not change when ports join,
    /// so the result reports it as read. Otherwise (a bridge made elsewhere, which takes
    /// its lowest port's MAC) it is read again once the port has joined.
    pub master_mac_fixed: bool,
    pub host_veth: Link,
    /// The pod end's index inside the pod's netns.
    pub pod_index: u32,
    pub pod_mac: MacAddr,
    /// MTU of both ends.
    pub mtu: u32,
}

/// What an ADD has made so far, so that a failure can undo it.
#[derive(Default)]
pub struct Made {
    /// The host end's name, recorded once the pair may be this ADD's.
    pub veth: Option<String>,
    /// A master device (the bridge) this ADD created: deleted on undo unless a port of
    /// another pod joined it meanwhile.
    pub master: Option<Link>,
    /// IPAM has allocated: release on undo.
    ipam: bool,
    macspoof: bool,
    masq: bool,
}

/// The steps particular to one veth datapath. The transaction drives them on one thread
/// (`block_on`), so they need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait VethDatapath {
    /// What [`VethDatapath::prepare`] hands to [`VethDatapath::links`] (e.g. the MTU).
    type Prepared;

    fn shared(&self) -> Shared<'_>;

    /// ADD, before anything is allocated or made: refusals and look-ups whose failure
    /// leaves nothing to undo.
    async fn prepare(&self, ctx: &Ctx<'_>) -> Result<Self::Prepared, CniError>;

    /// ADD, while IPAM runs: the veth pair (peer born in the pod as `CNI_IFNAME`) and
    /// whatever its host end joins, recording in `made` what a failure must undo as
    /// soon as it exists.
    async fn links(
        &self,
        ctx: &Ctx<'_>,
        prepared: Self::Prepared,
        made: &mut Made,
    ) -> Result<Links, CniError>;

    /// ADD, with IPAM's answer (at least one address when there is IPAM): rewrites
    /// `result` for this datapath and configures the pod and host with it.
    async fn configure(
        &self,
        ctx: &Ctx<'_>,
        links: &Links,
        result: &mut CniResult,
    ) -> Result<(), CniError>;

    /// CHECK of the links against `prev`, whose addresses on the pod interface are
    /// `ips`. Failures are [`check::failed`].
    async fn check(
        &self,
        ctx: &Ctx<'_>,
        prev: &CniResult,
        ips: &[IpNetwork],
    ) -> Result<(), CniError>;

    /// DEL, after the pod interface is gone: host-side leftovers to remove.
    fn del_host_side(&self, _call: &Call, _target: &Target) -> Result<(), CniError> {
        Ok(())
    }
}

/// A veth plugin: its configuration read, once, into a datapath. Every such plugin is
/// a CNI [`Plugin`] through this module.
pub trait VethPlugin {
    type Datapath: VethDatapath;
    /// The datapath `conf` describes; bad configuration is `InvalidConfig` (7).
    fn datapath(&self, conf: &NetConf) -> Result<Self::Datapath, CniError>;
}

impl<P: VethPlugin> Plugin for P {
    fn add(&self, call: &Call, target: &Target) -> Result<CniResult, CniError> {
        add(call, target, &self.datapath(&call.conf)?)
    }
    fn del(&self, call: &Call, target: &Target) -> Result<(), CniError> {
        del(call, target, &self.datapath(&call.conf)?)
    }
    fn check(&self, call: &Call, target: &Target) -> Result<(), CniError> {
        check(call, target, &self.datapath(&call.conf)?)
    }
    fn gc(&self, call: &Call) -> Result<(), CniError> {
        gc(call, self.datapath(&call.conf)?.shared())
    }
    fn status(&self, call: &Call) -> Result<(), CniError> {
        status(call, self.datapath(&call.conf)?.shared())
    }
    fn configures_netns(&self) -> bool {
        true
    }
}

/// ADD (see the module doc).
pub(crate) fn add<D: VethDatapath>(
    call: &Call,
    target: &Target,
    dp: &D,
) -> Result<CniResult, CniError> {
    let (netns, ns) = match (target.netns.as_deref(), target.open_netns()) {
        (Some(path), Some(ns)) => (path, ns?),
        _ => return Err(CniError::invalid_env("CNI_NETNS is required for ADD")),
    };
    // Our own IPAM (in-process) starts now, reading its configuration while the netlink
    // work begins; it allocates only when `go` lets it, after the checks below.
    let ipam = dp
        .shared()
        .ipam
        .map(|plugin| delegate::add_ready(plugin, &call.stdin, &call.env));
    block_on(add_async(call, target, dp, &ns, netns, ipam)).and_then(|r| r)
}

async fn add_async<D: VethDatapath>(
    call: &Call,
    target: &Target,
    dp: &D,
    ns: &NetNs,
    netns: &Path,
    ipam: Option<delegate::AddReady>,
) -> Result<CniResult, CniError> {
    let host = Netlink::connect()?;
    let pod = Netlink::connect_in(ns)?;
    let ctx = Ctx {
        call,
        target,
        ifname: target.ifname.as_str(),
        netns,
        ns,
        host: &host,
        pod: &pod,
    };
    veth::ensure_ifname_free(&pod, ctx.ifname, netns).await?;
    let prepared = dp.prepare(&ctx).await?;
    let shared = dp.shared();

    // IPAM (which waits on fsync) runs while the links are made, as the reference makes
    // them before IPAM too; the addresses come once it has answered.
    let ipam_ctx = |e: CniError| e.context(format!("IPAM {}", shared.ipam.unwrap_or_default()));
    // Nothing was allocated before this point: a repeated ADD refused above never
    // reaches it (dropping `ipam` calls its ADD off).
    let pending = match ipam {
        Some(ready) => Some(ready.go(&call.stdin, &call.env).map_err(ipam_ctx)?),
        None => None,
    };
    let mut made = Made::default();
    let links = dp.links(&ctx, prepared, &mut made).await;
    let ipam_result = match (shared.ipam, pending) {
        (Some(plugin), Some(p)) => {
            delegate::add_finish(plugin, p, call.conf.cni_version).map_err(ipam_ctx)
        }
        _ => Ok(CniResult::default()),
    };
    made.ipam = shared.ipam.is_some() && ipam_result.is_ok();
    let outcome = match (links, ipam_result) {
        (Ok(links), Ok(result)) => attach(dp, &ctx, shared, links, result, &mut made).await,
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    };
    if let Err(e) = &outcome {
        warn!(error = %e, "ADD failed; undoing");
        made.undo(&ctx, shared).await;
    }
    outcome
}

/// ADD once the links and IPAM's answer are there.
async fn attach<D: VethDatapath>(
    dp: &D,
    ctx: &Ctx<'_>,
    shared: Shared<'_>,
    links: Links,
    mut result: CniResult,
    made: &mut Made,
) -> Result<CniResult, CniError> {
    if let (Some(plugin), true) = (shared.ipam, result.ips.is_empty()) {
        return Err(CniError::internal(format!(
            "IPAM {plugin} returned no IP address"
        )));
    }
    dp.configure(ctx, &links, &mut result).await?;

    let conf = &ctx.call.conf;
    let att = ctx.attachment();
    if shared.macspoofchk == Some(true) {
        made.macspoof = true;
        macspoof::add(&conf.name, &att, &links.host_veth.name, links.pod_mac)
            .map_err(|e| e.context("macspoofchk"))?;
    }
    if shared.ip_masq {
        made.masq = true;
        // Never between pods of this network (the IPAM subnets / the cluster pool).
        let pod_nets = masq::pod_networks(conf);
        for ip in &result.ips {
            masq::add(&conf.name, &att, ip.address, &pod_nets)
                .map_err(|e| e.context(format!("ipMasq for {}", ip.address)))?;
        }
    }

    let mut interfaces = Vec::with_capacity(3);
    if let Some(m) = &links.master {
        // An unpinned bridge's MAC may change when its first port joins: read it again.
        let now = match links.master_mac_fixed {
            true => m.clone(),
            false => ctx
                .host
                .link_by_index(m.index)
                .await?
                .unwrap_or_else(|| m.clone()),
        };
        interfaces.push(Interface {
            name: now.name,
            mac: now.mac.map(|m| m.to_string()),
            ..Default::default()
        });
    }
    interfaces.extend(veth::result_interfaces(
        &links.host_veth,
        ctx.ifname,
        links.pod_mac,
        links.mtu,
        ctx.netns,
    ));
    result.interfaces = interfaces;
    result.fill_dns(conf.dns.as_ref());
    info!(
        container = %ctx.target.container_id,
        ifname = ctx.ifname,
        host_veth = %links.host_veth.name,
        master = links.master.as_ref().map(|m| m.name.as_str()),
        mtu = links.mtu,
        ips = ?result.ips.iter().map(|i| i.address.to_string()).collect::<Vec<_>>(),
        "attached"
    );
    // A plugin later in a chain keeps what came before it (SPEC "ADD").
    Ok(result.chained_after(conf.prev_result.as_ref()))
}

impl Made {
    /// Best effort: every step is tried, failures are logged.
    async fn undo(&self, ctx: &Ctx<'_>, shared: Shared<'_>) {
        let call = ctx.call;
        let att = ctx.attachment();
        if self.macspoof {
            if let Err(e) = macspoof::del(&call.conf.name, &att) {
                warn!(error = %e, "undo: removing macspoof rules");
            }
        }
        if self.masq {
            if let Err(e) = masq::del(&call.conf.name, &att) {
                warn!(error = %e, "undo: removing masquerade rules");
            }
        }
        if let Some(veth) = &self.veth {
            veth::undo_pair(ctx.host, ctx.pod, veth, ctx.ifname).await;
        }
        if let Some(master) = &self.master {
            undo_master(ctx.host, master).await;
        }
        if let (true, Some(plugin)) = (self.ipam, shared.ipam) {
            if let Err(e) = delegate::run(plugin, Command::Del, &call.stdin, &call.env) {
                warn!(error = %e, plugin, "undo: releasing IPAM allocation");
            }
        }
    }
}

/// Deletes the master (bridge) this failed ADD created, unless a port is on it: another
/// ADD that found it meanwhile keeps it (one that found it but has not joined yet fails
/// its own join and undoes itself: the runtime retries it).
async fn undo_master(host: &Netlink, master: &Link) {
    let name = master.name.as_str();
    let ports = match host.links().await {
        Ok(l) => l
            .into_iter()
            .filter(|l| l.master == Some(master.index))
            .count(),
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
    match host.delete_link(master.index).await {
        Ok(()) => info!(
            bridge = name,
            "undo: removed the bridge this failed ADD created"
        ),
        Err(e) => warn!(error = %e, bridge = name, "undo: removing the bridge"),
    }
}

/// The steps of a best-effort command (DEL, GC): every step runs; the first failure is
/// the command's answer, each is logged.
pub(crate) struct BestEffort {
    command: &'static str,
    first: Option<CniError>,
}

impl BestEffort {
    pub(crate) fn new(command: Command) -> BestEffort {
        BestEffort {
            command: command.as_str(),
            first: None,
        }
    }

    /// A step whose failure counts.
    pub(crate) fn step<E: Into<CniError>>(&mut self, r: Result<(), E>) {
        if let Err(e) = r.map_err(Into::into) {
            warn!(error = %e, "{} step failed", self.command);
            self.first.get_or_insert(e);
        }
    }

    /// Removing what an option made: done whatever the configuration says now (it may
    /// have changed since ADD); a failure counts only when the option is `on`.
    pub(crate) fn cleanup<E: Into<CniError>>(&mut self, r: Result<(), E>, on: bool, what: &str) {
        match r.map_err(Into::into) {
            Err(e) if on => self.step(Err(e.context(what))),
            Err(e) => debug!(error = %e, "{what} (option off) failed"),
            Ok(()) => {}
        }
    }

    /// `Ok` when every step succeeded, else the first failure.
    pub(crate) fn finish(self) -> Result<(), CniError> {
        self.first.map_or(Ok(()), Err)
    }
}

/// DEL: best effort and idempotent. Removes the pod interface (which takes the host end
/// and its routes with it), the datapath's host-side leftovers, the macspoof and
/// masquerade rules of the attachment, then releases the IPAM allocation (last, so an
/// address is never handed out while still configured). Succeeds when the netns, the
/// interface or the allocation is gone.
pub(crate) fn del<D: VethDatapath>(call: &Call, target: &Target, dp: &D) -> Result<(), CniError> {
    let shared = dp.shared();
    let ifname = target.ifname.as_str();
    let att = target.attachment();
    let name = &call.conf.name;
    let mut steps = BestEffort::new(Command::Del);
    if let Some(path) = target.netns.as_deref() {
        steps.step(veth::del_in_netns(path, ifname));
    }
    steps.step(dp.del_host_side(call, target));
    if let Some(on) = shared.macspoofchk {
        steps.cleanup(macspoof::del(name, &att), on, "removing macspoof rules");
    }
    steps.cleanup(
        masq::del(name, &att),
        shared.ip_masq,
        "removing masquerade rules",
    );
    if let Some(plugin) = shared.ipam {
        steps.step(
            delegate::run(plugin, Command::Del, &call.stdin, &call.env)
                .map_err(|e| e.context(format!("IPAM {plugin}"))),
        );
    }
    steps.finish()?;
    info!(container = %target.container_id, ifname, "detached");
    Ok(())
}

/// CHECK: the attachment `prevResult` describes is still in place.
pub(crate) fn check<D: VethDatapath>(call: &Call, target: &Target, dp: &D) -> Result<(), CniError> {
    let shared = dp.shared();
    let prev = call
        .conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
    let netns = target
        .netns
        .as_deref()
        .ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for CHECK"))?;
    if let Some(plugin) = shared.ipam {
        delegate::run(plugin, Command::Check, &call.stdin, &call.env)
            .map_err(|e| e.context(format!("IPAM {plugin}")))?;
    }
    let ifname = target.ifname.as_str();
    let ips = check::pod_ips(prev, ifname, netns)?;
    // The guard's open namespace (opened now if the guard could not): `netns` is set.
    let ns = match target.open_netns() {
        Some(ns) => ns?,
        None => return Err(CniError::invalid_env("CNI_NETNS is required for CHECK")),
    };
    block_on(async {
        let host = Netlink::connect()?;
        let pod = Netlink::connect_in(&ns)?;
        let ctx = Ctx {
            call,
            target,
            ifname,
            netns,
            ns: &ns,
            host: &host,
            pod: &pod,
        };
        dp.check(&ctx, prev, &ips).await
    })
    .and_then(|r| r)?;
    if shared.ip_masq {
        check::masq_present(&call.conf.name, &target.attachment(), &ips)?;
    }
    Ok(())
}

/// GC: delegated to IPAM, then the masquerade (and macspoof) rules of this network
/// whose attachment is not in `cni.dev/valid-attachments` are dropped. Host veths need
/// no GC: each dies with its pod's netns.
pub(crate) fn gc(call: &Call, shared: Shared<'_>) -> Result<(), CniError> {
    let mut steps = BestEffort::new(Command::Gc);
    if let Some(plugin) = shared.ipam {
        steps.step(
            delegate::run(plugin, Command::Gc, &call.stdin, &call.env)
                .map_err(|e| e.context(format!("IPAM {plugin}"))),
        );
    }
    match &call.conf.valid_attachments {
        Some(keep) => {
            let name = &call.conf.name;
            steps.step(masq::gc(name, keep).map_err(|e| e.context("masquerade GC")));
            if shared.macspoofchk.is_some() {
                steps.step(macspoof::gc(name, keep).map_err(|e| e.context("macspoof GC")));
            }
        }
        // Without the list we cannot tell what is live: keep everything.
        None => warn!("GC without cni.dev/valid-attachments: keeping all rules"),
    }
    steps.finish()
}

/// STATUS: ready when the IPAM plugin is (no IPAM: always ready).
pub(crate) fn status(call: &Call, shared: Shared<'_>) -> Result<(), CniError> {
    match shared.ipam {
        Some(plugin) => delegate::run(plugin, Command::Status, &call.stdin, &call.env),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_effort_runs_every_step_and_answers_the_first_failure() {
        let mut steps = BestEffort::new(Command::Del);
        steps.step(Ok::<(), CniError>(()));
        steps.step(Err(CniError::internal("first")));
        steps.cleanup(Err(CniError::internal("off")), false, "option off");
        steps.step(Err(CniError::internal("second")));
        let e = steps.finish().unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (999, "first"));

        let mut steps = BestEffort::new(Command::Gc);
        steps.cleanup(Err(CniError::internal("off")), false, "option off");
        assert!(
            steps.finish().is_ok(),
            "a failure of an option that is off never counts"
        );

        let mut steps = BestEffort::new(Command::Del);
        steps.cleanup(Err(CniError::internal("gone")), true, "removing rules");
        assert_eq!(steps.finish().unwrap_err().msg, "removing rules: gone");
    }
}
