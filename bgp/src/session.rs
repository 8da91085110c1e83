//! One BGP connection from OpenSent to its end (RFC 4271 §8.2.2): the loop that turns
//! the connection, a second connection from the peer, the timers and the speaker's
//! orders into [`fsm::Input`]s and carries out the [`fsm::Action`]s the table in
//! `fsm.rs` gives for them: OPEN exchange, collision resolution (§6.8), graceful restart
//! (RFC 4724, RFC 8538), then Established: hold and keepalive timers, the initial table
//! and later changes out, UPDATEs in.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::IpNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

use crate::config::HoldTime;
use crate::fsm::{self, Action, Cause, Input, State};
use crate::peer::{Control, Exports, Local, Negotiated, PeerCtx};
use crate::wire::{
    AsSegment, Capability, Codec, DecodeError, ExtendedNextHop, Family, GracefulRestart, Header,
    Message, MpReach, Notification, Open, OpenError, Origin, PathAttributes, Update, HEADER_LEN,
};

/// How a session ended.
pub(crate) enum Outcome {
    /// Failed or closed; `established`: how, if it had reached Established.
    Closed { established: Option<Cause> },
    /// Collision or peer restart: go on with this connection instead.
    Switch {
        established: Option<Cause>,
        next: Start,
    },
    /// The peer was removed or the speaker stops.
    Shutdown,
}

/// Where a session starts: a connection, maybe with our OPEN sent and the peer's read
/// (and its KEEPALIVE: a restart it confirmed while our old session was Established).
pub(crate) struct Start {
    conn: Conn,
    outgoing: bool,
    open_sent: bool,
    open: Option<Open>,
    keepalive: bool,
}

impl Start {
    /// A fresh connection; `outgoing`: we opened it (matters for collisions).
    pub(crate) fn new(stream: TcpStream, outgoing: bool, ctx: &PeerCtx) -> Start {
        Start {
            conn: Conn::new(stream, write_timeout(ctx)),
            outgoing,
            open_sent: false,
            open: None,
            keepalive: false,
        }
    }
}

fn write_timeout(ctx: &PeerCtx) -> Duration {
    ctx.local.timers.open_hold.max(Duration::from_secs(10))
}

type Incoming = Result<(Header, Vec<u8>), ReadError>;

enum ReadError {
    Io(io::Error),
    Decode(DecodeError),
}

/// Ends the reader task with the session.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Conn {
    wr: OwnedWriteHalf,
    msgs: mpsc::Receiver<Incoming>,
    codec: Codec,
    write_timeout: Duration,
    _reader: AbortOnDrop,
}

impl Conn {
    fn new(stream: TcpStream, write_timeout: Duration) -> Conn {
        let (rd, wr) = stream.into_split();
        let (tx, msgs) = mpsc::channel(64);
        let reader = AbortOnDrop(tokio::spawn(read_loop(rd, tx)));
        Conn {
            wr,
            msgs,
            codec: Codec::default(),
            write_timeout,
            _reader: reader,
        }
    }

    async fn send(&mut self, msg: &Message) -> io::Result<()> {
        self.send_raw(&msg.encode(self.codec)).await
    }

    /// Writes with a deadline: a peer that stopped reading must not keep us from
    /// noticing that it stopped talking too.
    async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        match tokio::time::timeout(self.write_timeout, self.wr.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
    }

    /// Sends a NOTIFICATION and closes (§6: the connection ends after it).
    async fn notify(&mut self, n: &Notification) {
        let _ = self.send(&Message::Notification(n.clone())).await;
        let _ = self.wr.shutdown().await;
    }

    /// The next message, decoded.
    async fn next(&mut self) -> Read {
        match self.msgs.recv().await {
            Some(Ok((header, body))) => match Message::decode_body(header, &body, self.codec) {
                Ok(msg) => Read::Msg(msg),
                Err(e) => Read::Bad(e.notification()),
            },
            Some(Err(ReadError::Decode(e))) => Read::Bad(e.notification()),
            Some(Err(ReadError::Io(e))) => Read::Gone(format!("connection: {e}")),
            None => Read::Gone("connection closed".into()),
        }
    }
}

