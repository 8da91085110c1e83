//! The rules of issue 13 against a hand-driven peer on loopback: a second connection
//! from the peer's address leaves an Established session alone until an OPEN with the
//! graceful restart capability arrives on it; a NOTIFICATION ends graceful-restart
//! treatment unless both sides set the RFC 8538 N bit; the restart window holds while
//! waiting for an OPEN, and an expired window does not spin; `last_error` keeps the
//! NOTIFICATION.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bgp::wire::{Family, GracefulRestart, Message, Notification, Origin, PathAttributes, Update};
use bgp::{PeerConfig, RouteEvent, RouteEventKind, Speaker, SpeakerConfig, State};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);

/// A speaker on `addr` that announces graceful restart (and so the N bit), waits long
/// for OPENs (20 s, so the restart window is what ends a wait), and takes a passive
/// peer `peer` in AS 64512.
async fn helper(addr: &str, peer: &str) -> (Speaker, UnboundedReceiver<RouteEvent>) {
    let a: Ipv4Addr = addr.parse().unwrap();
    let mut cfg = SpeakerConfig::new(a);
    cfg.listen = SocketAddr::new(IpAddr::V4(a), 0);
    cfg.timers = fast_timers();
    cfg.timers.open_hold = 20 * SEC;
    cfg.timers.graceful_restart = 120;
    cfg.peers = vec![PeerConfig {
        passive: true,
        ..PeerConfig::new(ip(peer), 64512)
    }];
    Speaker::start(cfg).await.unwrap()
}

fn gr(restart_time: u16, notification: bool) -> GracefulRestart {
    GracefulRestart {
        restarting: false,
        notification,
        restart_time,
        families: vec![(Family::IPV4_UNICAST, true)],
    }
}

fn route(p: &str) -> Message {
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
}

