//! Address ranges: one [`Range`] is a slice `rangeStart..=rangeEnd` of a subnet; a
//! [`RangeSet`] is the list of ranges one address is taken from (all of one family); the
//! [`RangeSets`] of a network give one address each (one IPv4 and one IPv6 set: dual stack).
//!
//! Addresses are handled as `u128` (IPv4 in the low 32 bits) so both families share the
//! arithmetic.

use ipnetwork::IpNetwork;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::IpamError;

/// `ip` as an integer (IPv4 in the low 32 bits).
pub(crate) fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`ip_to_u128`] for the family of `like`.
fn u128_to_ip(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((v & 0xffff_ffff) as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// One allocation range, canonical and validated: `start <= end`, both inside `subnet`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// The subnet, network address and prefix (host bits clear).
    pub subnet: IpNetwork,
    /// First allocatable address (inclusive).
    pub start: IpAddr,
    /// Last allocatable address (inclusive).
    pub end: IpAddr,
    /// Never allocated; returned as the gateway of addresses from this range.
    pub gateway: Option<IpAddr>,
}

impl Range {
    /// Builds a range the way host-local does: `start` defaults to the network address
    /// plus one, `end` to the broadcast address minus one (IPv4) or the last address
    /// (IPv6), the gateway to the network address plus one. `field` names the range in
    /// error messages (e.g. `ipam.ranges[0][1]`).
    pub fn new(
        field: &str,
        subnet: IpNetwork,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        gateway: Option<IpAddr>,
    ) -> Result<Range, IpamError> {
        let bits: u8 = if subnet.is_ipv4() { 32 } else { 128 };
        if subnet.prefix() > bits - 2 {
            return Err(IpamError::config(format!(
                "{field}.subnet: network {subnet} is too small to allocate from"
            )));
        }
        if subnet.ip() != subnet.network() {
            return Err(IpamError::config(format!(
                "{field}.subnet: {subnet} has host bits set (the network address is {}/{})",
                subnet.network(),
                subnet.prefix()
            )));
        }
        let net = ip_to_u128(subnet.network());
        let last = ip_to_u128(subnet.broadcast());
        let default_end = if subnet.is_ipv4() { last - 1 } else { last };
        let inside = |name: &str, ip: IpAddr| -> Result<IpAddr, IpamError> {
            if ip.is_ipv4() != subnet.is_ipv4() || !subnet.contains(ip) {
                return Err(IpamError::config(format!(
                    "{field}.{name}: {ip} is not inside subnet {subnet}"
                )));
            }
            Ok(ip)
        };
        let start = match start {
            Some(ip) => inside("rangeStart", ip)?,
            None => u128_to_ip(net + 1, subnet.ip()),
        };
        let end = match end {
            Some(ip) => inside("rangeEnd", ip)?,
            None => u128_to_ip(default_end, subnet.ip()),
        };
        if ip_to_u128(start) > ip_to_u128(end) {
            return Err(IpamError::config(format!(
                "{field}.rangeStart: {start} is after rangeEnd {end}"
            )));
        }
        let gateway = match gateway {
            Some(ip) => inside("gateway", ip)?,
            None => u128_to_ip(net + 1, subnet.ip()),
        };
        Ok(Range {
            subnet,
            start,
            end,
            gateway: Some(gateway),
        })
    }

    pub fn is_ipv4(&self) -> bool {
        self.subnet.is_ipv4()
    }

    /// `ip` lies in `start..=end` (a requested address must).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4()
            && (ip_to_u128(self.start)..=ip_to_u128(self.end)).contains(&ip_to_u128(ip))
    }

    /// Why `ip` can never be handed out, if it cannot: the gateway, the network address
    /// (IPv4 network, IPv6 subnet-router anycast) or the IPv4 broadcast address.
    pub fn reserved_reason(&self, ip: IpAddr) -> Option<&'static str> {
        if Some(ip) == self.gateway {
            Some("the gateway")
        } else if ip == self.subnet.network() {
            Some(if self.is_ipv4() {
                "the network address"
            } else {
                "the subnet-router anycast address"
            })
        } else if self.is_ipv4() && ip == self.subnet.broadcast() {
            Some("the broadcast address")
        } else {
            None
        }
    }

    /// In the range and not reserved.
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        self.contains(ip) && self.reserved_reason(ip).is_none()
    }

    /// Number of addresses in `start..=end` (saturating).
    pub fn len(&self) -> u128 {
        (ip_to_u128(self.end) - ip_to_u128(self.start)).saturating_add(1)
    }

    /// Never true: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `start..=end` intersect.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && ip_to_u128(self.start) <= ip_to_u128(other.end)
            && ip_to_u128(other.start) <= ip_to_u128(self.end)
    }

    /// `ip` with this range's prefix length.
    pub fn network_of(&self, ip: IpAddr) -> Result<IpNetwork, IpamError> {
        IpNetwork::new(ip, self.subnet.prefix())
            .map_err(|e| IpamError::config(format!("{ip}/{}: {e}", self.subnet.prefix())))
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}-{})", self.subnet, self.start, self.end)
    }
}

