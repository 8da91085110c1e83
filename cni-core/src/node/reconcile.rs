//! The reconciler: brings the kernel to the desired [`Object`]s, per peer
//! (incremental) or all at once against a dump (resync).
//!
//! Requests are pipelined: up to [`IN_FLIGHT`] of them are outstanding on the one netlink
//! socket at a time, so no request waits for the answer to the one before. (The kernel
//! handles each inside the send, so what remains is the kernel's own work: IPv4 route
//! insertion dominates, and 5,000 peers take about as long as `ip -batch`.) They go in
//! four waves, each waiting for the one before:
//! route deletions, neighbour/FDB deletions, neighbour/FDB replacements, route
//! replacements. So a route never points at a neighbour that is not there yet, and a
//! neighbour is never removed under a route still using it.
//!
//! A failed request is logged and counted; the object is then not recorded as installed
//! (or, for a failed deletion, stays recorded), so the next resync tries again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::StreamExt;

use super::{Object, ObjectKey, Seen, RTPROT_IPAMD};
use crate::kernel_error::KernelError;
use crate::netlink::{Netlink, RouteSpec};

/// Requests outstanding at once. Each one's ACK waits in the socket's receive buffer
/// until read: 128 small ACKs fit in the default 208 KiB with room to spare.
pub(crate) const IN_FLIGHT: usize = 128;

/// What one reconciliation sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub replaced: usize,
    pub removed: usize,
    /// Requests the kernel refused (logged; the next resync tries again).
    pub failed: usize,
}

impl Applied {
    /// Netlink requests sent.
    pub fn requests(&self) -> usize {
        self.added + self.replaced + self.removed + self.failed
    }
}

/// One request to send.
#[derive(Clone, Debug)]
enum Op {
    /// Add (`new`) or replace an object.
    Put { obj: Object, new: bool },
    /// Delete an object. `route`: a dumped route as the kernel reported it (metric,
    /// gateway, device), so that exactly that route is deleted.
    Del {
        obj: Object,
        route: Option<RouteSpec>,
    },
}

impl Op {
    fn obj(&self) -> &Object {
        match self {
            Op::Put { obj, .. } | Op::Del { obj, .. } => obj,
        }
    }

    /// Its wave (see the module docs).
    fn wave(&self) -> usize {
        match (self, self.obj()) {
            (Op::Del { .. }, Object::Route { .. }) => 0,
            (Op::Del { .. }, _) => 1,
            (Op::Put { .. }, Object::Route { .. }) => 3,
            (Op::Put { .. }, _) => 2,
        }
    }
}

async fn send(nl: &Netlink, op: &Op) -> Result<(), KernelError> {
    match op {
        Op::Put { obj, .. } => match obj {
            Object::Route {
                dst,
                gw,
                oif,
                onlink,
            } => {
                let mut r = RouteSpec::new(*dst);
                r.gw = Some(*gw);
                r.oif = *oif;
                r.onlink = *onlink;
                r.protocol = Some(RTPROT_IPAMD);
                nl.replace_route(&r).await
            }
            Object::Neigh { dev, ip, mac } => nl.replace_neigh(*dev, *ip, *mac).await,
            Object::Fdb { dev, mac, dst } => nl.replace_fdb(*dev, *mac, *dst).await,
        },
        Op::Del { obj, route } => match obj {
            Object::Route { dst, .. } => match route {
                Some(r) => nl.del_route(r).await,
                None => {
                    // Our route to `dst` (gateway and device need not match: the
                    // protocol says it is ours), never someone else's.
                    let mut r = RouteSpec::new(*dst);
                    r.protocol = Some(RTPROT_IPAMD);
                    nl.del_route(&r).await
                }
            },
            Object::Neigh { dev, ip, .. } => nl.del_neigh(*dev, *ip).await,
            Object::Fdb { dev, mac, dst } => nl.del_fdb(*dev, *mac, *dst).await,
        },
    }
}

