//! UPDATE (RFC 4271 §4.3) with the attributes this speaker reads and writes, and
//! MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760) for IPv6 unicast, and for IPv4 unicast
//! with an IPv6 next hop (RFC 8950) when the session negotiated it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use super::{Codec, Family, Reader, UpdateError, AS_TRANS, HEADER_LEN, MAX_MESSAGE_LEN};

const OPTIONAL: u8 = 0x80;
const TRANSITIVE: u8 = 0x40;
const EXTENDED: u8 = 0x10;

const ORIGIN: u8 = 1;
const AS_PATH: u8 = 2;
const NEXT_HOP: u8 = 3;
const MED: u8 = 4;
const LOCAL_PREF: u8 = 5;
const MP_REACH: u8 = 14;
const MP_UNREACH: u8 = 15;
/// RFC 6793: the real path next to an AS_PATH of AS_TRANS, toward a 2-octet speaker.
const AS4_PATH: u8 = 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// One AS_PATH segment: `sequence` false means AS_SET. Confederation segments are
/// not produced by peers outside a confederation and are rejected as malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsSegment {
    pub sequence: bool,
    pub asns: Vec<u32>,
}

/// MP_REACH_NLRI for IPv6 unicast, or IPv4 unicast sent the multiprotocol way (with an
/// IPv4 next hop, or an IPv6 one under RFC 8950).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    pub family: Family,
    /// IPv6: the global next hop, then optionally the link-local one (RFC 2545 §3,
    /// RFC 8950 §3: 16 or 32 octets). IPv4 with an IPv4 next hop: that one address.
    pub next_hops: Vec<IpAddr>,
    pub nlri: Vec<IpNetwork>,
}

impl MpReach {
    /// The next hop to forward to: the global one, unless it is unspecified (`::`,
    /// which a speaker with only a link-local address sends next to it), then the
    /// link-local one. `None`: no usable address.
    pub fn next_hop(&self) -> Option<IpAddr> {
        self.next_hops.iter().find(|a| !a.is_unspecified()).copied()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    pub family: Family,
    pub withdrawn: Vec<IpNetwork>,
}

/// An attribute this speaker does not interpret (kept so it can be inspected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAttribute {
    pub flags: u8,
    pub kind: u8,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    /// `None`: no AS_PATH attribute; `Some(vec![])`: an empty path (iBGP, own routes).
    pub as_path: Option<Vec<AsSegment>>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    pub other: Vec<RawAttribute>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Network>,
    pub attributes: PathAttributes,
    pub nlri: Vec<Ipv4Network>,
}

impl Update {
    /// The End-of-RIB marker of a family (RFC 4724 §2).
    pub fn end_of_rib(family: Family) -> Update {
        if family == Family::IPV4_UNICAST {
            return Update::default();
        }
        Update {
            attributes: PathAttributes {
                mp_unreach: Some(MpUnreach {
                    family,
                    withdrawn: vec![],
                }),
                ..PathAttributes::default()
            },
            ..Update::default()
        }
    }