enum Read {
    Msg(Message),
    /// Undecodable: the NOTIFICATION that says why.
    Bad(Notification),
    Gone(String),
}

async fn read_loop(mut rd: OwnedReadHalf, tx: mpsc::Sender<Incoming>) {
    loop {
        let mut head = [0u8; HEADER_LEN];
        if let Err(e) = rd.read_exact(&mut head).await {
            let _ = tx.send(Err(ReadError::Io(e))).await;
            return;
        }
        let header = match Header::decode(&head) {
            Ok(h) => h,
            Err(e) => {
                let _ = tx.send(Err(ReadError::Decode(e))).await;
                return;
            }
        };
        let mut body = vec![0u8; header.len - HEADER_LEN];
        if let Err(e) = rd.read_exact(&mut body).await {
            let _ = tx.send(Err(ReadError::Io(e))).await;
            return;
        }
        if tx.send(Ok((header, body))).await.is_err() {
            return;
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A second connection from the peer, until its OPEN decides (§6.8, RFC 4724 §4.2).
struct Second {
    conn: Conn,
    /// It is dropped if no OPEN came by then.
    until: Instant,
    open_sent: bool,
    open: Option<Open>,
}

/// What one wait produced, before the table is asked.
enum Event {
    Read(Read),
    Second(Read),
    SecondTimeout,
    Control(Option<Control>),
    Hold,
    Keepalive,
    Restart,
    Exports(bool),
}

/// The data an input carries to its actions.
#[derive(Default)]
struct Payload {
    open: Option<Negotiated>,
    update: Option<Update>,
    refresh: Option<Family>,
    second: Option<TcpStream>,
}

struct Session<'a> {
    ctx: &'a mut PeerCtx,
    conn: Conn,
    outgoing: bool,
    state: State,
    neg: Option<Negotiated>,
    second: Option<Second>,
    /// Timers; each is cleared when it fires (a fired deadline never wakes us again).
    hold_at: Option<Instant>,
    ka_at: Option<Instant>,
    /// What the peer has of our exports.
    sent: Arc<Exports>,
    /// The NOTIFICATION that ended the session, either way.
    ended_by: Option<Cause>,
}

/// Runs one connection until it ends or gives way to another.
pub(crate) async fn run(
    start: Start,
    ctx: &mut PeerCtx,
    control: &mut mpsc::Receiver<Control>,
) -> Outcome {
    let Start {
        mut conn,
        outgoing,
        open_sent,
        open,
        keepalive,
    } = start;
    if !open_sent {
        if let Err(e) = conn.send(&Message::Open(local_open(&ctx.local))).await {
            ctx.set_error(format!("sending OPEN: {e}"));
            return Outcome::Closed { established: None };
        }
    }
    ctx.set_state(State::OpenSent);
    let mut s = Session {
        hold_at: Some(Instant::now() + ctx.local.timers.open_hold),
        ctx,
        conn,
        outgoing,
        state: State::OpenSent,
        neg: None,
        second: None,
        ka_at: None,
        sent: Arc::new(Exports::new()),
        ended_by: None,
    };
    // The peer's OPEN (and KEEPALIVE), read on this connection while it was the second.
    let mut pending: std::collections::VecDeque<Event> = open
        .map(|o| Event::Read(Read::Msg(Message::Open(o))))
        .into_iter()
        .chain(keepalive.then_some(Event::Read(Read::Msg(Message::Keepalive))))
        .collect();
    loop {
        let event = match pending.pop_front() {
            Some(e) => e,
            None => s.next_event(control).await,
        };
        let mut payload = Payload::default();
        let Some(input) = s.input(event, &mut payload).await else {
            continue;
        };
        let step = fsm::step(s.state, &input);
        if step.next != s.state || !matches!(input, Input::KeepaliveTimerExpired) {
            debug!(peer = %s.ctx.cfg.address, state = %s.state, ?input, actions = ?step.actions, next = %step.next, "fsm");
        }
        if let Some(outcome) = s.execute(&step, &input, &mut payload).await {
            return outcome;
        }
        s.state = step.next;
        s.ctx.set_state(step.next);
    }
}

impl Session<'_> {
    async fn next_event(&mut self, control: &mut mpsc::Receiver<Control>) -> Event {
        let established = self.state == State::Established;
        let second_until = self.second.as_ref().map(|s| s.until);
        let ev = tokio::select! {
            r = self.conn.next() => Event::Read(r),
            r = async {
                match self.second.as_mut() {
                    Some(s) => s.conn.next().await,
                    None => std::future::pending().await,
                }
            } => Event::Second(r),
            c = control.recv() => Event::Control(c),
            _ = sleep_opt(self.hold_at) => Event::Hold,
            _ = sleep_opt(self.ka_at) => Event::Keepalive,
            _ = sleep_opt(self.ctx.gr_deadline) => Event::Restart,
            _ = sleep_opt(second_until) => Event::SecondTimeout,
            r = self.ctx.exports.changed(), if established => Event::Exports(r.is_ok()),
        };
        // A timer that fired is spent.
        match ev {
            Event::Hold => self.hold_at = None,
            Event::Keepalive => self.ka_at = None,
            Event::Restart => self.ctx.gr_deadline = None,
            _ => {}
        }
        ev
    }

    /// The input of an event; `None`: nothing for the table (e.g. an unknown family's
    /// ROUTE-REFRESH).
    async fn input(&mut self, event: Event, payload: &mut Payload) -> Option<Input> {
        let ctx = &mut *self.ctx;
        Some(match event {
            Event::Read(Read::Msg(msg)) => match msg {
                Message::Open(open) => match check_open(&open, ctx) {
                    Ok(neg) => {
                        self.conn.codec = codec_of(&open);
                        payload.open = Some(neg);
                        Input::Open
                    }
                    Err(e) => Input::BadMessage(DecodeError::Open(e).notification()),
                },
                Message::Notification(n) => {
                    ctx.note_notification(false, &n);
                    self.ended_by = Some(Cause::Received(n));
                    Input::Notification
                }
                Message::Keepalive => Input::Keepalive,
                Message::Update(u) => {
                    payload.update = Some(u);
                    Input::Update
                }
                Message::RouteRefresh(f) => {
                    let ours = self.neg.as_ref().is_some_and(|n| n.families.contains(&f));
                    if !ours && self.state == State::Established {
                        return None;
                    }
                    payload.refresh = Some(f);
                    Input::RouteRefresh
                }
            },
            Event::Read(Read::Bad(n)) => Input::BadMessage(n),
            Event::Read(Read::Gone(e)) => {
                ctx.set_error(e);
                Input::ConnectionFails
            }
            Event::Second(Read::Msg(Message::Open(open))) => match check_open(&open, ctx) {
                Ok(_) => {
                    let wins_collision =
                        fsm::second_wins(self.outgoing, ctx.local.router_id, open.router_id);
                    let graceful_restart = open.graceful_restart().is_some();
                    if let Some(s) = self.second.as_mut() {
                        s.conn.codec = codec_of(&open);
                        s.open = Some(open);
                    }
                    Input::SecondOpen {
                        graceful_restart,
                        wins_collision,
                    }
                }
                Err(e) => Input::SecondBad(DecodeError::Open(e).notification()),
            },
            // After its OPEN was answered (Established: a restart to confirm).
            Event::Second(Read::Msg(Message::Keepalive))
                if self
                    .second
                    .as_ref()
                    .is_some_and(|s| s.open.is_some() && s.open_sent) =>
            {
                Input::SecondKeepalive
            }
            // Anything else first: not a BGP speaker's new connection.
            Event::Second(Read::Msg(_)) => {
                Input::SecondBad(Notification::new(Notification::FSM_ERROR, 1))
            }
            Event::Second(Read::Bad(n)) => Input::SecondBad(n),
            Event::Second(Read::Gone(_)) | Event::SecondTimeout => Input::SecondGone,
            Event::Control(Some(Control::Incoming(stream))) => {
                payload.second = Some(stream);
                Input::SecondConnection
            }
            Event::Control(Some(Control::Shutdown(sub))) => {
                let both_n = self.neg.as_ref().is_some_and(|n| n.both_n);
                Input::Stop(fsm::cease(sub, both_n))
            }
            // The speaker is gone.
            Event::Control(None) | Event::Exports(false) => {
                Input::Stop(fsm::cease(Notification::CEASE_ADMIN_SHUTDOWN, false))
            }
            Event::Hold => Input::HoldTimerExpired,
            Event::Keepalive => Input::KeepaliveTimerExpired,
            Event::Restart => Input::RestartTimerExpired,
            Event::Exports(true) => Input::ExportsChanged,
        })
    }

    /// Carries out one step; `Some` when the session is over.
    async fn execute(
        &mut self,
        step: &fsm::Step,
        input: &Input,
        payload: &mut Payload,
    ) -> Option<Outcome> {
        if let Some(neg) = payload.open.take() {
            // A peer that stops reading must not hold us longer than a hold time in a
            // write (the hold timer cannot fire meanwhile).
            if let Some(hold) = neg.hold.timeout() {
                self.conn.write_timeout = self.conn.write_timeout.min(hold);
            }
            self.neg = Some(neg);
        }
        for action in &step.actions {
            match action {
                Action::SendKeepalive => {
                    if let Err(e) = self.conn.send(&Message::Keepalive).await {
                        self.ctx.set_error(format!("sending KEEPALIVE: {e}"));
                        return Some(self.closed());
                    }
                }
                Action::ArmHoldTimer => {
                    let hold = self.neg.as_ref().and_then(|n| n.hold.timeout());
                    // With no hold time, still do not wait for the KEEPALIVE forever.
                    let hold = match step.next {
                        State::OpenConfirm => hold.or(Some(self.ctx.local.timers.open_hold)),
                        _ => hold,
                    };
                    self.hold_at = hold.map(|h| Instant::now() + h);
                }
                Action::ArmKeepaliveTimer => {
                    let ka = self.neg.as_ref().and_then(|n| n.hold.keepalive_interval());
                    self.ka_at = ka.map(|k| Instant::now() + k);
                }
                Action::Establish => {
                    if let Err(e) = self.establish().await {
                        self.ctx.set_error(format!("sending our routes: {e}"));
                        self.state = State::Established;
                        return Some(self.closed());
                    }
                }
                Action::ProcessUpdate => {
                    if let Some(u) = payload.update.take() {
                        self.ctx.on_update(u);
                    }
                }
                Action::AnswerRefresh => {
                    if let Some(f) = payload.refresh {
                        debug!(peer = %self.ctx.cfg.address, ?f, "route refresh");
                        let sent = self.sent.clone();
                        if let Err(e) = self.send_changes(&Exports::new(), &sent, &[f]).await {
                            self.ctx.set_error(format!("sending UPDATE: {e}"));
                            return Some(self.closed());
                        }
                    }
                }
                Action::SendChanges => {
                    let now = self.ctx.exports.borrow_and_update().clone();
                    let families = self.families();
                    let sent = self.sent.clone();
                    if let Err(e) = self.send_changes(&sent, &now, &families).await {
                        self.ctx.set_error(format!("sending UPDATE: {e}"));
                        return Some(self.closed());
                    }
                    self.sent = now;
                }
                Action::SweepStale => self.ctx.sweep_stale(None),
                Action::PeerDown => self.ctx.restart_window_passed(),
                Action::HoldSecond { send_open } => {
                    let Some(stream) = payload.second.take() else {
                        continue;
                    };
                    let mut conn = Conn::new(stream, write_timeout(self.ctx));
                    if *send_open {
                        let _ = conn.send(&Message::Open(local_open(&self.ctx.local))).await;
                    }
                    debug!(peer = %self.ctx.cfg.address, state = %self.state, "second connection: waiting for its OPEN");
                    // One at a time: the newer replaces an older one that said nothing.
                    self.second = Some(Second {
                        conn,
                        until: Instant::now() + self.ctx.local.timers.open_hold,
                        open_sent: *send_open,
                        open: None,
                    });
                }
                Action::ConfirmSecond => {
                    let open = Message::Open(local_open(&self.ctx.local));
                    if let Some(s) = self.second.as_mut().filter(|s| !s.open_sent) {
                        debug!(peer = %self.ctx.cfg.address, "second connection with graceful restart: our OPEN, waiting for its KEEPALIVE");
                        s.open_sent = true;
                        if let Err(e) = s.conn.send(&open).await {
                            debug!(peer = %self.ctx.cfg.address, "second connection: {e}");
                            self.second = None;
                        }
                    }
                }
                Action::RejectSecond(n) => {
                    if let Some(mut s) = self.second.take() {
                        info!(peer = %self.ctx.cfg.address, state = %self.state, "second connection from the peer closed: {n}");
                        s.conn.notify(n).await;
                    }
                }
                Action::DropSecond => {
                    if self.second.take().is_some() {
                        debug!(peer = %self.ctx.cfg.address, "second connection gone");
                    }
                }
                Action::Notify(n) => {
                    self.ctx.note_notification(true, n);
                    self.conn.notify(n).await;
                    self.ended_by = Some(Cause::Sent(n.clone()));
                }
                Action::Close => {
                    if matches!(input, Input::Stop(_)) {
                        return Some(Outcome::Shutdown);
                    }
                    // A second connection waiting for its OPEN carries on: before
                    // Established it is the other side of a collision (§6.8: its own
                    // FSM), after it the peer's new connection.
                    let closed = self.closed();
                    if let Some(second) = self.second.take() {
                        debug!(peer = %self.ctx.cfg.address, "connection ended: going on with the second one");
                        let established = match closed {
                            Outcome::Closed { established } => established,
                            _ => None,
                        };
                        return Some(Outcome::Switch {
                            established,
                            next: Start {
                                conn: second.conn,
                                outgoing: false,
                                open_sent: second.open_sent,
                                open: second.open,
                                keepalive: false,
                            },
                        });
                    }
                    return Some(closed);
                }
                Action::SwitchToSecond => {
                    let second = self.second.take()?;
                    let established = (self.state == State::Established).then(|| {
                        info!(peer = %self.ctx.cfg.address, "the peer reconnected with graceful restart: it restarted (RFC 4724 §4.2)");
                        Cause::PeerRestarted
                    });
                    if established.is_none() {
                        info!(peer = %self.ctx.cfg.address, "connection collision: going on with the peer's connection");
                    }
                    return Some(Outcome::Switch {
                        established,
                        next: Start {
                            conn: second.conn,
                            outgoing: false,
                            open_sent: second.open_sent,
                            open: second.open,
                            keepalive: matches!(input, Input::SecondKeepalive),
                        },
                    });
                }
            }
        }
        None
    }

    /// The session ended here.
    fn closed(&mut self) -> Outcome {
        let established = (self.state == State::Established)
            .then(|| self.ended_by.take().unwrap_or(Cause::ConnectionLost));
        Outcome::Closed { established }
    }

    fn families(&self) -> Vec<Family> {
        self.neg
            .as_ref()
            .map(|n| n.families.clone())
            .unwrap_or_default()
    }

    /// Established: recorded, then our table and End-of-RIB for every family.
    async fn establish(&mut self) -> io::Result<()> {
        let Some(neg) = self.neg.as_ref() else {
            return Ok(());
        };
        info!(peer = %self.ctx.cfg.address, hold = neg.hold.secs(), router_id = %neg.router_id,
              graceful_restart = neg.graceful_restart.is_some(), notification_gr = neg.both_n,
              extended_next_hop = neg.extended_next_hop, "BGP session established");
        self.ctx.on_established(neg);
        let families = self.families();
        let now: Arc<Exports> = self.ctx.exports.borrow_and_update().clone();
        self.send_changes(&Exports::new(), &now, &families).await?;
        self.sent = now;
        for f in &families {
            self.conn
                .send(&Message::Update(Update::end_of_rib(*f)))
                .await?;
        }
        Ok(())
    }

    async fn send_changes(
        &mut self,
        before: &Exports,
        after: &Exports,
        families: &[Family],
    ) -> io::Result<()> {
        let ebgp = self.ctx.cfg.remote_as != self.ctx.local.local_as;
        let extended_next_hop = self.neg.as_ref().is_some_and(|n| n.extended_next_hop);
        let to = Audience {
            families,
            ebgp,
            extended_next_hop,
        };
        send_changes(&mut self.conn, before, after, &to, self.ctx).await
    }
}

/// What the peer's OPEN changes in the encoding (we announce both capabilities, so the
/// peer's announcement decides).
fn codec_of(open: &Open) -> Codec {
    Codec {
        four_octet_as: open.four_octet_as(),
        extended_next_hop: open.extended_next_hop(ExtendedNextHop::IPV4_OVER_IPV6),
    }
}

/// §6.2 checks of the peer's OPEN, and what the session negotiates from it.
fn check_open(open: &Open, ctx: &PeerCtx) -> Result<Negotiated, OpenError> {
    if open.asn != ctx.cfg.remote_as {
        return Err(OpenError::BadPeerAs);
    }
    if open.router_id == ctx.local.router_id {
        return Err(OpenError::BadBgpIdentifier);
    }
    let hold = ctx
        .local
        .timers
        .hold_time
        .negotiate(open.hold_time)
        .ok_or(OpenError::UnacceptableHoldTime)?;
    let theirs: HashSet<Family> = open.families().collect();
    // No multiprotocol capability at all: plain BGP-4, IPv4 unicast only.
    let families: Vec<Family> = [Family::IPV4_UNICAST, Family::IPV6_UNICAST]
        .into_iter()
        .filter(|f| theirs.contains(f) || (theirs.is_empty() && *f == Family::IPV4_UNICAST))
        .collect();
    if families.is_empty() {
        return Err(OpenError::UnsupportedCapability);
    }
    let graceful_restart = open.graceful_restart().cloned();
    let both_n = ctx.local.timers.graceful_restart > 0
        && graceful_restart.as_ref().is_some_and(|g| g.notification);
    Ok(Negotiated {
        families,
        hold,
        router_id: open.router_id,
        graceful_restart,
        both_n,
        extended_next_hop: open.extended_next_hop(ExtendedNextHop::IPV4_OVER_IPV6),
    })
}

/// Who our UPDATEs go to: what the session negotiated.
struct Audience<'a> {
    families: &'a [Family],
    ebgp: bool,
    extended_next_hop: bool,
}