/// Ranges one address is taken from, tried in order. All of one family, never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range>,
}

impl RangeSet {
    /// `field` names the set in errors (e.g. `ipam.ranges[1]`).
    pub fn new(field: &str, ranges: Vec<Range>) -> Result<RangeSet, IpamError> {
        let Some(first) = ranges.first() else {
            return Err(IpamError::config(format!(
                "{field}: a range set needs at least one range"
            )));
        };
        for (i, r) in ranges.iter().enumerate() {
            if r.is_ipv4() != first.is_ipv4() {
                return Err(IpamError::config(format!(
                    "{field}[{i}]: {} mixes address families within one range set",
                    r.subnet
                )));
            }
            for (j, o) in ranges[..i].iter().enumerate() {
                if r.overlaps(o) {
                    return Err(IpamError::config(format!(
                        "{field}[{i}]: range {r} overlaps with {field}[{j}] {o}"
                    )));
                }
            }
        }
        Ok(RangeSet { ranges })
    }

    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    pub fn is_ipv4(&self) -> bool {
        self.ranges.first().is_some_and(Range::is_ipv4)
    }

    /// The range whose `start..=end` holds `ip`.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges
            .iter()
            .any(|r| other.ranges.iter().any(|o| r.overlaps(o)))
    }

    /// A stable name for this set (its first range), used for its cursor file.
    pub fn id(&self) -> String {
        self.ranges
            .first()
            .map(|r| format!("{}-{}", r.subnet.network(), r.start).replace([':', '/'], "_"))
            .unwrap_or_default()
    }

    /// Allocatable addresses, starting right after `after` (the last reserved address)
    /// and wrapping around the whole set once; from the set's first address when `after`
    /// is `None` or not in the set. Lazy: the caller stops at the first free one.
    pub fn candidates(&self, after: Option<IpAddr>) -> Candidates<'_> {
        let (mut idx, mut pos) = (0usize, self.ranges.first().map(|r| ip_to_u128(r.start)));
        if let Some(ip) = after {
            if let Some(i) = self.ranges.iter().position(|r| r.contains(ip)) {
                let v = ip_to_u128(ip);
                if v < ip_to_u128(self.ranges[i].end) {
                    (idx, pos) = (i, Some(v + 1));
                } else {
                    idx = (i + 1) % self.ranges.len();
                    pos = Some(ip_to_u128(self.ranges[idx].start));
                }
            }
        }
        let remaining = self
            .ranges
            .iter()
            .fold(0u128, |acc, r| acc.saturating_add(r.len()));
        Candidates {
            set: self,
            idx,
            pos: pos.unwrap_or(0),
            remaining,
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Iterator of [`RangeSet::candidates`].
pub struct Candidates<'a> {
    set: &'a RangeSet,
    idx: usize,
    pos: u128,
    remaining: u128,
}

impl Iterator for Candidates<'_> {
    type Item = IpAddr;
    fn next(&mut self) -> Option<IpAddr> {
        while self.remaining > 0 {
            self.remaining -= 1;
            let r = self.set.ranges.get(self.idx)?;
            let ip = u128_to_ip(self.pos, r.start);
            if self.pos < ip_to_u128(r.end) {
                self.pos += 1;
            } else {
                self.idx = (self.idx + 1) % self.set.ranges.len();
                self.pos = self
                    .set
                    .ranges
                    .get(self.idx)
                    .map_or(0, |n| ip_to_u128(n.start));
            }
            if r.reserved_reason(ip).is_none() {
                return Some(ip);
            }
        }
        None
    }
}

/// Every range set of a network, validated: no two sets overlap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSets {
    sets: Vec<RangeSet>,
}

impl RangeSets {
    /// `field` names the list in errors (e.g. `ipam.ranges`).
    pub fn new(field: &str, sets: Vec<RangeSet>) -> Result<RangeSets, IpamError> {
        if sets.is_empty() {
            return Err(IpamError::config(format!(
                "{field}: no address range (set ipam.subnet or ipam.ranges)"
            )));
        }
        for (i, s) in sets.iter().enumerate() {
            for (j, o) in sets[..i].iter().enumerate() {
                if s.overlaps(o) {
                    return Err(IpamError::config(format!(
                        "{field}[{i}]: range set {s} overlaps with {field}[{j}] {o}"
                    )));
                }
            }
        }
        Ok(RangeSets { sets })
    }

    pub fn sets(&self) -> &[RangeSet] {
        &self.sets
    }

