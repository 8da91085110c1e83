//! What the chaos tests measure: continuous pings between pods (10 per second, each
//! reply time-stamped by `ping -D`), turned into lost packets and the longest outage,
//! and the repair time of an owned kernel object, polled every 20 ms.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Interval between the pings of a [`Pinger`].
pub const PING_INTERVAL: Duration = Duration::from_millis(100);

/// `ping -D -i 0.1` from netns `ns` to `dst`, output in a temp file. Killed on drop.
#[derive(Debug)]
pub struct Pinger {
    pub label: String,
    child: Option<Child>,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

/// What a stopped [`Pinger`] saw.
#[derive(Clone, Debug)]
pub struct PingLog {
    pub label: String,
    /// (unix time of the reply, icmp_seq), in order.
    pub replies: Vec<(f64, u32)>,
}

impl Pinger {
    pub fn start(label: &str, ns: &str, dst: Ipv4Addr) -> Pinger {
        let dir = tempfile::Builder::new()
            .prefix("mn-ping-")
            .tempdir()
            .expect("tempdir");
        let out = dir.path().join("ping");
        let f = std::fs::File::create(&out).expect("ping output");
        let child = Command::new("ip")
            .args([
                "netns", "exec", ns, "ping", "-D", "-n", "-i", "0.1", "-W", "1",
            ])
            .arg(dst.to_string())
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("fd"))
            .stderr(f)
            .spawn()
            .expect("spawn ping");
        Pinger {
            label: label.to_string(),
            child: Some(child),
            out,
            _dir: dir,
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Replies so far.
    pub fn replies(&self) -> usize {
        parse(&self.text()).len()
    }

    /// Stops it (SIGINT) and returns what it saw.
    pub fn stop(mut self) -> PingLog {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let _ = c.wait();
        }
        PingLog {
            label: self.label.clone(),
            replies: parse(&self.text()),
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `[1700000000.123456] 64 bytes from 10.1.2.3: icmp_seq=7 ttl=63 time=0.1 ms`.
fn parse(text: &str) -> Vec<(f64, u32)> {
    text.lines()
        .filter_map(|l| {
            let ts = l
                .strip_prefix('[')?
                .split(']')
                .next()?
                .parse::<f64>()
                .ok()?;
            if !l.contains("bytes from") {
                return None;
            }
            let seq = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))?
                .parse::<u32>()
                .ok()?;
            Some((ts, seq))
        })
        .collect()
}

/// Now as unix seconds (the clock of `ping -D`).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl PingLog {
    /// Pings sent up to the last reply that got none (a ping still in flight at the
    /// end does not count). The first ping must have been answered (the pinger was
    /// started on a working path).
    pub fn lost(&self) -> u32 {
        let seqs: BTreeSet<u32> = self.replies.iter().map(|r| r.1).collect();
        match seqs.last() {
            Some(&last) => last.saturating_sub(seqs.len() as u32),
            None => u32::MAX,
        }
    }

