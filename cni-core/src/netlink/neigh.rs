//! Neighbour entries (`ip neigh`) and the FDB of VXLAN devices (`bridge fdb ... self`).
//!
//! Both are RTM_NEWNEIGH / RTM_DELNEIGH messages: neighbours in the address's family,
//! FDB entries in AF_BRIDGE with NTF_SELF (the VXLAN device's own table, not a bridge
//! master's). Only permanent entries are ours: the kernel never ages them out, and a dump
//! tells them from the ones it learnt.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::neighbour_table::{
    NeighbourTableAttribute, NeighbourTableMessage, NeighbourTableParameter,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{errno, nl_err, request_ack, MacAddr, Netlink};
use crate::kernel_error::KernelError;

/// A permanent neighbour entry as read from the kernel.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighEntry {
    pub dev: u32,
    pub ip: IpAddr,
    pub mac: MacAddr,
}

/// A permanent FDB entry of a VXLAN device with a remote (`dst`), as read from the
/// kernel. One MAC may have several remotes: one entry each.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub dev: u32,
    pub mac: MacAddr,
    pub dst: IpAddr,
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn ip_of(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        NeighbourAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        // AF_BRIDGE messages carry NDA_DST as raw bytes: 4 or 16 of them.
        NeighbourAddress::Other(b) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

/// The NDA_DST and NDA_LLADDR of a dumped message (each `None` when absent or malformed).
fn dst_and_mac(m: &NeighbourMessage) -> (Option<IpAddr>, Option<MacAddr>) {
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(d) => ip = ip_of(d),
            NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::try_from(l.as_slice()).ok(),
            _ => {}
        }
    }
    (ip, mac)
}

/// A neighbour message for `ip` on `dev` (state permanent, no flags: what `ip neigh`
/// sends).
fn neigh_message(dev: u32, ip: IpAddr, mac: Option<MacAddr>) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family_of(ip);
    msg.header.ifindex = dev;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(ip)));
    if let Some(mac) = mac {
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    }
    msg
}

/// An FDB message `mac -> dst` on the VXLAN device `dev` (AF_BRIDGE, NTF_SELF, permanent).
fn fdb_message(dev: u32, mac: MacAddr, dst: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = dev;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(dst)));
    msg
}

/// `NUD_PERMANENT`. The state is a bit mask: `bridge fdb` sends NUD_NOARP|NUD_PERMANENT.
const NUD_PERMANENT: u16 = 0x80;

fn permanent(m: &NeighbourMessage) -> bool {
    u16::from(m.header.state) & NUD_PERMANENT != 0
}

/// An IPv4/IPv6 neighbour message (dump answer or notification): device, address, MAC
/// (absent e.g. in the FAILED state a deleted entry is reported in) and whether it is
/// permanent.
pub(crate) fn parse_neigh_any(
    m: &NeighbourMessage,
) -> Option<(u32, IpAddr, Option<MacAddr>, bool)> {
    if !matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6) {
        return None;
    }
    let (ip, mac) = dst_and_mac(m);
    Some((m.header.ifindex, ip?, mac, permanent(m)))
}

/// A permanent FDB entry with a remote (`self`, AF_BRIDGE) of a message.
pub(crate) fn parse_fdb(m: &NeighbourMessage) -> Option<FdbEntry> {
    if m.header.family != AddressFamily::Bridge
        || !permanent(m)
        || !m.header.flags.contains(NeighbourFlags::Own)
    {
        return None;
    }
    match dst_and_mac(m) {
        (Some(dst), Some(mac)) => Some(FdbEntry {
            dev: m.header.ifindex,
            mac,
            dst,
        }),
        _ => None,
    }
}

const REPLACE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
const DELETE: u16 = NLM_F_REQUEST | NLM_F_ACK;

/// Errnos that mean "the entry is not there" on deletion: ENOENT, or ENODEV when its
/// device is gone (and the entry with it).
fn already_gone(e: &rtnetlink::Error) -> bool {
    matches!(errno(e), Some(libc::ENOENT) | Some(libc::ENODEV))
}

impl Netlink {
    /// Sets the IPv4 neighbour parameter `proxy_delay` (`net.ipv4.neigh.<dev>.proxy_delay`,
    /// in milliseconds) of link `index`: `RTM_SETNEIGHTBL` on the `arp_cache` table with
    /// `NDTA_PARMS` for that device. A netlink request of the device's namespace, no
    /// `/proc/sys` path walk.
    pub async fn set_arp_proxy_delay(&self, index: u32, millis: u64) -> Result<(), KernelError> {
        let _timing = crate::timing::phase("neigh.proxy-delay");
        let mut msg = NeighbourTableMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.attributes = vec![
            NeighbourTableAttribute::Name("arp_cache".to_string()),
            NeighbourTableAttribute::Parms(vec![
                NeighbourTableParameter::Ifindex(index),
                NeighbourTableParameter::ProxyDelay(millis),
            ]),
        ];
        let req = NetlinkMessage::from(RouteNetlinkMessage::SetNeighbourTable(msg));
        match request_ack(&self.handle, req, NLM_F_REQUEST | NLM_F_ACK).await {
            Ok(()) => Ok(()),
            Err(e) => Err(nl_err(
                format!(
                    "setting IPv4 neighbour proxy_delay={millis} on link {}",
                    self.label(index).await
                ),
                e,
            )),
        }
    }

