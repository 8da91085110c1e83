//! What the peers announce, into the kernel: one task owns the learned table and the
//! [`Reconciler`] (one reconciler peer key per BGP peer), applies the speaker's
//! [`RouteEvent`]s in batches, and on every resync tick reconciles the whole table
//! against a kernel dump (the backstop).
//!
//! Repair is event-driven, by the mechanism the other datapaths use: a
//! [`KernelWatch`] (no devices: it reports the routes of protocol [`RTPROT_IPAMD`] in
//! the main table, which on a BGP node are only ours) and [`Reconciler::repair`], which
//! puts back at once a route it has recorded as installed that was deleted or changed
//! behind the daemon's back. The recorded set is always a subset of what the learned
//! table wants now (a route kept from before a restart during the startup is not in
//! it), and a repair only ever puts: it never installs a route the importer does not
//! want, nor deletes one it keeps. Routes of other protocols are never reported, so
//! never touched. A lost notification (socket overrun) runs the full resync.
//!
//! After a start the routes already in the kernel (from before a restart) stay until
//! every peer has re-sent its table (End-of-RIB), or has been Established for its
//! negotiated hold time (a peer that sends no End-of-RIB), or the startup window (the
//! configured hold time) passes: until then a resync adds and changes but deletes
//! nothing, so a restart of the daemon sends nothing for routes that did not change and
//! never interrupts forwarding. A route a peer explicitly withdraws goes at once, also
//! during the startup.
//!
//! Next hops: iBGP keeps the announcing node's underlay address as next hop, which
//! across subnets is not on-link, and Linux only accepts an on-link gateway. So, as
//! BIRD's `gateway recursive`, a next hop off the connected subnets is resolved through
//! the kernel's own route to it (the router toward it) when the route is installed.
//! An IPv4 prefix learned with an IPv6 next hop (RFC 8950) is installed `via inet6`
//! (RTA_VIA); a link-local next hop (RFC 2545: a peer without a global address sends
//! `::` and its link-local one) is installed on the underlay interface.

use bgp::{RouteEvent, RouteEventKind, Speaker};
use cni_core::netlink::{Netlink, RouteSpec, Underlay};
use cni_core::node::{Interest, KernelChanges, KernelWatch, Object, Reconciler, RTPROT_IPAMD};
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;

/// While starting, how long routes of a peer that has not sent End-of-RIB wait to be
/// installed together.
const STARTUP_BATCH: Duration = Duration::from_secs(1);

/// Learned prefixes and their next hops, per peer.
type Learned = BTreeMap<IpAddr, BTreeMap<IpNetwork, IpAddr>>;

pub(crate) struct Importer {
    nl: Netlink,
    underlay: Underlay,
    rec: Reconciler,
    learned: Learned,
    metrics: Arc<Metrics>,
    speaker: Speaker,
    /// Until every peer has re-sent its table: `None` once over.
    startup: Option<Startup>,
    /// Kernel notifications about our routes, once [`Importer::watch_kernel`] started
    /// them (`None`: repairs wait for the resync tick).
    kernel: Option<KernelWatch>,
}

/// The start of the daemon: routes nobody announced (yet) are kept.
struct Startup {
    until: Instant,
    /// Peers whose End-of-RIB came.
    done: BTreeSet<IpAddr>,
    /// Prefixes explicitly withdrawn (or lost with their peer) since the start: they
    /// leave the kernel at once, not with the end of the startup.
    gone: BTreeSet<IpNetwork>,
}

/// The reconciler's name for what was learned from `peer`.
fn key(peer: IpAddr) -> String {
    format!("bgp:{peer}")
}

/// Applies one event to the table; the peer whose routes changed.
fn apply(learned: &mut Learned, ev: RouteEvent) -> IpAddr {
    match ev.kind {
        RouteEventKind::Learned { prefix, next_hop } => {
            learned.entry(ev.peer).or_default().insert(prefix, next_hop);
        }
        RouteEventKind::Withdrawn { prefix } => {
            if let Some(t) = learned.get_mut(&ev.peer) {
                t.remove(&prefix);
            }
        }
        RouteEventKind::PeerDown => {
            learned.remove(&ev.peer);
        }
        RouteEventKind::EndOfRib => {}
    }
    if learned.get(&ev.peer).is_some_and(BTreeMap::is_empty) {
        learned.remove(&ev.peer);
    }
    ev.peer
}

fn dst(o: &Object) -> Option<IpNetwork> {
    match o {
        Object::Route { dst, .. } => Some(*dst),
        _ => None,
    }
}

