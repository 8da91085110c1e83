//! TCP MD5 signatures (RFC 2385) through Linux's `TCP_MD5SIG` socket option: the kernel
//! signs and checks every segment to/from one peer address.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

const TCP_MD5SIG_MAXKEYLEN: usize = 80;

/// `struct tcp_md5sig` of `<linux/tcp.h>` (libc does not define it).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; TCP_MD5SIG_MAXKEYLEN],
}

/// Sets (or with an empty key, removes) the key for `peer` on `socket`: on a listener
/// it applies to connections accepted from `peer`, on an unconnected socket to the
/// connection it will make.
pub(crate) fn set_key(socket: &impl AsRawFd, peer: IpAddr, key: &str) -> io::Result<()> {
    let key = key.as_bytes();
    if key.len() > TCP_MD5SIG_MAXKEYLEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP MD5 key longer than 80 octets",
        ));
    }
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    write_sockaddr(
        &mut sig.addr,
        SocketAddr::new(peer, 0),
        socket_is_v6(socket)?,
    );
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: `sig` is a valid tcp_md5sig of the size we pass, alive for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&sig as *const TcpMd5Sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn socket_is_v6(socket: &impl AsRawFd) -> io::Result<bool> {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_DOMAIN writes one c_int into `domain`, whose size we pass.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut domain as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(domain == libc::AF_INET6)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An IPv4 peer on an IPv6 socket is keyed by its v4-mapped address.
fn write_sockaddr(storage: &mut libc::sockaddr_storage, addr: SocketAddr, v6_socket: bool) {
    let ip = match (addr.ip(), v6_socket) {
        (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
        (ip, _) => ip,
    };
    match ip {
        IpAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
        }
        IpAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = v6.octets();
        }
    }
}

/// This network namespace's TCP MD5 failure counters from `/proc/net/netstat`:
/// (`TcpExtTCPMD5Failure`: segments with a wrong signature, `TcpExtTCPMD5NotFound`:
/// segments without one where one is expected). `None` when they cannot be read.
pub(crate) fn failure_counters() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    parse_md5_counters(&text)
}

fn parse_md5_counters(text: &str) -> Option<(u64, u64)> {
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    let mut failure = None;
    let mut not_found = None;
    for (n, v) in names.zip(values).skip(1) {
        match n {
            "TCPMD5Failure" => failure = v.parse().ok(),
            "TCPMD5NotFound" => not_found = v.parse().ok(),
            _ => {}
        }
    }
    Some((failure?, not_found.unwrap_or(0)))
}

#[cfg(test)]
mod counter_tests {
    #[test]
    fn md5_counters_are_read_by_name() {
        let t = "TcpExt: SyncookiesSent TCPMD5NotFound TCPMD5Unexpected TCPMD5Failure\n\
                 TcpExt: 0 3 0 17\n\
                 IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(super::parse_md5_counters(t), Some((17, 3)));
        assert_eq!(super::parse_md5_counters("IpExt: a\nIpExt: 1\n"), None);
        // The real file of this namespace has them.
        assert!(super::failure_counters().is_some());
    }
}