impl Audience<'_> {
    /// Whether the route can be sent to this peer: its family was negotiated, and a
    /// next hop of the other family only as RFC 8950 allows (IPv4 via IPv6, negotiated).
    fn carries(&self, p: &IpNetwork, nh: &IpAddr) -> bool {
        self.families.contains(&family_of(p))
            && (p.is_ipv4() == nh.is_ipv4()
                || (p.is_ipv4() && nh.is_ipv6() && self.extended_next_hop))
    }
}

fn family_of(p: &IpNetwork) -> Family {
    match p {
        IpNetwork::V4(_) => Family::IPV4_UNICAST,
        IpNetwork::V6(_) => Family::IPV6_UNICAST,
    }
}

/// Sends what changed between `before` and `after`, of the routes this peer can
/// carry ([`Audience::carries`]): our own routes only (the exports), as originated by
/// this AS. An IPv4 route with an IPv6 next hop the peer cannot take is left out, with
/// a WARN when it is new.
async fn send_changes(
    conn: &mut Conn,
    before: &Exports,
    after: &Exports,
    to: &Audience<'_>,
    ctx: &PeerCtx,
) -> io::Result<()> {
    let sendable = |m: &Exports| -> Exports {
        m.iter()
            .filter(|(p, nh)| to.carries(p, nh))
            .map(|(p, nh)| (*p, *nh))
            .collect()
    };
    let refused: Vec<String> = after
        .iter()
        .filter(|(p, nh)| {
            p.is_ipv4() && nh.is_ipv6() && before.get(p) != Some(nh) && !to.carries(p, nh)
        })
        .map(|(p, nh)| format!("{p} via {nh}"))
        .collect();
    if !refused.is_empty() && to.families.contains(&Family::IPV4_UNICAST) {
        warn!(
            peer = %ctx.cfg.address,
            routes = %refused.join(", "),
            "BGP: not announcing IPv4 routes with an IPv6 next hop: the peer did not \
             negotiate the extended next hop capability (RFC 8950; BIRD: `extended next \
             hop on` in its ipv4 channel, FRR: `neighbor X capability extended-nexthop`), \
             or give this node an IPv4 underlay address"
        );
    }
    let (before, after) = (sendable(before), sendable(after));
    let mut withdrawn: BTreeMap<Family, Vec<IpNetwork>> = BTreeMap::new();
    for p in before.keys().filter(|p| !after.contains_key(p)) {
        withdrawn.entry(family_of(p)).or_default().push(*p);
    }
    let mut announced: BTreeMap<(Family, IpAddr), Vec<IpNetwork>> = BTreeMap::new();
    for (p, nh) in after.iter().filter(|(p, nh)| before.get(p) != Some(nh)) {
        announced.entry((family_of(p), *nh)).or_default().push(*p);
    }
    let mut updates = Vec::new();
    for (f, prefixes) in &withdrawn {
        updates.extend(Update::pack_withdraw(*f, prefixes, conn.codec));
    }
    for ((family, nh), prefixes) in &announced {
        let base = base_attributes(to.ebgp, ctx.local.local_as);
        let attrs = match nh {
            IpAddr::V4(v4) => PathAttributes {
                next_hop: Some(*v4),
                ..base
            },
            // IPv6 NLRI, or IPv4 NLRI with an IPv6 next hop (RFC 8950 §4: in
            // MP_REACH_NLRI of AFI 1, SAFI 1).
            IpAddr::V6(_) => PathAttributes {
                mp_reach: Some(MpReach {
                    family: *family,
                    next_hops: vec![*nh],
                    nlri: vec![],
                }),
                ..base
            },
        };
        updates.extend(Update::pack_announce(&attrs, prefixes, conn.codec));
    }
    let mut buf = Vec::new();
    for u in updates {
        buf.extend_from_slice(&Message::Update(u).encode(conn.codec));
        if buf.len() > 64 * 1024 {
            conn.send_raw(&buf).await?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        conn.send_raw(&buf).await?;
    }
    ctx.set_sent(after.len());
    Ok(())
}

fn base_attributes(ebgp: bool, local_as: u32) -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        // eBGP: prepend our AS; iBGP: our own routes have an empty path and a
        // LOCAL_PREF (§5.1.5: required towards internal peers).
        as_path: Some(if ebgp {
            vec![AsSegment {
                sequence: true,
                asns: vec![local_as],
            }]
        } else {
            vec![]
        }),
        local_pref: (!ebgp).then_some(100),
        ..PathAttributes::default()
    }
}

