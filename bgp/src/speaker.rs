//! The handle the daemon holds: one listener for every peer, one task per peer, the
//! routes we announce, the events of the routes we learn.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnetwork::IpNetwork;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::{ImportFilter, PeerConfig, SpeakerConfig};
use crate::peer::{Control, Exports, Local, PeerCtx, StatusCell};
use crate::types::{PeerStatus, RouteEvent};
use crate::wire::Notification;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listening on {0}: {1}")]
    Listen(SocketAddr, #[source] io::Error),
    #[error("peer {0} is configured twice")]
    DuplicatePeer(IpAddr),
    #[error("no peer {0}")]
    UnknownPeer(IpAddr),
    #[error("TCP MD5 key for {0}: {1}")]
    Password(IpAddr, #[source] io::Error),
    #[error("next hop {next_hop} is not of the family of {prefix} (an IPv6 prefix needs an IPv6 next hop)")]
    FamilyMismatch { prefix: IpNetwork, next_hop: IpAddr },
    #[error("invalid configuration: {0}")]
    Config(String),
}

struct PeerHandle {
    control: mpsc::Sender<Control>,
    status: Arc<StatusCell>,
    task: JoinHandle<()>,
}

type Peers = Arc<Mutex<HashMap<IpAddr, PeerHandle>>>;

fn lock(peers: &Peers) -> MutexGuard<'_, HashMap<IpAddr, PeerHandle>> {
    peers.lock().unwrap_or_else(|e| e.into_inner())
}

struct Inner {
    local: Arc<Local>,
    import: ImportFilter,
    events: mpsc::UnboundedSender<RouteEvent>,
    exports: watch::Sender<Arc<Exports>>,
    peers: Peers,
    listener: Arc<TcpListener>,
    listener_task: JoinHandle<()>,
    local_addr: SocketAddr,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener_task.abort();
        for (_, p) in lock(&self.peers).drain() {
            p.task.abort();
        }
    }
}

/// A running BGP speaker. Cloning gives another handle to the same speaker; it stops
/// (abruptly) when the last handle is dropped, or cleanly with [`Speaker::shutdown`].
#[derive(Clone)]
pub struct Speaker {
    inner: Arc<Inner>,
}

impl Speaker {
    /// Binds the listener and starts a task per peer. Must run inside a tokio runtime.
    /// The receiver yields what was learned from the peers: the daemon must drain it.
    pub async fn start(
        config: SpeakerConfig,
    ) -> Result<(Speaker, mpsc::UnboundedReceiver<RouteEvent>), Error> {
        if config.router_id.is_unspecified() {
            return Err(Error::Config("router id 0.0.0.0".into()));
        }
        if config.local_as == 0 {
            return Err(Error::Config("local AS 0".into()));
        }
        let listener = bind(config.listen).map_err(|e| Error::Listen(config.listen, e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Listen(config.listen, e))?;
        let listener = Arc::new(listener);
        let mut sources = config.sources.clone();
        sources.extend(Some(config.listen.ip()).filter(|ip| !ip.is_unspecified()));
        let local = Arc::new(Local {
            local_as: config.local_as,
            router_id: config.router_id,
            timers: config.timers,
            sources,
            forwarding_survives_restart: config.forwarding_survives_restart,
        });
        let peers: Peers = Arc::default();
        let listener_task = tokio::spawn(accept_loop(listener.clone(), peers.clone()));
        let (events, rx) = mpsc::unbounded_channel();
        let (exports, _) = watch::channel(Arc::new(Exports::new()));
        let speaker = Speaker {
            inner: Arc::new(Inner {
                local,
                import: config.import_filter,
                events,
                exports,
                peers,
                listener,
                listener_task,
                local_addr,
            }),
        };
        info!(%local_addr, asn = config.local_as, router_id = %config.router_id, "BGP speaker started");
        for p in config.peers {
            speaker.add_peer(p)?;
        }
        Ok((speaker, rx))
    }

    /// Where the listener is bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Starts peering with one more peer.
    pub fn add_peer(&self, cfg: PeerConfig) -> Result<(), Error> {
        let inner = &self.inner;
        let mut peers = lock(&inner.peers);
        if peers.contains_key(&cfg.address) {
            return Err(Error::DuplicatePeer(cfg.address));
        }
        if let Some(key) = &cfg.password {
            crate::md5::set_key(&*inner.listener, cfg.address, key)
                .map_err(|e| Error::Password(cfg.address, e))?;
        }
        let status = Arc::new(StatusCell::new(&cfg));
        let (control, control_rx) = mpsc::channel(8);
        let address = cfg.address;
        let ctx = PeerCtx::new(
            cfg,
            inner.local.clone(),
            inner.exports.subscribe(),
            status.clone(),
            inner.events.clone(),
            inner.import.clone(),
        );
        let task = tokio::spawn(crate::task::run(ctx, control_rx));
        debug!(peer = %address, "peer added");
        peers.insert(
            address,
            PeerHandle {
                control,
                status,
                task,
            },
        );
        Ok(())
    }

    /// Ends the session with the peer (Cease, "peer de-configured") and forgets it; a
    /// `PeerDown` event follows if routes had been learned from it.
    pub async fn remove_peer(&self, address: IpAddr) -> Result<(), Error> {
        let handle = lock(&self.inner.peers)
            .remove(&address)
            .ok_or(Error::UnknownPeer(address))?;
        stop_peer(handle, Notification::CEASE_PEER_DECONFIGURED).await;
        // Removing a key that was never set fails harmlessly.
        let _ = crate::md5::set_key(&*self.inner.listener, address, "");
        Ok(())
    }

    /// Announces `prefix` (host bits are cleared) with `next_hop` to every peer, or
    /// changes its next hop. An IPv4 prefix may have an IPv6 next hop: it goes to the
    /// peers that negotiated the extended next hop capability (RFC 8950) only.
    pub fn announce(&self, prefix: IpNetwork, next_hop: IpAddr) -> Result<(), Error> {
        if prefix.is_ipv6() && next_hop.is_ipv4() {
            return Err(Error::FamilyMismatch { prefix, next_hop });
        }
        let prefix = normalize(prefix);
        self.inner.exports.send_if_modified(|e| {
            let changed = e.get(&prefix) != Some(&next_hop);
            if changed {
                Arc::make_mut(e).insert(prefix, next_hop);
            }
            changed
        });
        Ok(())
    }

    /// Withdraws an announced prefix; false if it was not announced.
    pub fn withdraw(&self, prefix: IpNetwork) -> bool {
        let prefix = normalize(prefix);
        self.inner.exports.send_if_modified(|e| {
            e.contains_key(&prefix) && Arc::make_mut(e).remove(&prefix).is_some()
        })
    }

    /// What we announce.
    pub fn announced(&self) -> Vec<(IpNetwork, IpAddr)> {
        self.inner
            .exports
            .borrow()
            .iter()
            .map(|(p, nh)| (*p, *nh))
            .collect()
    }

    /// Every peer's status, by address.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let mut out: Vec<PeerStatus> = lock(&self.inner.peers)
            .values()
            .map(|p| p.status.snapshot())
            .collect();
        out.sort_by_key(|p| p.address);
        out
    }

