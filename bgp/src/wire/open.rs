//! OPEN (RFC 4271 §4.2) with capabilities (RFC 5492): multiprotocol (RFC 4760), route
//! refresh (RFC 2918), extended next hop (RFC 8950), graceful restart (RFC 4724),
//! 4-octet AS (RFC 6793).

use std::net::Ipv4Addr;

use super::{OpenError, Reader};

/// The 2-octet AS placeholder for a 4-octet AS (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// An address family (AFI, SAFI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Family {
    pub afi: u16,
    pub safi: u8,
}

impl Family {
    pub const IPV4_UNICAST: Family = Family { afi: 1, safi: 1 };
    pub const IPV6_UNICAST: Family = Family { afi: 2, safi: 1 };
    pub const fn new(afi: u16, safi: u8) -> Self {
        Family { afi, safi }
    }
}

/// The graceful restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The R bit: the sender has restarted.
    pub restarting: bool,
    /// The N bit (RFC 8538): the sender keeps graceful-restart treatment after a
    /// NOTIFICATION other than Hard Reset (and after a hold-timer expiry).
    pub notification: bool,
    /// Seconds the sender needs to re-establish the session (12 bits).
    pub restart_time: u16,
    /// Families whose forwarding state the sender preserves, with the F bit.
    pub families: Vec<(Family, bool)>,
}

/// One tuple of the extended next hop capability (RFC 8950 §3): NLRI of `nlri` may
/// carry a next hop of address family `next_hop_afi` (the sender can receive them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExtendedNextHop {
    pub nlri: Family,
    pub next_hop_afi: u16,
}

impl ExtendedNextHop {
    /// IPv4 unicast NLRI with an IPv6 next hop: what an IPv6-only underlay needs.
    pub const IPV4_OVER_IPV6: ExtendedNextHop = ExtendedNextHop {
        nlri: Family::IPV4_UNICAST,
        next_hop_afi: 2,
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    Multiprotocol(Family),
    RouteRefresh,
    /// Code 5 (RFC 8950): the <NLRI AFI, NLRI SAFI, next hop AFI> tuples the sender
    /// accepts.
    ExtendedNextHop(Vec<ExtendedNextHop>),
    GracefulRestart(GracefulRestart),
    FourOctetAs(u32),
    Unknown {
        code: u8,
        value: Vec<u8>,
    },
}

/// An OPEN message. `asn` is the real (possibly 4-octet) AS number: encoding puts
/// [`AS_TRANS`] in the 2-octet field when it does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    pub fn families(&self) -> impl Iterator<Item = Family> + '_ {
        self.capabilities.iter().filter_map(|c| match c {
            Capability::Multiprotocol(f) => Some(*f),
            _ => None,
        })
    }
    pub fn four_octet_as(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
    }
    pub fn route_refresh(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::RouteRefresh))
    }
    /// Whether the sender accepts next hops of `t.next_hop_afi` for NLRI of `t.nlri`.
    pub fn extended_next_hop(&self, t: ExtendedNextHop) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::ExtendedNextHop(ts) if ts.contains(&t)))
    }
    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }

    pub(super) fn decode(body: &[u8]) -> Result<Open, OpenError> {
        let mut r = Reader::new(body);
        let version = r.u8().ok_or(OpenError::Malformed)?;
        if version != 4 {
            return Err(OpenError::UnsupportedVersion(version));
        }
        let as2 = r.u16().ok_or(OpenError::Malformed)?;
        let hold_time = r.u16().ok_or(OpenError::Malformed)?;
        if hold_time == 1 || hold_time == 2 {
            return Err(OpenError::UnacceptableHoldTime);
        }
        let router_id = Ipv4Addr::from(r.u32().ok_or(OpenError::Malformed)?);
        if router_id.is_unspecified() || router_id.is_multicast() || router_id.is_broadcast() {
            return Err(OpenError::BadBgpIdentifier);
        }
        let params_len = usize::from(r.u8().ok_or(OpenError::Malformed)?);
        if params_len != r.remaining() {
            return Err(OpenError::Malformed);
        }
        let mut capabilities = Vec::new();
        while !r.is_empty() {
            let kind = r.u8().ok_or(OpenError::Malformed)?;
            let len = usize::from(r.u8().ok_or(OpenError::Malformed)?);
            let value = r.take(len).ok_or(OpenError::Malformed)?;
            if kind != 2 {
                // Only the capabilities parameter exists today (authentication, type 1,
                // is deprecated).
                return Err(OpenError::UnsupportedOptionalParameter);
            }
            let mut caps = Reader::new(value);
            while !caps.is_empty() {
                let code = caps.u8().ok_or(OpenError::Malformed)?;
                let len = usize::from(caps.u8().ok_or(OpenError::Malformed)?);
                let value = caps.take(len).ok_or(OpenError::Malformed)?;
                capabilities.push(decode_capability(code, value)?);
            }
        }
        let as4 = capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        });
        // RFC 6793 §4.1 (and §9 of its errata): with the capability, the 2-octet field
        // holds AS_TRANS when the AS does not fit, else the AS itself.
        let asn = match as4 {
            Some(a) if u16::try_from(a).map_or(as2 != AS_TRANS, |short| short != as2) => {
                return Err(OpenError::BadPeerAs);
            }
            Some(a) => a,
            None => u32::from(as2),
        };
        if asn == 0 {
            return Err(OpenError::BadPeerAs);
        }
        Ok(Open {
            asn,
            hold_time,
            router_id,
            capabilities,
        })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.push(4);
        let as2 = u16::try_from(self.asn).unwrap_or(AS_TRANS);
        out.extend_from_slice(&as2.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.router_id.octets());
        let mut caps = Vec::new();
        for cap in &self.capabilities {
            let (code, value) = encode_capability(cap);
            // One parameter holds them all: at most 253 octets (we send ~30). What
            // does not fit is left out rather than corrupting the message.
            if value.len() > 255 || caps.len() + 2 + value.len() > 253 {
                continue;
            }
            caps.push(code);
            caps.push(value.len() as u8);
            caps.extend_from_slice(&value);
        }
        out.push(caps.len() as u8 + 2);
        out.push(2);
        out.push(caps.len() as u8);
        out.extend_from_slice(&caps);
    }
}

