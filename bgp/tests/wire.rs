//! Codec round trips, and malformed or truncated input mapped to the NOTIFICATION of
//! RFC 4271 §6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bgp::wire::*;
use ipnetwork::{IpNetwork, Ipv4Network};
use rand::{Rng, SeedableRng};

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}
fn net4(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}
const C4: Codec = Codec {
    four_octet_as: true,
    extended_next_hop: false,
};
const C2: Codec = Codec {
    four_octet_as: false,
    extended_next_hop: false,
};
/// A session that negotiated RFC 8950 (IPv4 NLRI, IPv6 next hop).
const C4X: Codec = Codec {
    four_octet_as: true,
    extended_next_hop: true,
};

fn open() -> Open {
    Open {
        asn: 4_200_000_001,
        hold_time: 90,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Multiprotocol(Family::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(4_200_000_001),
            Capability::GracefulRestart(GracefulRestart {
                restarting: true,
                notification: true,
                restart_time: 120,
                families: vec![(Family::IPV4_UNICAST, true), (Family::IPV6_UNICAST, false)],
            }),
            Capability::Unknown {
                code: 73,
                value: b"node-1".to_vec(),
            },
        ],
    }
}

fn v4_update() -> Update {
    Update {
        withdrawn: vec![net4("10.9.0.0/16"), net4("0.0.0.0/0")],
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(vec![
                AsSegment {
                    sequence: true,
                    asns: vec![64512, 4_200_000_001],
                },
                AsSegment {
                    sequence: false,
                    asns: vec![65001, 65002],
                },
            ]),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            med: Some(7),
            local_pref: Some(100),
            ..PathAttributes::default()
        },
        nlri: vec![
            net4("10.1.0.0/26"),
            net4("10.1.0.64/26"),
            net4("10.2.3.4/32"),
        ],
    }
}

fn v6_update() -> Update {
    Update {
        attributes: PathAttributes {
            origin: Some(Origin::Incomplete),
            as_path: Some(vec![]),
            mp_reach: Some(MpReach {
                family: Family::IPV6_UNICAST,
                next_hops: vec!["2001:db8::1".parse().unwrap(), "fe80::1".parse().unwrap()],
                nlri: vec![net("2001:db8:1::/122"), net("2001:db8:2::/48"), net("::/0")],
            }),
            mp_unreach: Some(MpUnreach {
                family: Family::IPV6_UNICAST,
                withdrawn: vec![net("2001:db8:9::/64")],
            }),
            ..PathAttributes::default()
        },
        ..Update::default()
    }
}

fn round_trip(m: Message, codec: Codec) {
    let bytes = m.encode(codec);
    assert_eq!(Message::decode(&bytes, codec), Ok(m));
}

#[test]
fn round_trips() {
    round_trip(Message::Open(open()), C4);
    round_trip(Message::Update(v4_update()), C4);
    let mut small = v4_update();
    small.attributes.as_path = Some(vec![AsSegment {
        sequence: true,
        asns: vec![64512, 65000],
    }]);
    round_trip(Message::Update(small), C2);
    round_trip(Message::Update(v6_update()), C4);
    round_trip(Message::Keepalive, C4);
    round_trip(
        Message::Notification(Notification {
            code: 6,
            subcode: 2,
            data: b"bye".to_vec(),
        }),
        C4,
    );
    round_trip(Message::RouteRefresh(Family::IPV6_UNICAST), C4);
    round_trip(
        Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)),
        C4,
    );
    round_trip(
        Message::Update(Update::end_of_rib(Family::IPV6_UNICAST)),
        C4,
    );
}