    /// The longest time without a reply after `since` (unix time), minus one interval:
    /// how long the path was down. Includes the time from `since` to the first reply.
    pub fn longest_outage_after(&self, since: f64) -> Duration {
        let mut prev = since;
        let mut worst = 0.0f64;
        for &(ts, _) in self.replies.iter().filter(|r| r.0 >= since) {
            worst = worst.max(ts - prev);
            prev = ts;
        }
        Duration::from_secs_f64((worst - PING_INTERVAL.as_secs_f64()).max(0.0))
    }
}

/// Polls `ok` every 20 ms until it holds (at most `timeout`); the time it took.
pub fn time_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if ok() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Route/neighbour and FDB monitors in a node, proven to listen (a marker route and FDB
/// entry on `eth0` are added and deleted until both monitors have printed them).
pub struct NodeMonitors {
    pub node: String,
    ns: String,
    routes: super::kernel::Monitor,
    fdb: super::kernel::Monitor,
}

const MARKER_IP: &str = "192.0.2.78";
const MARKER_MAC: &str = "02:00:5e:10:00:78";

impl NodeMonitors {
    pub fn start(node: &str, ns: &str) -> NodeMonitors {
        let m = NodeMonitors {
            node: node.to_string(),
            ns: ns.to_string(),
            routes: super::kernel::Monitor::routes_and_neighbours(ns),
            fdb: super::kernel::Monitor::fdb(ns),
        };
        let route = format!("{MARKER_IP}/32");
        super::wait_until("monitors listening", Duration::from_secs(30), || {
            m.markers(&route, false);
            m.markers(&route, true);
            std::thread::sleep(Duration::from_millis(100));
            let (r, f) = (m.routes.text(), m.fdb.text());
            if r.contains(MARKER_IP) && f.contains(MARKER_MAC) {
                Ok(())
            } else {
                Err(format!("route monitor: {r:?}; fdb monitor: {f:?}"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
        m.markers(&route, false);
        m
    }

    fn markers(&self, route: &str, add: bool) {
        let op = if add { "add" } else { "del" };
        let mut r = vec!["-n", &self.ns, "route", op, "blackhole", route];
        if add {
            r.extend(["proto", "static"]);
        }
        let _ = crate::try_sh("ip", &r);
        let mut f = vec![
            "netns", "exec", &self.ns, "bridge", "fdb", op, MARKER_MAC, "dev", "eth0", "self",
        ];
        if add {
            f.push("permanent");
        }
        let _ = crate::try_sh("ip", &f);
    }

    /// Stops both monitors; the deletions they saw of what `ipamd` owns (routes of
    /// protocol 97, entries on `tunnel`).
    pub fn stop(self, tunnel: Option<&str>) -> Vec<String> {
        let text = self.routes.stop() + &self.fdb.stop();
        let mut forbidden = vec![format!("proto {}", super::ROUTE_PROTO)];
        if let Some(dev) = tunnel {
            forbidden.push(format!("dev {dev} "));
            forbidden.push(format!("dev {dev}\n"));
        }
        text.lines()
            .filter(|l| l.starts_with("Deleted"))
            .filter(|l| !l.contains(MARKER_IP) && !l.contains(MARKER_MAC))
            .filter(|l| {
                let l = format!("{l}\n");
                forbidden.iter().any(|f| l.contains(f.as_str()))
            })
            .map(|l| format!("{}: {l}", self.node))
            .collect()
    }
}

/// `ip -ts -N monitor route neigh link` in a node (FDB entries are AF_BRIDGE neighbours
/// and show up too), proven to listen: the kernel's own timeline of a deletion and its
/// repair, whatever the load on the test's polling.
pub struct Timeline {
    mon: super::kernel::Monitor,
}

/// One line of a [`Timeline`]: unix time, text after the time stamp.
fn stamped(line: &str) -> Option<(f64, &str)> {
    let rest = line.strip_prefix('[')?;
    let (ts, text) = rest.split_once("] ")?;
    // 2026-12-01T13:52:08.085888 (local time of the monitor = the test's clock).
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, mi) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let s = t.next()?.parse::<f64>().ok()?;
    // Days since the epoch (civil calendar), enough to order and subtract.
    let days = {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + dd - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146097 + doe - 719468
    };
    Some((days as f64 * 86400.0 + h * 3600.0 + mi * 60.0 + s, text))
}

/// What identifies an entry in an `ip monitor` line: a route's destination, a
/// neighbour's address, an FDB entry's MAC (`dev D lladdr MAC ...`).
fn entry_key(t: &str) -> &str {
    let mut words = t.split_whitespace();
    match words.next() {
        Some("dev") => {
            let mut rest = t.split_whitespace().skip_while(|w| *w != "lladdr");
            rest.nth(1).unwrap_or("")
        }
        Some(w) => w,
        None => "",
    }
}

impl Timeline {
    pub fn start(ns: &str) -> Timeline {
        let mon = super::kernel::Monitor::start(
            ns,
            &["ip", "-ts", "-N", "monitor", "route", "neigh", "link"],
        );
        let route = format!("{MARKER_IP}/32");
        super::wait_until(
            "timeline monitor listening",
            Duration::from_secs(30),
            || {
                let _ = crate::try_sh(
                    "ip",
                    &[
                        "-n",
                        ns,
                        "route",
                        "add",
                        "blackhole",
                        &route,
                        "proto",
                        "static",
                    ],
                );
                let _ = crate::try_sh("ip", &["-n", ns, "route", "del", "blackhole", &route]);
                std::thread::sleep(Duration::from_millis(100));
                if mon.text().contains(MARKER_IP) {
                    Ok(())
                } else {
                    Err(mon.text())
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Timeline { mon }
    }

    /// Stops it; the time from the first deletion it saw to the last addition of a
    /// route or neighbour/FDB entry after it (link lines aside): how long the kernel
    /// lacked what was deleted. `None` when it saw no deletion or no addition after it.
    pub fn outage(self) -> (Option<Duration>, String) {
        let text = self.mon.stop();
        (outage_of(&text), text)
    }
}

/// See [`Timeline::outage`].
fn outage_of(text: &str) -> Option<Duration> {
    {
        let lines: Vec<(f64, &str)> = text
            .lines()
            .filter(|l| !l.contains(MARKER_IP))
            .filter_map(stamped)
            .collect();
        let is_link = |t: &str| {
            let t = t.strip_prefix("Deleted ").unwrap_or(t);
            t.split_once(": ")
                .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
        };
        // What ipamd owns: its routes, permanent entries, anything on its tunnel device
        // (a deleted neighbour is reported FAILED, without PERMANENT). Other neighbour
        // traffic (ARP on the underlay, the pods' veths) is not its business.
        let owned = |t: &str| {
            t.contains(&format!("proto {}", super::ROUTE_PROTO))
                || t.contains("PERMANENT")
                || t.contains(super::VXLAN_DEVICE)
        };
        let &(del, _) = lines
            .iter()
            .find(|(_, t)| t.starts_with("Deleted ") && owned(t))?;
        let additions = || {
            lines.iter().filter(|(ts, t)| {
                *ts >= del && !t.starts_with("Deleted ") && !is_link(t) && owned(t)
            })
        };
        let device_deleted = lines
            .iter()
            .any(|(_, t)| t.starts_with("Deleted ") && is_link(t) && owned(t));
        let back = if device_deleted {
            // Its routes go silently with it: back when the last entry is back.
            additions().map(|(ts, _)| *ts).reduce(f64::max)
        } else {
            // Back when every deleted entry is back (the first addition of its key after
            // its deletion); later traffic on the device does not count.
            let mut back = Some(del);
            for (ts, t) in lines
                .iter()
                .filter(|(_, t)| t.starts_with("Deleted ") && owned(t))
            {
                let key = entry_key(t.trim_start_matches("Deleted "));
                let readded = additions()
                    .find(|(ats, at)| ats >= ts && entry_key(at) == key)
                    .map(|(ats, _)| *ats);
                back = match (back, readded) {
                    (Some(b), Some(r)) => Some(b.max(r)),
                    _ => None,
                };
            }
            back
        };
        back.map(|b| Duration::from_secs_f64((b - del).max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_is_until_the_deleted_entry_is_back() {
        let t = "[2026-12-01T10:00:00.000000] Deleted 10.1.0.0/26 via 10.1.0.1 dev cni-vx.1 proto 97 onlink \n\
                 [2026-12-01T10:00:00.050000] 10.1.0.0/26 via 10.1.0.1 dev cni-vx.1 proto 97 onlink \n\
                 [2026-12-01T10:00:00.300000] 10.9.9.9 dev eth0 lladdr 02:00:00:00:00:09 REACHABLE \n\
                 [2026-12-01T10:00:00.400000] 10.7.7.7 dev cni-vx.1 lladdr 02:00:00:00:00:07 PERMANENT \n";
        let o = outage_of(t).unwrap();
        assert!((o.as_secs_f64() - 0.05).abs() < 1e-6, "{o:?}");
        // Never back: no outage to report.
        assert_eq!(outage_of(t.lines().next().unwrap()), None);
        // A deleted device: until the last entry is back.
        let t = "[2026-12-01T10:00:00.000000] Deleted 7: cni-vx.1: <BROADCAST> mtu 1450 \n\
                 [2026-12-01T10:00:00.100000] 10.1.0.0/26 via 10.1.0.1 dev cni-vx.1 proto 97 onlink \n\
                 [2026-12-01T10:00:00.120000] 9: cni-vx.1: <BROADCAST> mtu 1450 \n";
        let o = outage_of(t).unwrap();
        assert!((o.as_secs_f64() - 0.1).abs() < 1e-6, "{o:?}");
    }

    #[test]
    fn timeline_stamps() {
        let (a, t) = stamped("[2026-12-01T13:52:08.085888] Deleted 10.8.0.0/24 proto 97").unwrap();
        assert_eq!(t, "Deleted 10.8.0.0/24 proto 97");
        let (b, _) = stamped("[2026-12-02T00:00:00.000000] x").unwrap();
        assert!((b - a - (10.0 * 3600.0 + 7.0 * 60.0 + 51.914112)).abs() < 1e-6);
        // 1970-01-02 is one day after the epoch.
        assert_eq!(stamped("[1970-01-02T00:00:00.0] x").unwrap().0, 86400.0);
    }

    #[test]
    fn loss_and_outage() {
        let text = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
            [100.0] 64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.1 ms\n\
            [100.1] 64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time=0.1 ms\n\
            [100.6] 64 bytes from 10.0.0.2: icmp_seq=7 ttl=64 time=0.1 ms\n\
            [100.7] 64 bytes from 10.0.0.2: icmp_seq=8 ttl=64 time=0.1 ms\n";
        let log = PingLog {
            label: "t".into(),
            replies: parse(text),
        };
        assert_eq!(log.replies.len(), 4);
        assert_eq!(log.lost(), 4);
        let o = log.longest_outage_after(100.0);
        assert!((o.as_secs_f64() - 0.4).abs() < 1e-6, "{o:?}");
    }
}
