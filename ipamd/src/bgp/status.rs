//! Peer status for operators: the JSON the daemon serves on `GET /bgp/peers` and the
//! `ipamd bgp-peers` command that fetches and prints it.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::BgpPeersArgs;
use crate::error::Error;

/// One peer on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PeerJson {
    pub peer: String,
    #[serde(rename = "as")]
    pub remote_as: u32,
    pub state: String,
    /// Seconds since Established; absent when the session is not.
    pub uptime_secs: Option<u64>,
    pub prefixes_sent: usize,
    pub prefixes_received: usize,
    pub flaps: u32,
    /// The last NOTIFICATION sent or received (kept until the next Established), else
    /// the last connection error.
    pub last_error: Option<String>,
    /// When `last_error` happened, seconds since the Unix epoch.
    #[serde(default)]
    pub last_error_unix: Option<u64>,
    /// Negotiated hold time while Established.
    #[serde(default)]
    pub hold_time: Option<u16>,
}

impl From<&bgp::PeerStatus> for PeerJson {
    fn from(p: &bgp::PeerStatus) -> Self {
        PeerJson {
            peer: p.address.to_string(),
            remote_as: p.remote_as,
            state: p.state.to_string(),
            uptime_secs: p.uptime.map(|d| d.as_secs()),
            prefixes_sent: p.prefixes_sent,
            prefixes_received: p.prefixes_received,
            flaps: p.flaps,
            last_error: p.last_error.clone(),
            last_error_unix: p
                .last_error_at
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            hold_time: p.hold_time,
        }
    }
}

pub(crate) fn to_json(peers: &[bgp::PeerStatus]) -> serde_json::Result<String> {
    let out: Vec<PeerJson> = peers.iter().map(PeerJson::from).collect();
    serde_json::to_string_pretty(&out).map(|s| s + "\n")
}

/// `ipamd bgp-peers`. A reader that goes away (`| head`) ends it quietly.
pub(crate) async fn bgp_peers(args: &BgpPeersArgs, out: &mut impl Write) -> Result<(), Error> {
    let body = get(args.listen, "/bgp/peers").await?;
    let peers: Vec<PeerJson> = serde_json::from_str(&body)
        .map_err(|e| Error::Usage(format!("unexpected answer from {}: {e}", args.listen)))?;
    quiet_on_broken_pipe(print(args, &body, &peers, out))
}

/// EPIPE on stdout means the reader had enough (`ipamd bgp-peers | head`): no error.
fn quiet_on_broken_pipe(r: std::io::Result<()>) -> Result<(), Error> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| Error::io("stdout", e)),
    }
}

fn print(
    args: &BgpPeersArgs,
    body: &str,
    peers: &[PeerJson],
    out: &mut impl Write,
) -> std::io::Result<()> {
    if args.json {
        return writeln!(out, "{}", body.trim_end());
    }
    writeln!(
        out,
        "{:<40} {:>10} {:<12} {:>10} {:>8} {:>8}",
        "PEER", "AS", "STATE", "UPTIME", "SENT", "RECEIVED"
    )?;
    for p in peers {
        let up = p
            .uptime_secs
            .map(|s| format_uptime(Duration::from_secs(s)))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<40} {:>10} {:<12} {:>10} {:>8} {:>8}",
            p.peer, p.remote_as, p.state, up, p.prefixes_sent, p.prefixes_received
        )?;
        if let Some(e) = p.last_error.as_ref().filter(|_| p.state != "established") {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            match p.last_error_unix {
                Some(t) => {
                    let ago = format_uptime(Duration::from_secs(now.saturating_sub(t)));
                    writeln!(out, "  last error ({ago} ago): {e}")?
                }
                None => writeln!(out, "  last error: {e}")?,
            }
        }
    }
    out.flush()
}

fn format_uptime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// A plain HTTP/1.1 GET of `path` (the daemon answers with `Connection: close`).
async fn get(addr: std::net::SocketAddr, path: &str) -> Result<String, Error> {
    let ctx = |e| Error::io(format!("GET http://{addr}{path} (is ipamd running?)"), e);
    let fetch = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).await?;
        Ok::<Vec<u8>, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| ctx(std::io::Error::new(std::io::ErrorKind::TimedOut, "timeout")))?
        .map_err(ctx)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(Error::Usage(format!(
            "{addr}{path}: {status}: {}",
            body.trim()
        )));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_uptime() {
        let s = bgp::PeerStatus {
            address: "192.0.2.1".parse().unwrap(),
            remote_as: 65000,
            state: bgp::State::Established,
            uptime: Some(Duration::from_secs(75)),
            prefixes_sent: 2,
            prefixes_received: 3,
            flaps: 0,
            last_error: None,
            last_error_at: None,
            hold_time: Some(3),
        };
        let j = to_json(&[s]).unwrap();
        assert!(j.contains("\"as\": 65000"), "{j}");
        let back: Vec<PeerJson> = serde_json::from_str(&j).unwrap();
        assert_eq!(back[0].state, "established");
        assert_eq!(back[0].uptime_secs, Some(75));
        assert_eq!(format_uptime(Duration::from_secs(75)), "1m15s");
        assert_eq!(format_uptime(Duration::from_secs(90000)), "1d01h");
        assert_eq!(back[0].hold_time, Some(3));
    }

    #[test]
    fn a_closed_pipe_is_not_an_error() {
        let epipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(quiet_on_broken_pipe(Err(epipe)).is_ok());
        let other = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(quiet_on_broken_pipe(Err(other)).is_err());
    }
}