/// An IPv6 link-local address (fe80::/10): reachable on one interface only.
fn is_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// The longest-prefix match for `ip` among `routes` (the kernel's main table, ours left
/// out): its gateway, or `ip` itself when the match is a connected route.
fn resolve(routes: &[RouteSpec], ip: IpAddr) -> Option<IpAddr> {
    routes
        .iter()
        .filter(|r| r.dst.is_ipv4() == ip.is_ipv4() && r.dst.contains(ip))
        .max_by_key(|r| (r.dst.prefix(), std::cmp::Reverse(r.metric.unwrap_or(0))))
        .map(|r| r.gw.unwrap_or(ip))
}

impl Importer {
    /// `startup`: how long at most the routes from before a restart wait for the peers
    /// to announce them again.
    pub(crate) fn new(
        nl: Netlink,
        underlay: Underlay,
        metrics: Arc<Metrics>,
        speaker: Speaker,
        startup: Duration,
    ) -> Importer {
        Importer {
            rec: Reconciler::new(nl.clone()),
            nl,
            underlay,
            learned: Learned::new(),
            metrics,
            speaker,
            startup: Some(Startup {
                until: Instant::now() + startup,
                done: BTreeSet::new(),
                gone: BTreeSet::new(),
            }),
            kernel: None,
        }
    }

    /// Follows the kernel's notifications about protocol-97 routes (in the namespace of
    /// the calling thread: the daemon's), to put a deleted or changed route back at
    /// once. Without this the importer repairs only on resync ticks.
    pub(crate) fn watch_kernel(mut self) -> Importer {
        match KernelWatch::start(Interest::default()) {
            Ok(w) => self.kernel = Some(w),
            Err(e) => tracing::warn!(error = %e,
                "cannot follow kernel notifications: BGP routes are repaired at the periodic resync only"),
        }
        self
    }

    /// Acts on a batch of kernel notifications.
    async fn kernel_changed(&mut self, ch: KernelChanges) {
        if ch.overrun {
            tracing::debug!("kernel notifications were lost (socket overrun): BGP route resync");
            return self.full().await;
        }
        if ch.objects.is_empty() {
            return;
        }
        let start = Instant::now();
        let done = self.rec.repair(&ch.objects).await;
        self.metrics.datapath_applied(&done, self.rec.installed());
        if done.requests() > 0 {
            self.metrics.datapath_repaired();
            tracing::info!(
                datapath = "bgp",
                repaired = done.added + done.replaced,
                failed = done.failed,
                elapsed_ms = start.elapsed().as_millis() as u64,
                "kernel entries put back"
            );
        }
    }

    /// Applies one event; the peer whose routes changed.
    fn note(&mut self, ev: RouteEvent) -> IpAddr {
        if let Some(s) = &mut self.startup {
            match &ev.kind {
                RouteEventKind::EndOfRib => {
                    s.done.insert(ev.peer);
                }
                RouteEventKind::Withdrawn { prefix } => {
                    s.gone.insert(*prefix);
                }
                RouteEventKind::PeerDown => {
                    s.gone.extend(
                        self.learned
                            .get(&ev.peer)
                            .into_iter()
                            .flat_map(|t| t.keys()),
                    );
                }
                RouteEventKind::Learned { prefix, .. } => {
                    s.gone.remove(prefix);
                }
            }
        }
        apply(&mut self.learned, ev)
    }

    /// Whether a withdrawal waits to be applied during the startup.
    fn withdrawals_pending(&self) -> bool {
        self.startup.as_ref().is_some_and(|s| !s.gone.is_empty())
    }