fn decode_capability(code: u8, value: &[u8]) -> Result<Capability, OpenError> {
    let mut r = Reader::new(value);
    let cap = match code {
        1 => match value {
            [a0, a1, _, safi] => {
                Capability::Multiprotocol(Family::new(u16::from_be_bytes([*a0, *a1]), *safi))
            }
            _ => return Err(OpenError::Malformed),
        },
        2 if value.is_empty() => Capability::RouteRefresh,
        // RFC 8950 §3: a list of 6-octet tuples (the NLRI SAFI takes two octets here).
        5 => {
            if value.is_empty() || value.len() % 6 != 0 {
                return Err(OpenError::Malformed);
            }
            let tuples = value
                .chunks_exact(6)
                .map(|t| ExtendedNextHop {
                    nlri: Family::new(
                        u16::from_be_bytes([t[0], t[1]]),
                        // A SAFI above 255 is no family this speaker knows: it never matches.
                        u8::try_from(u16::from_be_bytes([t[2], t[3]])).unwrap_or(0),
                    ),
                    next_hop_afi: u16::from_be_bytes([t[4], t[5]]),
                })
                .collect();
            Capability::ExtendedNextHop(tuples)
        }
        64 => {
            let word = r.u16().ok_or(OpenError::Malformed)?;
            let mut families = Vec::new();
            while !r.is_empty() {
                let afi = r.u16().ok_or(OpenError::Malformed)?;
                let safi = r.u8().ok_or(OpenError::Malformed)?;
                let flags = r.u8().ok_or(OpenError::Malformed)?;
                families.push((Family::new(afi, safi), flags & 0x80 != 0));
            }
            Capability::GracefulRestart(GracefulRestart {
                restarting: word & 0x8000 != 0,
                notification: word & 0x4000 != 0,
                restart_time: word & 0x0fff,
                families,
            })
        }
        65 => match value {
            [a, b, c, d] => Capability::FourOctetAs(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => return Err(OpenError::Malformed),
        },
        _ => Capability::Unknown {
            code,
            value: value.to_vec(),
        },
    };
    Ok(cap)
}

fn encode_capability(cap: &Capability) -> (u8, Vec<u8>) {
    match cap {
        Capability::Multiprotocol(f) => {
            let mut v = f.afi.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, f.safi]);
            (1, v)
        }
        Capability::RouteRefresh => (2, vec![]),
        Capability::ExtendedNextHop(tuples) => {
            let mut v = Vec::with_capacity(tuples.len() * 6);
            for t in tuples {
                v.extend_from_slice(&t.nlri.afi.to_be_bytes());
                v.extend_from_slice(&u16::from(t.nlri.safi).to_be_bytes());
                v.extend_from_slice(&t.next_hop_afi.to_be_bytes());
            }
            (5, v)
        }
        Capability::GracefulRestart(gr) => {
            let word = (gr.restart_time & 0x0fff)
                | if gr.restarting { 0x8000 } else { 0 }
                | if gr.notification { 0x4000 } else { 0 };
            let mut v = word.to_be_bytes().to_vec();
            for (f, forwarding) in &gr.families {
                v.extend_from_slice(&f.afi.to_be_bytes());
                v.push(f.safi);
                v.push(if *forwarding { 0x80 } else { 0 });
            }
            (64, v)
        }
        Capability::FourOctetAs(asn) => (65, asn.to_be_bytes().to_vec()),
        Capability::Unknown { code, value } => (*code, value.clone()),
    }
}
