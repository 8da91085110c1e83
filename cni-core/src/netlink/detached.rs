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
//! Messages are built and parsed with `netlink-packet-route`, sockets come from
//! `netlink-sys`; synchronous on purpose (no runtime: three sockets and a pipe under one
//! `poll`). The forked child is the exception: the parent may have other threads, so
//! after `fork()` the child may only make system calls on memory allocated before it (no
//! allocation, no locks: another thread may have held the allocator's lock at the fork).
//! Its request is serialized and its receive buffer allocated before the fork; it uses
//! raw `send`/`recv` on the socket's descriptor and reads the kernel's ack through the
//! crate's buffer views (`ack_code`), which neither allocate nor copy.
//!
//! [`release_detached`] is the same idea for a descriptor whose *last close* waits:
//! closing a `NETLINK_NETFILTER` socket after a committed nf_tables deletion waits
//! ~10 ms for an RCU grace period (see `crate::nft::Nft`). It hands the descriptor's
//! last reference to a detached process that holds nothing else of ours and closes it
//! after we exit, so that our own close returns at once.

use std::fs::File;
use std::io::{self, Read};
use std::num::NonZeroI32;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DecodeError, Emitable, ErrorBuffer, NetlinkBuffer, NetlinkMessage, NetlinkPayload, Nla,
    NlasIterator, ParseableParametrized, NLMSG_ALIGNTO, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkHeader, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use rtnetlink::constants::RTMGRP_LINK;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::kernel_error::{KernelError, Kind};
use crate::netns::NetNs;

/// How long to wait for the kernel to announce the deletion before giving up.
const TIMEOUT: Duration = Duration::from_secs(10);
/// After the pod end is gone, how long to wait for the peer's announcement before
/// checking for it directly (its notification follows within microseconds normally).
const PEER_GRACE: Duration = Duration::from_millis(500);
/// The shortest `NLMSG_ERROR` message: a netlink header (16 bytes) and the error code
/// (an `i32`; the test `min_error_len_matches_the_crate` checks both against the crate).
/// [`ack_code`] checks it before using the crate's buffer views, so that they can
/// neither panic nor allocate an error message in the child.
const MIN_ERROR_LEN: usize = 16 + 4;

/// A `NETLINK_ROUTE` socket in the current namespace, subscribed to `groups`
/// (`RTMGRP_*` bits).
fn socket(groups: u32) -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind(&SocketAddr::new(0, groups))?;
    Ok(sock)
}

/// A link message for the link `index`, or (index 0) the link named `name`.
fn link_message(index: u32, name: Option<&str>) -> LinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    if let Some(name) = name {
        link.attributes.push(LinkAttribute::IfName(name.to_owned()));
    }
    link
}

/// `msg` as a request with `flags` and `seq`, serialized.
fn request(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = flags;
    req.header.sequence_number = seq;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);
    buf
}

/// The messages in a datagram, as the crate's buffer views, each cut to its header's
/// length (the next one starts at that length aligned to 4). A truncated message ends
/// the datagram.
fn messages(buf: &[u8]) -> impl Iterator<Item = NetlinkBuffer<&[u8]>> {
    let align = usize::from(NLMSG_ALIGNTO) - 1;
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off >= buf.len() {
            return None;
        }
        let len = NetlinkBuffer::new_checked(&buf[off..]).ok()?.length() as usize;
        let msg = NetlinkBuffer::new(&buf[off..off + len]);
        off += (len + align) & !align;
        Some(msg)
    })
}

/// The message type of `msg` (`RTM_NEWLINK`...), from the crate.
fn message_type(msg: fn(LinkMessage) -> RouteNetlinkMessage) -> u16 {
    msg(LinkMessage::default()).message_type()
}

/// What a link message says: index, peer index (IFLA_LINK) and whether the peer is in
/// another namespace (IFLA_LINK_NETNSID present).
#[derive(Debug, PartialEq)]
struct LinkInfo {
    index: u32,
    peer: Option<u32>,
    peer_elsewhere: bool,
}

