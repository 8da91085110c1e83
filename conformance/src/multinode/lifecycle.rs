//! What happens to a node over its life, checked the same way for the IPv4 clusters
//! ([`super::cluster`]) and the dual-stack / IPv6-only ones ([`super::dual`]): a node
//! removed from the store leaves no entry behind on the others, and a restarted `ipamd`
//! touches nothing it owns.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::kernel::{show, Entry, Monitor};
use super::node::{self, Ipamd};
use super::{wait_until, ROUTE_PROTO};

/// How long `ipamd` may take to program a change.
const CONVERGE: Duration = Duration::from_secs(20);

/// What each of `nodes` but `gone` holds that names `tokens` (the addresses and MACs of
/// `gone`): the entries its removal must take away.
pub fn entries_naming<'a>(
    nodes: impl IntoIterator<Item = &'a String>,
    gone: &str,
    tokens: &[String],
    owned: impl Fn(&str) -> BTreeSet<Entry>,
) -> BTreeMap<String, BTreeSet<Entry>> {
    nodes
        .into_iter()
        .filter(|n| *n != gone)
        .map(|n| {
            let mine = owned(n)
                .into_iter()
                .filter(|e| e.mentions(tokens))
                .collect();
            (n.clone(), mine)
        })
        .collect()
}

