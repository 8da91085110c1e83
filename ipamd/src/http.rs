//! A minimal HTTP/1.1 responder for `GET /metrics`, `GET /healthz` and (BGP)
//! `GET /bgp/peers`: one request per
//! connection (`Connection: close`), header bytes capped, a read timeout. It knows the
//! [`Metrics`] it renders and, for `/bgp/peers`, only a [`JsonSnapshot`] callback.
//!
//! Under a flood of connections (issue: ~3,000 idle ones starved the daemon of file
//! descriptors and its lease lapsed) the port holds at most [`MAX_CONNECTIONS`] at a
//! time: when one more is accepted, the oldest connection still waiting for its request
//! head is closed. Idle connections therefore cost at most that many descriptors, a
//! real request (sent as soon as it connects) is answered before [`MAX_CONNECTIONS`]
//! newer ones could push it out, and each connection has [`HEAD_TIMEOUT`] to send its
//! request head.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use crate::metrics::Metrics;

/// A JSON document made at request time (`/bgp/peers`: the BGP speaker's peers).
pub(crate) type JsonSnapshot = Arc<dyn Fn() -> serde_json::Result<String> + Send + Sync>;

const MAX_HEAD: usize = 8 * 1024;

/// Connections open at once on the metrics/health port.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// How long a connection may take to send its request head.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections still reading their request head, oldest first: closing one is sending
/// on (or dropping) its channel.
#[derive(Default)]
struct Waiting {
    next_id: u64,
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Waiting {
    fn lock(w: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
        // A poisoned lock only means a panicking task held it: the queue is still sound.
        w.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Refuses a non-loopback address unless `any` (`--listen-any`).
pub(crate) fn check_listen(addr: SocketAddr, any: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || any {
        Ok(())
    } else {
        Err(format!(
            "--listen {addr} is not a loopback address: metrics and health are served on \
             loopback only unless --listen-any is given"
        ))
    }
}

/// Serves until `stop` turns true; `/bgp/peers` from `bgp_peers` (`None`: 404).
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    bgp_peers: Option<JsonSnapshot>,
    mut stop: watch::Receiver<bool>,
) {
    let waiting = Arc::new(Mutex::new(Waiting::default()));
    let mut evicted: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    let (tx, rx) = oneshot::channel();
                    let id = {
                        let mut w = Waiting::lock(&waiting);
                        if w.queue.len() >= MAX_CONNECTIONS {
                            // Dropping the sender closes the oldest idle connection.
                            w.queue.pop_front();
                            evicted += 1;
                            if evicted.is_power_of_two() {
                                tracing::warn!(evicted, limit = MAX_CONNECTIONS,
                                    "too many open connections to the metrics port: closing the oldest idle ones");
                            }
                        }
                        w.next_id += 1;
                        let id = w.next_id;
                        w.queue.push_back((id, tx));
                        id
                    };
                    let (m, b, w) = (metrics.clone(), bgp_peers.clone(), waiting.clone());
                    tokio::spawn(async move {
                        if let Err(e) = respond(conn, &m, b.as_ref(), rx, id, &w).await {
                            tracing::debug!(error = %e, "http connection");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn respond(
    mut conn: TcpStream,
    metrics: &Arc<Metrics>,
    bgp_peers: Option<&JsonSnapshot>,
    evict: oneshot::Receiver<()>,
    id: u64,
    waiting: &Mutex<Waiting>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let read = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_HEAD {
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<(), std::io::Error>(())
    };
    let head = tokio::select! {
        r = tokio::time::timeout(HEAD_TIMEOUT, read) => Some(r),
        // Evicted (or the server stopped): close.
        _ = evict => None,
    };
    Waiting::lock(waiting).queue.retain(|(i, _)| *i != id);
    match head {
        None => return Ok(()),
        Some(r) => {
            r.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if path == "/metrics" {
        let m = metrics.clone();
        let _ = tokio::task::spawn_blocking(move || m.refresh_usage()).await;
    }
    let (status, ctype, body) = route(method, path, metrics, bgp_peers);
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    if method != "HEAD" {
        conn.write_all(body.as_bytes()).await?;
    }
    conn.shutdown().await
}

fn route(
    method: &str,
    path: &str,
    metrics: &Metrics,
    bgp_peers: Option<&JsonSnapshot>,
) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET\n".into());
    }
    match path {
        "/metrics" => match metrics.render() {
            Ok(body) => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            Err(_) => ("500 Internal Server Error", TEXT, "encode\n".into()),
        },
        "/healthz" => {
            if metrics.healthy() {
                ("200 OK", TEXT, "ok\n".into())
            } else {
                (
                    "503 Service Unavailable",
                    TEXT,
                    "not registered, or the last lease renewal failed\n".into(),
                )
            }
        }
        "/bgp/peers" => match bgp_peers {
            Some(peers) => match peers() {
                Ok(body) => ("200 OK", "application/json", body),
                Err(_) => ("500 Internal Server Error", TEXT, "encode\n".into()),
            },
            None => (
                "404 Not Found",
                TEXT,
                "no BGP speaker: the daemon does not run --datapath bgp\n".into(),
            ),
        },
        _ => ("404 Not Found", TEXT, "try /metrics or /healthz\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgp_peers_from_the_snapshot() {
        let m = Metrics::new();
        let peers: JsonSnapshot = Arc::new(|| Ok("[]\n".to_string()));
        assert_eq!(
            route("GET", "/bgp/peers", &m, Some(&peers)),
            ("200 OK", "application/json", "[]\n".to_string())
        );
    }

    #[test]
    fn loopback_only_unless_told() {
        assert!(check_listen("127.0.0.1:9645".parse().unwrap(), false).is_ok());
        assert!(check_listen("[::1]:9645".parse().unwrap(), false).is_ok());
        assert!(check_listen("0.0.0.0:9645".parse().unwrap(), false).is_err());
        assert!(check_listen("0.0.0.0:9645".parse().unwrap(), true).is_ok());
    }

    #[test]
    fn routes() {
        let m = Metrics::new();
        let route = |method, path| route(method, path, &m, None).0;
        assert_eq!(route("GET", "/healthz"), "503 Service Unavailable");
        m.set_registered(true);
        m.set_renew_ok(true);
        assert_eq!(route("GET", "/healthz"), "200 OK");
        assert_eq!(route("GET", "/metrics"), "200 OK");
        assert_eq!(route("GET", "/nope"), "404 Not Found");
        assert_eq!(route("GET", "/bgp/peers"), "404 Not Found");
        assert_eq!(route("POST", "/metrics"), "405 Method Not Allowed");
    }
}