    /// The family this UPDATE marks the end of the initial table for, if it is an EoR.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        let a = &self.attributes;
        if a == &PathAttributes::default() {
            return Some(Family::IPV4_UNICAST);
        }
        match &a.mp_unreach {
            Some(un) if un.withdrawn.is_empty() && a.mp_reach.is_none() && a.origin.is_none() => {
                Some(un.family)
            }
            _ => None,
        }
    }

    pub(super) fn decode(body: &[u8], codec: Codec) -> Result<Update, UpdateError> {
        let mut r = Reader::new(body);
        let wlen = usize::from(r.u16().ok_or(UpdateError::MalformedAttributeList)?);
        let wbuf = r.take(wlen).ok_or(UpdateError::MalformedAttributeList)?;
        let alen = usize::from(r.u16().ok_or(UpdateError::MalformedAttributeList)?);
        let abuf = r.take(alen).ok_or(UpdateError::MalformedAttributeList)?;
        let nbuf = r.take(r.remaining()).unwrap_or_default();

        let withdrawn = decode_prefixes(wbuf, false)?
            .into_iter()
            .filter_map(as_v4)
            .collect();
        let nlri: Vec<Ipv4Network> = decode_prefixes(nbuf, false)?
            .into_iter()
            .filter_map(as_v4)
            .collect();
        let attributes = decode_attributes(abuf, codec)?;
        let a = &attributes;
        let reach = !nlri.is_empty() || a.mp_reach.is_some();
        if reach {
            if a.origin.is_none() {
                return Err(UpdateError::MissingWellKnown(ORIGIN));
            }
            if a.as_path.is_none() {
                return Err(UpdateError::MissingWellKnown(AS_PATH));
            }
        }
        if !nlri.is_empty() && a.next_hop.is_none() {
            return Err(UpdateError::MissingWellKnown(NEXT_HOP));
        }
        Ok(Update {
            withdrawn,
            attributes,
            nlri,
        })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>, codec: Codec) {
        let mut w = Vec::new();
        for p in &self.withdrawn {
            encode_prefix(&IpNetwork::V4(*p), &mut w);
        }
        out.extend_from_slice(&(w.len() as u16).to_be_bytes());
        out.extend_from_slice(&w);
        let mut attrs = Vec::new();
        encode_attributes(&self.attributes, codec, &mut attrs);
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(&attrs);
        for p in &self.nlri {
            encode_prefix(&IpNetwork::V4(*p), out);
        }
    }

    /// UPDATEs announcing `prefixes` (all of one family) with `attributes` (its NEXT_HOP
    /// or MP_REACH next hop already set), each within [`MAX_MESSAGE_LEN`].
    pub fn pack_announce(
        attributes: &PathAttributes,
        prefixes: &[IpNetwork],
        codec: Codec,
    ) -> Vec<Update> {
        let base = Update {
            attributes: attributes.clone(),
            ..Update::default()
        };
        pack(base, prefixes, codec, |u, p| {
            match (p, &mut u.attributes.mp_reach) {
                (_, Some(mp)) => mp.nlri.push(*p),
                (IpNetwork::V4(v4), None) => u.nlri.push(*v4),
                // An IPv6 prefix needs MP_REACH: the caller always sets it for IPv6.
                (IpNetwork::V6(_), None) => {}
            }
        })
    }

    /// UPDATEs withdrawing `prefixes` (all of one family).
    pub fn pack_withdraw(family: Family, prefixes: &[IpNetwork], codec: Codec) -> Vec<Update> {
        let mut base = Update::default();
        if family != Family::IPV4_UNICAST {
            base.attributes.mp_unreach = Some(MpUnreach {
                family,
                withdrawn: vec![],
            });
        }
        pack(base, prefixes, codec, |u, p| {
            match (p, &mut u.attributes.mp_unreach) {
                (_, Some(mp)) => mp.withdrawn.push(*p),
                (IpNetwork::V4(v4), None) => u.withdrawn.push(*v4),
                (IpNetwork::V6(_), None) => {}
            }
        })
    }

    /// Length of the encoded message, header included.
    pub fn encoded_len(&self, codec: Codec) -> usize {
        let mut out = Vec::new();
        self.encode(&mut out, codec);
        HEADER_LEN + out.len()
    }
}

fn pack(
    base: Update,
    prefixes: &[IpNetwork],
    codec: Codec,
    add: impl Fn(&mut Update, &IpNetwork),
) -> Vec<Update> {
    // +2: an attribute may switch to the extended (2-octet) length as it grows.
    let overhead = base.encoded_len(codec) + 2;
    let mut out = Vec::new();
    let mut current = base.clone();
    let mut size = overhead;
    for p in prefixes {
        let cost = 1 + usize::from(p.prefix()).div_ceil(8);
        if size + cost > MAX_MESSAGE_LEN {
            out.push(std::mem::replace(&mut current, base.clone()));
            size = overhead;
        }
        add(&mut current, p);
        size += cost;
    }
    if current != base {
        out.push(current);
    }
    out
}

fn as_v4(p: IpNetwork) -> Option<Ipv4Network> {
    match p {
        IpNetwork::V4(v4) => Some(v4),
        IpNetwork::V6(_) => None,
    }
}

/// Decodes a list of (length in bits, prefix octets); host bits are cleared.
fn decode_prefixes(buf: &[u8], v6: bool) -> Result<Vec<IpNetwork>, UpdateError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    let max = if v6 { 128 } else { 32 };
    while !r.is_empty() {
        let bits = r.u8().ok_or(UpdateError::InvalidNetworkField)?;
        if bits > max {
            return Err(UpdateError::InvalidNetworkField);
        }
        let octets = r
            .take(usize::from(bits).div_ceil(8))
            .ok_or(UpdateError::InvalidNetworkField)?;
        out.push(prefix_from(octets, bits, v6).ok_or(UpdateError::InvalidNetworkField)?);
    }
    Ok(out)
}