/// Our OPEN.
/// Our OPEN, as every session of the speaker sends it.
fn local_open(local: &Local) -> Open {
    our_open(
        local.local_as,
        local.router_id,
        local.timers.hold_time,
        local.timers.graceful_restart,
        local.forwarding_survives_restart,
    )
}

pub(crate) fn our_open(
    local_as: u32,
    router_id: Ipv4Addr,
    hold: HoldTime,
    gr: u16,
    forwarding_survives_restart: bool,
) -> Open {
    let mut capabilities = vec![
        Capability::Multiprotocol(Family::IPV4_UNICAST),
        Capability::Multiprotocol(Family::IPV6_UNICAST),
        // We install IPv4 routes with an IPv6 next hop (`via inet6`): tell the peer it
        // may send them (RFC 8950 §3).
        Capability::ExtendedNextHop(vec![ExtendedNextHop::IPV4_OVER_IPV6]),
        Capability::RouteRefresh,
        Capability::FourOctetAs(local_as),
    ];
    if gr > 0 {
        // We are a helper (we keep a restarting peer's routes). The families, with the
        // forwarding bit, only when our forwarding survives our restart: a helper then
        // keeps our routes through it. (The R bit stays clear: we never defer our
        // updates waiting for the peer's End-of-RIB, so there is no deadlock to avoid.)
        let families = if forwarding_survives_restart {
            vec![(Family::IPV4_UNICAST, true), (Family::IPV6_UNICAST, true)]
        } else {
            vec![]
        };
        capabilities.push(Capability::GracefulRestart(GracefulRestart {
            restarting: false,
            // RFC 8538: a NOTIFICATION other than Hard Reset (and a hold-timer expiry)
            // keeps graceful-restart treatment when the peer sets it too.
            notification: true,
            restart_time: gr.min(0x0fff),
            families,
        }));
    }
    Open {
        asn: local_as,
        hold_time: hold.secs(),
        router_id,
        capabilities,
    }
}
