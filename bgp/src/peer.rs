//! One configured peer: what it keeps between sessions (the routes learned from it, its
//! status, what its OPEN negotiated) and its connection attempts (Idle, Connect,
//! Active). `task.rs` runs them and the sessions of `session.rs` in turn.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use ipnetwork::IpNetwork;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::{HoldTime, ImportFilter, PeerConfig, Timers};
use crate::fsm::{self, Action, Cause, Input, State};
use crate::types::{PeerStatus, RouteEvent, RouteEventKind};
use crate::wire::{Family, GracefulRestart, Notification, Update};

/// What every session of the speaker shares.
#[derive(Debug)]
pub(crate) struct Local {
    pub(crate) local_as: u32,
    pub(crate) router_id: Ipv4Addr,
    pub(crate) timers: Timers,
    /// Source addresses of our connections, the first of the peer's family is used
    /// (`SpeakerConfig::sources`, then the listen address when specific).
    pub(crate) sources: Vec<IpAddr>,
    pub(crate) forwarding_survives_restart: bool,
}

/// The routes we announce: prefix -> next hop.
pub(crate) type Exports = BTreeMap<IpNetwork, IpAddr>;

/// What the peer told us in its OPEN that the session keeps using.
pub(crate) struct Negotiated {
    pub(crate) families: Vec<Family>,
    pub(crate) hold: HoldTime,
    pub(crate) router_id: Ipv4Addr,
    pub(crate) graceful_restart: Option<GracefulRestart>,
    /// Both sides announced the N bit (RFC 8538).
    pub(crate) both_n: bool,
    /// The peer accepts IPv4 unicast NLRI with an IPv6 next hop (RFC 8950; we always
    /// announce that we do): our IPv4 blocks with an IPv6 next hop may go to it.
    pub(crate) extended_next_hop: bool,
}

/// Messages from the speaker to a peer task.
pub(crate) enum Control {
    /// The listener accepted a connection from this peer.
    Incoming(TcpStream),
    /// The peer was removed or the speaker stops: close with this Cease subcode and
    /// forget its routes.
    Shutdown(u8),
}

#[derive(Debug)]
struct StatusInner {
    state: State,
    established_at: Option<Instant>,
    sent: usize,
    received: usize,
    flaps: u32,
    last_error: Option<String>,
    last_error_at: Option<SystemTime>,
    /// `last_error` is a NOTIFICATION of the current attempt: a later connection error
    /// (the peer closing after it, a refused reconnect) does not hide it.
    notified: bool,
    hold_time: Option<u16>,
}

/// The status of a peer, written by its task, read by [`crate::Speaker::peers`].
#[derive(Debug)]
pub(crate) struct StatusCell {
    address: IpAddr,
    remote_as: u32,
    inner: Mutex<StatusInner>,
}

