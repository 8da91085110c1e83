//! Deleting a link without waiting for the kernel's tail end of it.
//!
//! `RTM_DELLINK` of a veth returns only after `netdev_run_todo()` has waited in
//! `rcu_barrier()` for a full RCU grace period (about 15 ms of the ~20 ms a veth deletion
//! takes here), long after the device is unlisted, its addresses are gone, its bridge
//! port is removed and its name is free. [`delete_link_detached`] sends the request
//! from a forked child that owns nothing of ours (every descriptor but its netlink socket
//! and a status pipe is closed, so a runtime reading our stdout to EOF never waits for
//! it) and returns as soon as the kernel has announced (`RTM_DELLINK` on the
//! `RTNLGRP_LINK` group) that the device, and its veth peer in our namespace, are gone.
//! The child finishes the kernel's bookkeeping alone and exits; init reaps it.
//!
//! Raw netlink on purpose: the child may only make system calls (the parent may have other
//! threads), and the whole exchange is four small messages.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::netns::NetNs;
use crate::spec::error::CniError;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINK_NETNSID: u16 = 37;
/// `RTMGRP_LINK`: link notifications.
const RTMGRP_LINK: u32 = 1;
const HDR: usize = 16;
const IFINFO: usize = 16;

/// How long to wait for the kernel to announce the deletion before giving up.
const TIMEOUT: Duration = Duration::from_secs(10);
/// After the pod end is gone, how long to wait for the peer's announcement before
/// checking for it directly (its notification follows within microseconds normally).
const PEER_GRACE: Duration = Duration::from_millis(500);

fn socket(groups: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain system calls; the fd is owned right after creation.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups = groups;
        let r = libc::bind(
            fd,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        );
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(owned)
    }
}

/// A link message: header, ifinfomsg with `index`, optional IFLA_IFNAME.
fn link_msg(kind: u16, flags: u16, seq: u32, index: i32, name: Option<&str>) -> Vec<u8> {
    let mut m = vec![0u8; HDR + IFINFO];
    if let Some(name) = name {
        let len = 4 + name.len() + 1;
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        m.extend_from_slice(name.as_bytes());
        m.push(0);
        while m.len() % 4 != 0 {
            m.push(0);
        }
    }
    let total = m.len() as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // ifi_family AF_UNSPEC (0); ifi_index at HDR + 4.
    m[HDR + 4..HDR + 8].copy_from_slice(&index.to_ne_bytes());
    m
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    b.get(i..i + 2)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]))
        .unwrap_or(0)
}
fn u32_at(b: &[u8], i: usize) -> u32 {
    b.get(i..i + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

/// The messages in a datagram: (type, seq, payload).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + HDR > buf.len() {
            return None;
        }
        let len = u32_at(buf, off) as usize;
        if len < HDR || off + len > buf.len() {
            return None;
        }
        let item = (
            u16_at(buf, off + 4),
            u32_at(buf, off + 8),
            &buf[off + HDR..off + len],
        );
        off += (len + 3) & !3;
        Some(item)
    })
}

/// What a link message says: index, peer index (IFLA_LINK) and whether the peer is in
/// another namespace (IFLA_LINK_NETNSID present).
struct LinkInfo {
    index: i32,
    peer: Option<i32>,
    peer_elsewhere: bool,
}

