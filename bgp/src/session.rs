//! One BGP connection from OpenSent to its end (RFC 4271 §8.2.2): OPEN exchange,
//! collision resolution (§6.8), then Established: hold and keepalive timers, the
//! initial table and later changes out, UPDATEs in.

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
use crate::fsm::State;
use crate::peer::{Control, PeerCtx};
use crate::wire::{
    AsSegment, Capability, Codec, DecodeError, Family, GracefulRestart, Header, Message, MpReach,
    Notification, Open, OpenError, Origin, PathAttributes, Update, HEADER_LEN,
};

/// The routes we announce: prefix -> next hop.
pub(crate) type Exports = BTreeMap<IpNetwork, IpAddr>;

/// How a session ended.
pub(crate) enum Outcome {
    /// Failed or closed; `established` tells whether it had reached Established.
    Closed { established: bool },
    /// Collision or peer restart: go on with this connection instead.
    Switch {
        stream: TcpStream,
        established: bool,
    },
    /// The peer was removed or the speaker stops.
    Shutdown,
}

type Incoming = Result<(Header, Vec<u8>), ReadError>;

enum ReadError {
    Io(io::Error),
    Decode(DecodeError),
}

/// What the peer told us in its OPEN that the session keeps using.
pub(crate) struct Negotiated {
    pub(crate) families: Vec<Family>,
    pub(crate) hold: HoldTime,
    pub(crate) router_id: Ipv4Addr,
    pub(crate) graceful_restart: Option<GracefulRestart>,
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
    async fn notify(&mut self, n: Notification, ctx: &PeerCtx) {
        warn!(peer = %ctx.cfg.address, "sending NOTIFICATION: {n}");
        ctx.set_error(format!("sent {n}"));
        let _ = self.send(&Message::Notification(n)).await;
        let _ = self.wr.shutdown().await;
    }
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

/// What one turn of a wait produced.
enum Event {
    Msg(Message),
    /// The session is over (the reason was recorded).
    End,
    Control(Control),
    HoldExpired,
    SendKeepalive,
    ExportsChanged,
    GrExpired,
}

/// Sleeps until `at`, or forever.
async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs one connection. `outgoing`: we initiated it (matters for collisions).
pub(crate) async fn run(
    stream: TcpStream,
    mut outgoing: bool,
    ctx: &mut PeerCtx,
    control: &mut mpsc::Receiver<Control>,
) -> Outcome {
    let local = ctx.local.clone();
    let write_timeout = local.timers.open_hold.max(Duration::from_secs(10));
    let mut conn = Conn::new(stream, write_timeout);
    let open = local.open(ctx.cfg.address);
    if let Err(e) = conn.send(&Message::Open(open)).await {
        ctx.set_error(format!("sending OPEN: {e}"));
        return Outcome::Closed { established: false };
    }
    ctx.set_state(State::OpenSent);

    // OpenSent: wait for the peer's OPEN. A connection the peer opens meanwhile gets
    // our OPEN too, and the peer's OPEN tells which of the two to keep (§6.8): waiting
    // on one only would deadlock two speakers that connect to each other at once.
    let mut alt: Option<Conn> = None;
    let hold_at = Instant::now() + local.timers.open_hold;
    let open = loop {
        let (event, on_alt) = tokio::select! {
            e = next_event(&mut conn, ctx, control, Some(hold_at), None, false) => (e, false),
            e = recv_alt(&mut alt) => (e, true),
        };
        if on_alt {
            // Anything but an OPEN: the peer gave that connection up (it is dropped).
            if let (Event::Msg(Message::Open(open)), Some(mut a)) = (event, alt.take()) {
                if alt_wins(outgoing, local.router_id, open.router_id) {
                    conn.notify(cease_collision(), ctx).await;
                    conn = a;
                    outgoing = false;
                    break open;
                }
                a.notify(cease_collision(), ctx).await;
            }
            continue;
        }
        match event {
            Event::Msg(Message::Open(open)) => match alt.take() {
                Some(a) if alt_wins(outgoing, local.router_id, open.router_id) => {
                    conn.notify(cease_collision(), ctx).await;
                    conn = a;
                    outgoing = false;
                }
                Some(mut a) => {
                    a.notify(cease_collision(), ctx).await;
                    break open;
                }
                None => break open,
            },
            Event::Msg(Message::Notification(n)) => {
                ctx.set_error(format!("received {n}"));
                return Outcome::Closed { established: false };
            }
            Event::Msg(_) => {
                conn.notify(Notification::new(Notification::FSM_ERROR, 1), ctx)
                    .await;
                return Outcome::Closed { established: false };
            }
            Event::HoldExpired => {
                conn.notify(Notification::new(Notification::HOLD_TIMER_EXPIRED, 0), ctx)
                    .await;
                return Outcome::Closed { established: false };
            }
            Event::Control(Control::Incoming(s)) => {
                let mut a = Conn::new(s, write_timeout);
                if a.send(&Message::Open(local.open(ctx.cfg.address)))
                    .await
                    .is_ok()
                {
                    if let Some(mut old) = alt.replace(a) {
                        old.notify(cease_collision(), ctx).await;
                    }
                }
            }
            Event::Control(Control::Shutdown) => return shutdown(conn, ctx).await,
            Event::End => return Outcome::Closed { established: false },
            Event::SendKeepalive | Event::ExportsChanged | Event::GrExpired => {}
        }
    };
    let neg = match check_open(&open, ctx) {
        Ok(n) => n,
        Err(e) => {
            conn.notify(DecodeError::Open(e).notification(), ctx).await;
            return Outcome::Closed { established: false };
        }
    };
    conn.codec.four_octet_as = open.four_octet_as();
    if let Err(e) = conn.send(&Message::Keepalive).await {
        ctx.set_error(format!("sending KEEPALIVE: {e}"));
        return Outcome::Closed { established: false };
    }
    ctx.set_state(State::OpenConfirm);

    // OpenConfirm: wait for the peer's KEEPALIVE.
    let hold = neg.hold.timeout();
    let keepalive = neg.hold.keepalive_interval();
    // With no hold time, still do not wait for the KEEPALIVE forever.
    let hold_at = Some(Instant::now() + hold.unwrap_or(local.timers.open_hold));
    let mut ka_at = keepalive.map(|k| Instant::now() + k);
    loop {
        match next_event(&mut conn, ctx, control, hold_at, ka_at, false).await {
            Event::Msg(Message::Keepalive) => break,
            Event::Msg(Message::Notification(n)) => {
                ctx.set_error(format!("received {n}"));
                return Outcome::Closed { established: false };
            }
            Event::Msg(_) => {
                conn.notify(Notification::new(Notification::FSM_ERROR, 2), ctx)
                    .await;
                return Outcome::Closed { established: false };
            }
            Event::HoldExpired => {
                conn.notify(Notification::new(Notification::HOLD_TIMER_EXPIRED, 0), ctx)
                    .await;
                return Outcome::Closed { established: false };
            }
            Event::SendKeepalive => {
                ka_at = keepalive.map(|k| Instant::now() + k);
                if conn.send(&Message::Keepalive).await.is_err() {
                    return Outcome::Closed { established: false };
                }
            }
            Event::Control(Control::Incoming(s)) => {
                if let Some(outcome) = collision(&mut conn, s, outgoing, &neg, ctx).await {
                    return outcome;
                }
            }
            Event::Control(Control::Shutdown) => return shutdown(conn, ctx).await,
            Event::End => return Outcome::Closed { established: false },
            Event::ExportsChanged | Event::GrExpired => {}
        }
    }

    info!(peer = %ctx.cfg.address, hold = neg.hold.secs(), "session established");
    ctx.on_established(&neg);
    established(conn, ctx, control, neg).await
}

async fn established(
    mut conn: Conn,
    ctx: &mut PeerCtx,
    control: &mut mpsc::Receiver<Control>,
    neg: Negotiated,
) -> Outcome {
    const EST: Outcome = Outcome::Closed { established: true };
    let ebgp = ctx.cfg.remote_as != ctx.local.local_as;
    let mut sent: Arc<Exports> = Arc::new(Exports::new());
    let now: Arc<Exports> = ctx.exports.borrow_and_update().clone();
    if send_changes(&mut conn, &sent, &now, &neg.families, ebgp, ctx)
        .await
        .is_err()
    {
        return EST;
    }
    sent = now;
    for f in &neg.families {
        if conn
            .send(&Message::Update(Update::end_of_rib(*f)))
            .await
            .is_err()
        {
            return EST;
        }
    }
    let hold = neg.hold.timeout();
    let keepalive = neg.hold.keepalive_interval();
    let mut hold_at = hold.map(|h| Instant::now() + h);
    let mut ka_at = keepalive.map(|k| Instant::now() + k);
    loop {
        match next_event(&mut conn, ctx, control, hold_at, ka_at, true).await {
            Event::Msg(msg) => {
                hold_at = hold.map(|h| Instant::now() + h);
                match msg {
                    Message::Keepalive => {}
                    Message::Update(u) => ctx.on_update(u),
                    Message::RouteRefresh(f) if neg.families.contains(&f) => {
                        debug!(peer = %ctx.cfg.address, ?f, "route refresh");
                        let empty = Exports::new();
                        if send_changes(&mut conn, &empty, &sent, &[f], ebgp, ctx)
                            .await
                            .is_err()
                        {
                            return EST;
                        }
                    }
                    Message::RouteRefresh(_) => {}
                    Message::Notification(n) => {
                        ctx.set_error(format!("received {n}"));
                        return EST;
                    }
                    Message::Open(_) => {
                        conn.notify(Notification::new(Notification::FSM_ERROR, 3), ctx)
                            .await;
                        return EST;
                    }
                }
            }
            Event::HoldExpired => {
                conn.notify(Notification::new(Notification::HOLD_TIMER_EXPIRED, 0), ctx)
                    .await;
                return EST;
            }
            Event::SendKeepalive => {
                ka_at = keepalive.map(|k| Instant::now() + k);
                if let Err(e) = conn.send(&Message::Keepalive).await {
                    ctx.set_error(format!("sending KEEPALIVE: {e}"));
                    return EST;
                }
            }
            Event::ExportsChanged => {
                let now = ctx.exports.borrow_and_update().clone();
                if let Err(e) = send_changes(&mut conn, &sent, &now, &neg.families, ebgp, ctx).await
                {
                    ctx.set_error(format!("sending UPDATE: {e}"));
                    return EST;
                }
                sent = now;
            }
            Event::GrExpired => ctx.sweep_stale(None),
            Event::Control(Control::Shutdown) => return shutdown(conn, ctx).await,
            Event::Control(Control::Incoming(s)) => {
                // RFC 4724 §4.2: a new connection from a peer that can restart
                // gracefully means it did; otherwise the established one wins (§6.8).
                if neg.graceful_restart.is_some() {
                    info!(peer = %ctx.cfg.address, "peer reconnected: treating as restart");
                    conn.notify(
                        Notification::new(Notification::CEASE, Notification::CEASE_COLLISION),
                        ctx,
                    )
                    .await;
                    return Outcome::Switch {
                        stream: s,
                        established: true,
                    };
                }
                reject(s, ctx).await;
            }
            Event::End => return EST,
        }
    }
}

/// Waits for the next thing to act on.
async fn next_event(
    conn: &mut Conn,
    ctx: &mut PeerCtx,
    control: &mut mpsc::Receiver<Control>,
    hold_at: Option<Instant>,
    ka_at: Option<Instant>,
    established: bool,
) -> Event {
    let gr_at = ctx.gr_deadline;
    tokio::select! {
        m = conn.msgs.recv() => match m {
            Some(Ok((header, body))) => match Message::decode_body(header, &body, conn.codec) {
                Ok(msg) => Event::Msg(msg),
                Err(e) => {
                    conn.notify(e.notification(), ctx).await;
                    Event::End
                }
            },
            Some(Err(ReadError::Decode(e))) => {
                conn.notify(e.notification(), ctx).await;
                Event::End
            }
            Some(Err(ReadError::Io(e))) => {
                ctx.set_error(format!("connection: {e}"));
                Event::End
            }
            None => Event::End,
        },
        c = control.recv() => Event::Control(c.unwrap_or(Control::Shutdown)),
        _ = sleep_opt(hold_at) => Event::HoldExpired,
        _ = sleep_opt(ka_at) => Event::SendKeepalive,
        r = ctx.exports.changed(), if established => match r {
            Ok(()) => Event::ExportsChanged,
            // The speaker is gone.
            Err(_) => Event::Control(Control::Shutdown),
        },
        _ = sleep_opt(gr_at) => Event::GrExpired,
    }
}

async fn shutdown(mut conn: Conn, ctx: &PeerCtx) -> Outcome {
    conn.notify(
        Notification::new(Notification::CEASE, Notification::CEASE_PEER_DECONFIGURED),
        ctx,
    )
    .await;
    Outcome::Shutdown
}

fn cease_collision() -> Notification {
    Notification::new(Notification::CEASE, Notification::CEASE_COLLISION)
}

/// Whether the connection the peer opened wins over the current one: the connection
/// initiated by the higher BGP identifier stays; of two from the peer, the newer.
fn alt_wins(current_outgoing: bool, local: Ipv4Addr, remote: Ipv4Addr) -> bool {
    !(current_outgoing && local > remote)
}

/// The next message on the second connection of a collision (never, without one).
async fn recv_alt(alt: &mut Option<Conn>) -> Event {
    let Some(a) = alt else {
        return std::future::pending().await;
    };
    match a.msgs.recv().await {
        Some(Ok((header, body))) => match Message::decode_body(header, &body, a.codec) {
            Ok(m) => Event::Msg(m),
            Err(_) => Event::End,
        },
        _ => Event::End,
    }
}

/// Closes a connection we do not want with Cease / Connection Collision Resolution.
async fn reject(mut s: TcpStream, ctx: &PeerCtx) {
    debug!(peer = %ctx.cfg.address, "rejecting a second connection");
    let n = Notification::new(Notification::CEASE, Notification::CEASE_COLLISION);
    let _ = s
        .write_all(&Message::Notification(n).encode(Codec::default()))
        .await;
    let _ = s.shutdown().await;
}

/// §6.8: of two connections, keep the one initiated by the speaker with the higher BGP
/// identifier. The new one always comes from the peer; two from the peer means it
/// restarted, so the newer wins. Returns the outcome when the current one loses.
async fn collision(
    conn: &mut Conn,
    new: TcpStream,
    outgoing: bool,
    neg: &Negotiated,
    ctx: &PeerCtx,
) -> Option<Outcome> {
    if !alt_wins(outgoing, ctx.local.router_id, neg.router_id) {
        reject(new, ctx).await;
        return None;
    }
    info!(peer = %ctx.cfg.address, "connection collision: switching to the peer's connection");
    conn.notify(cease_collision(), ctx).await;
    Some(Outcome::Switch {
        stream: new,
        established: false,
    })
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
    Ok(Negotiated {
        families,
        hold,
        router_id: open.router_id,
        graceful_restart: open.graceful_restart().cloned(),
    })
}

/// Sends what changed between `before` and `after`, for the given families: our own
/// routes only (the exports), as originated by this AS.
async fn send_changes(
    conn: &mut Conn,
    before: &Exports,
    after: &Exports,
    families: &[Family],
    ebgp: bool,
    ctx: &PeerCtx,
) -> io::Result<()> {
    let family_of = |p: &IpNetwork| match p {
        IpNetwork::V4(_) => Family::IPV4_UNICAST,
        IpNetwork::V6(_) => Family::IPV6_UNICAST,
    };
    let mut withdrawn: BTreeMap<Family, Vec<IpNetwork>> = BTreeMap::new();
    for p in before.keys().filter(|p| !after.contains_key(p)) {
        withdrawn.entry(family_of(p)).or_default().push(*p);
    }
    let mut announced: BTreeMap<IpAddr, Vec<IpNetwork>> = BTreeMap::new();
    for (p, nh) in after.iter().filter(|(p, nh)| before.get(p) != Some(nh)) {
        announced.entry(*nh).or_default().push(*p);
    }
    let mut updates = Vec::new();
    for (f, prefixes) in withdrawn.iter().filter(|(f, _)| families.contains(f)) {
        updates.extend(Update::pack_withdraw(*f, prefixes, conn.codec));
    }
    for (nh, prefixes) in &announced {
        let attrs = match nh {
            IpAddr::V4(v4) if families.contains(&Family::IPV4_UNICAST) => PathAttributes {
                next_hop: Some(*v4),
                ..base_attributes(ebgp, ctx.local.local_as)
            },
            IpAddr::V6(_) if families.contains(&Family::IPV6_UNICAST) => PathAttributes {
                mp_reach: Some(MpReach {
                    family: Family::IPV6_UNICAST,
                    next_hops: vec![*nh],
                    nlri: vec![],
                }),
                ..base_attributes(ebgp, ctx.local.local_as)
            },
            _ => continue,
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
    let count = after
        .keys()
        .filter(|p| families.contains(&family_of(p)))
        .count();
    ctx.set_sent(count);
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
