//! The finite state machine of RFC 4271 §8 as one table: (state × input) -> (actions,
//! next state), in [`step`]. `session.rs` (OpenSent, OpenConfirm, Established) and
//! `peer.rs` (Idle, Connect, Active) turn sockets and timers into [`Input`]s and carry
//! out the [`Action`]s; every rule about what a message, a timer or a second connection
//! from the peer does is written here once:
//!
//! - a second TCP connection from the peer decides nothing until an OPEN arrives on it:
//!   in OpenSent/OpenConfirm the §6.8 collision rule picks one (the connection opened by
//!   the higher BGP identifier stays); an Established session wins over it, unless that
//!   OPEN carries the graceful restart capability and the peer then confirms the new
//!   connection with a KEEPALIVE after our OPEN: then the peer restarted (RFC 4724
//!   §4.2) and the new connection takes over. The confirmation is what tells a restart
//!   from the loser of a collision that was resolved on the peer's side while our
//!   side was finishing the winner: that one carries an OPEN (with the capability: our
//!   mesh always announces it) and then the peer's Cease, never a KEEPALIVE. Garbage
//!   on it closes only it.
//! - whether a session's end keeps the peer's routes (graceful restart) is [`keeps_routes`]:
//!   a NOTIFICATION, sent or received, ends graceful-restart treatment at once unless
//!   both sides announced the N bit (RFC 8538) and it was not a Hard Reset.
//! - the peer's restart window is a timer of every state; a timer that fired is cleared
//!   by the one who waits on it before the table is asked, so no expired deadline can
//!   wake a loop again.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::wire::{GracefulRestart, Notification};

/// Session state of one peer (RFC 4271 §8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not trying: waiting out the back-off after a failure.
    Idle,
    /// A TCP connection to the peer is being opened.
    Connect,
    /// Waiting for the peer to connect to us.
    Active,
    /// Our OPEN is sent; waiting for the peer's.
    OpenSent,
    /// OPENs exchanged; waiting for the peer's KEEPALIVE.
    OpenConfirm,
    Established,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            State::Idle => "idle",
            State::Connect => "connect",
            State::Active => "active",
            State::OpenSent => "opensent",
            State::OpenConfirm => "openconfirm",
            State::Established => "established",
        };
        f.write_str(s)
    }
}

/// What happened (RFC 4271 §8.1 event numbers in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// The peer is removed or the speaker stops [2 ManualStop]: the Cease to send.
    Stop(Notification),
    /// [10 HoldTimer_Expires]
    HoldTimerExpired,
    /// [11 KeepaliveTimer_Expires]
    KeepaliveTimerExpired,
    /// The peer's graceful-restart window passed (RFC 4724 §4.2): its stale routes go.
    RestartTimerExpired,
    /// The connection broke or the peer closed it [18 TcpConnectionFails].
    ConnectionFails,
    /// The peer's OPEN passed the §6.2 checks [19 BGPOpen].
    Open,
    /// A message that cannot be accepted [21, 22, 28]: the NOTIFICATION that says why.
    BadMessage(Notification),
    /// [24, 25 NotifMsg]
    Notification,
    /// [26 KeepAliveMsg]
    Keepalive,
    /// [27 UpdateMsg]
    Update,
    /// ROUTE-REFRESH (RFC 2918) for a negotiated family.
    RouteRefresh,
    /// What we announce changed.
    ExportsChanged,
    /// Another TCP connection from the peer's address [14-17].
    SecondConnection,
    /// A valid OPEN on that connection.
    SecondOpen {
        /// It carries the graceful restart capability.
        graceful_restart: bool,
        /// §6.8 prefers it over the current connection ([`second_wins`]).
        wins_collision: bool,
    },
    /// A KEEPALIVE on it after its OPEN with graceful restart was answered with ours
    /// (Established only): the peer is in OpenConfirm there, so it restarted.
    SecondKeepalive,
    /// Garbage, a bad OPEN or anything but an OPEN on it: the NOTIFICATION for it.
    SecondBad(Notification),
    /// It closed, or sent no OPEN in time.
    SecondGone,
}