#[test]
fn four_octet_as_in_two_octet_fields_is_as_trans() {
    let bytes = Message::Open(open()).encode(C4);
    assert_eq!(u16::from_be_bytes([bytes[20], bytes[21]]), AS_TRANS);
    // A 2-octet session: big ASNs in AS_PATH become AS_TRANS, small ones survive, and
    // AS4_PATH (type 17, optional transitive) carries the real path (RFC 6793).
    let m = Message::Update(v4_update());
    let bytes = m.encode(C2);
    let as_path = [2u8, 2, 0xfc, 0x00, 0x5b, 0xa0]; // sequence of 2: 64512, AS_TRANS
    assert!(bytes.windows(as_path.len()).any(|w| w == as_path));
    let as4_path = [0xc0, 17, 20, 2, 2, 0, 0, 0xfc, 0x00, 0xfa, 0x56, 0xea, 0x01];
    assert!(
        bytes.windows(as4_path.len()).any(|w| w == as4_path),
        "{bytes:?}"
    );
    assert_eq!(Message::decode(&bytes, C2), Ok(m.clone()));
    // Without AS4_PATH (a 2-octet-only router dropped it) the AS_TRANS stays.
    let mut stripped = v4_update();
    stripped.attributes.as_path = Some(vec![AsSegment {
        sequence: true,
        asns: vec![64512, u32::from(AS_TRANS)],
    }]);
    let Ok(Message::Update(u)) = Message::decode(&Message::Update(stripped.clone()).encode(C2), C2)
    else {
        panic!("decode")
    };
    assert_eq!(u, stripped);
    // A 4-octet session ignores an AS4_PATH: it is only another attribute.
    let a = attrs(&[
        &[0x40, 1, 1, 0],
        &[0x40, 2, 6, 2, 1, 0, 0, 0xfc, 0x00],
        &[0x40, 3, 4, 192, 0, 2, 1],
        &[0xc0, 17, 6, 2, 1, 0xfa, 0x56, 0xea, 0x01],
    ]);
    let Ok(Message::Update(u)) = Message::decode(&update(&a, &[24, 10, 1, 2]), C4) else {
        panic!("decode")
    };
    assert_eq!(u.attributes.as_path.unwrap()[0].asns, vec![64512]);
    assert!(u.attributes.other.iter().any(|a| a.kind == 17));
}

/// RFC 6793 §4.2.3: AS4_PATH replaces the tail of AS_PATH it covers; a longer one is
/// ignored.
#[test]
fn as4_path_merges_into_the_as_path_of_a_two_octet_peer() {
    let attr = |kind: u8, flags: u8, segs: &[(u8, &[u32])], width: usize| {
        let mut v = Vec::new();
        for (t, asns) in segs {
            v.extend_from_slice(&[*t, asns.len() as u8]);
            for a in *asns {
                v.extend_from_slice(&a.to_be_bytes()[4 - width..]);
            }
        }
        let mut out = vec![flags, kind, v.len() as u8];
        out.extend(v);
        out
    };
    let origin = [0x40, 1, 1, 0];
    let nh = [0x40, 3, 4, 192, 0, 2, 1];
    let path = |as2: &[(u8, &[u32])], as4: &[(u8, &[u32])]| {
        let a = attrs(&[
            &origin,
            &attr(2, 0x40, as2, 2),
            &nh,
            &attr(17, 0xc0, as4, 4),
        ]);
        let Ok(Message::Update(u)) = Message::decode(&update(&a, &[24, 10, 1, 2]), C2) else {
            panic!("decode")
        };
        u.attributes.as_path.unwrap()
    };
    let seq = |asns: &[u32]| AsSegment {
        sequence: true,
        asns: asns.to_vec(),
    };
    let t = u32::from(AS_TRANS);
    // 65001 added by an old speaker after the new ones.
    assert_eq!(
        path(
            &[(2, &[65001, t, t])],
            &[(2, &[4_200_000_001, 4_200_000_002])]
        ),
        vec![seq(&[65001]), seq(&[4_200_000_001, 4_200_000_002])]
    );
    // An AS_SET counts as one.
    assert_eq!(
        path(&[(1, &[1, 2]), (2, &[t])], &[(2, &[4_200_000_001])]),
        vec![
            AsSegment {
                sequence: false,
                asns: vec![1, 2]
            },
            seq(&[4_200_000_001])
        ]
    );
    // Longer than AS_PATH: ignored.
    assert_eq!(
        path(&[(2, &[t])], &[(2, &[4_200_000_001, 4_200_000_002])]),
        vec![seq(&[t])]
    );
}