    /// Adds or replaces a permanent neighbour entry `ip -> mac` on `dev`.
    pub async fn replace_neigh(
        &self,
        dev: u32,
        ip: IpAddr,
        mac: MacAddr,
    ) -> Result<(), KernelError> {
        let msg = RouteNetlinkMessage::NewNeighbour(neigh_message(dev, ip, Some(mac)));
        request_ack(&self.handle, NetlinkMessage::from(msg), REPLACE)
            .await
            .map_err(|e| {
                nl_err(
                    format!("replacing neighbour {ip} lladdr {mac} on link #{dev}"),
                    e,
                )
            })
    }

    /// Deletes the neighbour entry for `ip` on `dev`; already absent is not an error.
    pub async fn del_neigh(&self, dev: u32, ip: IpAddr) -> Result<(), KernelError> {
        let msg = RouteNetlinkMessage::DelNeighbour(neigh_message(dev, ip, None));
        match request_ack(&self.handle, NetlinkMessage::from(msg), DELETE).await {
            Ok(()) => Ok(()),
            Err(e) if already_gone(&e) => Ok(()),
            Err(e) => Err(nl_err(format!("deleting neighbour {ip} on link #{dev}"), e)),
        }
    }

    /// Permanent neighbour entries on `dev`, IPv4 and IPv6.
    pub async fn neighs(&self, dev: u32) -> Result<Vec<NeighEntry>, KernelError> {
        let mut req = self.handle.neighbours().get();
        // AF_UNSPEC dumps ARP and NDISC alike; NDA_IFINDEX makes the kernel filter by
        // device (also without strict checking).
        req.message_mut()
            .attributes
            .push(NeighbourAttribute::IfIndex(dev));
        let msgs: Vec<NeighbourMessage> = req
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(format!("listing neighbours of link #{dev}"), e))?;
        Ok(msgs
            .iter()
            .filter(|m| {
                m.header.ifindex == dev
                    && permanent(m)
                    && matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6)
            })
            .filter_map(|m| match dst_and_mac(m) {
                (Some(ip), Some(mac)) => Some(NeighEntry { dev, ip, mac }),
                _ => None,
            })
            .collect())
    }

    /// Adds or replaces the permanent FDB entry `mac -> dst` on the VXLAN device `dev`:
    /// `bridge fdb replace MAC dev DEV dst DST self permanent`. The entry's (first)
    /// remote is replaced, so a changed `dst` leaves no stale remote behind.
    pub async fn replace_fdb(
        &self,
        dev: u32,
        mac: MacAddr,
        dst: IpAddr,
    ) -> Result<(), KernelError> {
        let msg = RouteNetlinkMessage::NewNeighbour(fdb_message(dev, mac, dst));
        request_ack(&self.handle, NetlinkMessage::from(msg), REPLACE)
            .await
            .map_err(|e| {
                nl_err(
                    format!("replacing FDB entry {mac} dst {dst} on link #{dev}"),
                    e,
                )
            })
    }

    /// Deletes the remote `dst` of `mac` on the VXLAN device `dev` (the entry goes with
    /// its last remote); already absent is not an error.
    pub async fn del_fdb(&self, dev: u32, mac: MacAddr, dst: IpAddr) -> Result<(), KernelError> {
        let msg = RouteNetlinkMessage::DelNeighbour(fdb_message(dev, mac, dst));
        match request_ack(&self.handle, NetlinkMessage::from(msg), DELETE).await {
            Ok(()) => Ok(()),
            Err(e) if already_gone(&e) => Ok(()),
            Err(e) => Err(nl_err(
                format!("deleting FDB entry {mac} dst {dst} on link #{dev}"),
                e,
            )),
        }
    }

    /// Permanent FDB entries of the VXLAN device `dev` that have a remote (`dst`): one
    /// per (MAC, remote).
    pub async fn fdbs(&self, dev: u32) -> Result<Vec<FdbEntry>, KernelError> {
        // Without strict checking the kernel ignores a device filter in an AF_BRIDGE
        // dump (it takes ndmsg for the legacy ifinfomsg): filter here.
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(format!("listing FDB entries of link #{dev}"), e))?;
        Ok(msgs
            .iter()
            .filter(|m| {
                m.header.ifindex == dev
                    && permanent(m)
                    && m.header.flags.contains(NeighbourFlags::Own)
            })
            .filter_map(|m| match dst_and_mac(m) {
                (Some(dst), Some(mac)) => Some(FdbEntry { dev, mac, dst }),
                _ => None,
            })
            .collect())
    }
}
