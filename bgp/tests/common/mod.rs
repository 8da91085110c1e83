//! Helpers shared by the session tests: speakers on loopback addresses, a scriptable
//! fake peer speaking raw BGP, waiting for events.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bgp::wire::{Capability, Codec, Family, GracefulRestart, Header, Message, Open, HEADER_LEN};
use bgp::{HoldTime, PeerConfig, RouteEvent, Speaker, SpeakerConfig, State, Timers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{timeout, Instant};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn fast_timers() -> Timers {
    Timers {
        hold_time: HoldTime::new(3).unwrap(),
        connect_retry: Duration::from_millis(500),
        max_backoff: Duration::from_secs(2),
        open_hold: Duration::from_secs(2),
        graceful_restart: 0,
    }
}

/// A speaker listening on `addr` (a 127.x address), ephemeral port.
pub async fn speaker(addr: &str, asn: u32) -> (Speaker, UnboundedReceiver<RouteEvent>) {
    let a: Ipv4Addr = addr.parse().unwrap();
    let mut cfg = SpeakerConfig::new(a);
    cfg.local_as = asn;
    cfg.listen = SocketAddr::new(IpAddr::V4(a), 0);
    cfg.timers = fast_timers();
    Speaker::start(cfg).await.unwrap()
}

pub fn peer_of(s: &Speaker, asn: u32) -> PeerConfig {
    let addr = s.local_addr();
    PeerConfig {
        port: addr.port(),
        ..PeerConfig::new(addr.ip(), asn)
    }
}

/// Waits until the speaker's only (or given) peer is in `state`.
pub async fn wait_state(s: &Speaker, peer: IpAddr, state: State, within: Duration) {
    let end = Instant::now() + within;
    loop {
        let st = s.peers().into_iter().find(|p| p.address == peer);
        if st.as_ref().map(|p| p.state) == Some(state) {
            return;
        }
        assert!(
            Instant::now() < end,
            "peer {peer} not {state} within {within:?}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event matching `pred`, skipping others; panics after `within`.
pub async fn wait_event(
    rx: &mut UnboundedReceiver<RouteEvent>,
    within: Duration,
    pred: impl Fn(&RouteEvent) -> bool,
) -> RouteEvent {
    let end = Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match timeout(left, rx.recv()).await {
            Ok(Some(e)) if pred(&e) => return e,
            Ok(Some(_)) => {}
            Ok(None) => panic!("event stream ended"),
            Err(_) => panic!("no matching event within {within:?}"),
        }
    }
}

/// Everything received within `d`.
pub async fn drain(rx: &mut UnboundedReceiver<RouteEvent>, d: Duration) -> Vec<RouteEvent> {
    let mut out = Vec::new();
    let end = Instant::now() + d;
    while let Ok(Some(e)) = timeout(end.saturating_duration_since(Instant::now()), rx.recv()).await
    {
        out.push(e);
    }
    out
}

/// A hand-driven BGP peer.
pub struct Fake {
    pub stream: TcpStream,
    pub codec: Codec,
}

pub fn fake_open(asn: u32, router_id: &str, hold: u16, gr: Option<GracefulRestart>) -> Open {
    let mut capabilities = vec![
        Capability::Multiprotocol(Family::IPV4_UNICAST),
        Capability::Multiprotocol(Family::IPV6_UNICAST),
        Capability::RouteRefresh,
        Capability::FourOctetAs(asn),
    ];
    capabilities.extend(gr.map(Capability::GracefulRestart));
    Open {
        asn,
        hold_time: hold,
        router_id: router_id.parse().unwrap(),
        capabilities,
    }
}

impl Fake {
    /// Connects from `from` (a 127.x address) to a speaker.
    pub async fn connect(from: &str, to: SocketAddr) -> Fake {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(ip(from), 0)).unwrap();
        Fake {
            stream: s.connect(to).await.unwrap(),
            codec: Codec::default(),
        }
    }
    pub async fn accept(l: &TcpListener) -> Fake {
        let (stream, _) = timeout(Duration::from_secs(10), l.accept())
            .await
            .expect("no connection")
            .unwrap();
        Fake {
            stream,
            codec: Codec::default(),
        }
    }
    pub async fn send(&mut self, m: &Message) {
        self.stream.write_all(&m.encode(self.codec)).await.unwrap();
    }
    pub async fn send_raw(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.unwrap();
    }
    /// The next message, `None` on EOF or error.
    pub async fn recv(&mut self) -> Option<Message> {
        let mut head = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut head).await.ok()?;
        let h = Header::decode(&head).ok()?;
        let mut body = vec![0; h.len - HEADER_LEN];
        self.stream.read_exact(&mut body).await.ok()?;
        Message::decode_body(h, &body, self.codec).ok()
    }
    /// The next message that is not a KEEPALIVE or UPDATE, within `d`.
    pub async fn recv_other(&mut self, d: Duration) -> Option<Message> {
        timeout(d, async {
            loop {
                match self.recv().await {
                    Some(Message::Keepalive | Message::Update(_)) => {}
                    other => return other,
                }
            }
        })
        .await
        .expect("nothing within the deadline")
    }
    /// OPEN both ways and KEEPALIVE both ways: Established on the other side.
    pub async fn establish(&mut self, open: Open) -> Open {
        self.send(&Message::Open(open)).await;
        let theirs = match timeout(Duration::from_secs(5), self.recv()).await {
            Ok(Some(Message::Open(o))) => o,
            other => panic!("expected OPEN, got {other:?}"),
        };
        self.send(&Message::Keepalive).await;
        match timeout(Duration::from_secs(5), self.recv()).await {
            Ok(Some(Message::Keepalive)) => {}
            other => panic!("expected KEEPALIVE, got {other:?}"),
        }
        theirs
    }
}