#[test]
fn open_accessors() {
    let o = open();
    assert!(o.four_octet_as() && o.route_refresh());
    assert_eq!(
        o.families().collect::<Vec<_>>(),
        vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]
    );
    assert_eq!(o.graceful_restart().unwrap().restart_time, 120);
}

#[test]
fn end_of_rib_detection() {
    assert_eq!(
        Update::end_of_rib(Family::IPV4_UNICAST).end_of_rib_family(),
        Some(Family::IPV4_UNICAST)
    );
    assert_eq!(
        Update::end_of_rib(Family::IPV6_UNICAST).end_of_rib_family(),
        Some(Family::IPV6_UNICAST)
    );
    assert_eq!(v4_update().end_of_rib_family(), None);
    assert_eq!(v6_update().end_of_rib_family(), None);
}

#[test]
fn host_bits_are_cleared_on_decode() {
    let mut u = v4_update();
    u.nlri = vec![Ipv4Network::new(Ipv4Addr::new(10, 1, 2, 3), 24).unwrap()];
    let bytes = Message::Update(u).encode(C4);
    let Ok(Message::Update(u)) = Message::decode(&bytes, C4) else {
        panic!("decode")
    };
    assert_eq!(u.nlri, vec![net4("10.1.2.0/24")]);
}

#[test]
fn packing_splits_into_legal_messages() {
    let v4: Vec<IpNetwork> = (0..10_000u32)
        .map(|i| {
            IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        })
        .collect();
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(vec![]),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        ..PathAttributes::default()
    };
    let updates = Update::pack_announce(&attrs, &v4, C4);
    assert!(updates.len() > 1);
    let mut back = Vec::new();
    for u in updates {
        let bytes = Message::Update(u).encode(C4);
        assert!(bytes.len() <= MAX_MESSAGE_LEN, "{}", bytes.len());
        let Ok(Message::Update(u)) = Message::decode(&bytes, C4) else {
            panic!("decode")
        };
        back.extend(u.nlri.into_iter().map(IpNetwork::V4));
    }
    assert_eq!(back, v4);

    let v6: Vec<IpNetwork> = (0..3000u128)
        .map(|i| {
            IpNetwork::new(
                IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | (i << 64))),
                64,
            )
            .unwrap()
        })
        .collect();
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(vec![]),
        mp_reach: Some(MpReach {
            family: Family::IPV6_UNICAST,
            next_hops: vec!["2001:db8::1".parse().unwrap()],
            nlri: vec![],
        }),
        ..PathAttributes::default()
    };
    let mut back = Vec::new();
    for u in Update::pack_announce(&attrs, &v6, C4) {
        let bytes = Message::Update(u).encode(C4);
        assert!(bytes.len() <= MAX_MESSAGE_LEN);
        let Ok(Message::Update(u)) = Message::decode(&bytes, C4) else {
            panic!("decode")
        };
        back.extend(u.attributes.mp_reach.unwrap().nlri);
    }
    assert_eq!(back, v6);
    let mut back = Vec::new();
    for u in Update::pack_withdraw(Family::IPV6_UNICAST, &v6, C4) {
        let bytes = Message::Update(u).encode(C4);
        assert!(bytes.len() <= MAX_MESSAGE_LEN);
        let Ok(Message::Update(u)) = Message::decode(&bytes, C4) else {
            panic!("decode")
        };
        back.extend(u.attributes.mp_unreach.unwrap().withdrawn);
    }
    assert_eq!(back, v6);
}

/// The (code, subcode) a malformed message is answered with.
fn verdict(bytes: &[u8]) -> (u8, u8) {
    let e = Message::decode(bytes, C4).expect_err("must be rejected");
    let n = e.notification();
    (n.code, n.subcode)
}

