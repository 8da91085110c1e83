//! Sessions over loopback: two of our speakers, or one and a hand-driven fake peer.

mod common;

use std::time::{Duration, Instant};

use bgp::wire::{Family, GracefulRestart, Message, Notification, Origin, PathAttributes, Update};
use bgp::{PeerConfig, RouteEventKind, State};
use common::*;
use ipnetwork::IpNetwork;
use tokio::net::{TcpListener, TcpSocket};

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

const SEC: Duration = Duration::from_secs(1);

fn learned(prefix: &str, nh: &str) -> impl Fn(&bgp::RouteEvent) -> bool {
    let (p, n) = (net(prefix), ip(nh));
    move |e| {
        e.kind
            == RouteEventKind::Learned {
                prefix: p,
                next_hop: n,
            }
    }
}
fn withdrawn(prefix: &str) -> impl Fn(&bgp::RouteEvent) -> bool {
    let p = net(prefix);
    move |e| e.kind == RouteEventKind::Withdrawn { prefix: p }
}
fn peer_down(e: &bgp::RouteEvent) -> bool {
    e.kind == RouteEventKind::PeerDown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_speakers_exchange_and_withdraw_routes() {
    init_tracing();
    let (a, mut a_rx) = speaker("127.0.1.1", 64512).await;
    let (b, mut b_rx) = speaker("127.0.1.2", 64512).await;
    // Both active: the collision of §6.8 is resolved one way or the other.
    a.add_peer(peer_of(&b, 64512)).unwrap();
    b.add_peer(peer_of(&a, 64512)).unwrap();
    a.announce(net("10.1.0.0/26"), ip("192.0.2.1")).unwrap();
    a.announce(net("2001:db8:1::/122"), ip("2001:db8::1"))
        .unwrap();
    b.announce(net("10.2.0.0/26"), ip("192.0.2.2")).unwrap();
    assert!(a
        .announce(net("2001:db8:3::/122"), ip("192.0.2.1"))
        .is_err());

    wait_event(&mut b_rx, 10 * SEC, learned("10.1.0.0/26", "192.0.2.1")).await;
    wait_event(
        &mut b_rx,
        5 * SEC,
        learned("2001:db8:1::/122", "2001:db8::1"),
    )
    .await;
    wait_event(&mut a_rx, 5 * SEC, learned("10.2.0.0/26", "192.0.2.2")).await;
    // RFC 8950: both speakers announce the extended next hop capability, so an IPv4
    // block may have an IPv6 next hop.
    a.announce(net("10.3.0.0/26"), ip("2001:db8::3")).unwrap();
    wait_event(&mut b_rx, 5 * SEC, learned("10.3.0.0/26", "2001:db8::3")).await;
    assert!(a.withdraw(net("10.3.0.0/26")));
    wait_event(&mut b_rx, 5 * SEC, withdrawn("10.3.0.0/26")).await;

    // Announced after Established, then withdrawn.
    a.announce(net("10.1.0.64/26"), ip("192.0.2.1")).unwrap();
    wait_event(&mut b_rx, 5 * SEC, learned("10.1.0.64/26", "192.0.2.1")).await;
    assert!(a.withdraw(net("10.1.0.0/26")));
    assert!(a.withdraw(net("2001:db8:1::/122")));
    assert!(!a.withdraw(net("10.9.0.0/26")));
    wait_event(&mut b_rx, 5 * SEC, withdrawn("10.1.0.0/26")).await;
    wait_event(&mut b_rx, 5 * SEC, withdrawn("2001:db8:1::/122")).await;
    // A new next hop replaces the route.
    a.announce(net("10.1.0.64/26"), ip("192.0.2.9")).unwrap();
    wait_event(&mut b_rx, 5 * SEC, learned("10.1.0.64/26", "192.0.2.9")).await;

    let st = &a.peers()[0];
    assert_eq!(st.state, State::Established);
    assert_eq!((st.prefixes_sent, st.prefixes_received), (1, 1));
    assert!(st.uptime.is_some());
    let st = &b.peers()[0];
    assert_eq!((st.prefixes_sent, st.prefixes_received), (1, 1));

    // Removing the peer: Cease, and B forgets A's routes. (B may have counted a flap
    // already: when both connect at once, a second connection reaching an Established
    // session of a graceful-restart peer replaces it, RFC 4724 §4.2.)
    let flaps = b.peers()[0].flaps;
    a.remove_peer(b.local_addr().ip()).await.unwrap();
    wait_event(&mut b_rx, 5 * SEC, peer_down).await;
    assert!(a.peers().is_empty());
    // A no longer accepts B: B keeps trying, never established.
    tokio::time::sleep(SEC).await;
    let st = &b.peers()[0];
    assert_ne!(st.state, State::Established);
    assert_eq!(st.flaps, flaps + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_peer_sends_cease() {
    init_tracing();
    let (a, mut a_rx) = speaker("127.0.9.1", 64512).await;
    a.add_peer(PeerConfig {
        passive: true,
        ..PeerConfig::new(ip("127.0.9.2"), 64512)
    })
    .unwrap();
    let mut fake = Fake::connect("127.0.9.2", a.local_addr()).await;
    fake.establish(fake_open(64512, "10.0.9.2", 0, None)).await;
    wait_state(&a, ip("127.0.9.2"), State::Established, 5 * SEC).await;
    a.remove_peer(ip("127.0.9.2")).await.unwrap();
    assert_eq!(
        fake.recv_other(5 * SEC).await,
        Some(Message::Notification(Notification::new(6, 3)))
    );
    wait_event(&mut a_rx, SEC, peer_down).await;
    assert!(a.remove_peer(ip("127.0.9.2")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebgp_import_filter_loop_check_and_passive_side() {
    init_tracing();
    let (a, _a_rx) = speaker("127.0.2.1", 65001).await;
    let b_addr = "127.0.2.2";
    let mut cfg = bgp::SpeakerConfig::new(b_addr.parse().unwrap());
    cfg.local_as = 4_200_000_000;
    cfg.listen = std::net::SocketAddr::new(ip(b_addr), 0);
    cfg.timers = fast_timers();
    // The daemon's pool check: only 10.0.0.0/8.
    cfg.import_filter = bgp::ImportFilter::new(
        |_, p, _| matches!(p, IpNetwork::V4(v4) if v4.ip().octets()[0] == 10),
    );
    let (b, mut b_rx) = bgp::Speaker::start(cfg).await.unwrap();
    a.add_peer(peer_of(&b, 4_200_000_000)).unwrap();
    b.add_peer(PeerConfig {
        passive: true,
        ..peer_of(&a, 65001)
    })
    .unwrap();
    a.announce(net("172.16.0.0/24"), ip("192.0.2.1")).unwrap();
    a.announce(net("10.5.0.0/24"), ip("192.0.2.1")).unwrap();
    wait_event(&mut b_rx, 10 * SEC, learned("10.5.0.0/24", "192.0.2.1")).await;
    let rest = drain(&mut b_rx, SEC).await;
    assert!(
        rest.iter().all(|e| e.kind == RouteEventKind::EndOfRib),
        "filtered route leaked: {rest:?}"
    );
    assert_eq!(b.peers()[0].prefixes_received, 1);
    assert_eq!(a.peers()[0].prefixes_sent, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_timer_expires_when_the_peer_goes_silent() {
    init_tracing();
    let (a, mut a_rx) = speaker("127.0.3.1", 64512).await;
    a.add_peer(PeerConfig {
        passive: true,
        ..PeerConfig::new(ip("127.0.3.2"), 65002)
    })
    .unwrap();
    let mut fake = Fake::connect("127.0.3.2", a.local_addr()).await;
    let theirs = fake.establish(fake_open(65002, "10.0.3.2", 3, None)).await;
    assert_eq!(theirs.asn, 64512);
    assert!(theirs.four_octet_as() && theirs.route_refresh());
    let route = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(vec![bgp::wire::AsSegment {
                sequence: true,
                asns: vec![65002],
            }]),
            next_hop: Some("192.0.2.7".parse().unwrap()),
            ..PathAttributes::default()
        },
        nlri: vec!["10.7.0.0/24".parse().unwrap()],
        ..Update::default()
    };
    fake.send(&Message::Update(route)).await;
    wait_event(&mut a_rx, 5 * SEC, learned("10.7.0.0/24", "192.0.2.7")).await;
    // From now on the fake answers nothing, but keeps the socket open.
    let silent = Instant::now();
    let got = fake.recv_other(10 * SEC).await;
    let waited = silent.elapsed();
    assert_eq!(
        got,
        Some(Message::Notification(Notification::new(4, 0))),
        "hold timer expiry must be notified"
    );
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    wait_event(&mut a_rx, 2 * SEC, peer_down).await;
    let st = &a.peers()[0];
    assert_ne!(st.state, State::Established);
    assert_eq!(st.flaps, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_is_retried() {
    init_tracing();
    // 1. SYNs dropped: a listener whose accept queue is full never completes a connect.
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.4.2:0".parse().unwrap()).unwrap();
    let full = sock.listen(0).unwrap();
    let full_addr = full.local_addr().unwrap();
    let _filler = std::net::TcpStream::connect(full_addr).unwrap();
    let (a, _rx) = speaker("127.0.4.1", 64512).await;
    a.add_peer(PeerConfig {
        port: full_addr.port(),
        ..PeerConfig::new(full_addr.ip(), 64512)
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let st = &a.peers()[0];
    assert!(matches!(st.state, State::Connect | State::Active), "{st:?}");
    let err = st.last_error.clone().unwrap_or_default();
    assert!(err.contains("timed out"), "{err}");

    // 2. Accepts but never speaks: OpenSent times out (open_hold 2 s) with a
    // NOTIFICATION, then the speaker connects again after its back-off.
    let l = TcpListener::bind("127.0.4.3:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    a.add_peer(PeerConfig {
        port: addr.port(),
        ..PeerConfig::new(addr.ip(), 64512)
    })
    .unwrap();
    let mut first = Fake::accept(&l).await;
    let t = Instant::now();
    assert!(matches!(first.recv().await, Some(Message::Open(_))));
    assert_eq!(
        first.recv().await,
        Some(Message::Notification(Notification::new(4, 0)))
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    let mut second = Fake::accept(&l).await;
    assert!(matches!(second.recv().await, Some(Message::Open(_))));
    drop(full);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_peer_is_followed() {
    init_tracing();
    let (a, mut a_rx) = speaker("127.0.5.1", 64512).await;
    let b_addr = "127.0.5.2";
    // B restarts three times on the same address and port, crashing each time.
    let mut port = 0;
    for round in 0..3u32 {
        let mut cfg = bgp::SpeakerConfig::new(b_addr.parse().unwrap());
        cfg.listen = std::net::SocketAddr::new(ip(b_addr), port);
        cfg.timers = fast_timers();
        // The previous speaker's listener closes when its aborted task is dropped,
        // which the runtime does a moment after `drop(b)`.
        let mut tries = 0;
        let (b, _b_rx) = loop {
            match bgp::Speaker::start(cfg.clone()).await {
                Ok(s) => break s,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("{e}: again");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        port = b.local_addr().port();
        if round == 0 {
            a.add_peer(peer_of(&b, 64512)).unwrap();
        }
        b.add_peer(PeerConfig {
            passive: true,
            ..peer_of(&a, 64512)
        })
        .unwrap();
        b.announce(net("10.55.0.0/24"), ip(b_addr)).unwrap();
        wait_event(&mut a_rx, 10 * SEC, learned("10.55.0.0/24", b_addr)).await;
        drop(b); // abrupt: sockets closed, no NOTIFICATION
        wait_event(&mut a_rx, 5 * SEC, peer_down).await;
    }
    assert_eq!(a.peers()[0].flaps, 3);
    assert_eq!(a.peers()[0].prefixes_received, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_end_the_session_with_the_right_notification() {
    init_tracing();
    let (a, mut a_rx) = speaker("127.0.6.1", 64512).await;
    a.add_peer(PeerConfig {
        passive: true,
        ..PeerConfig::new(ip("127.0.6.2"), 64512)
    })
    .unwrap();
    let cases: Vec<(Vec<u8>, (u8, u8))> = vec![
        // UPDATE with ORIGIN 5.
        (
            {
                let mut b = vec![0xff; 16];
                b.extend_from_slice(&[0, 27, 2, 0, 0, 0, 4, 0x40, 1, 1, 5]);
                b
            },
            (3, 6),
        ),
        // Unknown message type 9.
        (
            {
                let mut b = vec![0xff; 16];
                b.extend_from_slice(&[0, 19, 9]);
                b
            },
            (1, 3),
        ),
        // Broken marker.
        (vec![0u8; 19], (1, 1)),
        // A second OPEN in Established.
        (
            Message::Open(fake_open(64512, "10.0.6.2", 3, None)).encode(Default::default()),
            (5, 3),
        ),
    ];
    for (bytes, (code, subcode)) in cases {
        let mut fake = Fake::connect("127.0.6.2", a.local_addr()).await;
        fake.establish(fake_open(64512, "10.0.6.2", 3, None)).await;
        fake.send_raw(&bytes).await;
        match fake.recv_other(5 * SEC).await {
            Some(Message::Notification(n)) => assert_eq!((n.code, n.subcode), (code, subcode)),
            other => panic!("expected NOTIFICATION {code}/{subcode}, got {other:?}"),
        }
        assert_eq!(fake.recv().await, None, "connection must be closed");
        wait_event(&mut a_rx, 5 * SEC, peer_down).await;
    }
    // A wrong AS in the OPEN: OPEN message error, bad peer AS.
    let mut fake = Fake::connect("127.0.6.2", a.local_addr()).await;
    fake.send(&Message::Open(fake_open(65999, "10.0.6.2", 3, None)))
        .await;
    assert!(matches!(fake.recv().await, Some(Message::Open(_))));
    assert_eq!(
        fake.recv().await,
        Some(Message::Notification(Notification::new(2, 2)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_keeps_routes_for_the_window() {
    init_tracing();
    let (a, mut a_rx) = speaker("127.0.7.1", 64512).await;
    a.add_peer(PeerConfig {
        passive: true,
        ..PeerConfig::new(ip("127.0.7.2"), 64512)
    })
    .unwrap();
    let gr = GracefulRestart {
        restarting: false,
        notification: false,
        restart_time: 2,
        families: vec![(Family::IPV4_UNICAST, true)],
    };
    let route = |p: &str| {
        Message::Update(Update {
            attributes: PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(vec![]),
                next_hop: Some("192.0.2.7".parse().unwrap()),
                local_pref: Some(100),
                ..PathAttributes::default()
            },
            nlri: vec![p.parse().unwrap()],
            ..Update::default()
        })
    };
    let mut fake = Fake::connect("127.0.7.2", a.local_addr()).await;
    fake.establish(fake_open(64512, "10.0.7.2", 3, Some(gr.clone())))
        .await;
    fake.send(&route("10.7.0.0/24")).await;
    fake.send(&route("10.7.1.0/24")).await;
    wait_event(&mut a_rx, 5 * SEC, learned("10.7.1.0/24", "192.0.2.7")).await;
    drop(fake);
    // Restart: reconnects within the window, sends one route again, then End-of-RIB.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut fake = Fake::connect("127.0.7.2", a.local_addr()).await;
    fake.establish(fake_open(
        64512,
        "10.0.7.2",
        3,
        Some(GracefulRestart {
            restarting: true,
            ..gr.clone()
        }),
    ))
    .await;
    fake.send(&route("10.7.1.0/24")).await;
    fake.send(&Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)))
        .await;
    wait_event(&mut a_rx, 5 * SEC, withdrawn("10.7.0.0/24")).await;
    let events = drain(&mut a_rx, Duration::from_millis(300)).await;
    assert!(events.is_empty(), "only the stale route goes: {events:?}");
    assert_eq!(a.peers()[0].prefixes_received, 1);
    // Gone for good: PeerDown only once the 2 s window has passed.
    drop(fake);
    let t = Instant::now();
    wait_event(&mut a_rx, 5 * SEC, peer_down).await;
    assert!(
        t.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_md5_passwords() {
    init_tracing();
    let (a, mut a_rx) = speaker("127.0.8.1", 64512).await;
    let (b, _b_rx) = speaker("127.0.8.2", 64512).await;
    let (c, _c_rx) = speaker("127.0.8.3", 64512).await;
    let with = |s: &bgp::Speaker, pw: &str| PeerConfig {
        password: Some(pw.into()),
        ..peer_of(s, 64512)
    };
    a.add_peer(with(&b, "s3cret")).unwrap();
    b.add_peer(with(&a, "s3cret")).unwrap();
    a.add_peer(with(&c, "s3cret")).unwrap();
    c.add_peer(with(&a, "wrong")).unwrap();
    b.announce(net("10.8.0.0/24"), ip("192.0.2.8")).unwrap();
    c.announce(net("10.8.1.0/24"), ip("192.0.2.8")).unwrap();
    wait_event(&mut a_rx, 10 * SEC, learned("10.8.0.0/24", "192.0.2.8")).await;
    tokio::time::sleep(2 * SEC).await;
    let c_status = a
        .peers()
        .into_iter()
        .find(|p| p.address == ip("127.0.8.3"))
        .unwrap();
    assert_ne!(c_status.state, State::Established, "{c_status:?}");
}

/// Two speakers listening on `0.0.0.0` that know each other by `a` and `b` (loopback
/// addresses other than 127.0.0.1); `sources`: whether each is told its own address.
async fn mesh_on_unspecified(a: &str, b: &str, sources: bool) -> (bgp::Speaker, bgp::Speaker) {
    let start = |me: &str| {
        let me = ip(me);
        let mut cfg = bgp::SpeakerConfig::new(me.to_string().parse().unwrap());
        cfg.listen = "0.0.0.0:0".parse().unwrap();
        cfg.timers = fast_timers();
        if sources {
            cfg.sources = vec![me];
        }
        bgp::Speaker::start(cfg)
    };
    let (sa, _) = start(a).await.unwrap();
    let (sb, _) = start(b).await.unwrap();
    let peer = |addr: &str, of: &bgp::Speaker| PeerConfig {
        port: of.local_addr().port(),
        ..PeerConfig::new(ip(addr), 64512)
    };
    sa.add_peer(peer(b, &sb)).unwrap();
    sb.add_peer(peer(a, &sa)).unwrap();
    (sa, sb)
}

/// A speaker listening on the unspecified address connects from the address its peers
/// know it by (`SpeakerConfig::sources`). Without it the kernel picks the source (here
/// 127.0.0.1; on an IPv6 underlay a SLAAC address after a router advertisement) and
/// each side's listener closes the other's connection as coming from no configured
/// peer: both retry in lockstep and never establish (the stalled FRR-mesh pairs of
/// conformance `bgp_v6` after a thaw).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_come_from_the_configured_source_address() {
    init_tracing();
    let (a, b) = mesh_on_unspecified("127.0.31.1", "127.0.31.2", false).await;
    // connect retry 0.5 s, back-off up to 2 s: several attempts each way.
    tokio::time::sleep(3 * SEC).await;
    for s in [&a, &b] {
        let st = &s.peers()[0];
        assert_ne!(st.state, State::Established, "{st:?}");
    }
    a.shutdown().await;
    b.shutdown().await;

    let (a, b) = mesh_on_unspecified("127.0.31.3", "127.0.31.4", true).await;
    wait_state(&a, ip("127.0.31.4"), State::Established, 5 * SEC).await;
    wait_state(&b, ip("127.0.31.3"), State::Established, 5 * SEC).await;
    a.shutdown().await;
    b.shutdown().await;
}