/// What to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    SendKeepalive,
    /// (Re)start the hold timer with the negotiated hold time.
    ArmHoldTimer,
    ArmKeepaliveTimer,
    /// Record Established; send our table and End-of-RIB.
    Establish,
    ProcessUpdate,
    AnswerRefresh,
    SendChanges,
    /// Withdraw the routes kept stale from the peer's previous session.
    SweepStale,
    /// Every route of the peer goes (its restart window passed while it was down).
    PeerDown,
    /// Keep the second connection until its OPEN; `send_open`: ours goes out on it now
    /// (both sides may be waiting in OpenSent), else only if it wins.
    HoldSecond {
        send_open: bool,
    },
    /// Send our OPEN on the second connection (if not sent yet) and keep it until the
    /// peer's KEEPALIVE on it confirms a restart ([`Input::SecondKeepalive`]).
    ConfirmSecond,
    /// Close the second connection with this NOTIFICATION.
    RejectSecond(Notification),
    /// Close the second connection quietly.
    DropSecond,
    /// Send this NOTIFICATION on the current connection and close it; the session ends.
    Notify(Notification),
    /// The session ends (after `Notify`, or the connection failed, or a NOTIFICATION
    /// came). A second connection waiting for its OPEN carries on: before Established
    /// it is the other FSM of a collision (§6.8), after it the peer's new connection.
    Close,
    /// The current connection is closed without a NOTIFICATION (it is the peer's old
    /// one, or it lost a collision after `Notify`); the second continues the session.
    SwitchToSecond,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) actions: Vec<Action>,
    pub(crate) next: State,
}

fn go(next: State, actions: impl Into<Vec<Action>>) -> Step {
    Step {
        actions: actions.into(),
        next,
    }
}

/// FSM Error subcodes (RFC 6608): an unexpected message in OpenSent, OpenConfirm,
/// Established.
fn fsm_error(state: State) -> Notification {
    let sub = match state {
        State::OpenSent => 1,
        State::OpenConfirm => 2,
        _ => 3,
    };
    Notification::new(Notification::FSM_ERROR, sub)
}

fn collision() -> Notification {
    Notification::new(Notification::CEASE, Notification::CEASE_COLLISION)
}

/// The table. Idle, Connect and Active only see the restart timer here (their
/// connection attempts are `peer.rs`'s loop; a connection made there starts OpenSent).
pub(crate) fn step(state: State, input: &Input) -> Step {
    use Action::*;
    use State::*;
    let closing = |n: Notification| go(Idle, [Notify(n), Close]);
    match (state, input) {
        (Idle | Connect | Active, Input::RestartTimerExpired) => go(state, [PeerDown]),
        (Idle | Connect | Active, _) => go(state, []),

        // Whatever the state: these end the session.
        (_, Input::Stop(n)) => closing(n.clone()),
        (_, Input::HoldTimerExpired) => {
            closing(Notification::new(Notification::HOLD_TIMER_EXPIRED, 0))
        }
        (_, Input::BadMessage(n)) => closing(n.clone()),
        (_, Input::Notification | Input::ConnectionFails) => go(Idle, [Close]),

        // The restart window of the previous session: stale routes go; while down, all.
        (Established, Input::RestartTimerExpired) => go(state, [SweepStale]),
        (_, Input::RestartTimerExpired) => go(state, [PeerDown]),

        (OpenSent, Input::Open) => go(
            OpenConfirm,
            [SendKeepalive, ArmHoldTimer, ArmKeepaliveTimer],
        ),
        (OpenConfirm, Input::Keepalive) => go(Established, [ArmHoldTimer, Establish]),
        (Established, Input::Keepalive) => go(state, [ArmHoldTimer]),
        (Established, Input::Update) => go(state, [ArmHoldTimer, ProcessUpdate]),
        (Established, Input::RouteRefresh) => go(state, [ArmHoldTimer, AnswerRefresh]),
        (Established, Input::ExportsChanged) => go(state, [SendChanges]),
        (_, Input::ExportsChanged) => go(state, []),
        (OpenConfirm | Established, Input::KeepaliveTimerExpired) => {
            go(state, [SendKeepalive, ArmKeepaliveTimer])
        }
        (_, Input::KeepaliveTimerExpired) => go(state, []),
        // Any other message out of turn.
        (_, Input::Open | Input::Keepalive | Input::Update | Input::RouteRefresh) => {
            closing(fsm_error(state))
        }

        // A second connection: nothing is decided before its OPEN.
        (Established, Input::SecondConnection) => go(state, [HoldSecond { send_open: false }]),
        (_, Input::SecondConnection) => go(state, [HoldSecond { send_open: true }]),
        (
            Established,
            Input::SecondOpen {
                graceful_restart, ..
            },
        ) => {
            if *graceful_restart {
                // RFC 4724 §4.2, once the peer confirms it (see the module header).
                go(state, [ConfirmSecond])
            } else {
                // §6.8: an Established session wins over a new connection.
                go(state, [RejectSecond(collision())])
            }
        }
        (_, Input::SecondOpen { wins_collision, .. }) => {
            if *wins_collision {
                go(OpenSent, [Notify(collision()), SwitchToSecond])
            } else {
                go(state, [RejectSecond(collision())])
            }
        }
        // The peer restarted; its old connection is dead to it.
        (Established, Input::SecondKeepalive) => go(OpenSent, [SwitchToSecond]),
        // Not reached (before Established an OPEN on it decides at once).
        (_, Input::SecondKeepalive) => go(state, [RejectSecond(collision())]),
        (_, Input::SecondBad(n)) => go(state, [RejectSecond(n.clone())]),
        (_, Input::SecondGone) => go(state, [DropSecond]),
    }
}