/// Builds a message of `kind` with `body` and a correct header.
fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

/// An UPDATE with the given attribute bytes and NLRI.
fn update(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    msg(2, &body)
}

const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
const EMPTY_PATH: [u8; 3] = [0x40, 2, 0];
const NH: [u8; 7] = [0x40, 3, 4, 192, 0, 2, 1];
const NLRI: [u8; 4] = [24, 10, 1, 2];

fn attrs(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn header_errors() {
    let mut bad_marker = Message::Keepalive.encode(C4);
    bad_marker[3] = 0;
    assert_eq!(verdict(&bad_marker), (1, 1));
    let n = Message::decode(&msg(4, &[0]), C4)
        .unwrap_err()
        .notification();
    assert_eq!((n.code, n.subcode, n.data), (1, 2, vec![0, 20]));
    let mut long = msg(2, &[0; 10]);
    long[16..18].copy_from_slice(&5000u16.to_be_bytes());
    assert_eq!(verdict(&long), (1, 2));
    let mut short = msg(4, &[]);
    short[16..18].copy_from_slice(&18u16.to_be_bytes());
    assert_eq!(verdict(&short), (1, 2));
    assert_eq!(verdict(&msg(1, &[4, 0])), (1, 2)); // OPEN below 29 octets
    let n = Message::decode(&msg(9, &[]), C4)
        .unwrap_err()
        .notification();
    assert_eq!((n.code, n.subcode, n.data), (1, 3, vec![9]));
    assert_eq!(verdict(&msg(5, &[0, 1, 0])), (1, 2));
    assert_eq!(verdict(&msg(5, &[0, 1, 0, 1, 0])), (7, 1));
    assert_eq!(verdict(&[0xff; 10]), (1, 2));
}

#[test]
fn open_errors() {
    let good = Message::Open(open()).encode(C4);
    let with = |i: usize, v: u8| {
        let mut b = good.clone();
        b[i] = v;
        b
    };
    let n = Message::decode(&with(19, 3), C4)
        .unwrap_err()
        .notification();
    assert_eq!((n.code, n.subcode, n.data), (2, 1, vec![0, 4]));
    assert_eq!(
        verdict(
            &with(23, 2)
                .iter()
                .enumerate()
                .map(|(i, b)| if i == 22 { 0 } else { *b })
                .collect::<Vec<_>>()
        ),
        (2, 6)
    );
    let mut zero_id = good.clone();
    zero_id[24..28].copy_from_slice(&[0, 0, 0, 0]);
    assert_eq!(verdict(&zero_id), (2, 3));
    assert_eq!(verdict(&with(29, 1)), (2, 4)); // optional parameter type 1
                                               // AS 0 in the 2-octet field and no 4-octet capability.
    let o = Open {
        asn: 0,
        hold_time: 0,
        router_id: Ipv4Addr::new(1, 1, 1, 1),
        capabilities: vec![],
    };
    assert_eq!(verdict(&Message::Open(o).encode(C4)), (2, 2));
    // Optional parameters length disagreeing with the message length.
    assert_eq!(verdict(&with(28, 200)), (2, 0));
    // A capability overrunning its parameter.
    assert_eq!(verdict(&with(32, 60)), (2, 0));
}

#[test]
fn update_errors() {
    let ok = update(&attrs(&[&ORIGIN_IGP, &EMPTY_PATH, &NH]), &NLRI);
    assert!(Message::decode(&ok, C4).is_ok());
    // Withdrawn length past the end.
    assert_eq!(verdict(&msg(2, &[0, 9, 0, 0])), (3, 1));
    // Total attribute length past the end.
    assert_eq!(verdict(&msg(2, &[0, 0, 0, 9])), (3, 1));
    // An attribute overrunning the attribute list.
    assert_eq!(verdict(&update(&[0x40, 1, 5, 0], &[])), (3, 1));
    // The same attribute twice.
    assert_eq!(
        verdict(&update(&attrs(&[&ORIGIN_IGP, &ORIGIN_IGP]), &[])),
        (3, 1)
    );
    // Missing ORIGIN / AS_PATH / NEXT_HOP with NLRI: data is the missing type.
    let n = Message::decode(&update(&attrs(&[&EMPTY_PATH, &NH]), &NLRI), C4)
        .unwrap_err()
        .notification();
    assert_eq!((n.code, n.subcode, n.data), (3, 3, vec![1]));
    assert_eq!(verdict(&update(&attrs(&[&ORIGIN_IGP, &NH]), &NLRI)), (3, 3));
    assert_eq!(
        verdict(&update(&attrs(&[&ORIGIN_IGP, &EMPTY_PATH]), &NLRI)),
        (3, 3)
    );
    // Well-known attribute flagged optional: data is the attribute.
    let n = Message::decode(&update(&[0xc0, 1, 1, 0], &[]), C4)
        .unwrap_err()
        .notification();
    assert_eq!((n.code, n.subcode, n.data), (3, 4, vec![0xc0, 1, 1, 0]));
    // Bad lengths.
    assert_eq!(verdict(&update(&[0x40, 1, 2, 0, 0], &[])), (3, 5));
    assert_eq!(verdict(&update(&[0x40, 3, 3, 1, 2, 3], &[])), (3, 5));
    // ORIGIN 3.
    assert_eq!(verdict(&update(&[0x40, 1, 1, 3], &[])), (3, 6));
    // NEXT_HOP 0.0.0.0 and multicast.
    assert_eq!(verdict(&update(&[0x40, 3, 4, 0, 0, 0, 0], &[])), (3, 8));
    assert_eq!(verdict(&update(&[0x40, 3, 4, 224, 0, 0, 1], &[])), (3, 8));
    // MP_REACH with a 5-octet IPv6 next hop.
    assert_eq!(
        verdict(&update(&[0x80, 14, 9, 0, 2, 1, 5, 1, 2, 3, 4, 5], &[])),
        (3, 9)
    );
    // Prefix longer than 32 bits; prefix octets missing.
    assert_eq!(
        verdict(&update(
            &attrs(&[&ORIGIN_IGP, &EMPTY_PATH, &NH]),
            &[33, 1, 2, 3, 4, 5]
        )),
        (3, 10)
    );
    assert_eq!(
        verdict(&update(&attrs(&[&ORIGIN_IGP, &EMPTY_PATH, &NH]), &[24, 10])),
        (3, 10)
    );
    assert_eq!(verdict(&msg(2, &[0, 2, 40, 1, 0, 0])), (3, 10));
    // AS_PATH: bad segment type, segment overrun, empty segment.
    assert_eq!(
        verdict(&update(&[0x40, 2, 6, 7, 1, 0, 0, 0, 1], &[])),
        (3, 11)
    );
    assert_eq!(
        verdict(&update(&[0x40, 2, 6, 2, 2, 0, 0, 0, 1], &[])),
        (3, 11)
    );
    assert_eq!(verdict(&update(&[0x40, 2, 2, 2, 0], &[])), (3, 11));
    // An unknown well-known attribute.
    assert_eq!(verdict(&update(&[0x40, 99, 0], &[])), (3, 2));
    // An unknown optional attribute is kept, not an error.
    let Ok(Message::Update(u)) = Message::decode(&update(&[0xc0, 99, 1, 7], &[]), C4) else {
        panic!("unknown optional attribute rejected")
    };
    assert_eq!(u.attributes.other.len(), 1);
}

fn samples() -> Vec<Vec<u8>> {
    vec![
        Message::Open(open()).encode(C4),
        Message::Update(v4_update()).encode(C4),
        Message::Update(v6_update()).encode(C4),
        Message::Keepalive.encode(C4),
        Message::RouteRefresh(Family::IPV4_UNICAST).encode(C4),
        Message::Notification(Notification::new(6, 3)).encode(C4),
    ]
}

#[test]
fn every_truncation_is_an_error() {
    for s in samples() {
        for cut in 0..s.len() {
            assert!(
                Message::decode(&s[..cut], C4).is_err(),
                "cut {cut} of {s:?}"
            );
        }
        // Also with a header that claims the shorter length: body truncated inside.
        for cut in 19..s.len() {
            let mut b = s[..cut].to_vec();
            b[16..18].copy_from_slice(&(cut as u16).to_be_bytes());
            let _ = Message::decode(&b, C4);
        }
    }
}

/// A stable-Rust stand-in for the fuzz target: random and mutated messages never panic,
/// and whatever decodes re-encodes to something that decodes to the same message.
#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6267_7034);
    let samples = samples();
    let mut decoded = 0;
    for i in 0..200_000 {
        let bytes: Vec<u8> = if i % 4 == 0 {
            let len = rng.random_range(0..120);
            let mut b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if len >= 19 && rng.random_bool(0.8) {
                b[..16].fill(0xff);
                b[16..18].copy_from_slice(&(len as u16).to_be_bytes());
                b[18] = rng.random_range(1..=5);
            }
            b
        } else {
            let mut b = samples[rng.random_range(0..samples.len())].clone();
            for _ in 0..rng.random_range(1..4) {
                // Leave the header alone mostly: exercise the body decoders.
                let body = b.len() > 19 && rng.random_bool(0.9);
                let at = rng.random_range(if body { 19 } else { 0 }..b.len());
                match rng.random_range(0..3) {
                    0 => b[at] = rng.random(),
                    1 => b[at] ^= 1 << rng.random_range(0..8),
                    _ => {
                        b.truncate(at.max(19));
                        let len = b.len() as u16;
                        b[16..18].copy_from_slice(&len.to_be_bytes());
                    }
                }
            }
            b
        };
        for codec in [C4, C2] {
            if let Ok(m) = Message::decode(&bytes, codec) {
                decoded += 1;
                let again = m.encode(codec);
                assert_eq!(Message::decode(&again, codec), Ok(m), "{bytes:?}");
            }
        }
    }
    assert!(
        decoded > 1000,
        "the mutations should not all be rejected: {decoded}"
    );
}

