//! Garbage collection of local reservations whose container is gone.
//!
//! A reservation is released only when all of these hold:
//! - it records the container's network namespace path ([`Allocation::netns`]), and
//!   that path no longer exists;
//! - it was created ([`Allocation::created`]) longer than the grace period ago.
//!
//! One without a recorded netns is always kept: nothing says its container is gone.
//! [`ipam::Store::retain`] does the work under the store lock, and also reclaims
//! crash leftovers (address entries no key entry names).

use ipam::{Allocation, IpamError, Store};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How old `alloc` is, from its recorded creation time; `None` when not recorded.
fn age(alloc: &Allocation, now: SystemTime) -> Option<Duration> {
    let created = UNIX_EPOCH + Duration::from_secs(alloc.created?);
    Some(now.duration_since(created).unwrap_or(Duration::ZERO))
}

/// Whether to keep a reservation. Pure, given what was observed about it.
pub(crate) fn keep(
    netns: Option<&Path>,
    netns_exists: bool,
    age: Option<Duration>,
    grace: Duration,
) -> bool {
    match (netns, age) {
        (None, _) => true,
        (Some(_), _) if netns_exists => true,
        (Some(_), Some(age)) => age < grace,
        (Some(_), None) => true,
    }
}

/// One GC pass; returns what was released.
pub(crate) fn collect(store: &Store, grace: Duration) -> Result<Vec<Allocation>, IpamError> {
    let now = SystemTime::now();
    let report = store.retain(&|key| {
        // Called under the store lock; `get` reads only this attachment's file.
        let alloc = match store.get(key) {
            Ok(Some(a)) => a,
            // Vanished or unreadable: not ours to judge here (retain reports corruption).
            Ok(None) | Err(_) => return true,
        };
        let netns = alloc.netns.as_deref();
        let exists = netns.is_some_and(Path::exists);
        keep(netns, exists, age(&alloc, now), grace)
    })?;
    for a in &report.released {
        tracing::info!(key = %a.key, ips = ?a.ips, "gc: container gone, reservation released");
    }
    for ip in &report.orphans {
        tracing::info!(%ip, "gc: crash leftover reclaimed");
    }
    Ok(report.released)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::AllocKey;

    #[test]
    fn never_a_live_one_nor_one_without_netns() {
        let g = Duration::from_secs(300);
        let old = Some(Duration::from_secs(600));
        let young = Some(Duration::from_secs(10));
        let ns = Some(Path::new("/run/netns/x"));
        assert!(keep(None, false, old, g));
        assert!(keep(ns, true, old, g));
        assert!(keep(ns, false, young, g));
        assert!(keep(ns, false, None, g));
        assert!(!keep(ns, false, old, g));
    }

    #[test]
    fn releases_a_gone_container_after_grace() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().join("net")).unwrap();
        let r = ipam::Range::new("t", "10.0.0.0/24".parse().unwrap(), None, None, None).unwrap();
        let sets =
            ipam::RangeSets::new("t", vec![ipam::RangeSet::new("t", vec![r]).unwrap()]).unwrap();
        let live_ns = d.path().join("live-ns");
        std::fs::write(&live_ns, b"").unwrap();
        for (id, ns) in [
            ("gone", Some(d.path().join("gone-ns"))),
            ("live", Some(live_ns)),
            ("unknown", None),
        ] {
            let key = AllocKey::new(id, "eth0");
            s.allocate_with(&key, &sets, &[], &ipam::AllocMeta { netns: ns })
                .unwrap();
        }
        // Within the grace period nothing goes.
        assert!(collect(&s, Duration::from_secs(300)).unwrap().is_empty());
        let released = collect(&s, Duration::ZERO).unwrap();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].key.container_id, "gone");
        assert_eq!(s.list().unwrap().len(), 2);
    }
}