/// What the link message `payload` (an `ifinfomsg` and its attributes) says, read with
/// the crate: the link header, then only the two attributes we need, found by their
/// kind. A full `NetlinkMessage::deserialize` of a veth's message parses every attribute
/// (statistics, per-family settings...): measured ~40 µs warm and ~0.15 ms in a fresh
/// process (the plugin runs that code cold), against ~1.6 ms for this whole function.
fn link_info(payload: &[u8]) -> Result<LinkInfo, DecodeError> {
    let header = LinkHeader::parse(payload)?;
    let wanted = [
        LinkAttribute::Link(0).kind(),
        LinkAttribute::LinkNetNsId(0).kind(),
    ];
    let mut info = LinkInfo {
        index: header.index,
        peer: None,
        peer_elsewhere: false,
    };
    for nla in NlasIterator::new(&payload[header.buffer_len()..]) {
        let nla = nla?;
        if !wanted.contains(&nla.kind()) {
            continue;
        }
        match LinkAttribute::parse_with_param(&nla, header.interface_family)? {
            LinkAttribute::Link(peer) => info.peer = Some(peer),
            LinkAttribute::LinkNetNsId(_) => info.peer_elsewhere = true,
            _ => {}
        }
    }
    Ok(info)
}

/// Whether the datagram in `buf` announces (`RTM_DELLINK`) that the link `index` is gone.
/// Reads only the message type and the link header, through the crate's views: the
/// monitors see every link message of two namespaces (see [`link_info`] for the cost of
/// parsing them whole).
fn announces_dellink(buf: &[u8], index: u32) -> bool {
    let dellink = message_type(RouteNetlinkMessage::DelLink);
    messages(buf).any(|nl| {
        nl.message_type() == dellink
            && LinkHeader::parse(nl.payload()).is_ok_and(|h| h.index == index)
    })
}

/// The error code (0: an ack, else `-errno`) of the `NLMSG_ERROR` message at the start
/// of `buf`; `None` when `buf` does not start with one. Runs in the forked child, so it
/// must not allocate: it checks the lengths itself and then reads through the crate's
/// unchecked buffer views (`new_checked` would format an error message on failure).
fn ack_code(buf: &[u8]) -> Option<i32> {
    if buf.len() < MIN_ERROR_LEN {
        return None;
    }
    let nl = NetlinkBuffer::new(buf);
    let len = nl.length() as usize;
    if nl.message_type() != NLMSG_ERROR || len < MIN_ERROR_LEN || len > buf.len() {
        return None;
    }
    Some(
        ErrorBuffer::new(nl.payload())
            .code()
            .map_or(0, NonZeroI32::get),
    )
}

fn send(sock: &Socket, msg: &[u8]) -> io::Result<()> {
    sock.send(msg, 0).map(drop)
}