/// RFC 8950: the capability (code 5, <NLRI AFI, NLRI SAFI (2 octets), next hop AFI>)
/// round-trips with its exact bytes, and the accessor finds the tuple.
#[test]
fn extended_next_hop_capability_round_trips() {
    let mut o = open();
    let tuples = vec![
        ExtendedNextHop::IPV4_OVER_IPV6,
        ExtendedNextHop {
            nlri: Family::new(1, 128),
            next_hop_afi: 2,
        },
    ];
    o.capabilities
        .insert(2, Capability::ExtendedNextHop(tuples.clone()));
    let bytes = Message::Open(o.clone()).encode(C4);
    let cap = [5u8, 12, 0, 1, 0, 1, 0, 2, 0, 1, 0, 128, 0, 2];
    assert!(
        bytes.windows(cap.len()).any(|w| w == cap),
        "capability 5 not on the wire as RFC 8950 §3 lays it out: {bytes:?}"
    );
    round_trip(Message::Open(o.clone()), C4);
    assert!(o.extended_next_hop(ExtendedNextHop::IPV4_OVER_IPV6));
    assert!(!open().extended_next_hop(ExtendedNextHop::IPV4_OVER_IPV6));
    assert!(!o.extended_next_hop(ExtendedNextHop {
        nlri: Family::IPV6_UNICAST,
        next_hop_afi: 1,
    }));
}