/// Sends `ops` wave by wave, each wave pipelined; returns what was sent and, per op (in
/// the order given), whether the kernel accepted it.
async fn run(nl: &Netlink, ops: &[Op]) -> (Applied, Vec<bool>) {
    let mut ok = vec![false; ops.len()];
    let mut applied = Applied::default();
    for wave in 0..4 {
        let idx: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].wave() == wave).collect();
        if idx.is_empty() {
            continue;
        }
        let results: Vec<(usize, Result<(), KernelError>)> = futures::stream::iter(idx)
            .map(|i| async move { (i, send(nl, &ops[i]).await) })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        for (i, r) in results {
            match r {
                Ok(()) => {
                    ok[i] = true;
                    match &ops[i] {
                        Op::Put { new: true, .. } => applied.added += 1,
                        Op::Put { new: false, .. } => applied.replaced += 1,
                        Op::Del { .. } => applied.removed += 1,
                    }
                }
                Err(e) => {
                    applied.failed += 1;
                    tracing::warn!(kind = ops[i].obj().kind(), error = %e, "node reconcile: request failed");
                }
            }
        }
    }
    (applied, ok)
}

/// Whether the kernel's `got` is what `want` asks for. A route's device is compared only
/// when `want` names one (the kernel always reports the one it chose).
fn satisfies(got: &Object, want: &Object) -> bool {
    match (got, want) {
        (
            Object::Route {
                dst: d1,
                gw: g1,
                oif: o1,
                onlink: l1,
            },
            Object::Route {
                dst: d2,
                gw: g2,
                oif: o2,
                onlink: l2,
            },
        ) => d1 == d2 && g1 == g2 && l1 == l2 && (o2.is_none() || o1 == o2),
        _ => got == want,
    }
}

/// The requests that take a peer from `old` (installed) to `want`: a put for each new or
/// changed key, a delete for each key gone.
fn plan_peer(old: &BTreeSet<Object>, want: &BTreeSet<Object>) -> Vec<Op> {
    let old_by_key: HashMap<ObjectKey, &Object> = old.iter().map(|o| (o.key(), o)).collect();
    let want_keys: BTreeSet<ObjectKey> = want.iter().map(Object::key).collect();
    let mut ops = Vec::new();
    for w in want {
        match old_by_key.get(&w.key()) {
            Some(o) if *o == w => {}
            Some(_) => ops.push(Op::Put {
                obj: w.clone(),
                new: false,
            }),
            None => ops.push(Op::Put {
                obj: w.clone(),
                new: true,
            }),
        }
    }
    for o in old {
        if !want_keys.contains(&o.key()) {
            ops.push(Op::Del {
                obj: o.clone(),
                route: None,
            });
        }
    }
    ops
}

/// The union of what every peer wants, by key, with the peer that gets it. Two peers
/// asking for different versions of one entry is a conflict: the first peer (by name)
/// gets it.
fn union(want: &BTreeMap<String, BTreeSet<Object>>) -> HashMap<ObjectKey, (&Object, &str)> {
    let mut wanted: HashMap<ObjectKey, (&Object, &str)> = HashMap::new();
    for (peer, objs) in want {
        for o in objs {
            match wanted.get(&o.key()) {
                None => {
                    wanted.insert(o.key(), (o, peer.as_str()));
                }
                Some((w, first)) if *w != o => {
                    tracing::warn!(peer = %peer, other = %first, entry = ?o,
                        "two peers want different versions of one entry: keeping the first");
                }
                Some(_) => {}
            }
        }
    }
    wanted
}