/// §6.8: whether a connection the peer opened wins over the current one. The
/// connection opened by the speaker with the higher BGP identifier stays; of two the
/// peer opened, the newer (the peer gave the older up).
pub(crate) fn second_wins(current_outgoing: bool, local: Ipv4Addr, remote: Ipv4Addr) -> bool {
    !(current_outgoing && local > remote)
}

/// How a session that reached Established ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The connection broke or closed, no NOTIFICATION either way.
    ConnectionLost,
    Sent(Notification),
    Received(Notification),
    /// The peer reconnected with the graceful restart capability (RFC 4724 §4.2).
    PeerRestarted,
}

/// Whether the routes learned in a session that ended by `cause` are kept (stale) for
/// the peer's restart time: the peer announced graceful restart with a restart time
/// and families (RFC 4724 §4.2), and the session did not end by a NOTIFICATION, or both
/// sides announced the N bit (RFC 8538 §4) and it was not a Hard Reset.
pub(crate) fn keeps_routes(cause: &Cause, peer: Option<&GracefulRestart>, ours_n: bool) -> bool {
    let Some(gr) = peer.filter(|g| g.restart_time > 0 && !g.families.is_empty()) else {
        return false;
    };
    match cause {
        Cause::ConnectionLost | Cause::PeerRestarted => true,
        Cause::Sent(n) | Cause::Received(n) => ours_n && gr.notification && !n.is_hard_reset(),
    }
}

/// The Cease we send to end a session: with the N bit on both sides a Hard Reset that
/// carries it (RFC 8538 §3), so the peer drops our routes now instead of helping.
pub(crate) fn cease(subcode: u8, both_n: bool) -> Notification {
    let n = Notification::new(Notification::CEASE, subcode);
    if both_n {
        Notification::hard_reset(&n)
    } else {
        n
    }
}