fn prefix_from(octets: &[u8], bits: u8, v6: bool) -> Option<IpNetwork> {
    let mut full = [0u8; 16];
    full.get_mut(..octets.len())?.copy_from_slice(octets);
    let net = if v6 {
        let addr = u128::from_be_bytes(full) & mask128(bits);
        IpNetwork::V6(Ipv6Network::new(Ipv6Addr::from(addr), bits).ok()?)
    } else {
        let addr = u32::from_be_bytes([full[0], full[1], full[2], full[3]]);
        let mask = (mask128(bits + 96) & u128::from(u32::MAX)) as u32;
        IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(addr & mask), bits).ok()?)
    };
    Some(net)
}

fn mask128(bits: u8) -> u128 {
    match bits {
        0 => 0,
        b if b >= 128 => u128::MAX,
        b => u128::MAX << (128 - u32::from(b)),
    }
}

fn encode_prefix(p: &IpNetwork, out: &mut Vec<u8>) {
    let bits = p.prefix();
    let n = usize::from(bits).div_ceil(8);
    out.push(bits);
    match p.network() {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n.min(4)]),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n.min(16)]),
    }
}

fn decode_attributes(buf: &[u8], codec: Codec) -> Result<PathAttributes, UpdateError> {
    let mut r = Reader::new(buf);
    let mut attrs = PathAttributes::default();
    let mut as4_path = None;
    let mut seen = [false; 256];
    while !r.is_empty() {
        let flags = r.u8().ok_or(UpdateError::MalformedAttributeList)?;
        let kind = r.u8().ok_or(UpdateError::MalformedAttributeList)?;
        let len = if flags & EXTENDED != 0 {
            r.u16().map(usize::from)
        } else {
            r.u8().map(usize::from)
        }
        .ok_or(UpdateError::MalformedAttributeList)?;
        let value = r.take(len).ok_or(UpdateError::MalformedAttributeList)?;
        if std::mem::replace(&mut seen[usize::from(kind)], true) {
            return Err(UpdateError::MalformedAttributeList);
        }
        // The whole attribute, the data of most attribute errors.
        let whole = || {
            let mut v = vec![flags, kind];
            if flags & EXTENDED != 0 {
                v.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                v.push(len as u8);
            }
            v.extend_from_slice(value);
            v
        };
        let expect_flags = |want: u8| {
            if flags & (OPTIONAL | TRANSITIVE) == want {
                Ok(())
            } else {
                Err(UpdateError::AttributeFlags(whole()))
            }
        };
        let fixed = |want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(UpdateError::AttributeLength(whole()))
            }
        };
        let u32_of = |v: &[u8]| match v {
            [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
            _ => 0,
        };
        match kind {
            ORIGIN => {
                expect_flags(TRANSITIVE)?;
                fixed(1)?;
                attrs.origin = Some(match value[0] {
                    0 => Origin::Igp,
                    1 => Origin::Egp,
                    2 => Origin::Incomplete,
                    _ => return Err(UpdateError::InvalidOrigin(whole())),
                });
            }
            AS_PATH => {
                expect_flags(TRANSITIVE)?;
                attrs.as_path = Some(decode_as_path(value, codec)?);
            }
            // From a 2-octet speaker only (a 4-octet one's is ignored, RFC 6793 §4.1);
            // a malformed one is discarded, not a session error (§6).
            AS4_PATH if !codec.four_octet_as => {
                expect_flags(OPTIONAL | TRANSITIVE)?;
                as4_path = decode_segments(value, 4).ok();
            }
            NEXT_HOP => {
                expect_flags(TRANSITIVE)?;
                fixed(4)?;
                let nh = Ipv4Addr::from(u32_of(value));
                if nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast() {
                    return Err(UpdateError::InvalidNextHop(whole()));
                }
                attrs.next_hop = Some(nh);
            }
            MED => {
                expect_flags(OPTIONAL)?;
                fixed(4)?;
                attrs.med = Some(u32_of(value));
            }
            LOCAL_PREF => {
                expect_flags(TRANSITIVE)?;
                fixed(4)?;
                attrs.local_pref = Some(u32_of(value));
            }
            MP_REACH | MP_UNREACH => {
                expect_flags(OPTIONAL)?;
                let mut m = Reader::new(value);
                let err = || UpdateError::OptionalAttribute(whole());
                let family = Family::new(m.u16().ok_or_else(err)?, m.u8().ok_or_else(err)?);
                let v6 = match family {
                    Family::IPV4_UNICAST => false,
                    Family::IPV6_UNICAST => true,
                    // A family we never offered: keep it uninterpreted.
                    _ => {
                        attrs.other.push(RawAttribute {
                            flags: flags & !EXTENDED,
                            kind,
                            value: value.to_vec(),
                        });
                        continue;
                    }
                };
                if kind == MP_UNREACH {
                    let withdrawn = decode_prefixes(m.take(m.remaining()).unwrap_or_default(), v6)?;
                    attrs.mp_unreach = Some(MpUnreach { family, withdrawn });
                    continue;
                }
                let nh_len = usize::from(m.u8().ok_or_else(err)?);
                let nh = m.take(nh_len).ok_or_else(err)?;
                let next_hops = decode_next_hops(nh, v6, codec).ok_or_else(err)?;
                m.u8().ok_or_else(err)?; // reserved
                let nlri = decode_prefixes(m.take(m.remaining()).unwrap_or_default(), v6)?;
                attrs.mp_reach = Some(MpReach {
                    family,
                    next_hops,
                    nlri,
                });
            }
            _ if flags & OPTIONAL == 0 && !matches!(kind, 6) => {
                return Err(UpdateError::UnrecognizedWellKnown(whole()));
            }
            // The length's width is the encoder's choice, not part of the attribute.
            _ => attrs.other.push(RawAttribute {
                flags: flags & !EXTENDED,
                kind,
                value: value.to_vec(),
            }),
        }
    }
    if let (Some(path), Some(as4)) = (&attrs.as_path, as4_path) {
        attrs.as_path = Some(merge_as4_path(path, as4));
    }
    Ok(attrs)
}

