//! Kernel notifications for the node side: the daemon hears at once when something it
//! owns is deleted or changed behind its back, instead of waiting for the periodic
//! resync.
//!
//! One netlink socket subscribed to the rtnetlink multicast groups of links, IPv4/IPv6
//! addresses, IPv4/IPv6 routes and neighbours (FDB entries are AF_BRIDGE neighbours).
//! Every notification is filtered down to what the daemon owns or depends on:
//! - routes with protocol [`RTPROT_IPAMD`] in the main table;
//! - permanent neighbour and FDB entries on the devices of the current [`Interest`];
//! - link and address changes of those devices and of the underlay interface.
//!
//! What passes is collected for [`DEBOUNCE`] after the first notification of a burst and
//! merged into one pending [`KernelChanges`] that the consumer takes whole: a storm
//! (also one that lasts while the consumer is busy repairing) costs one repair, not one
//! per message or per burst. Our own requests produce notifications too: the consumer
//! ([`super::Reconciler::repair`]) acts only where the kernel now differs from what is
//! wanted, so its own writes end the loop instead of feeding it.
//!
//! A receive buffer overrun (`ENOBUFS`: notifications were dropped by the kernel) is
//! reported as [`KernelChanges::overrun`]: the consumer then resyncs everything against a
//! dump.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::AsyncSocket;
use tokio::sync::{watch, Notify};

use super::{Object, ObjectKey, RTPROT_IPAMD};
use crate::kernel_error::{KernelError, Kind};
use crate::netlink::neigh::{parse_fdb, parse_neigh_any};
use crate::netlink::route::parse_route;

/// How long a burst of notifications is collected before it is handed over.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(30);

/// `RTMGRP_*` bits: link, neighbour, IPv4 address and route, IPv6 address and route.
const GROUPS: u32 = 0x1 | 0x4 | 0x10 | 0x40 | 0x100 | 0x400;

/// The receive buffer asked for (the kernel doubles it, capped by `rmem_max` unless
/// privileged): a burst of thousands of route changes fits.
const RCVBUF: usize = 4 << 20;

/// What the daemon watches besides its routes: its devices (their link, addresses and
/// permanent neighbour/FDB entries) and the underlay interface (link and addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    pub devices: Vec<u32>,
    pub underlay: Option<u32>,
}

/// One object as a notification reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The kernel deleted it.
    Gone(Object),
    /// The kernel added or changed it (this is its version now).
    Present(Object),
    /// Whatever version of this key the kernel had is gone or no longer ours (a
    /// neighbour deleted or turned non-permanent: the kernel reports it without MAC).
    Lost(ObjectKey),
}

impl Seen {
    pub fn key(&self) -> ObjectKey {
        match self {
            Seen::Gone(o) | Seen::Present(o) => o.key(),
            Seen::Lost(k) => *k,
        }
    }
}

/// A debounced batch of notifications, in the order they came.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelChanges {
    /// Routes (protocol 97, main table) and permanent neighbour/FDB entries on watched
    /// devices, added, changed or deleted.
    pub objects: Vec<Seen>,
    /// Watched devices that were deleted, changed, or gained or lost an address.
    pub devices: BTreeSet<u32>,
    /// The underlay's link (MAC, state) or addresses changed.
    pub underlay: bool,
    /// Notifications were lost (socket overrun): resync everything.
    pub overrun: bool,
}