    /// The range holding `ip`, in any set.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.sets.iter().find_map(|s| s.range_for(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn range(s: &str, start: Option<&str>, end: Option<&str>, gw: Option<&str>) -> Range {
        Range::new("r", net(s), start.map(ip), end.map(ip), gw.map(ip)).unwrap()
    }

    #[test]
    fn v4_defaults_like_host_local() {
        let r = range("10.1.2.0/24", None, None, None);
        assert_eq!(r.start, ip("10.1.2.1"));
        assert_eq!(r.end, ip("10.1.2.254"));
        assert_eq!(r.gateway, Some(ip("10.1.2.1")));
        let set = RangeSet::new("s", vec![r]).unwrap();
        let all: Vec<_> = set.candidates(None).collect();
        assert_eq!(all.len(), 253); // .2 ..= .254
        assert_eq!(all[0], ip("10.1.2.2"));
        assert_eq!(all[252], ip("10.1.2.254"));
    }

    #[test]
    fn v6_defaults_skip_anycast_keep_last() {
        let r = range("fd00::/120", None, None, None);
        assert_eq!(r.start, ip("fd00::1"));
        assert_eq!(r.end, ip("fd00::ff"));
        let set = RangeSet::new("s", vec![r]).unwrap();
        let all: Vec<_> = set.candidates(None).collect();
        assert_eq!(all.first(), Some(&ip("fd00::2")));
        assert_eq!(all.last(), Some(&ip("fd00::ff")));
        assert_eq!(all.len(), 254);
        // The anycast address is never a candidate even when the range covers it.
        let r = range("fd00::/126", Some("fd00::"), None, Some("fd00::3"));
        let set = RangeSet::new("s", vec![r]).unwrap();
        let all: Vec<_> = set.candidates(None).collect();
        assert_eq!(all, vec![ip("fd00::1"), ip("fd00::2")]);
    }

    #[test]
    fn start_end_and_cursor_wrap() {
        let r = range(
            "10.0.0.0/24",
            Some("10.0.0.10"),
            Some("10.0.0.13"),
            Some("10.0.0.11"),
        );
        let set = RangeSet::new("s", vec![r]).unwrap();
        let from = |c: Option<&str>| set.candidates(c.map(ip)).collect::<Vec<_>>();
        assert_eq!(
            from(None),
            vec![ip("10.0.0.10"), ip("10.0.0.12"), ip("10.0.0.13")]
        );
        assert_eq!(
            from(Some("10.0.0.12")),
            vec![ip("10.0.0.13"), ip("10.0.0.10"), ip("10.0.0.12")]
        );
        assert_eq!(
            from(Some("10.0.0.13")),
            vec![ip("10.0.0.10"), ip("10.0.0.12"), ip("10.0.0.13")]
        );
        // A cursor outside the set (config changed) starts over.
        assert_eq!(from(Some("10.9.0.1")), from(None));
    }

    #[test]
    fn broadcast_and_network_never_candidates() {
        let r = range(
            "10.0.0.0/30",
            Some("10.0.0.0"),
            Some("10.0.0.3"),
            Some("10.0.0.2"),
        );
        let set = RangeSet::new("s", vec![r]).unwrap();
        assert_eq!(
            set.candidates(None).collect::<Vec<_>>(),
            vec![ip("10.0.0.1")]
        );
    }

    #[test]
    fn multi_range_set_wraps_across_ranges() {
        let a = range("10.0.0.0/24", Some("10.0.0.5"), Some("10.0.0.6"), None);
        let b = range("10.0.1.0/24", Some("10.0.1.5"), Some("10.0.1.6"), None);
        let set = RangeSet::new("s", vec![a, b]).unwrap();
        let got: Vec<_> = set.candidates(Some(ip("10.0.0.6"))).collect();
        assert_eq!(
            got,
            vec![
                ip("10.0.1.5"),
                ip("10.0.1.6"),
                ip("10.0.0.5"),
                ip("10.0.0.6")
            ]
        );
    }

    #[test]
    fn validation_errors_name_the_field() {
        let e = Range::new(
            "ipam.ranges[0][0]",
            net("10.0.0.0/24"),
            Some(ip("10.0.1.1")),
            None,
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("ipam.ranges[0][0].rangeStart"),
            "{e}"
        );
        let e = Range::new(
            "x",
            net("10.0.0.0/24"),
            Some(ip("10.0.0.9")),
            Some(ip("10.0.0.3")),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("x.rangeStart"), "{e}");
        let e = Range::new("x", net("10.0.0.0/24"), None, None, Some(ip("10.9.0.1"))).unwrap_err();
        assert!(e.to_string().contains("x.gateway"), "{e}");
        let e = Range::new("x", net("10.0.0.1/24"), None, None, None).unwrap_err();
        assert!(e.to_string().contains("host bits"), "{e}");
        let e = Range::new("x", net("10.0.0.0/31"), None, None, None).unwrap_err();
        assert!(e.to_string().contains("too small"), "{e}");
        let a = range("10.0.0.0/24", None, None, None);
        let b = range("10.0.0.0/25", None, None, None);
        let e = RangeSet::new("s", vec![a.clone(), b.clone()]).unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
        let sa = RangeSet::new("s", vec![a]).unwrap();
        let sb = RangeSet::new("s", vec![b]).unwrap();
        let e = RangeSets::new("ipam.ranges", vec![sa, sb]).unwrap_err();
        assert!(e.to_string().contains("ipam.ranges[1]"), "{e}");
        let v6 = range("fd00::/64", None, None, None);
        let e = RangeSet::new("s", vec![range("10.0.0.0/24", None, None, None), v6]).unwrap_err();
        assert!(e.to_string().contains("families"), "{e}");
    }
}