/// The requests that take the kernel (`kernel`: what we own there, as dumped) to
/// `wanted`. A wanted entry on a device that was not dumped is never seen, so always put.
fn plan_resync(
    kernel: &[(Object, Option<RouteSpec>)],
    wanted: &HashMap<ObjectKey, (&Object, &str)>,
) -> Vec<Op> {
    // Keys whose wanted version is in the kernel; how many versions of each key are.
    let mut satisfied: BTreeSet<ObjectKey> = BTreeSet::new();
    let mut present: HashMap<ObjectKey, usize> = HashMap::new();
    for (k, _) in kernel {
        if let Some((w, _)) = wanted.get(&k.key()) {
            if satisfies(k, w) {
                satisfied.insert(k.key());
            }
        }
        *present.entry(k.key()).or_default() += 1;
    }
    let mut ops = Vec::new();
    for (k, route) in kernel {
        let key = k.key();
        let delete = match wanted.get(&key) {
            None => true,
            // An extra version next to the wanted one (a second remote of the flooding
            // MAC, a second route to a destination): it goes.
            Some((w, _)) if satisfied.contains(&key) => !satisfies(k, w),
            // A single version is replaced in place; several go before the wanted one
            // is put (a replace would only rewrite one of them).
            Some(_) => present.get(&key).copied().unwrap_or(0) > 1,
        };
        if delete {
            ops.push(Op::Del {
                obj: k.clone(),
                route: route.clone(),
            });
        }
    }
    for (key, (w, _)) in wanted {
        if !satisfied.contains(key) {
            ops.push(Op::Put {
                obj: (*w).clone(),
                new: !present.contains_key(key),
            });
        }
    }
    // Deterministic order (HashMap iteration is not): logs and tests read better.
    ops.sort_by(|a, b| a.obj().cmp(b.obj()));
    ops
}

/// The puts that repair `installed` after the kernel reported `seen` (see
/// [`Reconciler::repair`]).
fn plan_repair(installed: &BTreeMap<String, BTreeSet<Object>>, seen: &[Seen]) -> Vec<Op> {
    let mut last: BTreeMap<ObjectKey, &Seen> = BTreeMap::new();
    for s in seen {
        last.insert(s.key(), s);
    }
    let wanted: HashMap<ObjectKey, &Object> =
        installed.values().flatten().map(|o| (o.key(), o)).collect();
    let mut ops = Vec::new();
    for (key, s) in last {
        let Some(w) = wanted.get(&key) else { continue };
        let put = match s {
            Seen::Gone(o) => satisfies(o, w),
            Seen::Present(o) => !satisfies(o, w),
            Seen::Lost(_) => true,
        };
        if put {
            ops.push(Op::Put {
                obj: (*w).clone(),
                new: !matches!(s, Seen::Present(_)),
            });
        }
    }
    ops
}

/// Holds what has been installed for each peer.
pub struct Reconciler {
    nl: Netlink,
    installed: BTreeMap<String, BTreeSet<Object>>,
}

impl Reconciler {
    pub fn new(nl: Netlink) -> Reconciler {
        Reconciler {
            nl,
            installed: BTreeMap::new(),
        }
    }

    /// Objects currently installed, all peers.
    pub fn installed(&self) -> usize {
        self.installed.values().map(BTreeSet::len).sum()
    }

    /// What is recorded as installed for `peer`.
    pub fn installed_for(&self, peer: &str) -> Option<&BTreeSet<Object>> {
        self.installed.get(peer)
    }

    /// Incremental: `want` is everything `peer` needs now; only the difference to what
    /// was installed for it is sent (replace for a changed key, delete for a gone one).
    /// Keys are taken to belong to one peer each (they derive from the peer's own blocks,
    /// address and MAC); [`Reconciler::resync`] sorts out any overlap.
    pub async fn set_peer(&mut self, peer: &str, want: BTreeSet<Object>) -> Applied {
        let old = self.installed.remove(peer).unwrap_or_default();
        let old_by_key: HashMap<ObjectKey, &Object> = old.iter().map(|o| (o.key(), o)).collect();
        let ops = plan_peer(&old, &want);
        let (applied, ok) = run(&self.nl, &ops).await;

        // Installed now: what was already right, what was put, and what could not be
        // deleted; for a key whose replacement failed, the old version is still there.
        let mut now: BTreeSet<Object> = want.iter().filter(|w| old.contains(*w)).cloned().collect();
        for (op, ok) in ops.iter().zip(ok) {
            match (op, ok) {
                (Op::Put { obj, .. }, true) => {
                    now.insert(obj.clone());
                }
                (Op::Put { obj, .. }, false) => {
                    if let Some(o) = old_by_key.get(&obj.key()) {
                        now.insert((*o).clone());
                    }
                }
                (Op::Del { .. }, true) => {}
                (Op::Del { obj, .. }, false) => {
                    now.insert(obj.clone());
                }
            }
        }
        if !now.is_empty() {
            self.installed.insert(peer.to_string(), now);
        }
        applied
    }