fn parse_link(payload: &[u8]) -> Option<LinkInfo> {
    if payload.len() < IFINFO {
        return None;
    }
    let mut info = LinkInfo {
        index: u32_at(payload, 4) as i32,
        peer: None,
        peer_elsewhere: false,
    };
    let mut off = IFINFO;
    while off + 4 <= payload.len() {
        let len = u16_at(payload, off) as usize;
        let ty = u16_at(payload, off + 2) & 0x3fff;
        if len < 4 || off + len > payload.len() {
            break;
        }
        match ty {
            IFLA_LINK if len >= 8 => info.peer = Some(u32_at(payload, off + 4) as i32),
            IFLA_LINK_NETNSID => info.peer_elsewhere = true,
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Some(info)
}

fn send(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: the buffer is valid for its length.
    let r = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn recv(fd: &OwnedFd, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    loop {
        // SAFETY: the buffer is valid for its length.
        let r = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `RTM_GETLINK` by name or index on `fd`: `None` when there is no such link.
fn get_link(
    fd: &OwnedFd,
    buf: &mut [u8],
    seq: u32,
    index: i32,
    name: Option<&str>,
) -> io::Result<Option<LinkInfo>> {
    send(fd, &link_msg(RTM_GETLINK, NLM_F_REQUEST, seq, index, name))?;
    loop {
        let n = recv(fd, buf, 0)?;
        for (ty, s, payload) in messages(&buf[..n]) {
            if s != seq {
                continue;
            }
            match ty {
                RTM_NEWLINK => return Ok(parse_link(payload)),
                NLMSG_ERROR => {
                    let err = -(u32_at(payload, 0) as i32);
                    return match err {
                        0 => Ok(None),
                        libc::ENODEV => Ok(None),
                        e => Err(io::Error::from_raw_os_error(e)),
                    };
                }
                _ => {}
            }
        }
    }
}

/// Closes every descriptor but `keep` (sorted). Only system calls: runs after fork.
fn close_all_but(keep: &[RawFd]) {
    let mut lo: libc::c_uint = 0;
    for &k in keep {
        let k = k as libc::c_uint;
        if k > lo {
            // SAFETY: close_range only closes descriptors.
            let r = unsafe { libc::syscall(libc::SYS_close_range, lo, k - 1, 0) };
            if r < 0 {
                for fd in lo..k {
                    // SAFETY: closing a descriptor we do not need in the child.
                    unsafe { libc::close(fd as RawFd) };
                }
            }
        }
        lo = k + 1;
    }
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_close_range, lo, libc::c_uint::MAX, 0) };
    if r < 0 {
        for fd in lo..4096 {
            // SAFETY: as above.
            unsafe { libc::close(fd as RawFd) };
        }
    }
}

/// Deletes the link `ifname` in `ns` (and with it a veth peer in the caller's
/// namespace), returning once the kernel has announced both are gone, while a detached
/// child waits out the rest of the kernel's work. `Ok(false)`: there was no such link.
pub fn delete_link_detached(ns: &NetNs, ifname: &str) -> Result<bool, CniError> {
    let what = || format!("deleting {ifname} in {}", ns.path().display());
    let io_err = |e: io::Error| CniError::internal(format!("{}: {e}", what()));

    // Sockets in the pod namespace: queries, the child's request, link notifications.
    let (query, req, pod_mon) = ns
        .run(|| -> io::Result<_> { Ok((socket(0)?, socket(0)?, socket(RTMGRP_LINK)?)) })?
        .map_err(io_err)?;
    let host_mon = socket(RTMGRP_LINK).map_err(io_err)?;

    let mut buf = vec![0u8; 32 * 1024];
    let Some(link) = get_link(&query, &mut buf, 1, 0, Some(ifname)).map_err(io_err)? else {
        return Ok(false);
    };
    // The veth peer in our namespace, whose removal we also wait for.
    let peer = link.peer.filter(|p| link.peer_elsewhere && *p > 0);

    let del = link_msg(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, 2, link.index, None);
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io_err(io::Error::last_os_error()));
    }
    // SAFETY: freshly created descriptors, owned once.
    let (status_r, status_w) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut child_buf = vec![0u8; 4096];

    // SAFETY: the child only makes system calls on memory allocated before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io_err(io::Error::last_os_error()));
    }
    if pid == 0 {
        let (rfd, wfd) = (req.as_raw_fd(), status_w.as_raw_fd());
        let mut keep = [rfd, wfd];
        keep.sort_unstable();
        close_all_but(&keep);
        // SAFETY: system calls on buffers allocated before the fork; _exit never returns.
        unsafe {
            let mut code: i32 = 0;
            if libc::send(rfd, del.as_ptr().cast(), del.len(), 0) < 0 {
                code = *libc::__errno_location();
            } else {
                let n = libc::recv(rfd, child_buf.as_mut_ptr().cast(), child_buf.len(), 0);
                if n >= (HDR + 4) as isize && u16_at(&child_buf, 4) == NLMSG_ERROR {
                    code = -(u32_at(&child_buf, HDR) as i32);
                } else if n < 0 {
                    code = *libc::__errno_location();
                }
            }
            libc::write(wfd, (&code as *const i32).cast(), 4);
            libc::_exit(0);
        }
    }
    drop(status_w);
    drop(req);

    let start = Instant::now();
    let mut pod_gone = false;
    let mut pod_gone_at = start;
    let mut peer_gone = peer.is_none();
    loop {
        if pod_gone && peer_gone {
            return Ok(true);
        }
        let now = Instant::now();
        if now.duration_since(start) > TIMEOUT {
            return Err(CniError::internal(format!(
                "{}: the kernel did not report the deletion within {}s",
                what(),
                TIMEOUT.as_secs()
            )));
        }
        if pod_gone && now.duration_since(pod_gone_at) > PEER_GRACE {
            // The peer may be in yet another namespace: check it directly, then stop.
            if let Some(p) = peer {
                let host_q = socket(0).map_err(io_err)?;
                if let Ok(Some(l)) = get_link(&host_q, &mut buf, 3, p, None) {
                    tracing::debug!(peer = l.index, "veth peer still listed; not waiting for it");
                }
            }
            return Ok(true);
        }
        let mut pfds = [
            libc::pollfd {
                fd: pod_mon.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: host_mon.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: status_r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: valid array of pollfd.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 50) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io_err(e));
        }
        if pfds[0].revents != 0 && !pod_gone && saw_dellink(&pod_mon, &mut buf, link.index, &query)?
        {
            pod_gone = true;
            pod_gone_at = Instant::now();
        }
        if pfds[1].revents != 0 {
            if let Some(p) = peer {
                if saw_dellink_plain(&host_mon, &mut buf, p) {
                    peer_gone = true;
                }
            } else {
                let _ = recv(&host_mon, &mut buf, libc::MSG_DONTWAIT);
            }
        }
        if pfds[2].revents != 0 {
            let mut code = [0u8; 4];
            // SAFETY: reading at most 4 bytes into a 4-byte buffer.
            let n = unsafe { libc::read(status_r.as_raw_fd(), code.as_mut_ptr().cast(), 4) };
            if n == 4 {
                // The kernel answered: the whole deletion is over (or failed).
                return match i32::from_ne_bytes(code) {
                    0 | libc::ENODEV => Ok(true),
                    e => Err(CniError::internal(format!(
                        "{}: {}",
                        what(),
                        io::Error::from_raw_os_error(e)
                    ))),
                };
            }
            // The child died without a word: see whether the link is gone.
            return match get_link(&query, &mut buf, 4, link.index, None).map_err(io_err)? {
                None => Ok(true),
                Some(_) => Err(CniError::internal(format!(
                    "{}: the deleting process exited early",
                    what()
                ))),
            };
        }
    }
}