/// How many ASNs a path counts for (an AS_SET counts as one).
fn path_len(path: &[AsSegment]) -> usize {
    path.iter()
        .map(|s| if s.sequence { s.asns.len() } else { 1 })
        .sum()
}

/// RFC 6793 §4.2.3: the leading ASNs of AS_PATH that AS4_PATH lacks, then AS4_PATH;
/// an AS4_PATH longer than AS_PATH is ignored.
fn merge_as4_path(as_path: &[AsSegment], as4: Vec<AsSegment>) -> Vec<AsSegment> {
    let (n2, n4) = (path_len(as_path), path_len(&as4));
    if n4 > n2 {
        return as_path.to_vec();
    }
    let mut keep = n2 - n4;
    let mut out = Vec::new();
    for seg in as_path {
        if keep == 0 {
            break;
        }
        if seg.sequence {
            let take = keep.min(seg.asns.len());
            out.push(AsSegment {
                sequence: true,
                asns: seg.asns[..take].to_vec(),
            });
            keep -= take;
        } else {
            out.push(seg.clone());
            keep -= 1;
        }
    }
    out.extend(as4);
    out
}

/// The next hop field of an MP_REACH_NLRI of IPv6 (`v6`) or IPv4 unicast: 16 or 32
/// octets (global, link-local) of IPv6, or 4 of IPv4 for IPv4 NLRI, which takes IPv6
/// ones too when the session negotiated the extended next hop (RFC 8950 §3).
fn decode_next_hops(nh: &[u8], v6: bool, codec: Codec) -> Option<Vec<IpAddr>> {
    let addr = |c: &[u8]| -> Option<IpAddr> {
        Some(match c.len() {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(c).ok()?)),
            16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(c).ok()?)),
            _ => return None,
        })
    };
    let ipv6_ok = v6 || codec.extended_next_hop;
    let hops = match (v6, nh.len()) {
        (false, 4) => vec![addr(nh)?],
        (_, 16) if ipv6_ok => vec![addr(nh)?],
        (_, 32) if ipv6_ok => vec![addr(&nh[..16])?, addr(&nh[16..])?],
        _ => return None,
    };
    // A next hop nobody can forward to is a malformed attribute, not a route.
    let usable = |a: &IpAddr| !a.is_unspecified() && !a.is_multicast() && !a.is_loopback();
    hops.iter().any(usable).then_some(hops)
}