/// Exponential back-off (§8.1.1 "DampPeerOscillations"): a peer that keeps failing is
/// retried less and less often; a session that reached Established resets it.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            next: Duration::ZERO,
        }
    }
    /// The wait before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = if d.is_zero() {
            self.base
        } else {
            (d * 2).min(self.max)
        };
        d
    }
    pub fn reset(&mut self) {
        self.next = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HoldTime;
    use crate::wire::Family;

    #[test]
    fn hold_time_negotiation() {
        let ours = HoldTime::new(90).unwrap();
        assert_eq!(ours.negotiate(30), HoldTime::new(30));
        assert_eq!(ours.negotiate(180), Some(ours));
        assert_eq!(ours.negotiate(0), Some(HoldTime::NONE));
        assert_eq!(ours.negotiate(2), None);
        assert_eq!(ours.negotiate(1), None);
        assert_eq!(
            HoldTime::new(9).unwrap().keepalive_interval(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            HoldTime::new(3).unwrap().keepalive_interval(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(HoldTime::NONE.keepalive_interval(), None);
        assert_eq!(HoldTime::NONE.timeout(), None);
    }

    #[test]
    fn backoff_doubles_then_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let got: Vec<u64> = (0..6).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, vec![0, 1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::ZERO);
    }

    #[test]
    fn a_second_connection_never_touches_an_established_session_before_its_open() {
        use Action::*;
        let s = step(State::Established, &Input::SecondConnection);
        assert_eq!(s, go(State::Established, [HoldSecond { send_open: false }]));
        // Garbage, a version-3 OPEN, silence: only the second connection goes.
        let bad = Notification::new(2, 1);
        let s = step(State::Established, &Input::SecondBad(bad.clone()));
        assert_eq!(s, go(State::Established, [RejectSecond(bad)]));
        let s = step(State::Established, &Input::SecondGone);
        assert_eq!(s.next, State::Established);
        // An OPEN without graceful restart: the Established session wins (§6.8).
        let open = |graceful_restart, wins_collision| Input::SecondOpen {
            graceful_restart,
            wins_collision,
        };
        let s = step(State::Established, &open(false, true));
        assert_eq!(s, go(State::Established, [RejectSecond(collision())]));
        // With it: our OPEN goes out on it, and the peer's KEEPALIVE there confirms its
        // restart (RFC 4724 §4.2); no NOTIFICATION on the old one.
        let s = step(State::Established, &open(true, false));
        assert_eq!(s, go(State::Established, [ConfirmSecond]));
        let s = step(State::Established, &Input::SecondKeepalive);
        assert_eq!(s, go(State::OpenSent, [SwitchToSecond]));
        // The loser of a collision resolved on the peer's side (OPEN with the
        // capability, then the peer's Cease, no KEEPALIVE) leaves the session alone.
        let s = step(State::Established, &Input::SecondBad(collision()));
        assert_eq!(s, go(State::Established, [RejectSecond(collision())]));
        // Before Established: the BGP identifiers decide (§6.8).
        for st in [State::OpenSent, State::OpenConfirm] {
            assert_eq!(step(st, &open(true, false)).next, st);
            assert_eq!(
                step(st, &open(false, true)).actions,
                vec![Notify(collision()), SwitchToSecond]
            );
            assert_eq!(
                step(st, &Input::SecondConnection).actions,
                vec![HoldSecond { send_open: true }]
            );
        }
    }

    #[test]
    fn every_state_ends_on_hold_expiry_and_notification_and_honours_the_restart_timer() {
        let hold = Notification::new(Notification::HOLD_TIMER_EXPIRED, 0);
        for st in [State::OpenSent, State::OpenConfirm, State::Established] {
            assert_eq!(
                step(st, &Input::HoldTimerExpired),
                go(State::Idle, [Action::Notify(hold.clone()), Action::Close])
            );
            assert_eq!(
                step(st, &Input::Notification),
                go(State::Idle, [Action::Close])
            );
        }
        for st in [
            State::Idle,
            State::Connect,
            State::Active,
            State::OpenSent,
            State::OpenConfirm,
        ] {
            assert_eq!(
                step(st, &Input::RestartTimerExpired),
                go(st, [Action::PeerDown])
            );
        }
        assert_eq!(
            step(State::Established, &Input::RestartTimerExpired).actions,
            vec![Action::SweepStale]
        );
    }

    #[test]
    fn messages_out_of_turn_are_fsm_errors() {
        let s = step(State::OpenSent, &Input::Keepalive);
        assert_eq!(s.actions[0], Action::Notify(Notification::new(5, 1)));
        let s = step(State::OpenConfirm, &Input::Update);
        assert_eq!(s.actions[0], Action::Notify(Notification::new(5, 2)));
        let s = step(State::Established, &Input::Open);
        assert_eq!(s.actions[0], Action::Notify(Notification::new(5, 3)));
        assert_eq!(step(State::OpenSent, &Input::Open).next, State::OpenConfirm);
        assert_eq!(
            step(State::OpenConfirm, &Input::Keepalive).next,
            State::Established
        );
    }

    #[test]
    fn a_notification_ends_graceful_restart_unless_both_sides_have_the_n_bit() {
        let gr = |notification| GracefulRestart {
            restarting: false,
            notification,
            restart_time: 120,
            families: vec![(Family::IPV4_UNICAST, true)],
        };
        let cease = Notification::new(6, 2);
        let hold = Notification::new(4, 0);
        let hard = Notification::hard_reset(&cease);
        assert!(keeps_routes(
            &Cause::ConnectionLost,
            Some(&gr(false)),
            false
        ));
        assert!(keeps_routes(&Cause::PeerRestarted, Some(&gr(false)), true));
        assert!(!keeps_routes(
            &Cause::Received(cease.clone()),
            Some(&gr(false)),
            true
        ));
        assert!(!keeps_routes(
            &Cause::Sent(hold.clone()),
            Some(&gr(true)),
            false
        ));
        assert!(keeps_routes(&Cause::Sent(hold), Some(&gr(true)), true));
        assert!(keeps_routes(&Cause::Received(cease), Some(&gr(true)), true));
        assert!(!keeps_routes(&Cause::Received(hard), Some(&gr(true)), true));
        assert!(!keeps_routes(&Cause::ConnectionLost, None, true));
        let no_families = GracefulRestart {
            families: vec![],
            ..gr(true)
        };
        assert!(!keeps_routes(
            &Cause::ConnectionLost,
            Some(&no_families),
            true
        ));
        assert_eq!(cease_of(false), Notification::new(6, 2));
        let h = cease_of(true);
        assert_eq!((h.code, h.subcode, h.data.clone()), (6, 9, vec![6, 2]));
    }

    fn cease_of(n: bool) -> Notification {
        cease(Notification::CEASE_ADMIN_SHUTDOWN, n)
    }

    #[test]
    fn collision_keeps_the_connection_of_the_higher_identifier() {
        let lo: Ipv4Addr = "10.0.0.1".parse().unwrap();
        let hi: Ipv4Addr = "10.0.0.2".parse().unwrap();
        // We opened the current one and have the higher id: it stays.
        assert!(!second_wins(true, hi, lo));
        assert!(second_wins(true, lo, hi));
        // The current one is the peer's too: the newer wins.
        assert!(second_wins(false, hi, lo));
    }
}