    /// Closes every session without a NOTIFICATION, as a crash or restart would, and
    /// stops the listener: a peer helping with graceful restart keeps our routes for our
    /// restart time (or until our End-of-RIB on the next session), if we announced
    /// that our forwarding survives (`forwarding_survives_restart`).
    pub async fn shutdown_for_restart(&self) {
        for h in self.stop_accepting() {
            h.task.abort();
            // Dropping the task's streams closes the sockets (FIN, no NOTIFICATION).
            let _ = h.task.await;
        }
    }

    /// Closes every session with a Cease (Administrative Shutdown; a Hard Reset that
    /// carries it toward a peer with the RFC 8538 N bit) and stops the listener.
    pub async fn shutdown(&self) {
        for h in self.stop_accepting() {
            stop_peer(h, Notification::CEASE_ADMIN_SHUTDOWN).await;
        }
    }

    /// Stops the listener and takes every peer's handle.
    fn stop_accepting(&self) -> Vec<PeerHandle> {
        self.inner.listener_task.abort();
        lock(&self.inner.peers).drain().map(|(_, h)| h).collect()
    }
}

async fn stop_peer(handle: PeerHandle, cease: u8) {
    let PeerHandle { control, task, .. } = handle;
    let _ = control.send(Control::Shutdown(cease)).await;
    let abort = task.abort_handle();
    // A peer that does not take our NOTIFICATION must not hold the caller up.
    if tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .is_err()
    {
        abort.abort();
    }
}

fn normalize(p: IpNetwork) -> IpNetwork {
    IpNetwork::new(p.network(), p.prefix()).unwrap_or(p)
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// Hands each accepted connection to its peer's task; closes the others.
async fn accept_loop(listener: Arc<TcpListener>, peers: Peers) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = from.ip().to_canonical();
        let _ = stream.set_nodelay(true);
        let control = lock(&peers).get(&ip).map(|p| p.control.clone());
        match control {
            Some(c) => {
                if c.try_send(Control::Incoming(stream)).is_err() {
                    debug!(%from, "peer busy: connection dropped");
                }
            }
            // INFO: a peer that connects from another address than the one it is
            // configured with here never gets a session, and this is the only trace.
            None => {
                info!(%from, "BGP: connection from an address that is no configured peer closed")
            }
        }
    }
}
