//! The daemon's Prometheus metrics (prometheus-client), rendered for `GET /metrics`.
//!
//! It knows no other part of the daemon: what is read at scrape time (address usage,
//! BGP peers) comes from snapshot callbacks the composition hands it
//! ([`Metrics::read_usage_with`], [`Metrics::read_bgp_peers_with`]).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

type Kind = [(&'static str, &'static str); 1];
type PeerLabel = [(&'static str, String); 1];
type FamilyLabel = [(&'static str, &'static str); 1];

/// One family's address usage in this node's blocks: (family label, allocated, free).
pub(crate) type Usage = Vec<(&'static str, u128, u128)>;
type UsageSnapshot = Box<dyn Fn() -> Option<Usage> + Send + Sync>;

/// One BGP peer as the `bgp_*` families show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PeerSample {
    pub peer: IpAddr,
    /// The session is Established.
    pub up: bool,
    pub prefixes_sent: usize,
    pub prefixes_received: usize,
}
type PeerSnapshot = Box<dyn Fn() -> Vec<PeerSample> + Send + Sync>;

/// Every metric, plus the two health bits `/healthz` reads.
pub(crate) struct Metrics {
    registry: Registry,
    nodes_known: Gauge,
    blocks_owned: Gauge,
    addresses_allocated: Family<FamilyLabel, Gauge>,
    addresses_free: Family<FamilyLabel, Gauge>,
    renew_failures: Counter,
    store_errors: Counter,
    events: Family<Kind, Counter>,
    gc_released: Counter,
    blocks_released: Counter,
    dp_requests: Counter,
    dp_failed: Counter,
    dp_objects: Gauge,
    dp_resyncs: Counter,
    dp_repairs: Counter,
    dp_errors: Counter,
    dp_refused: Gauge,
    bgp_up: Family<PeerLabel, Gauge>,
    bgp_sent: Family<PeerLabel, Gauge>,
    bgp_received: Family<PeerLabel, Gauge>,
    /// The peers the `bgp_*` families show (`--datapath bgp`).
    bgp_peers: OnceLock<PeerSnapshot>,
    registered: AtomicBool,
    renew_ok: AtomicBool,
    /// Where the address gauges are read from at scrape time.
    usage: OnceLock<UsageSnapshot>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ipamd");
        let m = Metrics {
            nodes_known: Gauge::default(),
            blocks_owned: Gauge::default(),
            addresses_allocated: Family::default(),
            addresses_free: Family::default(),
            renew_failures: Counter::default(),
            store_errors: Counter::default(),
            events: Family::default(),
            gc_released: Counter::default(),
            blocks_released: Counter::default(),
            dp_requests: Counter::default(),
            dp_failed: Counter::default(),
            dp_objects: Gauge::default(),
            dp_resyncs: Counter::default(),
            dp_repairs: Counter::default(),
            usage: OnceLock::new(),
            dp_errors: Counter::default(),
            dp_refused: Gauge::default(),
            bgp_up: Family::default(),
            bgp_sent: Family::default(),
            bgp_received: Family::default(),
            bgp_peers: OnceLock::new(),
            registered: AtomicBool::new(false),
            renew_ok: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register(
            "nodes_known",
            "Live nodes in the cluster store, this one included",
            m.nodes_known.clone(),
        );
        registry.register(
            "blocks_owned",
            "CIDR blocks this node owns",
            m.blocks_owned.clone(),
        );
        registry.register(
            "addresses_allocated",
            "Addresses allocated to pods in this node's blocks, by family",
            m.addresses_allocated.clone(),
        );
        registry.register(
            "addresses_free",
            "Addresses left in this node's blocks, by family",
            m.addresses_free.clone(),
        );
        registry.register(
            "lease_renew_failures",
            "Lease renewals that failed",
            m.renew_failures.clone(),
        );
        registry.register(
            "store_errors",
            "Cluster store operations that failed",
            m.store_errors.clone(),
        );
        registry.register(
            "node_events",
            "Remote node events handed to the datapath, by kind",
            m.events.clone(),
        );
        registry.register(
            "gc_released",
            "Local reservations released by garbage collection",
            m.gc_released.clone(),
        );
        registry.register(
            "blocks_released",
            "Empty blocks this node gave back to the pool after the grace period",
            m.blocks_released.clone(),
        );
        registry.register(
            "datapath_requests",
            "Netlink requests the datapath reconciler sent (routes, neighbours, FDB entries)",
            m.dp_requests.clone(),
        );
        registry.register(
            "datapath_request_failures",
            "Datapath netlink requests the kernel refused (retried by the next resync)",
            m.dp_failed.clone(),
        );
        registry.register(
            "datapath_objects",
            "Routes, neighbour and FDB entries installed toward the other nodes",
            m.dp_objects.clone(),
        );
        registry.register(
            "datapath_resyncs",
            "Full datapath reconciliations against a kernel dump",
            m.dp_resyncs.clone(),
        );
        registry.register(
            "datapath_repairs",
            "Targeted repairs after kernel notifications (entries deleted or changed behind our back)",
            m.dp_repairs.clone(),
        );
        registry.register(
            "datapath_errors",
            "Device set-ups or resyncs of the datapath that failed",
            m.dp_errors.clone(),
        );
        registry.register(
            "datapath_peers_refused",
            "Remote nodes the datapath cannot reach (e.g. host-gw and not on this L2 segment)",
            m.dp_refused.clone(),
        );
        registry.register(
            "bgp_session_up",
            "1 when the BGP session with the peer is Established",
            m.bgp_up.clone(),
        );
        registry.register(
            "bgp_prefixes_sent",
            "Prefixes announced to the BGP peer",
            m.bgp_sent.clone(),
        );
        registry.register(
            "bgp_prefixes_received",
            "Prefixes accepted from the BGP peer (after the import filter)",
            m.bgp_received.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Where the per-peer `bgp_*` gauges are read from whenever metrics are rendered.
    pub(crate) fn read_bgp_peers_with(
        &self,
        peers: impl Fn() -> Vec<PeerSample> + Send + Sync + 'static,
    ) {
        let _ = self.bgp_peers.set(Box::new(peers));
    }

    /// Refreshes the per-peer gauges from the peers now, so a removed peer's series
    /// disappear.
    fn refresh_bgp_peers(&self) {
        let Some(peers) = self.bgp_peers.get() else {
            return;
        };
        for f in [&self.bgp_up, &self.bgp_sent, &self.bgp_received] {
            f.clear();
        }
        for p in peers() {
            let label = [("peer", p.peer.to_string())];
            self.bgp_up.get_or_create(&label).set(i64::from(p.up));
            self.bgp_sent
                .get_or_create(&label)
                .set(to_i64(p.prefixes_sent as u128));
            self.bgp_received
                .get_or_create(&label)
                .set(to_i64(p.prefixes_received as u128));
        }
    }

    /// One reconciliation's requests, and the objects installed after it.
    pub(crate) fn datapath_applied(&self, done: &cni_core::node::Applied, installed: usize) {
        self.dp_requests.inc_by(done.requests() as u64);
        self.dp_failed.inc_by(done.failed as u64);
        self.dp_objects.set(to_i64(installed as u128));
    }

    pub(crate) fn datapath_resynced(&self) {
        self.dp_resyncs.inc();
    }

    pub(crate) fn datapath_repaired(&self) {
        self.dp_repairs.inc();
    }

    pub(crate) fn datapath_error(&self) {
        self.dp_errors.inc();
    }

    pub(crate) fn set_peers_refused(&self, n: usize) {
        self.dp_refused.set(to_i64(n as u128));
    }

    pub(crate) fn set_nodes_known(&self, n: usize) {
        self.nodes_known.set(to_i64(n as u128));
    }

    pub(crate) fn set_blocks_owned(&self, n: usize) {
        self.blocks_owned.set(to_i64(n as u128));
    }

    pub(crate) fn set_addresses(&self, family: &'static str, allocated: u128, free: u128) {
        self.addresses_allocated
            .get_or_create(&[("family", family)])
            .set(to_i64(allocated));
        self.addresses_free
            .get_or_create(&[("family", family)])
            .set(to_i64(free));
    }

    pub(crate) fn renew_failure(&self) {
        self.renew_failures.inc();
    }

    pub(crate) fn store_error(&self) {
        self.store_errors.inc();
    }

    pub(crate) fn event(&self, kind: &'static str) {
        self.events.get_or_create(&[("kind", kind)]).inc();
    }

    pub(crate) fn gc_released(&self, n: usize) {
        self.gc_released.inc_by(n as u64);
    }

    pub(crate) fn block_released(&self) {
        self.blocks_released.inc();
    }

    pub(crate) fn set_registered(&self, v: bool) {
        self.registered.store(v, Ordering::Relaxed);
    }

    pub(crate) fn set_renew_ok(&self, v: bool) {
        self.renew_ok.store(v, Ordering::Relaxed);
    }

    /// Registered, and the last renewal succeeded.
    pub(crate) fn healthy(&self) -> bool {
        self.registered.load(Ordering::Relaxed) && self.renew_ok.load(Ordering::Relaxed)
    }

    /// Where the address gauges are read from whenever metrics are rendered (the
    /// node-local store: current when read, whatever the resync period); `None` from
    /// `usage` leaves them as they were.
    pub(crate) fn read_usage_with(
        &self,
        usage: impl Fn() -> Option<Usage> + Send + Sync + 'static,
    ) {
        let _ = self.usage.set(Box::new(usage));
    }

    /// Refreshes the address gauges (file reads: call it off the async threads).
    pub(crate) fn refresh_usage(&self) {
        let Some(usage) = self.usage.get() else {
            return;
        };
        for (family, used, free) in usage().unwrap_or_default() {
            self.set_addresses(family, used, free);
        }
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> Result<String, std::fmt::Error> {
        self.refresh_bgp_peers();
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn to_i64(n: u128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bgp_peers_of_the_snapshot() {
        let m = Metrics::new();
        m.read_bgp_peers_with(|| {
            vec![PeerSample {
                peer: "192.0.2.7".parse().unwrap(),
                up: true,
                prefixes_sent: 2,
                prefixes_received: 5,
            }]
        });
        let text = m.render().unwrap();
        for line in [
            "ipamd_bgp_session_up{peer=\"192.0.2.7\"} 1",
            "ipamd_bgp_prefixes_sent{peer=\"192.0.2.7\"} 2",
            "ipamd_bgp_prefixes_received{peer=\"192.0.2.7\"} 5",
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
    }

    #[test]
    fn renders_every_metric() {
        let m = Metrics::new();
        m.event("added");
        m.set_addresses("ipv4", 3, 61);
        let text = m.render().unwrap();
        for name in [
            "ipamd_nodes_known",
            "ipamd_blocks_owned",
            "ipamd_lease_renew_failures_total",
            "ipamd_store_errors_total",
            "ipamd_blocks_released_total 0",
            "ipamd_node_events_total{kind=\"added\"} 1",
            "ipamd_addresses_free{family=\"ipv4\"} 61",
        ] {
            assert!(text.contains(name), "{name} missing in {text}");
        }
        assert!(!m.healthy());
        m.set_registered(true);
        m.set_renew_ok(true);
        assert!(m.healthy());
    }
}