fn decode_as_path(value: &[u8], codec: Codec) -> Result<Vec<AsSegment>, UpdateError> {
    decode_segments(value, if codec.four_octet_as { 4 } else { 2 })
}

/// AS path segments of `width`-octet ASNs.
fn decode_segments(value: &[u8], width: usize) -> Result<Vec<AsSegment>, UpdateError> {
    let mut r = Reader::new(value);
    let mut out = Vec::new();
    while !r.is_empty() {
        let kind = r.u8().ok_or(UpdateError::MalformedAsPath)?;
        let count = usize::from(r.u8().ok_or(UpdateError::MalformedAsPath)?);
        let sequence = match kind {
            1 => false,
            2 => true,
            _ => return Err(UpdateError::MalformedAsPath),
        };
        if count == 0 {
            return Err(UpdateError::MalformedAsPath);
        }
        let raw = r.take(count * width).ok_or(UpdateError::MalformedAsPath)?;
        let asns = raw
            .chunks_exact(width)
            .map(|c| match c {
                [a, b] => u32::from(u16::from_be_bytes([*a, *b])),
                [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
                _ => 0,
            })
            .collect();
        out.push(AsSegment { sequence, asns });
    }
    Ok(out)
}

/// AS path segments with 4-octet ASNs, or 2-octet ones where [`AS_TRANS`] stands for
/// an ASN that does not fit.
fn encode_segments(path: &[AsSegment], four_octet: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for seg in path {
        // A segment holds at most 255 ASNs: split longer ones.
        for chunk in seg.asns.chunks(255) {
            v.push(if seg.sequence { 2 } else { 1 });
            v.push(chunk.len() as u8);
            for asn in chunk {
                if four_octet {
                    v.extend_from_slice(&asn.to_be_bytes());
                } else {
                    let as2 = u16::try_from(*asn).unwrap_or(AS_TRANS);
                    v.extend_from_slice(&as2.to_be_bytes());
                }
            }
        }
    }
    v
}

fn push_attr(out: &mut Vec<u8>, flags: u8, kind: u8, value: &[u8]) {
    if value.len() > 255 {
        out.extend_from_slice(&[flags | EXTENDED, kind]);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[flags & !EXTENDED, kind, value.len() as u8]);
    }
    out.extend_from_slice(value);
}

fn encode_attributes(a: &PathAttributes, codec: Codec, out: &mut Vec<u8>) {
    if let Some(origin) = a.origin {
        push_attr(out, TRANSITIVE, ORIGIN, &[origin as u8]);
    }
    if let Some(path) = &a.as_path {
        push_attr(
            out,
            TRANSITIVE,
            AS_PATH,
            &encode_segments(path, codec.four_octet_as),
        );
        let wide = path.iter().flat_map(|s| &s.asns).any(|a| *a > 0xffff);
        if !codec.four_octet_as && wide {
            push_attr(
                out,
                OPTIONAL | TRANSITIVE,
                AS4_PATH,
                &encode_segments(path, true),
            );
        }
    }
    if let Some(nh) = a.next_hop {
        push_attr(out, TRANSITIVE, NEXT_HOP, &nh.octets());
    }
    if let Some(med) = a.med {
        push_attr(out, OPTIONAL, MED, &med.to_be_bytes());
    }
    if let Some(lp) = a.local_pref {
        push_attr(out, TRANSITIVE, LOCAL_PREF, &lp.to_be_bytes());
    }
    if let Some(mp) = &a.mp_reach {
        let mut v = mp.family.afi.to_be_bytes().to_vec();
        v.push(mp.family.safi);
        let mut nh = Vec::new();
        for addr in &mp.next_hops {
            match addr {
                IpAddr::V4(a) => nh.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => nh.extend_from_slice(&a.octets()),
            }
        }
        v.push(nh.len() as u8);
        v.extend_from_slice(&nh);
        v.push(0);
        for p in &mp.nlri {
            encode_prefix(p, &mut v);
        }
        push_attr(out, OPTIONAL, MP_REACH, &v);
    }
    if let Some(mp) = &a.mp_unreach {
        let mut v = mp.family.afi.to_be_bytes().to_vec();
        v.push(mp.family.safi);
        for p in &mp.withdrawn {
            encode_prefix(p, &mut v);
        }
        push_attr(out, OPTIONAL, MP_UNREACH, &v);
    }
    for raw in &a.other {
        push_attr(out, raw.flags, raw.kind, &raw.value);
    }
}