impl KernelChanges {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.devices.is_empty() && !self.underlay && !self.overrun
    }

    /// Adds `more` (later) to these changes.
    pub fn merge(&mut self, more: KernelChanges) {
        self.objects.extend(more.objects);
        self.devices.extend(more.devices);
        self.underlay |= more.underlay;
        self.overrun |= more.overrun;
    }

    /// Adds what one notification says, if it concerns `interest`.
    fn absorb(&mut self, msg: &NetlinkMessage<RouteNetlinkMessage>, interest: &Interest) {
        let inner = match &msg.payload {
            NetlinkPayload::InnerMessage(m) => m,
            NetlinkPayload::Overrun(_) => {
                self.overrun = true;
                return;
            }
            _ => return,
        };
        let watched = |dev: u32| interest.devices.contains(&dev);
        match inner {
            RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m) => {
                let Some(r) = parse_route(m) else { return };
                if r.protocol != Some(RTPROT_IPAMD) || r.table.is_some() {
                    return;
                }
                let obj = Object::Route {
                    dst: r.dst,
                    gw: r.gw.unwrap_or_else(|| r.dst.ip()),
                    oif: r.oif,
                    onlink: r.onlink,
                };
                self.objects.push(match inner {
                    RouteNetlinkMessage::DelRoute(_) => Seen::Gone(obj),
                    _ => Seen::Present(obj),
                });
            }
            RouteNetlinkMessage::NewNeighbour(m) | RouteNetlinkMessage::DelNeighbour(m) => {
                if !watched(m.header.ifindex) {
                    return;
                }
                let del = matches!(inner, RouteNetlinkMessage::DelNeighbour(_));
                if let Some((dev, ip, mac, permanent)) = parse_neigh_any(m) {
                    self.objects.push(match (del, permanent, mac) {
                        (false, true, Some(mac)) => Seen::Present(Object::Neigh { dev, ip, mac }),
                        (false, true, None) => return,
                        _ => Seen::Lost(ObjectKey::Neigh(dev, ip)),
                    });
                    return;
                }
                let obj = if let Some(f) = parse_fdb(m) {
                    Object::Fdb {
                        dev: f.dev,
                        mac: f.mac,
                        dst: f.dst,
                    }
                } else {
                    return;
                };
                self.objects.push(match inner {
                    RouteNetlinkMessage::DelNeighbour(_) => Seen::Gone(obj),
                    _ => Seen::Present(obj),
                });
            }
            RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m) => {
                self.link(m, interest);
            }
            RouteNetlinkMessage::NewAddress(m) | RouteNetlinkMessage::DelAddress(m) => {
                self.address(m, interest);
            }
            _ => {}
        }
    }

    fn link(&mut self, m: &LinkMessage, interest: &Interest) {
        let index = m.header.index;
        if interest.devices.contains(&index) {
            self.devices.insert(index);
        }
        if interest.underlay == Some(index) {
            self.underlay = true;
        }
    }

    fn address(&mut self, m: &AddressMessage, interest: &Interest) {
        let index = m.header.index;
        if interest.devices.contains(&index) {
            self.devices.insert(index);
        }
        if interest.underlay == Some(index) {
            self.underlay = true;
        }
    }
}

/// What the reader hands over: the changes not taken yet, and whether it ended.
#[derive(Default)]
struct Pending {
    changes: KernelChanges,
    closed: bool,
}

/// Shared between the reader task and the [`KernelWatch`].
#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    ready: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A poisoned lock only means a panicking holder: the data is still sound.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The subscription: the [`KernelChanges`] for the current [`Interest`]. The reader task
/// ends when this is dropped.
pub struct KernelWatch {
    shared: Arc<Shared>,
    interest: watch::Sender<Interest>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for KernelWatch {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl KernelWatch {
    /// Subscribes in the calling thread's network namespace and spawns the reader on the
    /// current tokio runtime. It ends when the [`KernelWatch`] is dropped.
    pub fn start(interest: Interest) -> Result<KernelWatch, KernelError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(KernelError::other(
                "kernel watch",
                "not inside a tokio runtime",
            ));
        }
        let (mut conn, _handle, messages) = rtnetlink::new_connection()
            .map_err(|e| KernelError::io(Kind::Kernel, "opening a netlink socket", e))?;
        let sock = conn.socket_mut().socket_mut();
        // A smaller buffer only means an earlier overrun (then a full resync).
        let _ = sock.set_rx_buf_sz(RCVBUF);
        sock.bind(&netlink_sys::SocketAddr::new(0, GROUPS))
            .map_err(|e| {
                KernelError::io(
                    Kind::Kernel,
                    "subscribing to link/address/route/neighbour notifications",
                    e,
                )
            })?;
        tokio::spawn(conn);
        let shared = Arc::new(Shared::default());
        let (itx, irx) = watch::channel(interest);
        let reader = tokio::spawn(read_loop(messages, irx, shared.clone()));
        Ok(KernelWatch {
            shared,
            interest: itx,
            reader,
        })
    }

