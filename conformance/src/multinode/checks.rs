//! Traffic checks between pods (or any two namespaces the test created): a ping matrix,
//! a TCP transfer verified byte for byte, and the MTU probe.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::inns;

/// Pings `dst` (IPv4 or IPv6) from netns `ns` (2 echo requests, 3 s at most): Ok on a
/// reply. Extra `ping` flags in `extra`.
pub fn ping_from(ns: &str, dst: impl Into<IpAddr>, extra: &[&str]) -> Result<(), String> {
    let dst: IpAddr = dst.into();
    let d = dst.to_string();
    let fam = if dst.is_ipv6() { "-6" } else { "-4" };
    let mut args = vec![
        "netns", "exec", ns, "ping", fam, "-n", "-q", "-c", "2", "-i", "0.2", "-W", "2", "-w", "3",
    ];
    args.extend_from_slice(extra);
    args.push(&d);
    crate::try_sh("ip", &args).map(|_| ())
}

/// The IP + ICMP headers in front of an echo payload: 28 (IPv4), 48 (IPv6: 40 + 8).
pub fn icmp_headers(v6: bool) -> u32 {
    if v6 {
        48
    } else {
        28
    }
}

/// A ping source or target: its netns and address, with a label for messages.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub ns: String,
    pub ip: Ipv4Addr,
    pub label: String,
}

/// Every endpoint pings every other one (sources in parallel); returns the pairs that
/// failed as `"a -> b: why"`.
pub fn ping_matrix(eps: &[Endpoint]) -> Vec<String> {
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for src in eps {
            let failures = &failures;
            s.spawn(move || {
                for dst in eps {
                    if dst.ns == src.ns {
                        continue;
                    }
                    // One retry: the first packets may race neighbour resolution.
                    let r = ping_from(&src.ns, dst.ip, &[])
                        .or_else(|_| ping_from(&src.ns, dst.ip, &[]));
                    if let Err(e) = r {
                        failures.lock().unwrap().push(format!(
                            "{} -> {}: {}",
                            src.label,
                            dst.label,
                            e.lines().last().unwrap_or("").trim()
                        ));
                    }
                }
            });
        }
    });
    failures.into_inner().unwrap()
}

/// The MTU probe from `ns` to `dst` for a path MTU `mtu`: an unfragmentable ping
/// (`-M do`) with the largest payload that fits (`mtu` minus [`icmp_headers`]) must
/// pass, one byte more must fail. Err describes what went wrong.
pub fn mtu_probe(ns: &str, dst: impl Into<IpAddr>, mtu: u32) -> Result<(), String> {
    let dst: IpAddr = dst.into();
    let fits = (mtu - icmp_headers(dst.is_ipv6())).to_string();
    let over = (mtu - icmp_headers(dst.is_ipv6()) + 1).to_string();
    ping_from(ns, dst, &["-M", "do", "-s", &fits])
        .or_else(|_| ping_from(ns, dst, &["-M", "do", "-s", &fits]))
        .map_err(|e| format!("ping -M do -s {fits} (MTU {mtu}) to {dst} failed: {e}"))?;
    if ping_from(ns, dst, &["-M", "do", "-s", &over]).is_ok() {
        return Err(format!(
            "ping -M do -s {over} to {dst} passed: the path takes more than MTU {mtu}"
        ));
    }
    Ok(())
}

/// Deterministic pseudo-random bytes (xorshift64*), the same for the same seed.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern(seed | 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// What a transfer gave.
#[derive(Clone, Debug)]
pub struct Transfer {
    pub bytes: usize,
    pub elapsed: Duration,
}

impl Transfer {
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e6
    }
}

const CHUNK: usize = 64 * 1024;

/// Sends `bytes` bytes of [`Pattern`]`(seed)` over TCP from netns `src_ns` to
/// `dst_ip:port` in netns `dst_ns`, both ends threads of this process that entered the
/// namespaces; the receiver checks every byte. Err on a connection failure, a short
/// read or the first differing byte.
pub fn tcp_transfer(
    src_ns: &str,
    dst_ns: &str,
    dst_ip: impl Into<IpAddr>,
    port: u16,
    bytes: usize,
    seed: u64,
) -> Result<Transfer, String> {
    let addr = SocketAddr::from((dst_ip.into(), port));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let server = inns::spawn_in(dst_ns, move || {
        let l = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("bind {addr}: {e}");
                let _ = ready_tx.send(Err(msg.clone()));
                return Err(msg);
            }
        };
        let _ = ready_tx.send(Ok(()));
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut conn = loop {
            match l.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(format!("no connection on {addr} within 15 s"));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        conn.set_nonblocking(false).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(15)))
            .map_err(|e| e.to_string())?;
        let mut pat = Pattern::new(seed);
        let mut want = vec![0u8; CHUNK];
        let mut got = vec![0u8; CHUNK];
        let mut total = 0usize;
        // Compare in the sender's chunking: refill the expected buffer every CHUNK bytes.
        let mut off_in_chunk = CHUNK;
        loop {
            let n = conn
                .read(&mut got)
                .map_err(|e| format!("read after {total} bytes: {e}"))?;
            if n == 0 {
                break;
            }
            for (i, &b) in got[..n].iter().enumerate() {
                if off_in_chunk == CHUNK {
                    pat.fill(&mut want);
                    off_in_chunk = 0;
                }
                if want[off_in_chunk] != b {
                    return Err(format!(
                        "byte {} differs: got {b:#04x}, sent {:#04x}",
                        total + i,
                        want[off_in_chunk]
                    ));
                }
                off_in_chunk += 1;
            }
            total += n;
            if total > bytes {
                return Err(format!(
                    "received {total} bytes, more than the {bytes} sent"
                ));
            }
        }
        // Tell the sender how much arrived (it waits for this before it reports).
        let _ = conn.write_all(&(total as u64).to_le_bytes());
        Ok(total)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "receiver never started".to_string())??;
    let client = inns::spawn_in(src_ns, move || {
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_write_timeout(Some(Duration::from_secs(15)))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .map_err(|e| e.to_string())?;
        let mut pat = Pattern::new(seed);
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0;
        while sent < bytes {
            pat.fill(&mut buf);
            let n = CHUNK.min(bytes - sent);
            s.write_all(&buf[..n])
                .map_err(|e| format!("write after {sent} bytes: {e}"))?;
            sent += n;
        }
        s.shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())?;
        let mut ack = [0u8; 8];
        s.read_exact(&mut ack)
            .map_err(|e| format!("no acknowledgement from the receiver: {e}"))?;
        Ok((u64::from_le_bytes(ack) as usize, start.elapsed()))
    });
    let sent = client
        .join()
        .unwrap_or_else(|_| Err("sender panicked".into()));
    let received = server
        .join()
        .unwrap_or_else(|_| Err("receiver panicked".into()));
    match (received, sent) {
        (Ok(r), Ok((acked, _))) if acked != r => {
            Err(format!("receiver counted {r}, acknowledged {acked}"))
        }
        (Ok(r), Ok(_)) if r != bytes => Err(format!("received {r} of {bytes} bytes")),
        (Ok(r), Ok((_, elapsed))) => Ok(Transfer { bytes: r, elapsed }),
        (Err(e), s) => Err(format!("receiver: {e} (sender: {s:?})")),
        (Ok(r), Err(e)) => Err(format!("sender: {e} (receiver got {r} bytes)")),
    }
}