impl StatusCell {
    pub(crate) fn new(cfg: &PeerConfig) -> Self {
        StatusCell {
            address: cfg.address,
            remote_as: cfg.remote_as,
            inner: Mutex::new(StatusInner {
                state: State::Idle,
                established_at: None,
                sent: 0,
                received: 0,
                flaps: 0,
                last_error: None,
                last_error_at: None,
                notified: false,
                hold_time: None,
            }),
        }
    }
    fn lock(&self) -> MutexGuard<'_, StatusInner> {
        // A panic elsewhere while holding it leaves plain counters: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn snapshot(&self) -> PeerStatus {
        let s = self.lock();
        PeerStatus {
            address: self.address,
            remote_as: self.remote_as,
            state: s.state,
            uptime: s.established_at.map(|t| t.elapsed()),
            prefixes_sent: s.sent,
            prefixes_received: s.received,
            flaps: s.flaps,
            last_error: s.last_error.clone(),
            last_error_at: s.last_error_at,
            hold_time: s.hold_time,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Learned {
    next_hop: IpAddr,
    /// Kept from a session that ended, during the peer's graceful restart.
    stale: bool,
}

pub(crate) struct PeerCtx {
    pub(crate) cfg: PeerConfig,
    pub(crate) local: Arc<Local>,
    pub(crate) exports: watch::Receiver<Arc<Exports>>,
    pub(crate) gr_deadline: Option<Instant>,
    status: Arc<StatusCell>,
    events: mpsc::UnboundedSender<RouteEvent>,
    import: ImportFilter,
    rib_in: HashMap<IpNetwork, Learned>,
    /// Entries of `rib_in` that are not stale (kept so each UPDATE costs O(its size)).
    fresh: usize,
    /// The graceful restart capability of the last established session.
    peer_gr: Option<GracefulRestart>,
    /// Routes of this peer may be in the daemon's table: a PeerDown is owed.
    up: bool,
    /// Families of the session whose End-of-RIB has not come yet.
    eor_pending: Vec<Family>,
}

fn family_of(p: &IpNetwork) -> Family {
    match p {
        IpNetwork::V4(_) => Family::IPV4_UNICAST,
        IpNetwork::V6(_) => Family::IPV6_UNICAST,
    }
}

impl PeerCtx {
    pub(crate) fn new(
        cfg: PeerConfig,
        local: Arc<Local>,
        exports: watch::Receiver<Arc<Exports>>,
        status: Arc<StatusCell>,
        events: mpsc::UnboundedSender<RouteEvent>,
        import: ImportFilter,
    ) -> Self {
        PeerCtx {
            cfg,
            local,
            exports,
            gr_deadline: None,
            status,
            events,
            import,
            rib_in: HashMap::new(),
            fresh: 0,
            peer_gr: None,
            up: false,
            eor_pending: Vec::new(),
        }
    }

    pub(crate) fn set_state(&self, state: State) {
        let mut s = self.status.lock();
        if s.state != state {
            debug!(peer = %self.cfg.address, from = %s.state, to = %state, "state");
            s.state = state;
        }
    }
    pub(crate) fn set_error(&self, error: String) {
        debug!(peer = %self.cfg.address, %error, "session error");
        let mut s = self.status.lock();
        if !s.notified {
            s.last_error = Some(error);
            s.last_error_at = Some(SystemTime::now());
        }
    }
    /// A NOTIFICATION sent (`sent`) or received: kept as the last error until the next
    /// session is established.
    pub(crate) fn note_notification(&self, sent: bool, n: &Notification) {
        let what = if sent { "sent" } else { "received" };
        let error = format!("{what} {n}");
        if sent {
            warn!(peer = %self.cfg.address, "sending NOTIFICATION: {n}");
        } else {
            warn!(peer = %self.cfg.address, "received NOTIFICATION: {n}");
        }
        let mut s = self.status.lock();
        s.last_error = Some(error);
        s.last_error_at = Some(SystemTime::now());
        s.notified = true;
    }
    pub(crate) fn set_sent(&self, n: usize) {
        self.status.lock().sent = n;
    }
    fn emit(&self, kind: RouteEventKind) {
        // The receiver may be gone when the daemon stops: nothing to tell then.
        let _ = self.events.send(RouteEvent {
            peer: self.cfg.address,
            kind,
        });
    }
    fn update_received(&self) {
        self.status.lock().received = self.fresh;
    }
    fn remove(&mut self, p: &IpNetwork) -> bool {
        match self.rib_in.remove(p) {
            Some(l) => {
                if !l.stale {
                    self.fresh -= 1;
                }
                true
            }
            None => false,
        }
    }

    pub(crate) fn on_established(&mut self, neg: &Negotiated) {
        {
            let mut s = self.status.lock();
            s.state = State::Established;
            s.established_at = Some(Instant::now());
            s.notified = false;
            s.hold_time = Some(neg.hold.secs());
        }
        self.up = true;
        self.eor_pending = neg.families.clone();
        self.peer_gr = neg.graceful_restart.clone();
        // RFC 4724 §4.2: stale routes of a family the restarted peer did not keep
        // forwarding for go now; the others when its End-of-RIB comes.
        let kept: Vec<Family> = neg
            .graceful_restart
            .iter()
            .flat_map(|gr| gr.families.iter())
            .filter(|(_, forwarding)| *forwarding)
            .map(|(f, _)| *f)
            .collect();
        for f in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
            if !kept.contains(&f) {
                self.sweep_stale(Some(f));
            }
        }
    }

    /// Withdraws the stale routes (of one family, or all).
    pub(crate) fn sweep_stale(&mut self, family: Option<Family>) {
        let gone: Vec<IpNetwork> = self
            .rib_in
            .iter()
            .filter(|(p, l)| l.stale && family.is_none_or(|f| f == family_of(p)))
            .map(|(p, _)| *p)
            .collect();
        for p in gone {
            self.remove(&p);
            self.emit(RouteEventKind::Withdrawn { prefix: p });
        }
        if !self.rib_in.values().any(|l| l.stale) {
            self.gr_deadline = None;
        }
    }

    pub(crate) fn on_update(&mut self, u: Update) {
        if let Some(f) = u.end_of_rib_family() {
            debug!(peer = %self.cfg.address, ?f, "end of RIB");
            self.sweep_stale(Some(f));
            let waiting = !self.eor_pending.is_empty();
            self.eor_pending.retain(|p| *p != f);
            if waiting && self.eor_pending.is_empty() {
                self.emit(RouteEventKind::EndOfRib);
            }
            return;
        }
        let a = u.attributes;
        let mut withdrawn: Vec<IpNetwork> = u.withdrawn.into_iter().map(IpNetwork::V4).collect();
        if let Some(mp) = a.mp_unreach {
            withdrawn.extend(mp.withdrawn);
        }
        let mut reach: Vec<(IpNetwork, IpAddr)> = Vec::new();
        if let Some(nh) = a.next_hop {
            reach.extend(
                u.nlri
                    .into_iter()
                    .map(|p| (IpNetwork::V4(p), IpAddr::V4(nh))),
            );
        }
        if let Some(mp) = a.mp_reach {
            if let Some(nh) = mp.next_hop() {
                reach.extend(mp.nlri.into_iter().map(|p| (p, nh)));
            }
        }
        // eBGP loop prevention (§9.1.2): a path through our own AS is unusable.
        let looped = self.cfg.remote_as != self.local.local_as
            && a.as_path
                .iter()
                .flatten()
                .any(|seg| seg.asns.contains(&self.local.local_as));
        for p in withdrawn {
            if self.remove(&p) {
                self.emit(RouteEventKind::Withdrawn { prefix: p });
            }
        }
        for (prefix, next_hop) in reach {
            if looped || !self.import.accepts(self.cfg.address, &prefix, next_hop) {
                // Treated as never received, so an earlier accepted path goes.
                if self.remove(&prefix) {
                    self.emit(RouteEventKind::Withdrawn { prefix });
                }
                continue;
            }
            let fresh = Learned {
                next_hop,
                stale: false,
            };
            let old = self.rib_in.insert(prefix, fresh);
            if old.is_none_or(|o| o.stale) {
                self.fresh += 1;
            }
            if old.is_none_or(|o| o.next_hop != next_hop) {
                self.emit(RouteEventKind::Learned { prefix, next_hop });
            }
        }
        self.update_received();
    }

    /// The peer's restart window passed while its session was down: its routes go.
    pub(crate) fn restart_window_passed(&mut self) {
        info!(peer = %self.cfg.address, "BGP: the peer's graceful restart window passed: its routes go");
        self.peer_down();
    }

    /// After a session: keep the routes as stale during the peer's graceful restart
    /// (RFC 4724 §4.2, RFC 8538) for the families it preserves, drop everything else.
    /// `established`: how it ended, if it had reached Established.
    pub(crate) fn on_session_down(&mut self, established: Option<Cause>) {
        {
            let mut s = self.status.lock();
            s.established_at = None;
            s.sent = 0;
            s.hold_time = None;
            if established.is_some() {
                s.flaps += 1;
            }
        }
        let Some(cause) = established else {
            return;
        };
        let reason = match &cause {
            Cause::ConnectionLost => {
                let e = self.status.lock().last_error.clone();
                format!("connection lost ({})", e.unwrap_or_default())
            }
            Cause::Sent(n) => format!("sent {n}"),
            Cause::Received(n) => format!("received {n}"),
            Cause::PeerRestarted => {
                "the peer restarted (new connection with graceful restart)".into()
            }
        };
        let ours_n = self.local.timers.graceful_restart > 0;
        let gr = self.peer_gr.take();
        let keep = fsm::keeps_routes(&cause, gr.as_ref(), ours_n);
        info!(peer = %self.cfg.address, %reason, keeping_routes = keep, "BGP session down");
        match gr {
            Some(gr) if keep => {
                let kept: Vec<Family> = gr.families.iter().map(|(f, _)| *f).collect();
                for l in self.rib_in.values_mut() {
                    l.stale = true;
                }
                self.fresh = 0;
                for f in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
                    if !kept.contains(&f) {
                        self.sweep_stale(Some(f));
                    }
                }
                let window = Duration::from_secs(u64::from(gr.restart_time));
                info!(peer = %self.cfg.address, ?window, "BGP: keeping the peer's routes for its restart time");
                self.gr_deadline = Some(Instant::now() + window);
            }
            _ => self.peer_down(),
        }
        self.update_received();
    }