    /// Targeted repair after kernel notifications (see [`crate::node::KernelWatch`]): for each
    /// key the kernel reported on (the last report per key counts), when a peer has it
    /// installed and the kernel's version no longer satisfies it (deleted, or changed
    /// to another version), the wanted version is put again. Nothing else is sent: a
    /// notification of our own request shows the wanted version and ends there, so
    /// repairs never feed on themselves; an entry of another agent (another route
    /// protocol, a non-permanent neighbour) is never reported, so never fought.
    pub async fn repair(&mut self, seen: &[Seen]) -> Applied {
        let ops = plan_repair(&self.installed, seen);
        if ops.is_empty() {
            return Applied::default();
        }
        let (applied, _) = run(&self.nl, &ops).await;
        for op in &ops {
            tracing::info!(entry = ?op.obj(), "repaired an entry deleted or changed behind our back");
        }
        applied
    }

    /// Removes everything installed for `peer`.
    pub async fn remove_peer(&mut self, peer: &str) -> Applied {
        self.set_peer(peer, BTreeSet::new()).await
    }

    /// Full: `want` for every peer. The kernel is dumped (routes with
    /// [`super::RTPROT_IPAMD`] in the main table, both families; permanent neighbours and
    /// FDB entries on `devices`), compared with `want`, and only the difference is sent;
    /// an owned entry nobody wants is deleted. When nothing differs, nothing is sent.
    /// Neighbour and FDB entries wanted on a device not in `devices` cannot be seen, so
    /// they are put on every resync: list every device they are on.
    pub async fn resync(
        &mut self,
        want: BTreeMap<String, BTreeSet<Object>>,
        devices: &[u32],
    ) -> Result<Applied, KernelError> {
        self.resync_with(want, devices, false).await
    }

    /// As [`Reconciler::resync`], but an owned entry nobody wants stays: for a daemon
    /// that restarted and has not heard everything again yet (what it programmed before
    /// keeps forwarding until it knows what is gone).
    pub async fn resync_keeping_unwanted(
        &mut self,
        want: BTreeMap<String, BTreeSet<Object>>,
        devices: &[u32],
    ) -> Result<Applied, KernelError> {
        self.resync_with(want, devices, true).await
    }

    async fn resync_with(
        &mut self,
        want: BTreeMap<String, BTreeSet<Object>>,
        devices: &[u32],
        keep_unwanted: bool,
    ) -> Result<Applied, KernelError> {
        let kernel = self.dump(devices).await?;

        let wanted = union(&want);
        let mut ops = plan_resync(&kernel, &wanted);
        if keep_unwanted {
            ops.retain(|op| matches!(op, Op::Put { .. }) || wanted.contains_key(&op.obj().key()));
        }
        let (applied, ok) = run(&self.nl, &ops).await;

        let failed: BTreeSet<&Object> = ops
            .iter()
            .zip(&ok)
            .filter(|(op, ok)| !**ok && matches!(op, Op::Put { .. }))
            .map(|(op, _)| op.obj())
            .collect();
        let mut installed = BTreeMap::new();
        for (peer, objs) in &want {
            let mine: BTreeSet<Object> = objs
                .iter()
                .filter(|o| {
                    !failed.contains(o)
                        && wanted
                            .get(&o.key())
                            .is_some_and(|(w, p)| *w == *o && *p == peer.as_str())
                })
                .cloned()
                .collect();
            if !mine.is_empty() {
                installed.insert(peer.clone(), mine);
            }
        }
        self.installed = installed;
        if applied.requests() > 0 {
            tracing::info!(
                added = applied.added,
                replaced = applied.replaced,
                removed = applied.removed,
                failed = applied.failed,
                "node resync"
            );
        }
        Ok(applied)
    }