/// A capability 5 whose length is not a multiple of 6 (or empty) is an OPEN Message
/// Error, not a silently shortened list.
#[test]
fn malformed_extended_next_hop_capability_is_an_open_error() {
    for value in [&[0u8, 1, 0, 1, 0][..], &[], &[0, 1, 0, 1, 0, 2, 0]] {
        let mut o = open();
        o.capabilities = vec![
            Capability::FourOctetAs(4_200_000_001),
            Capability::Unknown {
                code: 5,
                value: value.to_vec(),
            },
        ];
        let n = Message::decode(&Message::Open(o).encode(C4), C4)
            .unwrap_err()
            .notification();
        assert_eq!((n.code, n.subcode), (2, 0), "value {value:?}");
    }
}

fn v4_via_v6(next_hops: &[&str]) -> Update {
    Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(vec![]),
            local_pref: Some(100),
            mp_reach: Some(MpReach {
                family: Family::IPV4_UNICAST,
                next_hops: next_hops.iter().map(|a| a.parse().unwrap()).collect(),
                nlri: vec![net("10.244.1.0/26"), net("10.244.2.64/26")],
            }),
            ..PathAttributes::default()
        },
        ..Update::default()
    }
}

/// IPv4 NLRI in MP_REACH_NLRI (AFI 1, SAFI 1) with a 16-octet global or a 32-octet
/// global + link-local IPv6 next hop, as RFC 8950 §3 encodes it; the next hop used is
/// the global one, or the link-local one next to a `::` global.
#[test]
fn ipv4_nlri_with_ipv6_next_hop_round_trips() {
    for hops in [
        &["2001:db8::2"][..],
        &["2001:db8::2", "fe80::2"],
        &["::", "fe80::2"],
    ] {
        let u = v4_via_v6(hops);
        let bytes = Message::Update(u.clone()).encode(C4X);
        // AFI 1, SAFI 1, next hop length 16 or 32.
        let head = [0u8, 1, 1, (16 * hops.len()) as u8];
        assert!(bytes.windows(4).any(|w| w == head), "{hops:?}: {bytes:?}");
        assert_eq!(Message::decode(&bytes, C4X), Ok(Message::Update(u.clone())));
        let want: IpAddr = if hops[0] == "::" { hops[1] } else { hops[0] }
            .parse()
            .unwrap();
        assert_eq!(
            u.attributes.mp_reach.as_ref().unwrap().next_hop(),
            Some(want)
        );
    }
}