    /// During the startup: deletes the kernel routes of prefixes withdrawn since the
    /// start that no peer offers now.
    async fn apply_withdrawals(&mut self) {
        let Some(s) = &mut self.startup else {
            return;
        };
        let learned = &self.learned;
        let gone: BTreeSet<IpNetwork> = std::mem::take(&mut s.gone)
            .into_iter()
            .filter(|p| !learned.values().any(|t| t.contains_key(p)))
            .collect();
        if gone.is_empty() {
            return;
        }
        for v6 in [false, true] {
            if !gone.iter().any(|p| p.is_ipv6() == v6) {
                continue;
            }
            let routes = match self.nl.routes(v6, None).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the routes to withdraw");
                    continue;
                }
            };
            for r in routes
                .iter()
                .filter(|r| r.protocol == Some(RTPROT_IPAMD) && gone.contains(&r.dst))
            {
                match self.nl.del_route(r).await {
                    Ok(()) => {
                        tracing::info!(prefix = %r.dst, "BGP: withdrawn route removed (during the startup)")
                    }
                    Err(e) => {
                        tracing::warn!(prefix = %r.dst, error = %e, "BGP: cannot remove a withdrawn route")
                    }
                }
            }
        }
    }

    /// Whether the startup is over (now or before): every peer re-sent its table, or
    /// the window passed.
    fn started(&mut self) -> bool {
        let Some(s) = &self.startup else {
            return true;
        };
        // A peer is done when its End-of-RIB came, or (it sends none) it has been
        // Established for its negotiated hold time.
        let peers = self.speaker.peers();
        let done = |p: &bgp::PeerStatus| {
            s.done.contains(&p.address)
                || matches!((p.uptime, p.hold_time), (Some(up), Some(h)) if h > 0 && up >= Duration::from_secs(h.into()))
        };
        let all_sent = !peers.is_empty() && peers.iter().all(done);
        if all_sent || Instant::now() >= s.until {
            tracing::info!(
                every_peer_sent_its_table = all_sent,
                "BGP: startup over, routes no peer announces go from now on"
            );
            self.startup = None;
        }
        self.startup.is_none()
    }

    /// Runs until the speaker's event channel closes or `stop` turns true.
    pub(crate) async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<RouteEvent>,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Starting: routes of a peer whose table is not complete yet, due by then.
        let mut due: Option<Instant> = None;
        // While starting: notices the end of the startup within a second.
        let mut starting = tokio::time::interval(Duration::from_secs(1));
        starting.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due_at = due;
            let kernel = async {
                match self.kernel.as_mut() {
                    Some(k) => k.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => self.full().await,
                ch = kernel => match ch {
                    Some(ch) => self.kernel_changed(ch).await,
                    None => {
                        tracing::warn!("kernel notifications ended: BGP routes are repaired at the periodic resync only");
                        self.kernel = None;
                    }
                },
                _ = starting.tick(), if self.startup.is_some() => {
                    if self.started() {
                        self.full().await;
                    }
                }
                _ = async {
                    match due_at {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    due = None;
                    self.full().await;
                }
                ev = events.recv() => {
                    let Some(ev) = ev else { return };
                    // Everything queued goes in one batch: one diff per peer, not per
                    // prefix (a full table from a router arrives as a burst).
                    let mut dirty = BTreeSet::new();
                    let mut table_complete = false;
                    let queued = std::iter::from_fn(|| events.try_recv().ok());
                    for ev in std::iter::once(ev).chain(queued) {
                        table_complete |= ev.kind == RouteEventKind::EndOfRib;
                        dirty.insert(self.note(ev));
                    }
                    if self.startup.is_none() {
                        self.program(dirty).await;
                    } else if table_complete || self.withdrawals_pending() {
                        // Starting: once per peer whose table is complete, against the
                        // kernel (what is there already costs nothing), not once per
                        // burst of a table still coming (each a kernel dump).
                        due = None;
                        self.full().await;
                    } else {
                        // A peer that sends no End-of-RIB gets its routes in a second.
                        due.get_or_insert(Instant::now() + STARTUP_BATCH);
                    }
                }
            }
        }
    }

    /// Gateways (and the device, for a link-local one) for the next hops in use: a next
    /// hop on the underlay's subnets is its own gateway, a link-local one too on the
    /// underlay interface; the others are resolved against one dump of the kernel's
    /// routes.
    async fn gateways<'a>(
        &self,
        next_hops: impl Iterator<Item = &'a IpAddr>,
    ) -> HashMap<IpAddr, (IpAddr, Option<u32>)> {
        let mut out = HashMap::new();
        let mut off_link = BTreeSet::new();
        for nh in next_hops {
            if is_link_local(nh) {
                out.insert(*nh, (*nh, Some(self.underlay.index)));
            } else if self.underlay.on_link(*nh) {
                out.insert(*nh, (*nh, None));
            } else {
                off_link.insert(*nh);
            }
        }
        if off_link.is_empty() {
            return out;
        }
        let mut routes = Vec::new();
        for v6 in [false, true] {
            if !off_link.iter().any(|ip| ip.is_ipv6() == v6) {
                continue;
            }
            match self.nl.routes(v6, None).await {
                Ok(r) => routes.extend(r.into_iter().filter(|r| r.protocol != Some(RTPROT_IPAMD))),
                Err(e) => tracing::warn!(error = %e, "cannot read the routes to BGP next hops"),
            }
        }
        for nh in off_link {
            match resolve(&routes, nh) {
                Some(gw) => {
                    out.insert(nh, (gw, None));
                }
                None => tracing::warn!(next_hop = %nh, "BGP next hop unreachable: its routes wait"),
            }
        }
        out
    }

    /// What each of `peers` needs in the kernel now.
    async fn want(&self, peers: &BTreeSet<IpAddr>) -> BTreeMap<String, BTreeSet<Object>> {
        let tables: Vec<(IpAddr, &BTreeMap<IpNetwork, IpAddr>)> = peers
            .iter()
            .filter_map(|p| self.learned.get(p).map(|t| (*p, t)))
            .collect();
        let gws = self
            .gateways(tables.iter().flat_map(|(_, t)| t.values()))
            .await;
        let mut out: BTreeMap<String, BTreeSet<Object>> =
            peers.iter().map(|p| (key(*p), BTreeSet::new())).collect();
        for (peer, table) in tables {
            let objs = out.entry(key(peer)).or_default();
            for (dst, nh) in table {
                if let Some((gw, oif)) = gws.get(nh) {
                    objs.insert(Object::Route {
                        dst: *dst,
                        gw: *gw,
                        oif: *oif,
                        onlink: false,
                    });
                }
            }
        }
        out
    }

    async fn program(&mut self, peers: BTreeSet<IpAddr>) {
        let start = Instant::now();
        let want = self.want(&peers).await;
        if self.still_learned_elsewhere(&want) {
            // Two peers (e.g. redundant reflectors) gave us one prefix and one of them
            // dropped it: a per-peer delete would take the other's route with it.
            return self.full().await;
        }
        for (peer, objs) in want {
            let done = self.rec.set_peer(&peer, objs).await;
            self.metrics.datapath_applied(&done, self.rec.installed());
            if done.requests() > 0 {
                tracing::debug!(
                    peer = %peer,
                    added = done.added,
                    replaced = done.replaced,
                    removed = done.removed,
                    failed = done.failed,
                    elapsed_ms = start.elapsed().as_millis() as u64,
                    "BGP routes programmed"
                );
            }
        }
    }

    /// Whether a route some peer in `want` gives up is still learned from another peer.
    fn still_learned_elsewhere(&self, want: &BTreeMap<String, BTreeSet<Object>>) -> bool {
        want.iter().any(|(k, objs)| {
            let kept: BTreeSet<IpNetwork> = objs.iter().filter_map(dst).collect();
            self.rec
                .installed_for(k)
                .into_iter()
                .flatten()
                .filter_map(dst)
                .filter(|d| !kept.contains(d))
                .any(|d| {
                    self.learned
                        .iter()
                        .any(|(p, t)| key(*p) != *k && t.contains_key(&d))
                })
        })
    }

    /// The whole learned table against a kernel dump (puts back deleted routes, removes
    /// stale ones once the startup is over, follows a changed route to an off-link next
    /// hop).
    async fn full(&mut self) {
        let all: BTreeSet<IpAddr> = self.learned.keys().copied().collect();
        let want = self.want(&all).await;
        let done = if self.started() {
            self.rec.resync(want, &[]).await
        } else {
            let done = self.rec.resync_keeping_unwanted(want, &[]).await;
            self.apply_withdrawals().await;
            done
        };
        match done {
            Ok(done) => {
                self.metrics.datapath_resynced();
                self.metrics.datapath_applied(&done, self.rec.installed());
            }
            Err(e) => {
                self.metrics.datapath_error();
                tracing::error!(error = %e, "BGP route resync failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(peer: &str, kind: RouteEventKind) -> RouteEvent {
        RouteEvent {
            peer: peer.parse().unwrap(),
            kind,
        }
    }

    #[test]
    fn table_follows_events() {
        let mut t = Learned::new();
        let p: IpNetwork = "10.0.0.0/26".parse().unwrap();
        let nh: IpAddr = "192.0.2.2".parse().unwrap();
        apply(
            &mut t,
            ev(
                "192.0.2.9",
                RouteEventKind::Learned {
                    prefix: p,
                    next_hop: nh,
                },
            ),
        );
        assert_eq!(t.len(), 1);
        apply(
            &mut t,
            ev("192.0.2.9", RouteEventKind::Withdrawn { prefix: p }),
        );
        assert!(t.is_empty());
        apply(
            &mut t,
            ev(
                "192.0.2.9",
                RouteEventKind::Learned {
                    prefix: p,
                    next_hop: nh,
                },
            ),
        );
        apply(&mut t, ev("192.0.2.9", RouteEventKind::PeerDown));
        assert!(t.is_empty());
    }

    #[test]
    fn next_hops_resolve_recursively() {
        let mut connected = RouteSpec::new("192.0.2.0/24".parse().unwrap());
        connected.scope = Some(253);
        let mut default = RouteSpec::new("0.0.0.0/0".parse().unwrap());
        default.gw = Some("192.0.2.254".parse().unwrap());
        let routes = [connected, default];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(resolve(&routes, ip("192.0.2.7")), Some(ip("192.0.2.7")));
        assert_eq!(
            resolve(&routes, ip("198.51.100.3")),
            Some(ip("192.0.2.254"))
        );
        assert_eq!(resolve(&routes, ip("fd00::1")), None);
    }
}