    pub(crate) fn peer_down(&mut self) {
        self.rib_in.clear();
        self.fresh = 0;
        self.gr_deadline = None;
        self.update_received();
        if std::mem::replace(&mut self.up, false) {
            info!(peer = %self.cfg.address, "peer down");
            self.emit(RouteEventKind::PeerDown);
        }
    }

    /// A connection attempt to the peer that borrows nothing (it races other waits).
    fn connect(&self) -> impl std::future::Future<Output = io::Result<TcpStream>> + 'static {
        let addr = SocketAddr::new(self.cfg.address, self.cfg.port);
        let password = self.cfg.password.clone();
        let source = self
            .local
            .sources
            .iter()
            .copied()
            .find(|s| s.is_ipv4() == addr.is_ipv4());
        let limit = self.local.timers.connect_retry;
        async move {
            let socket = match addr {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            if let Some(key) = &password {
                crate::md5::set_key(&socket, addr.ip(), key)?;
            }
            if let Some(src) = source {
                socket.bind(SocketAddr::new(src, 0))?;
            }
            let stream = tokio::time::timeout(limit, socket.connect(addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.set_nodelay(true)?;
            Ok(stream)
        }
    }
}

/// What ended a wait for a connection.
enum Wake {
    Stream(TcpStream, bool),
    Shutdown,
    Retry,
}

/// The restart timer in Idle, Connect and Active: the table says what it does.
fn restart_timer_fired(ctx: &mut PeerCtx, state: State) {
    ctx.gr_deadline = None;
    for a in fsm::step(state, &Input::RestartTimerExpired).actions {
        if a == Action::PeerDown {
            ctx.restart_window_passed();
        }
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits up to `delay` (forever: `None`) for a connection from the peer or an order;
/// `attempt`, when given, is a connection attempt of ours raced against them. The
/// restart window is enforced meanwhile.
async fn wait(
    ctx: &mut PeerCtx,
    control: &mut mpsc::Receiver<Control>,
    state: State,
    delay: Option<Duration>,
    connect: bool,
) -> Wake {
    let until = delay.map(|d| Instant::now() + d);
    let connecting = connect.then(|| ctx.connect());
    let attempt = async move {
        if let Some(c) = connecting {
            Some(c.await)
        } else {
            sleep_opt(until).await;
            None
        }
    };
    tokio::pin!(attempt);
    loop {
        let gr_at = ctx.gr_deadline;
        tokio::select! {
            c = control.recv() => return match c {
                Some(Control::Incoming(s)) => Wake::Stream(s, false),
                Some(Control::Shutdown(_)) | None => Wake::Shutdown,
            },
            r = &mut attempt => return match r {
                Some(Ok(s)) => Wake::Stream(s, true),
                Some(Err(e)) => {
                    ctx.set_error(format!("connect: {e}"));
                    Wake::Retry
                }
                None => Wake::Retry,
            },
            _ = sleep_opt(gr_at) => restart_timer_fired(ctx, state),
        }
    }
}

/// Idle -> Connect <-> Active until a connection exists (RFC 4271 §8.2.2).
pub(crate) async fn connection(
    ctx: &mut PeerCtx,
    control: &mut mpsc::Receiver<Control>,
    backoff: Duration,
    md5: &mut Md5Watch,
) -> Option<(TcpStream, bool)> {
    ctx.set_state(State::Idle);
    if !backoff.is_zero() {
        match wait(ctx, control, State::Idle, Some(backoff), false).await {
            Wake::Stream(s, out) => return Some((s, out)),
            Wake::Shutdown => return None,
            Wake::Retry => {}
        }
    }
    loop {
        if !ctx.cfg.passive {
            ctx.set_state(State::Connect);
            match wait(ctx, control, State::Connect, None, true).await {
                Wake::Stream(s, out) => return Some((s, out)),
                Wake::Shutdown => return None,
                Wake::Retry => md5.check(ctx),
            }
        }
        ctx.set_state(State::Active);
        let retry = if ctx.cfg.passive {
            // Passive: only the MD5 check wakes us.
            ctx.cfg.password.as_ref().map(|_| Duration::from_secs(30))
        } else {
            Some(ctx.local.timers.connect_retry)
        };
        match wait(ctx, control, State::Active, retry, false).await {
            Wake::Stream(s, out) => return Some((s, out)),
            Wake::Shutdown => return None,
            Wake::Retry => md5.check(ctx),
        }
    }
}

/// A peer with a TCP MD5 key that does not come up: when the namespace's MD5 failure
/// counters (`TcpExtTCPMD5Failure`: wrong signature, `TcpExtTCPMD5NotFound`: none) count
/// up meanwhile, the operator is told (they are per namespace, not per peer).
#[derive(Default)]
pub(crate) struct Md5Watch {
    last: Option<(u64, u64)>,
    told: Option<Instant>,
}

impl Md5Watch {
    fn check(&mut self, ctx: &PeerCtx) {
        if ctx.cfg.password.is_none() {
            return;
        }
        let Some(now) = crate::md5::failure_counters() else {
            return;
        };
        let Some(before) = self.last.replace(now) else {
            return;
        };
        let recently = self
            .told
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60));
        if (now.0 > before.0 || now.1 > before.1) && !recently {
            self.told = Some(Instant::now());
            warn!(
                peer = %ctx.cfg.address,
                TcpExtTCPMD5Failure = now.0,
                TcpExtTCPMD5NotFound = now.1,
                "BGP session with an MD5 key does not come up and this namespace's TCP MD5 \
                 failures are counting up: check that the peer uses the same key"
            );
            ctx.set_error(format!(
                "TCP MD5 failures counting up (TcpExtTCPMD5Failure {}, TcpExtTCPMD5NotFound {}): check the key",
                now.0, now.1
            ));
        }
    }
}