    /// Everything that changed since the last call (waits until something did); `None`
    /// when the socket closed (the caller should fall back on its periodic resync).
    /// Cancel-safe: nothing is taken until it returns.
    pub async fn next(&mut self) -> Option<KernelChanges> {
        loop {
            {
                let mut p = self.shared.lock();
                if !p.changes.is_empty() {
                    return Some(std::mem::take(&mut p.changes));
                }
                if p.closed {
                    return None;
                }
            }
            self.shared.ready.notified().await;
        }
    }

    /// Watches these devices and this underlay from now on (after a device was
    /// recreated, its index changed).
    pub fn set_interest(&self, interest: Interest) {
        self.interest.send_if_modified(|cur| {
            if *cur == interest {
                false
            } else {
                *cur = interest;
                true
            }
        });
    }
}

type Messages = futures::channel::mpsc::UnboundedReceiver<(
    NetlinkMessage<RouteNetlinkMessage>,
    netlink_sys::SocketAddr,
)>;

async fn read_loop(
    mut messages: Messages,
    interest: watch::Receiver<Interest>,
    shared: Arc<Shared>,
) {
    loop {
        let Some((first, _)) = messages.next().await else {
            tracing::warn!("kernel notifications: the netlink socket closed");
            shared.lock().closed = true;
            shared.ready.notify_one();
            return;
        };
        let mut batch = KernelChanges::default();
        batch.absorb(&first, &interest.borrow());
        if batch.is_empty() {
            continue;
        }
        // Collect the rest of the burst.
        let until = tokio::time::Instant::now() + DEBOUNCE;
        while let Ok(Some((m, _))) = tokio::time::timeout_at(until, messages.next()).await {
            batch.absorb(&m, &interest.borrow());
        }
        shared.lock().changes.merge(batch);
        // A stored permit when nobody waits: the next `next` returns at once.
        shared.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkHeader;

    fn overrun() -> NetlinkMessage<RouteNetlinkMessage> {
        NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::Overrun(Vec::new()),
        )
    }

    fn route_msg(proto: u8, del: bool) -> NetlinkMessage<RouteNetlinkMessage> {
        use netlink_packet_route::route::{
            RouteAddress, RouteAttribute, RouteMessage, RouteProtocol,
        };
        use netlink_packet_route::AddressFamily;
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = 26;
        m.header.table = 254;
        m.header.protocol = RouteProtocol::from(proto);
        m.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet("10.0.0.64".parse().unwrap())),
            RouteAttribute::Gateway(RouteAddress::Inet("10.0.0.65".parse().unwrap())),
            RouteAttribute::Oif(7),
        ];
        NetlinkMessage::from(if del {
            RouteNetlinkMessage::DelRoute(m)
        } else {
            RouteNetlinkMessage::NewRoute(m)
        })
    }

    #[test]
    fn only_our_routes_are_reported() {
        let interest = Interest::default();
        let mut b = KernelChanges::default();
        b.absorb(&route_msg(4, true), &interest);
        assert!(b.is_empty(), "a static route is not ours");
        b.absorb(&route_msg(RTPROT_IPAMD, true), &interest);
        b.absorb(&route_msg(RTPROT_IPAMD, false), &interest);
        let want = Object::Route {
            dst: "10.0.0.64/26".parse().unwrap(),
            gw: "10.0.0.65".parse().unwrap(),
            oif: Some(7),
            onlink: false,
        };
        assert_eq!(
            b.objects,
            vec![Seen::Gone(want.clone()), Seen::Present(want)]
        );
    }

    #[test]
    fn overrun_and_uninteresting_links() {
        let interest = Interest {
            devices: vec![7],
            underlay: Some(2),
        };
        let mut b = KernelChanges::default();
        b.absorb(&overrun(), &interest);
        assert!(b.overrun);
        let mut link = LinkMessage::default();
        link.header.index = 9;
        let msg = NetlinkMessage::from(RouteNetlinkMessage::DelLink(link.clone()));
        let mut b = KernelChanges::default();
        b.absorb(&msg, &interest);
        assert!(b.is_empty(), "a link we do not watch");
        link.header.index = 7;
        b.absorb(
            &NetlinkMessage::from(RouteNetlinkMessage::DelLink(link.clone())),
            &interest,
        );
        link.header.index = 2;
        b.absorb(
            &NetlinkMessage::from(RouteNetlinkMessage::NewLink(link)),
            &interest,
        );
        assert_eq!(b.devices, BTreeSet::from([7]));
        assert!(b.underlay);
    }
}