fn recv(sock: &Socket, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    loop {
        match sock.recv(&mut &mut buf[..], flags) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// `RTM_GETLINK` by name or index on `sock`: `None` when there is no such link.
fn get_link(
    sock: &Socket,
    buf: &mut [u8],
    seq: u32,
    index: u32,
    name: Option<&str>,
) -> io::Result<Option<LinkInfo>> {
    let msg = RouteNetlinkMessage::GetLink(link_message(index, name));
    send(sock, &request(msg, NLM_F_REQUEST, seq))?;
    let newlink = message_type(RouteNetlinkMessage::NewLink);
    let invalid = |e: DecodeError| io::Error::new(io::ErrorKind::InvalidData, e);
    loop {
        let n = recv(sock, buf, 0)?;
        for nl in messages(&buf[..n]) {
            if nl.sequence_number() != seq {
                continue;
            }
            if nl.message_type() == newlink {
                return link_info(nl.payload()).map(Some).map_err(invalid);
            }
            if nl.message_type() != NLMSG_ERROR {
                continue;
            }
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(nl.into_inner());
            if let NetlinkPayload::Error(e) = msg.map_err(invalid)?.payload {
                return match e.code {
                    None => Ok(None),
                    Some(c) if c.get() == -libc::ENODEV => Ok(None),
                    Some(_) => Err(e.to_io()),
                };
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
pub(crate) fn delete_link_detached(ns: &NetNs, ifname: &str) -> Result<bool, KernelError> {
    let _timing = crate::timing::phase("veth.delete-detached");
    let what = || format!("deleting {ifname} in {}", ns.path().display());
    let io_err = |e: io::Error| KernelError::io(Kind::Kernel, what(), e);

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

    // Everything the child touches exists before the fork: the serialized request, its
    // receive buffer, the descriptors.
    let del = request(
        RouteNetlinkMessage::DelLink(link_message(link.index, None)),
        NLM_F_REQUEST | NLM_F_ACK,
        2,
    );
    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err(io::Error::from(e)))?;
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
        // SAFETY: system calls on buffers allocated before the fork (ack_code only reads
        // `child_buf` in place); _exit never returns, so nothing is dropped.
        unsafe {
            let mut code: i32 = 0;
            if libc::send(rfd, del.as_ptr().cast(), del.len(), 0) < 0 {
                code = *libc::__errno_location();
            } else {
                let n = libc::recv(rfd, child_buf.as_mut_ptr().cast(), child_buf.len(), 0);
                if n < 0 {
                    code = *libc::__errno_location();
                } else if let Some(c) = ack_code(&child_buf[..n as usize]) {
                    code = -c;
                }
            }
            libc::write(wfd, (&code as *const i32).cast(), 4);
            libc::_exit(0);
        }
    }
    drop(status_w);
    drop(req);
    let mut status = File::from(status_r);

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
            return Err(KernelError::other(
                what(),
                format!(
                    "the kernel did not report the deletion within {}s",
                    TIMEOUT.as_secs()
                ),
            ));
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
        let ready = {
            let mut pfds = [&pod_mon as &dyn AsFd, &host_mon, &status]
                .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN));
            match poll(&mut pfds, PollTimeout::from(50u8)) {
                Ok(_) => pfds.map(|p| p.revents().is_some_and(|r| !r.is_empty())),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io_err(e.into())),
            }
        };
        if ready[0] && !pod_gone && saw_dellink(&pod_mon, &mut buf, link.index, &query)? {
            pod_gone = true;
            pod_gone_at = Instant::now();
        }
        if ready[1] {
            if let Some(p) = peer {
                if saw_dellink_plain(&host_mon, &mut buf, p) {
                    peer_gone = true;
                }
            } else {
                let _ = recv(&host_mon, &mut buf, libc::MSG_DONTWAIT);
            }
        }
        if ready[2] {
            let mut code = [0u8; 4];
            if matches!(status.read(&mut code), Ok(4)) {
                // The kernel answered: the whole deletion is over (or failed).
                return match i32::from_ne_bytes(code) {
                    0 | libc::ENODEV => Ok(true),
                    e => Err(KernelError::from_errno(
                        what(),
                        nix::errno::Errno::from_raw(e),
                    )),
                };
            }
            // The child died without a word: see whether the link is gone.
            return match get_link(&query, &mut buf, 4, link.index, None).map_err(io_err)? {
                None => Ok(true),
                Some(_) => Err(KernelError::other(
                    what(),
                    "the deleting process exited early",
                )),
            };
        }
    }
}

/// What the vfork-like child of [`release_detached`] needs, on the parent's stack (the
/// parent is suspended while that child runs).
#[derive(Clone, Copy)]
struct ReleaseArgs {
    fd: RawFd,
    exit_r: RawFd,
}

/// The stack of that child: it makes a few system calls (see [`release_trampoline`]).
const RELEASE_STACK: usize = 16 * 1024;