/// Without the capability negotiated, an IPv4 MP_REACH_NLRI with an IPv6 next hop is an
/// UPDATE Message Error (Optional Attribute Error, with the attribute); with it, a next
/// hop of a wrong length or only unspecified addresses is the same error.
#[test]
fn ipv4_nlri_with_ipv6_next_hop_needs_the_capability() {
    let bytes = Message::Update(v4_via_v6(&["2001:db8::2"])).encode(C4X);
    let n = Message::decode(&bytes, C4).unwrap_err().notification();
    assert_eq!((n.code, n.subcode), (3, 9));
    assert_eq!(n.data[..2], [0x80, 14], "data: the MP_REACH_NLRI attribute");
    let mp = |nh: &[u8]| {
        let mut v = vec![0, 1, 1, nh.len() as u8];
        v.extend_from_slice(nh);
        v.push(0);
        v.extend_from_slice(&[24, 10, 1, 2]);
        let mut a = vec![0x80, 14, v.len() as u8];
        a.extend_from_slice(&v);
        update(&attrs(&[&ORIGIN_IGP, &EMPTY_PATH, &a]), &[])
    };
    let mut gua = vec![0x20, 0x01, 0x0d, 0xb8];
    gua.extend_from_slice(&[0; 11]);
    gua.push(2);
    assert!(Message::decode(&mp(&gua), C4X).is_ok());
    let verdict_x = |b: &[u8]| {
        let n = Message::decode(b, C4X).unwrap_err().notification();
        (n.code, n.subcode)
    };
    assert_eq!(verdict_x(&mp(&gua[..12])), (3, 9)); // 12 octets
    assert_eq!(verdict_x(&mp(&[0; 16])), (3, 9)); // ::
    assert_eq!(verdict_x(&mp(&[0; 32])), (3, 9)); // :: and ::
    assert_eq!(
        verdict_x(&mp(&[gua.clone(), gua.clone(), gua].concat())),
        (3, 9)
    ); // 48
}
