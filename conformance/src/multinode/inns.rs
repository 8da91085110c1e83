//! Entering a network namespace on a thread of its own: `setns(2)` with `CLONE_NEWNET`
//! acts on the calling thread only, so the test's other threads stay where they are.

use std::fs::File;
use std::path::Path;
use std::thread::JoinHandle;

use nix::sched::{setns, CloneFlags};

/// Enters the named netns (`/run/netns/<name>`) on the current thread. Only call it on a
/// thread that is thrown away afterwards (see [`spawn_in`]).
fn enter(ns: &str) -> Result<(), String> {
    let path = Path::new("/run/netns").join(ns);
    let f = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {}: {e}", path.display()))
}

/// Runs `f` on a new thread inside netns `ns`; join the handle for its result.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> JoinHandle<Result<T, String>> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns)?;
        f()
    })
}

/// Runs `f` inside netns `ns` (on a helper thread) and returns its result.
pub fn run_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    spawn_in(ns, f)
        .join()
        .unwrap_or_else(|_| Err("thread in netns panicked".into()))
}

/// `GET path` from `addr` (e.g. `127.0.0.1:9645`) inside netns `ns`: `(status, body)`.
pub fn http_get(ns: &str, addr: &str, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    use std::time::Duration;
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let path = path.to_string();
    run_in(ns, move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .map_err(|e| format!("read {addr}{path}: {e}"))?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no HTTP header end in {text:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        Ok((status, body.to_string()))
    })
}