/// Drains `mon`; whether an RTM_DELLINK for `index` was among the messages. When
/// notifications were lost (ENOBUFS), asks `query` whether the link still exists.
fn saw_dellink(
    mon: &OwnedFd,
    buf: &mut [u8],
    index: i32,
    query: &OwnedFd,
) -> Result<bool, CniError> {
    loop {
        match recv(mon, buf, libc::MSG_DONTWAIT) {
            Ok(n) => {
                if messages(&buf[..n]).any(|(ty, _, p)| {
                    ty == RTM_DELLINK && parse_link(p).is_some_and(|l| l.index == index)
                }) {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(_) => {
                return get_link(query, buf, 5, index, None)
                    .map(|l| l.is_none())
                    .map_err(|e| CniError::internal(format!("looking up link #{index}: {e}")))
            }
        }
    }
}

/// Drains `mon` (in our namespace); whether an RTM_DELLINK for `index` was among the
/// messages. When notifications were lost (ENOBUFS), asks the kernel directly.
fn saw_dellink_plain(mon: &OwnedFd, buf: &mut [u8], index: i32) -> bool {
    let mut seen = false;
    loop {
        match recv(mon, buf, libc::MSG_DONTWAIT) {
            Ok(n) => {
                seen |= messages(&buf[..n]).any(|(ty, _, p)| {
                    ty == RTM_DELLINK && parse_link(p).is_some_and(|l| l.index == index)
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return seen,
            Err(_) => {
                return seen
                    || socket(0)
                        .and_then(|q| get_link(&q, buf, 6, index, None))
                        .is_ok_and(|l| l.is_none())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout_and_parsing() {
        let m = link_msg(RTM_GETLINK, NLM_F_REQUEST, 7, 0, Some("eth0"));
        assert_eq!(m.len(), HDR + IFINFO + 12);
        assert_eq!(u32_at(&m, 0) as usize, m.len());
        let msgs: Vec<_> = messages(&m).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, RTM_GETLINK);
        assert_eq!(msgs[0].1, 7);

        let mut p = link_msg(RTM_NEWLINK, 0, 1, 42, None);
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&IFLA_LINK.to_ne_bytes());
        p.extend_from_slice(&9u32.to_ne_bytes());
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&IFLA_LINK_NETNSID.to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        let total = p.len() as u32;
        p[0..4].copy_from_slice(&total.to_ne_bytes());
        let (_, _, payload) = messages(&p).next().unwrap();
        let l = parse_link(payload).unwrap();
        assert_eq!(l.index, 42);
        assert_eq!(l.peer, Some(9));
        assert!(l.peer_elsewhere);
    }
}