/// An established fake peer `from` that announced 10.9.0.0/24, learned by `s`.
async fn established(
    s: &Speaker,
    rx: &mut UnboundedReceiver<RouteEvent>,
    from: &str,
    g: Option<GracefulRestart>,
) -> Fake {
    let mut fake = Fake::connect(from, s.local_addr()).await;
    fake.establish(fake_open(64512, "10.0.9.2", 3, g)).await;
    fake.send(&route("10.9.0.0/24")).await;
    let end = Instant::now() + 5 * SEC;
    while s.peers()[0].prefixes_received != 1 {
        assert!(Instant::now() < end, "{:?}", s.peers());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drain(rx, Duration::from_millis(100)).await;
    fake
}

/// Keeps `fake` alive (answers nothing but KEEPALIVEs) for `d`.
async fn keepalive_for(fake: &mut Fake, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        fake.send(&Message::Keepalive).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_leaves_an_established_session_alone_until_a_graceful_open() {
    init_tracing();
    let (s, mut rx) = helper("127.0.20.1", "127.0.20.2").await;
    let mut fake = established(&s, &mut rx, "127.0.20.2", Some(gr(120, false))).await;

    // A bare connection, garbage, a version-3 OPEN, an OPEN without graceful restart:
    // each closes only itself; the session and its route stay, nothing is withdrawn.
    let mut bare = Fake::connect("127.0.20.2", s.local_addr()).await;
    keepalive_for(&mut fake, SEC).await;
    // (One at a time: a newer second connection replaces an older one still silent.)
    let mut garbage = Fake::connect("127.0.20.2", s.local_addr()).await;
    garbage.send_raw(&[0x42; 40]).await;
    assert_eq!(
        garbage.recv_other(5 * SEC).await,
        Some(Message::Notification(Notification::new(1, 1)))
    );
    let mut v3 = Fake::connect("127.0.20.2", s.local_addr()).await;
    let mut open = Message::Open(fake_open(64512, "10.0.9.2", 3, None)).encode(v3.codec);
    open[19] = 3;
    v3.send_raw(&open).await;
    assert_eq!(
        v3.recv_other(5 * SEC).await,
        Some(Message::Notification(Notification {
            code: 2,
            subcode: 1,
            data: vec![0, 4]
        }))
    );
    let mut plain = Fake::connect("127.0.20.2", s.local_addr()).await;
    plain
        .send(&Message::Open(fake_open(64512, "10.0.9.2", 3, None)))
        .await;
    assert_eq!(
        plain.recv_other(5 * SEC).await,
        Some(Message::Notification(Notification::new(6, 7)))
    );
    keepalive_for(&mut fake, SEC).await;
    let st = &s.peers()[0];
    assert_eq!(
        (st.state, st.flaps, st.prefixes_received),
        (State::Established, 0, 1),
        "{st:?}"
    );
    let events = drain(&mut rx, Duration::from_millis(200)).await;
    assert!(events.is_empty(), "{events:?}");
    drop(bare.stream.shutdown().await);

    // An OPEN with graceful restart on a new connection: the peer restarted. The old
    // connection is closed without a NOTIFICATION, the route is kept (stale) and taken
    // back by the new session's End-of-RIB without ever being withdrawn.
    let mut restarted = Fake::connect("127.0.20.2", s.local_addr()).await;
    restarted
        .establish(fake_open(64512, "10.0.9.2", 3, Some(gr(120, false))))
        .await;
    assert_eq!(
        fake.recv_other(5 * SEC).await,
        None,
        "old one closed silently"
    );
    restarted.send(&route("10.9.0.0/24")).await;
    for f in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
        restarted
            .send(&Message::Update(Update::end_of_rib(f)))
            .await;
    }
    wait_event(&mut rx, 5 * SEC, |e| e.kind == RouteEventKind::EndOfRib).await;
    let events = drain(&mut rx, Duration::from_millis(300)).await;
    assert!(
        !events.iter().any(|e| matches!(
            e.kind,
            RouteEventKind::Withdrawn { .. } | RouteEventKind::PeerDown
        )),
        "{events:?}"
    );
    let st = &s.peers()[0];
    assert_eq!(
        (st.state, st.flaps, st.prefixes_received),
        (State::Established, 1, 1)
    );
}

/// The race behind "a thawed mesh node's sessions do not come back": both sides
/// reconnect at once, the peer resolves the collision first and closes its own
/// connection with a Cease (6/7), while ours completes the winner. Our listener hands
/// us the loser only then: its OPEN (with graceful restart, as every mesh node sends)
/// then the Cease. It must not be taken for the peer's restart: the Established
/// session stays (no flap, no withdrawal), only the loser closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loser_of_a_collision_resolved_by_the_peer_leaves_the_established_session_alone() {
    init_tracing();
    let (s, mut rx) = helper("127.0.23.1", "127.0.23.2").await;
    let mut fake = established(&s, &mut rx, "127.0.23.2", Some(gr(120, true))).await;
    let mut loser = Fake::connect("127.0.23.2", s.local_addr()).await;
    loser
        .send(&Message::Open(fake_open(
            64512,
            "10.0.9.2",
            3,
            Some(gr(120, true)),
        )))
        .await;
    loser
        .send(&Message::Notification(Notification::new(6, 7)))
        .await;
    drop(loser.stream.shutdown().await);
    keepalive_for(&mut fake, 2 * SEC).await;
    let st = &s.peers()[0];
    assert_eq!(
        (st.state, st.flaps, st.prefixes_received),
        (State::Established, 0, 1),
        "{st:?}"
    );
    let events = drain(&mut rx, Duration::from_millis(200)).await;
    assert!(events.is_empty(), "{events:?}");
    // The session still carries routes: a new one is learned on it.
    fake.send(&route("10.9.1.0/24")).await;
    let e = drain(&mut rx, Duration::from_millis(500)).await;
    assert!(
        e.iter()
            .any(|e| matches!(e.kind, RouteEventKind::Learned { .. })),
        "{e:?}"
    );
    assert_eq!(s.peers()[0].flaps, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_ends_graceful_restart_unless_both_sides_set_the_n_bit() {
    init_tracing();
    let (s, mut rx) = helper("127.0.21.1", "127.0.21.2").await;
    // No N bit from the peer: its Cease drops its routes at once.
    let mut fake = established(&s, &mut rx, "127.0.21.2", Some(gr(120, false))).await;
    let theirs = s.peers();
    assert_eq!(theirs[0].hold_time, Some(3));
    fake.send(&Message::Notification(Notification::new(6, 2)))
        .await;
    let t = Instant::now();
    wait_event(&mut rx, 2 * SEC, |e| e.kind == RouteEventKind::PeerDown).await;
    assert!(t.elapsed() < SEC, "{:?}", t.elapsed());
    // last_error keeps it, with when, even after the connection is reset.
    drop(fake);
    tokio::time::sleep(SEC).await;
    let st = &s.peers()[0];
    let e = st.last_error.clone().unwrap_or_default();
    assert!(e.contains("received cease (6/2)"), "{e}");
    assert!(st.last_error_at.is_some());

    // N bit on both sides: a Cease keeps the routes (RFC 8538), a Hard Reset does not.
    let mut fake = established(&s, &mut rx, "127.0.21.2", Some(gr(120, true))).await;
    fake.send(&Message::Notification(Notification::new(6, 2)))
        .await;
    let events = drain(&mut rx, SEC).await;
    assert!(events.is_empty(), "kept for the restart: {events:?}");
    assert_eq!(s.peers()[0].prefixes_received, 0, "stale now");
    drop(fake);
    let mut fake = established(&s, &mut rx, "127.0.21.2", Some(gr(120, true))).await;
    fake.send(&Message::Notification(Notification::hard_reset(
        &Notification::new(6, 2),
    )))
    .await;
    wait_event(&mut rx, 2 * SEC, |e| e.kind == RouteEventKind::PeerDown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restart_window_holds_while_waiting_for_an_open_and_does_not_spin() {
    init_tracing();
    let (s, mut rx) = helper("127.0.22.1", "127.0.22.2").await;
    let fake = established(&s, &mut rx, "127.0.22.2", Some(gr(2, false))).await;
    // The peer "freezes": its connection breaks, a new one is made but never speaks.
    drop(fake);
    let t = Instant::now();
    let mut frozen = Fake::connect("127.0.22.2", s.local_addr()).await;
    assert!(matches!(frozen.recv().await, Some(Message::Open(_))));
    wait_event(&mut rx, 5 * SEC, |e| e.kind == RouteEventKind::PeerDown).await;
    let kept = t.elapsed();
    assert!(
        kept >= Duration::from_millis(1800) && kept < Duration::from_secs(4),
        "kept {kept:?}, the restart time is 2 s"
    );
    assert_eq!(s.peers()[0].state, State::OpenSent);
    // The window passed while waiting for the OPEN: nothing spins meanwhile.
    let before = cpu_time();
    tokio::time::sleep(2 * SEC).await;
    let used = cpu_time() - before;
    assert!(used < Duration::from_millis(200), "{used:?} of CPU in 2 s");
    drop(frozen);
}

/// CPU time of this process (every thread) so far.
fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeValLike;
    let ru = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let t = |tv: nix::sys::time::TimeVal| Duration::from_micros(tv.num_microseconds() as u64);
    t(ru.user_time()) + t(ru.system_time())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_whose_two_octet_as_disagrees_with_its_capability_is_bad_peer_as() {
    init_tracing();
    let (s, _rx) = helper("127.0.23.1", "127.0.23.2").await;
    let mut fake = Fake::connect("127.0.23.2", s.local_addr()).await;
    // AS 64512 in the capability, 64513 in the 2-octet field.
    let mut open = Message::Open(fake_open(64512, "10.0.9.2", 3, None)).encode(fake.codec);
    open[20..22].copy_from_slice(&64513u16.to_be_bytes());
    fake.send_raw(&open).await;
    assert!(matches!(fake.recv().await, Some(Message::Open(_))));
    assert_eq!(
        fake.recv().await,
        Some(Message::Notification(Notification::new(2, 2)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_administrative_shutdown_or_a_hard_reset_with_the_n_bit() {
    init_tracing();
    for (n_bit, addr) in [(false, "127.0.24.1"), (true, "127.0.24.3")] {
        let peer = if n_bit { "127.0.24.4" } else { "127.0.24.2" };
        let (s, mut rx) = helper(addr, peer).await;
        let mut fake = established(&s, &mut rx, peer, Some(gr(120, n_bit))).await;
        s.shutdown().await;
        let want = if n_bit {
            Notification::hard_reset(&Notification::new(6, 2))
        } else {
            Notification::new(6, 2)
        };
        assert_eq!(
            fake.recv_other(5 * SEC).await,
            Some(Message::Notification(want))
        );
    }
}