/// Waits until no node of `before` (a node -> what it held for `gone`) holds any of
/// those entries, or any entry naming `tokens` (the removed node's addresses and MACs).
/// `owned` reads what a node holds now.
pub fn wait_entries_gone(
    gone: &str,
    before: &BTreeMap<String, BTreeSet<Entry>>,
    tokens: &[String],
    owned: impl Fn(&str) -> BTreeSet<Entry>,
) -> Result<(), String> {
    wait_until(&format!("entries for {gone} removed"), CONVERGE, || {
        let mut left = Vec::new();
        for (n, old) in before {
            let stale: BTreeSet<Entry> = owned(n)
                .into_iter()
                .filter(|e| old.contains(e) || e.mentions(tokens))
                .collect();
            if !stale.is_empty() {
                left.push(format!("{n} still holds:\n{}", show(&stale)));
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(left.join("\n"))
        }
    })
    .map(|_| ())
}

/// What a watched restart of `ipamd` showed.
#[derive(Debug)]
pub struct Restart {
    /// `ipamd_datapath_resyncs_total` of the new process.
    pub resyncs: f64,
    /// `ipamd_datapath_requests_total` of the new process (netlink requests it sent).
    pub requests: Option<f64>,
    pub metrics: String,
    /// Every route, neighbour and FDB event of the window.
    pub events: String,
    /// The events that concern what `ipamd` owns (protocol-97 routes, objects on the
    /// tunnel device).
    pub touched: Vec<String>,
}

impl Restart {
    /// Asserts a silent restart: no event on what `ipamd` owns, no netlink request.
    pub fn assert_silent(&self, node: &str) {
        assert!(
            self.touched.is_empty(),
            "restarting ipamd on {node} touched what it owns:\n{}\n(all events:\n{})",
            self.touched.join("\n"),
            self.events
        );
        assert_eq!(
            self.requests,
            Some(0.0),
            "ipamd_datapath_requests_total of the restarted ipamd on {node} (resyncs: {}); \
             metrics:\n{}",
            self.resyncs,
            self.metrics
        );
    }
}

/// Restarts `d`, the `ipamd` of netns `ns`, under `ip monitor route neigh` and `bridge
/// monitor fdb`, and waits for its first resync. Markers (a blackhole route
/// `marker_route` and a permanent FDB entry on `eth0`), added and deleted before and
/// after the window, prove that both monitors listened the whole time. `tunnel_dev`:
/// the device whose objects `ipamd` owns, if any.
pub fn restart_watched(
    ns: &str,
    d: &mut Ipamd,
    tunnel_dev: Option<&str>,
    marker_route: &str,
) -> Restart {
    let rmon = Monitor::routes_and_neighbours(ns);
    let fmon = Monitor::fdb(ns);
    let marker_ip = marker_route.split('/').next().unwrap_or(marker_route);
    let marker_mac = "02:00:5e:10:00:77";
    let set_markers = |add: bool| {
        let verb = if add { "add" } else { "del" };
        let mut route = vec!["-n", ns, "route", verb, "blackhole", marker_route];
        let mut fdb = vec![
            "netns", "exec", ns, "bridge", "fdb", verb, marker_mac, "dev", "eth0", "self",
        ];
        if add {
            route.extend(["proto", "static"]);
            fdb.push("permanent");
        }
        let _ = crate::try_sh("ip", &route);
        let _ = crate::try_sh("ip", &fdb);
    };
    // Added and deleted again until both monitors have shown them (a monitor started
    // late misses an event, and re-adding an existing entry makes none).
    wait_until("monitors listening", Duration::from_secs(30), || {
        set_markers(false);
        set_markers(true);
        std::thread::sleep(Duration::from_millis(100));
        let (r, f) = (rmon.text(), fmon.text());
        if r.contains(marker_ip) && f.contains(marker_mac) {
            Ok(())
        } else {
            Err(format!("route monitor: {r:?}; fdb monitor: {f:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));

    d.restart();
    d.wait_healthy(CONVERGE).unwrap_or_else(|e| panic!("{e}"));
    let resyncs = d
        .wait_metric_at_least("ipamd_datapath_resyncs_total", 1.0, CONVERGE)
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", d.log_text()));
    std::thread::sleep(Duration::from_secs(2));
    let metrics = d.metrics().unwrap_or_else(|e| panic!("metrics: {e}"));
    let requests = node::metric_sum(&metrics, "ipamd_datapath_requests_total");

    // The markers' deletion after the window proves the monitors still listened.
    let deletions = |m: &Monitor, needle: &str| {
        m.text()
            .lines()
            .filter(|l| l.starts_with("Deleted") && l.contains(needle))
            .count()
    };
    let (r0, f0) = (deletions(&rmon, marker_ip), deletions(&fmon, marker_mac));
    set_markers(false);
    wait_until(
        "the monitors saw the markers deleted",
        Duration::from_secs(20),
        || {
            let (r, f) = (deletions(&rmon, marker_ip), deletions(&fmon, marker_mac));
            if r > r0 && f > f0 {
                Ok(())
            } else {
                Err(format!(
                    "route monitor: {:?}; fdb monitor: {:?}",
                    rmon.text(),
                    fmon.text()
                ))
            }
        },
    )
    .unwrap_or_else(|e| panic!("a monitor stopped listening: {e}"));

    let events = rmon.stop() + &fmon.stop();
    let mut forbidden = vec![format!("proto {ROUTE_PROTO}")];
    if let Some(dev) = tunnel_dev {
        forbidden.push(format!("dev {dev} "));
        forbidden.push(format!("dev {dev}\n"));
    }
    let touched = events
        .lines()
        .filter(|l| !l.contains(marker_ip) && !l.contains(marker_mac))
        .filter(|l| {
            let l = format!("{l}\n");
            forbidden.iter().any(|f| l.contains(f.as_str()))
        })
        .map(String::from)
        .collect();
    Restart {
        resyncs,
        requests,
        metrics,
        events,
        touched,
    }
}

/// After `node`'s `ipamd` froze (SIGSTOP: no NOTIFICATION, no closed socket): waits
/// until, within the hold time (+2 s for the withdrawal to travel router -> nodes ->
/// kernel and for the polling), no node of `others` holds an entry naming `tokens` (the
/// frozen node's addresses) and the router's table (`router_prefixes`) holds none of
/// its `blocks`. Returns how long that took.
pub fn wait_blocks_withdrawn(
    node: &str,
    others: &[String],
    tokens: &[String],
    blocks: &[String],
    owned: impl Fn(&str) -> BTreeSet<Entry>,
    router_prefixes: impl Fn() -> Vec<String>,
) -> Result<Duration, String> {
    let t = std::time::Instant::now();
    let hold = Duration::from_secs(super::router::HOLD_TIME);
    wait_until(
        &format!("{node}'s blocks withdrawn"),
        hold + Duration::from_secs(2),
        || {
            let mut left: Vec<String> = others
                .iter()
                .flat_map(|n| {
                    owned(n)
                        .into_iter()
                        .filter(|e| e.mentions(tokens))
                        .map(move |e| format!("{n}: {e}"))
                })
                .collect();
            let in_router = router_prefixes();
            left.extend(
                blocks
                    .iter()
                    .filter(|b| in_router.contains(b))
                    .map(|b| format!("router: {b}")),
            );
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join("\n"))
            }
        },
    )
    .map(|_| t.elapsed())
}