/// Our process name in `ps` for the releasing process (`PR_SET_NAME`: at most 15 bytes).
const RELEASE_COMM: &[u8] = b"cni-fd-release\0";

/// How long a releasing process waits for our exit before it closes the descriptor
/// anyway (a long-lived caller: it must not keep processes around).
const RELEASE_LINGER_MS: libc::c_int = 200;

/// A pipe whose write end only this process holds (`O_CLOEXEC`; the forked children
/// here close it), open until we exit: its read end reports our exit to the releasing
/// processes. Made once; `None` if it could not be.
fn exit_pipe() -> Option<RawFd> {
    static PIPE: OnceLock<Option<(OwnedFd, OwnedFd)>> = OnceLock::new();
    PIPE.get_or_init(|| nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok())
        .as_ref()
        .map(|(r, _)| r.as_raw_fd())
}

/// Closes `fd` (its last reference, as far as this process goes) without waiting for
/// what the kernel does when that reference goes: a detached process does the close.
///
/// How: a `clone(CLONE_VM | CLONE_VFORK)` child (the `posix_spawn` technique: it runs on
/// its own small stack in our memory while we are suspended) closes every descriptor
/// but `fd` and the read end of [`exit_pipe`], forks the releasing process, and exits.
/// That process has nothing else of ours from its first instruction (no stdout: a
/// runtime reading ours to EOF never waits for it) and is not our child (its parent
/// exits at once: init, or the nearest subreaper, reaps it; a long-lived caller
/// accumulates no zombie). We close our copy of `fd` as soon as it exists. It closes
/// `fd` when we have exited, or after [`RELEASE_LINGER_MS`]: so its close is the last
/// one, and (for the netfilter socket) the kernel's flush, which holds the namespace's
/// nf_tables commit mutex, does not hold up a later transaction of ours.
///
/// The descriptor is always closed: when a process cannot be made, here (with the
/// wait). Neither child allocates (another thread may hold the allocator's lock).
pub(crate) fn release_detached(fd: impl IntoRawFd) {
    // SAFETY: `into_raw_fd` hands over the ownership of an open descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd.into_raw_fd()) };
    let _timing = crate::timing::phase("fd.release-detached");
    let Some(exit_r) = exit_pipe() else {
        tracing::debug!("no pipe: closing the descriptor here");
        return;
    };
    let mut stack = vec![0u8; RELEASE_STACK];
    let args = ReleaseArgs {
        fd: fd.as_raw_fd(),
        exit_r,
    };
    // The top of the stack (it grows down), 16-byte aligned.
    let top = {
        let end = stack.as_mut_ptr_range().end as usize;
        (end & !15) as *mut libc::c_void
    };
    // SAFETY: the child runs `release_trampoline` on `stack` while this thread is
    // suspended (CLONE_VFORK: until the child exits), so `stack` and `args` outlive it;
    // it only makes system calls on them. SIGCHLD: it is ours to reap, below.
    let pid = unsafe {
        libc::clone(
            release_trampoline,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&args as *const ReleaseArgs).cast_mut().cast(),
        )
    };
    if pid < 0 {
        tracing::debug!(
            error = %io::Error::last_os_error(),
            "no process to close the descriptor: closing it here"
        );
        return;
    }
    // It has exited (CLONE_VFORK): reap it.
    let status = loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r,
        }
    };
    if !matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))) {
        tracing::debug!(?status, "no releasing process: closing the descriptor here");
    }
    drop(fd);
}