    /// What we own in the kernel, as objects (a route with the route as read, to
    /// delete exactly that one).
    async fn dump(&self, devices: &[u32]) -> Result<Vec<(Object, Option<RouteSpec>)>, KernelError> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            let routes = self
                .nl
                .routes(v6, None)
                .await
                .map_err(|e| e.context("node resync"))?;
            for r in routes {
                if r.protocol != Some(RTPROT_IPAMD) {
                    continue;
                }
                let obj = Object::Route {
                    dst: r.dst,
                    // Ours always have a gateway; one without (e.g. multipath) is not
                    // ours as it is, and the stand-in never equals a wanted route.
                    gw: r.gw.unwrap_or_else(|| r.dst.ip()),
                    oif: r.oif,
                    onlink: r.onlink,
                };
                out.push((obj, Some(r)));
            }
        }
        for &dev in devices {
            let ctx = |e: KernelError| e.context("node resync");
            for n in self.nl.neighs(dev).await.map_err(ctx)? {
                let obj = Object::Neigh {
                    dev: n.dev,
                    ip: n.ip,
                    mac: n.mac,
                };
                out.push((obj, None));
            }
            for f in self.nl.fdbs(dev).await.map_err(ctx)? {
                let obj = Object::Fdb {
                    dev: f.dev,
                    mac: f.mac,
                    dst: f.dst,
                };
                out.push((obj, None));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::MacAddr;

    fn route(dst: &str, gw: &str, oif: Option<u32>) -> Object {
        Object::Route {
            dst: dst.parse().unwrap(),
            gw: gw.parse().unwrap(),
            oif,
            onlink: true,
        }
    }

    fn fdb(mac: u8, dst: &str) -> Object {
        Object::Fdb {
            dev: 7,
            mac: MacAddr([2, 0, 0, 0, 0, mac]),
            dst: dst.parse().unwrap(),
        }
    }

    /// (kind of op, object) for readable assertions.
    fn show(ops: &[Op]) -> Vec<(&'static str, Object)> {
        ops.iter()
            .map(|op| match op {
                Op::Put { obj, new: true } => ("add", obj.clone()),
                Op::Put { obj, new: false } => ("replace", obj.clone()),
                Op::Del { obj, .. } => ("del", obj.clone()),
            })
            .collect()
    }

    #[test]
    fn peer_diff_is_by_key() {
        let old = BTreeSet::from([
            route("10.0.1.0/24", "10.0.1.1", Some(7)),
            fdb(1, "192.168.0.1"),
            fdb(2, "192.168.0.2"),
        ]);
        let want = BTreeSet::from([
            route("10.0.1.0/24", "10.0.1.1", Some(7)),
            fdb(1, "192.168.0.9"),
            fdb(3, "192.168.0.3"),
        ]);
        let mut got = show(&plan_peer(&old, &want));
        got.sort();
        assert_eq!(
            got,
            vec![
                ("add", fdb(3, "192.168.0.3")),
                ("del", fdb(2, "192.168.0.2")),
                ("replace", fdb(1, "192.168.0.9")),
            ]
        );
        assert!(plan_peer(&want, &want).is_empty());
    }

    #[test]
    fn resync_diff() {
        let want = BTreeMap::from([
            (
                "a".to_string(),
                BTreeSet::from([
                    route("10.0.1.0/24", "10.0.1.1", None),
                    fdb(1, "192.168.0.1"),
                ]),
            ),
            // Conflicts with a's route: a (first by name) wins.
            (
                "b".to_string(),
                BTreeSet::from([
                    route("10.0.1.0/24", "10.0.9.9", None),
                    fdb(2, "192.168.0.2"),
                ]),
            ),
        ]);
        let wanted = union(&want);
        assert_eq!(wanted.len(), 3);
        let kernel = vec![
            // The kernel reports the device it chose: still what `a` wants.
            (route("10.0.1.0/24", "10.0.1.1", Some(7)), None),
            // Wanted, with another remote: replaced in place.
            (fdb(2, "192.168.0.8"), None),
            // Nobody wants it.
            (route("10.0.5.0/24", "10.0.5.1", Some(7)), None),
        ];
        let got = show(&plan_resync(&kernel, &wanted));
        assert_eq!(
            got,
            vec![
                ("del", route("10.0.5.0/24", "10.0.5.1", Some(7))),
                ("add", fdb(1, "192.168.0.1")),
                ("replace", fdb(2, "192.168.0.2")),
            ]
        );
        // Nothing differs: nothing to send.
        let kernel = vec![
            (route("10.0.1.0/24", "10.0.1.1", Some(7)), None),
            (fdb(1, "192.168.0.1"), None),
            (fdb(2, "192.168.0.2"), None),
        ];
        assert!(plan_resync(&kernel, &wanted).is_empty());
    }

    #[test]
    fn repair_puts_back_only_what_differs_from_the_wanted() {
        let r = route("10.0.1.0/24", "10.0.1.1", Some(7));
        let f = fdb(1, "192.168.0.1");
        let installed = BTreeMap::from([("a".to_string(), BTreeSet::from([r.clone(), f.clone()]))]);
        // Our own write coming back: nothing to do.
        assert!(plan_repair(&installed, &[Seen::Present(r.clone())]).is_empty());
        // Deleted: put again.
        assert_eq!(
            show(&plan_repair(&installed, &[Seen::Gone(r.clone())])),
            vec![("add", r.clone())]
        );
        // Deleted, then put back (the last report per key counts): nothing.
        assert!(plan_repair(
            &installed,
            &[Seen::Gone(r.clone()), Seen::Present(r.clone())]
        )
        .is_empty());
        // Changed to another remote: replaced.
        assert_eq!(
            show(&plan_repair(
                &installed,
                &[Seen::Present(fdb(1, "192.168.0.9"))]
            )),
            vec![("replace", f.clone())]
        );
        // Another version of the key deleted (e.g. an extra one a resync removed): nothing.
        assert!(plan_repair(&installed, &[Seen::Gone(fdb(1, "192.168.0.9"))]).is_empty());
        // A key nobody wants: nothing.
        let stray = route("10.9.0.0/24", "10.9.0.1", Some(7));
        assert!(plan_repair(&installed, &[Seen::Gone(stray)]).is_empty());
        // A neighbour lost whatever its version: put.
        let n = Object::Neigh {
            dev: 7,
            ip: "10.0.1.1".parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
        };
        let installed = BTreeMap::from([("a".to_string(), BTreeSet::from([n.clone()]))]);
        assert_eq!(
            show(&plan_repair(&installed, &[Seen::Lost(n.key())])),
            vec![("add", n)]
        );
    }

    #[test]
    fn resync_with_several_versions_of_a_key() {
        let zero = |dst: &str| Object::Fdb {
            dev: 7,
            mac: MacAddr([0; 6]),
            dst: dst.parse().unwrap(),
        };
        let want = BTreeMap::from([("f".to_string(), BTreeSet::from([zero("192.168.0.1")]))]);
        let wanted = union(&want);
        // The wanted remote and another: the other goes.
        let kernel = vec![(zero("192.168.0.1"), None), (zero("192.168.0.2"), None)];
        assert_eq!(
            show(&plan_resync(&kernel, &wanted)),
            vec![("del", zero("192.168.0.2"))]
        );
        // Two others: both go, then the wanted one is put.
        let kernel = vec![(zero("192.168.0.2"), None), (zero("192.168.0.3"), None)];
        let ops = plan_resync(&kernel, &wanted);
        assert_eq!(
            show(&ops),
            vec![
                ("replace", zero("192.168.0.1")),
                ("del", zero("192.168.0.2")),
                ("del", zero("192.168.0.3")),
            ]
        );
        // Deletions go in an earlier wave than the put.
        assert!(ops[1].wave() < ops[0].wave());
    }
}
