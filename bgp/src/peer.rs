//! One configured peer: the task that drives its state machine through connection
//! attempts and sessions, and what it keeps between sessions (the routes learned from
//! it, its status).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnetwork::IpNetwork;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, Instant};
use tracing::{debug, info};

use crate::config::{ImportFilter, PeerConfig, Timers};
use crate::fsm::{Backoff, State};
use crate::session::{self, our_open, Exports, Negotiated, Outcome};
use crate::types::{PeerStatus, RouteEvent, RouteEventKind};
use crate::wire::{Family, GracefulRestart, Open, Update};

/// What every session of the speaker shares.
#[derive(Debug)]
pub(crate) struct Local {
    pub(crate) local_as: u32,
    pub(crate) router_id: Ipv4Addr,
    pub(crate) timers: Timers,
    /// Source address of our connections (the listen address, when specific).
    pub(crate) source: Option<IpAddr>,
    pub(crate) forwarding_survives_restart: bool,
}

impl Local {
    pub(crate) fn open(&self, _peer: IpAddr) -> Open {
        our_open(
            self.local_as,
            self.router_id,
            self.timers.hold_time,
            self.timers.graceful_restart,
            self.forwarding_survives_restart,
        )
    }
}

/// Messages from the speaker to a peer task.
pub(crate) enum Control {
    /// The listener accepted a connection from this peer.
    Incoming(TcpStream),
    /// The peer was removed: close with Cease and forget its routes.
    Shutdown,
}

#[derive(Debug)]
struct StatusInner {
    state: State,
    established_at: Option<Instant>,
    sent: usize,
    received: usize,
    flaps: u32,
    last_error: Option<String>,
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
        self.status.lock().last_error = Some(error);
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
            if let Some(nh) = mp.next_hops.first() {
                reach.extend(mp.nlri.into_iter().map(|p| (p, *nh)));
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

    /// After a session: keep the routes as stale during the peer's graceful restart
    /// (RFC 4724 §4.2) for the families it preserves, drop everything else.
    fn on_session_down(&mut self, established: bool) {
        {
            let mut s = self.status.lock();
            s.established_at = None;
            s.sent = 0;
            if established {
                s.flaps += 1;
            }
        }
        if !established {
            return;
        }
        let gr = self.peer_gr.take().filter(|gr| gr.restart_time > 0);
        match gr {
            Some(gr) if !gr.families.is_empty() => {
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
                info!(peer = %self.cfg.address, ?window, "peer down: keeping its routes for its restart");
                self.gr_deadline = Some(Instant::now() + window);
            }
            _ => self.peer_down(),
        }
        self.update_received();
    }

    fn peer_down(&mut self) {
        self.rib_in.clear();
        self.fresh = 0;
        self.gr_deadline = None;
        self.update_received();
        if std::mem::replace(&mut self.up, false) {
            info!(peer = %self.cfg.address, "peer down");
            self.emit(RouteEventKind::PeerDown);
        }
    }

    async fn connect(&self) -> io::Result<TcpStream> {
        let addr = SocketAddr::new(self.cfg.address, self.cfg.port);
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(key) = &self.cfg.password {
            crate::md5::set_key(&socket, self.cfg.address, key)?;
        }
        if let Some(src) = self.local.source.filter(|s| s.is_ipv4() == addr.is_ipv4()) {
            socket.bind(SocketAddr::new(src, 0))?;
        }
        let stream = tokio::time::timeout(self.local.timers.connect_retry, socket.connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// What ended a wait for a connection.
enum Wake {
    Stream(TcpStream, bool),
    Shutdown,
    Retry,
}

/// Waits up to `delay` for something other than time to pass.
async fn wait(
    ctx: &mut PeerCtx,
    control: &mut mpsc::Receiver<Control>,
    delay: Option<Duration>,
) -> Wake {
    loop {
        let gr_at = ctx.gr_deadline;
        let timer = async {
            match delay {
                Some(d) => sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            c = control.recv() => return match c {
                Some(Control::Incoming(s)) => Wake::Stream(s, false),
                Some(Control::Shutdown) | None => Wake::Shutdown,
            },
            _ = timer => return Wake::Retry,
            _ = async {
                match gr_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                info!(peer = %ctx.cfg.address, "graceful restart window passed");
                ctx.peer_down();
            }
        }
    }
}

/// Idle -> Connect <-> Active until a connection exists (RFC 4271 §8.2.2).
async fn connection(
    ctx: &mut PeerCtx,
    control: &mut mpsc::Receiver<Control>,
    backoff: Duration,
) -> Option<(TcpStream, bool)> {
    ctx.set_state(State::Idle);
    if !backoff.is_zero() {
        match wait(ctx, control, Some(backoff)).await {
            Wake::Stream(s, out) => return Some((s, out)),
            Wake::Shutdown => return None,
            Wake::Retry => {}
        }
    }
    loop {
        if !ctx.cfg.passive {
            ctx.set_state(State::Connect);
            let attempt = tokio::select! {
                r = ctx.connect() => Ok(r),
                c = control.recv() => Err(c),
            };
            match attempt {
                Ok(Ok(s)) => return Some((s, true)),
                Ok(Err(e)) => ctx.set_error(format!("connect: {e}")),
                Err(Some(Control::Incoming(s))) => return Some((s, false)),
                Err(Some(Control::Shutdown) | None) => return None,
            }
        }
        ctx.set_state(State::Active);
        let retry = (!ctx.cfg.passive).then_some(ctx.local.timers.connect_retry);
        match wait(ctx, control, retry).await {
            Wake::Stream(s, out) => return Some((s, out)),
            Wake::Shutdown => return None,
            Wake::Retry => {}
        }
    }
}

/// The task of one peer, until it is removed.
pub(crate) async fn run(mut ctx: PeerCtx, mut control: mpsc::Receiver<Control>) {
    let t = ctx.local.timers;
    let mut backoff = Backoff::new(t.connect_retry, t.max_backoff);
    let mut next: Option<(TcpStream, bool)> = None;
    loop {
        let (stream, outgoing) = match next.take() {
            Some(c) => c,
            None => {
                let delay = backoff.next_delay();
                match connection(&mut ctx, &mut control, delay).await {
                    Some(c) => c,
                    None => break,
                }
            }
        };
        if let Ok(peer) = stream.peer_addr() {
            debug!(peer = %ctx.cfg.address, %peer, outgoing, "connected");
        }
        match session::run(stream, outgoing, &mut ctx, &mut control).await {
            Outcome::Closed { established } => {
                ctx.on_session_down(established);
                if established {
                    backoff.reset();
                }
            }
            Outcome::Switch {
                stream,
                established,
            } => {
                ctx.on_session_down(established);
                next = Some((stream, false));
            }
            Outcome::Shutdown => {
                ctx.on_session_down(false);
                break;
            }
        }
    }
    ctx.set_state(State::Idle);
    ctx.peer_down();
}