/// The vfork-like child of [`release_detached`]: in our memory, on its own stack, while
/// the parent waits. Only system calls.
extern "C" fn release_trampoline(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ReleaseArgs`, alive while the parent is suspended.
    let ReleaseArgs { fd, exit_r } = unsafe { *arg.cast::<ReleaseArgs>() };
    let mut keep = [fd, exit_r];
    keep.sort_unstable();
    close_all_but(&keep);
    // SAFETY: a plain fork (the flags of fork(2), no new stack): the releasing process
    // continues on a copy of this stack in a copy of the memory and, like this child,
    // only makes system calls; _exit never returns.
    unsafe {
        let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0);
        if pid == 0 {
            libc::prctl(libc::PR_SET_NAME, RELEASE_COMM.as_ptr());
            // Our parent's exit (EOF), or the linger time; a signal ends it early.
            let mut pfd = libc::pollfd {
                fd: exit_r,
                events: libc::POLLIN,
                revents: 0,
            };
            libc::poll(&mut pfd, 1, RELEASE_LINGER_MS);
            libc::close(exit_r);
            libc::close(fd);
            libc::_exit(0);
        }
        libc::close(fd);
        libc::close(exit_r);
        libc::_exit(if pid < 0 { 1 } else { 0 })
    }
}

/// Drains `mon`; whether an RTM_DELLINK for `index` was among the messages. When
/// notifications were lost (ENOBUFS), asks `query` whether the link still exists.
fn saw_dellink(
    mon: &Socket,
    buf: &mut [u8],
    index: u32,
    query: &Socket,
) -> Result<bool, KernelError> {
    loop {
        match recv(mon, buf, libc::MSG_DONTWAIT) {
            Ok(n) => {
                if announces_dellink(&buf[..n], index) {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(_) => {
                return get_link(query, buf, 5, index, None)
                    .map(|l| l.is_none())
                    .map_err(|e| {
                        KernelError::io(Kind::Kernel, format!("looking up link #{index}"), e)
                    })
            }
        }
    }
}

/// Drains `mon` (in our namespace); whether an RTM_DELLINK for `index` was among the
/// messages. When notifications were lost (ENOBUFS), asks the kernel directly.
fn saw_dellink_plain(mon: &Socket, buf: &mut [u8], index: u32) -> bool {
    let mut seen = false;
    loop {
        match recv(mon, buf, libc::MSG_DONTWAIT) {
            Ok(n) => seen |= announces_dellink(&buf[..n], index),
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
    use netlink_packet_core::{ErrorMessage, NetlinkHeader};
    use netlink_packet_route::link::State;

    use super::*;

    fn parse_all(buf: &[u8]) -> Vec<(u32, NetlinkMessage<RouteNetlinkMessage>)> {
        messages(buf)
            .map(|nl| {
                let seq = nl.sequence_number();
                (seq, NetlinkMessage::deserialize(nl.into_inner()).unwrap())
            })
            .collect()
    }

    #[test]
    fn requests_round_trip_through_the_crate() {
        let get = request(
            RouteNetlinkMessage::GetLink(link_message(0, Some("veth1"))),
            NLM_F_REQUEST,
            7,
        );
        // Header, ifinfomsg, IFLA_IFNAME "veth1\0" padded to 4.
        assert_eq!(get.len(), 16 + 16 + 12);
        let del = request(
            RouteNetlinkMessage::DelLink(link_message(42, None)),
            NLM_F_REQUEST | NLM_F_ACK,
            8,
        );
        assert_eq!(del.len(), 16 + 16);

        // Two messages in one datagram.
        let both = [get.as_slice(), del.as_slice()].concat();
        let msgs = parse_all(&both);
        assert_eq!(msgs.len(), 2);

        let (seq, get) = &msgs[0];
        assert_eq!(*seq, 7);
        assert_eq!(get.header.flags, NLM_F_REQUEST);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(l)) = &get.payload else {
            panic!("not a GETLINK: {get:?}");
        };
        assert_eq!(l.header.index, 0);
        assert_eq!(l.attributes, [LinkAttribute::IfName("veth1".into())]);

        let (seq, del) = &msgs[1];
        assert_eq!(*seq, 8);
        assert_eq!(del.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) = &del.payload else {
            panic!("not a DELLINK: {del:?}");
        };
        assert_eq!(l.header.index, 42);
        assert!(l.attributes.is_empty());
        assert!(announces_dellink(&both, 42));
        assert!(!announces_dellink(&both, 43));
    }

    #[test]
    fn link_info_reads_index_peer_and_netnsid() {
        let mut link = link_message(42, Some("eth0"));
        link.attributes.extend([
            LinkAttribute::Mtu(1500),
            LinkAttribute::Link(9),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::LinkNetNsId(0),
            LinkAttribute::TxQueueLen(1000),
        ]);
        let buf = request(RouteNetlinkMessage::NewLink(link), 0, 1);
        let nl = messages(&buf).next().unwrap();
        assert_eq!(
            nl.message_type(),
            message_type(RouteNetlinkMessage::NewLink)
        );
        let info = link_info(nl.payload()).unwrap();
        assert_eq!(
            info,
            LinkInfo {
                index: 42,
                peer: Some(9),
                peer_elsewhere: true
            }
        );
        // What the crate's full parse says.
        let msgs = parse_all(&buf);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = &msgs[0].1.payload
        else {
            panic!("not a NEWLINK");
        };
        assert_eq!(l.header.index, 42);
        assert!(l.attributes.contains(&LinkAttribute::Link(9)));
        assert!(l.attributes.contains(&LinkAttribute::LinkNetNsId(0)));
        // A NEWLINK of the same link announces nothing.
        assert!(!announces_dellink(&buf, 42));

        // No peer.
        let buf = request(
            RouteNetlinkMessage::NewLink(link_message(5, Some("eth0"))),
            0,
            1,
        );
        let info = link_info(messages(&buf).next().unwrap().payload()).unwrap();
        assert_eq!(
            info,
            LinkInfo {
                index: 5,
                peer: None,
                peer_elsewhere: false
            }
        );
        // Cut short: an error, not a guess.
        assert!(link_info(&buf[16..24]).is_err());
    }

    /// The write end of a pipe handed over: its last reference goes (our read end sees
    /// EOF, after the linger time: this process does not exit), though not in this
    /// process (see `tests/nft_release.rs`).
    #[test]
    fn release_detached_closes_the_descriptor() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        release_detached(w);
        let mut byte = [0u8; 1];
        assert_eq!(File::from(r).read(&mut byte).unwrap(), 0);
    }

    #[test]
    fn min_error_len_matches_the_crate() {
        assert_eq!(
            MIN_ERROR_LEN,
            NetlinkHeader::default().buffer_len() + ErrorMessage::default().buffer_len()
        );
    }

    fn error_reply(code: i32, request: &[u8]) -> Vec<u8> {
        let mut err = ErrorMessage::default();
        err.code = NonZeroI32::new(code);
        err.header = request[..16].to_vec();
        let mut msg = NetlinkMessage::<RouteNetlinkMessage>::new(
            NetlinkHeader::default(),
            NetlinkPayload::Error(err),
        );
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    #[test]
    fn ack_code_reads_errors_in_place() {
        let del = request(
            RouteNetlinkMessage::DelLink(link_message(42, None)),
            NLM_F_REQUEST | NLM_F_ACK,
            2,
        );
        assert_eq!(ack_code(&error_reply(0, &del)), Some(0));
        let nack = error_reply(-libc::ENODEV, &del);
        assert_eq!(ack_code(&nack), Some(-libc::ENODEV));
        // What the parent makes of the same reply.
        let msgs = parse_all(&nack);
        let NetlinkPayload::Error(e) = &msgs[0].1.payload else {
            panic!("not an error");
        };
        assert_eq!(e.raw_code(), -libc::ENODEV);

        // Not an error message, or cut short: nothing.
        assert_eq!(ack_code(&del), None);
        assert_eq!(ack_code(&nack[..MIN_ERROR_LEN - 1]), None);
        assert_eq!(ack_code(&nack[..MIN_ERROR_LEN + 2]), None);
        assert_eq!(ack_code(&[]), None);
    }
}
