//! Netlink primitives over `rtnetlink`: links, addresses, routes. One small file per
//! object kind. Every call is async; plugins drive them on a current-thread runtime
//! (see [`block_on`]). Failures are [`KernelError`]s that keep the kernel's errno and
//! name the operation and its object.

pub(crate) mod addr;
pub(crate) mod detached;
pub(crate) mod link;
pub(crate) mod mac;
pub(crate) mod neigh;
pub(crate) mod route;
pub(crate) mod underlay;
pub(crate) mod vxlan;

pub(crate) use detached::delete_link_detached;
pub(crate) use link::Link;
pub(crate) use mac::MacAddr;
pub(crate) use route::RouteSpec;

use crate::kernel_error::{KernelError, Kind};
use crate::netns::NetNs;
use crate::spec::error::CniError;

/// A netlink connection, bound to the namespace it was opened in.
#[derive(Clone)]
pub struct Netlink {
    pub(crate) handle: rtnetlink::Handle,
}

impl Netlink {
    /// Connects in the calling thread's namespace. Must run inside a tokio runtime
    /// (the connection task is spawned on it).
    pub fn connect() -> Result<Netlink, KernelError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(KernelError::other(
                "netlink connect",
                "not inside a tokio runtime",
            ));
        }
        let _timing = crate::timing::phase("netlink.connect");
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| KernelError::io(Kind::Kernel, "opening a netlink socket", e))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Connects inside `ns`: the socket stays bound to `ns` after the thread returns.
    pub fn connect_in(ns: &NetNs) -> Result<Netlink, KernelError> {
        // A netlink socket belongs to the namespace it was created in, whatever thread
        // later uses it: create it inside, use it from anywhere.
        ns.run(Netlink::connect)?
            .map_err(|e| e.context(format!("in netns {}", ns.path().display())))
    }

    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }
}

/// Runs `fut` to completion on a fresh current-thread runtime (no thread pool: a plugin
/// call lasts milliseconds). A plugin-side helper, hence a [`CniError`]: it starts a
/// runtime, it asks the kernel nothing.
pub fn block_on<F: std::future::Future>(fut: F) -> Result<F::Output, CniError> {
    // tokio panics when a runtime is started from within one: say so instead.
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(CniError::internal(
            "netlink::block_on called from inside a tokio runtime: await the future instead",
        ));
    }
    // Only the I/O driver: netlink needs no timers.
    let timing = crate::timing::phase("runtime.start");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| CniError::internal(format!("starting the tokio runtime: {e}")))?;
    drop(timing);
    Ok(rt.block_on(fut))
}

/// The errno of a netlink error reply (positive, e.g. `libc::EEXIST`), if it is one.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// The request `what` failed with `e`: a [`KernelError`] with its errno.
pub(crate) fn nl_err(what: impl Into<String>, e: rtnetlink::Error) -> KernelError {
    KernelError::netlink(what, e)
}

/// Sends one request flagged `NLM_F_ECHO` and waits for its ACK (or error); returns
/// the object the kernel echoed back (e.g. the link a `RTM_NEWLINK` created, with its
/// index and MAC), so no lookup has to follow. `None` when the kernel does not echo that
/// request (before Linux 6.3 for `RTM_NEWLINK`): the caller looks the object up.
pub(crate) async fn request_echo(
    handle: &rtnetlink::Handle,
    mut msg: netlink_packet_core::NetlinkMessage<netlink_packet_route::RouteNetlinkMessage>,
    flags: u16,
) -> Result<Option<netlink_packet_route::RouteNetlinkMessage>, rtnetlink::Error> {
    use futures::StreamExt;
    use netlink_packet_core::NetlinkPayload;
    msg.header.flags = flags | netlink_packet_core::NLM_F_ECHO;
    let mut handle = handle.clone();
    let mut resp = handle.request(msg)?;
    let mut echoed = None;
    while let Some(m) = resp.next().await {
        match m.payload {
            NetlinkPayload::Error(err) if err.code.is_some() => {
                return Err(rtnetlink::Error::NetlinkError(err));
            }
            NetlinkPayload::InnerMessage(inner) => echoed = Some(inner),
            _ => {}
        }
    }
    Ok(echoed)
}

/// Sends one request and waits for its ACK (or error).
pub(crate) async fn request_ack(
    handle: &rtnetlink::Handle,
    mut msg: netlink_packet_core::NetlinkMessage<netlink_packet_route::RouteNetlinkMessage>,
    flags: u16,
) -> Result<(), rtnetlink::Error> {
    use futures::StreamExt;
    msg.header.flags = flags;
    let mut handle = handle.clone();
    let mut resp = handle.request(msg)?;
    while let Some(m) = resp.next().await {
        if let netlink_packet_core::NetlinkPayload::Error(err) = m.payload {
            if err.code.is_some() {
                return Err(rtnetlink::Error::NetlinkError(err));
            }
        }
    }
    Ok(())
}
