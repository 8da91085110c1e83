//! Routes.

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_core::{
    NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteProtocol, RouteScope, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{errno, nl_err, request_ack, Netlink};
use crate::kernel_error::KernelError;

/// A route as we program and read it. `None` fields are left to the kernel on add and
/// ignored when matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: IpNetwork,
    /// The gateway. Of the other family than `dst` (an IPv4 route via an IPv6 gateway,
    /// `via inet6`, RFC 8950 / RFC 5549) it is sent and read as `RTA_VIA`, not
    /// `RTA_GATEWAY`.
    pub gw: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    pub src: Option<IpAddr>,
    /// `RT_SCOPE_*` value (0 universe, 253 link, 254 host).
    pub scope: Option<u8>,
    /// Routing table; `None` = main.
    pub table: Option<u32>,
    pub metric: Option<u32>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    /// `RTPROT_*`; ours use a protocol number of their own so they can be told apart.
    pub protocol: Option<u8>,
    /// `RTNH_F_ONLINK`.
    pub onlink: bool,
}

impl RouteSpec {
    pub fn new(dst: IpNetwork) -> Self {
        RouteSpec {
            dst,
            gw: None,
            oif: None,
            src: None,
            scope: None,
            table: None,
            metric: None,
            mtu: None,
            advmss: None,
            protocol: None,
            onlink: false,
        }
    }

    /// Whether `other` (read from the kernel) matches every field set in `self`.
    pub fn matches(&self, other: &RouteSpec) -> bool {
        fn eq<T: PartialEq>(want: &Option<T>, got: &Option<T>) -> bool {
            want.is_none() || want == got
        }
        self.dst == other.dst
            && eq(&self.gw, &other.gw)
            && eq(&self.oif, &other.oif)
            && eq(&self.src, &other.src)
            && eq(&self.scope, &other.scope)
            && self.table.unwrap_or(RT_TABLE_MAIN) == other.table.unwrap_or(RT_TABLE_MAIN)
            && eq(&self.metric, &other.metric)
            && eq(&self.mtu, &other.mtu)
            && eq(&self.advmss, &other.advmss)
            && eq(&self.protocol, &other.protocol)
    }
}

const RT_TABLE_MAIN: u32 = 254;
/// `RT_SCOPE_NOWHERE`: the kernel's wildcard scope for deletions.
const RT_SCOPE_NOWHERE: u8 = 255;
/// `RT_TABLE_COMPAT`: header value when the real table only fits in `RTA_TABLE`.
const RT_TABLE_COMPAT: u8 = 252;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Add,
    Del,
}

fn route_message(r: &RouteSpec, op: Op) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let h = &mut msg.header;
    h.address_family = if r.dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    h.destination_prefix_length = r.dst.prefix();
    let table = r.table.unwrap_or(RT_TABLE_MAIN);
    h.table = u8::try_from(table).unwrap_or(RT_TABLE_COMPAT);
    h.kind = if op == Op::Add {
        RouteType::Unicast
    } else {
        RouteType::Unspec
    };
    h.protocol = match (r.protocol, op) {
        (Some(p), _) => RouteProtocol::from(p),
        // What `ip route add` uses; a deletion leaves it unset to match any.
        (None, Op::Add) => RouteProtocol::Boot,
        (None, Op::Del) => RouteProtocol::Unspec,
    };
    h.scope = match (r.scope, op) {
        (Some(s), _) => RouteScope::from(s),
        // Like iproute2: a route without a gateway is on-link.
        (None, Op::Add) if r.gw.is_none() && r.dst.is_ipv4() => RouteScope::Link,
        (None, Op::Add) => RouteScope::Universe,
        (None, Op::Del) => RouteScope::from(RT_SCOPE_NOWHERE),
    };
    if r.onlink {
        h.flags |= RouteFlags::Onlink;
    }
    let a = &mut msg.attributes;
    a.push(RouteAttribute::Table(table));
    a.push(RouteAttribute::Destination(RouteAddress::from(
        r.dst.network(),
    )));
    match r.gw {
        Some(gw) if gw.is_ipv4() != r.dst.is_ipv4() => {
            a.push(RouteAttribute::Via(RouteVia::from(gw)));
        }
        Some(gw) => a.push(RouteAttribute::Gateway(RouteAddress::from(gw))),
        None => {}
    }
    if let Some(oif) = r.oif {
        a.push(RouteAttribute::Oif(oif));
    }
    if let Some(src) = r.src {
        a.push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    if let Some(m) = r.metric {
        a.push(RouteAttribute::Priority(m));
    }
    let mut metrics = Vec::new();
    if let Some(mtu) = r.mtu {
        metrics.push(RouteMetric::Mtu(mtu));
    }
    if let Some(advmss) = r.advmss {
        metrics.push(RouteMetric::Advmss(advmss));
    }
    if !metrics.is_empty() && op == Op::Add {
        a.push(RouteAttribute::Metrics(metrics));
    }
    msg
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// A route message (dump answer or notification) as a [`RouteSpec`] (`table` `None`:
/// main).
pub(crate) fn parse_route(msg: &RouteMessage) -> Option<RouteSpec> {
    let h: &RouteHeader = &msg.header;
    let v6 = h.address_family == AddressFamily::Inet6;
    let mut dst_ip: IpAddr = if v6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let mut r = RouteSpec::new(IpNetwork::new(dst_ip, 0).ok()?);
    let mut table = u32::from(h.table);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst_ip = ip_of(a)?,
            RouteAttribute::Gateway(a) => r.gw = ip_of(a),
            RouteAttribute::Via(RouteVia::Inet(a)) => r.gw = Some(IpAddr::V4(*a)),
            RouteAttribute::Via(RouteVia::Inet6(a)) => r.gw = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::PrefSource(a) => r.src = ip_of(a),
            RouteAttribute::Priority(p) => r.metric = Some(*p),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Metrics(ms) => {
                for m in ms {
                    match m {
                        RouteMetric::Mtu(v) => r.mtu = Some(*v),
                        RouteMetric::Advmss(v) => r.advmss = Some(*v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    r.dst = IpNetwork::new(dst_ip, h.destination_prefix_length).ok()?;
    r.table = (table != RT_TABLE_MAIN).then_some(table);
    r.scope = Some(u8::from(h.scope));
    r.protocol = Some(u8::from(h.protocol));
    r.onlink = h.flags.contains(RouteFlags::Onlink);
    Some(r)
}

impl Netlink {
    async fn send_route(
        &self,
        route: &RouteSpec,
        op: Op,
        flags: u16,
    ) -> Result<(), rtnetlink::Error> {
        let msg = route_message(route, op);
        let payload = match op {
            Op::Add => RouteNetlinkMessage::NewRoute(msg),
            Op::Del => RouteNetlinkMessage::DelRoute(msg),
        };
        request_ack(&self.handle, NetlinkMessage::from(payload), flags).await
    }

    /// Adds a route; an identical existing route is not an error.
    pub async fn add_route(&self, route: &RouteSpec) -> Result<(), KernelError> {
        let _timing = crate::timing::phase("route.add");
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        match self.send_route(route, Op::Add, flags).await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                // EEXIST only says "same destination": make sure it is our route.
                let existing = self.routes(!route.dst.is_ipv4(), route.table).await?;
                if existing.iter().any(|r| route.matches(r)) {
                    Ok(())
                } else {
                    Err(KernelError::other(
                        format!("adding route to {}", route.dst),
                        format!("a different route to {} exists", route.dst),
                    )
                    .with_errno(nix::errno::Errno::EEXIST))
                }
            }
            Err(e) => Err(nl_err(
                format!("adding route to {}", describe_route(route)),
                e,
            )),
        }
    }

    /// Adds or replaces (NLM_F_REPLACE) a route.
    pub async fn replace_route(&self, route: &RouteSpec) -> Result<(), KernelError> {
        let _timing = crate::timing::phase("route.add");
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        self.send_route(route, Op::Add, flags)
            .await
            .map_err(|e| nl_err(format!("replacing route to {}", describe_route(route)), e))
    }

    /// Deletes a route; already absent is not an error.
    pub async fn del_route(&self, route: &RouteSpec) -> Result<(), KernelError> {
        let _timing = crate::timing::phase("route.del");
        match self
            .send_route(route, Op::Del, NLM_F_REQUEST | NLM_F_ACK)
            .await
        {
            Ok(()) => Ok(()),
            // ENODEV: its output device is gone, and the route with it.
            Err(e) if matches!(errno(&e), Some(libc::ESRCH) | Some(libc::ENODEV)) => Ok(()),
            Err(e) => Err(nl_err(
                format!("deleting route to {}", describe_route(route)),
                e,
            )),
        }
    }

    /// Routes of one family (`v6 == false` for IPv4) in `table` (`None` = main),
    /// unicast only.
    pub async fn routes(
        &self,
        v6: bool,
        table: Option<u32>,
    ) -> Result<Vec<RouteSpec>, KernelError> {
        let _timing = crate::timing::phase("route.dump");
        let mut req = RouteMessage::default();
        req.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let want = table.unwrap_or(RT_TABLE_MAIN);
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(req)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(format!("listing routes of table {want}"), e))?;
        Ok(msgs
            .iter()
            .filter(|m| {
                m.header.kind == RouteType::Unicast && !m.header.flags.contains(RouteFlags::Cloned)
            })
            .filter_map(parse_route)
            .filter(|r| r.table.unwrap_or(RT_TABLE_MAIN) == want && r.dst.is_ipv4() != v6)
            .collect())
    }
}

fn describe_route(r: &RouteSpec) -> String {
    let mut s = r.dst.to_string();
    match r.gw {
        Some(gw) if gw.is_ipv6() && r.dst.is_ipv4() => s.push_str(&format!(" via inet6 {gw}")),
        Some(gw) => s.push_str(&format!(" via {gw}")),
        None => {}
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev #{oif}"));
    }
    if let Some(t) = r.table {
        s.push_str(&format!(" table {t}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 route via an IPv6 gateway goes out as RTA_VIA (the kernel refuses an IPv6
    /// RTA_GATEWAY in an IPv4 route) and is read back into the same spec.
    #[test]
    fn via_inet6_round_trips_through_rta_via() {
        let mut r = RouteSpec::new("10.244.1.0/26".parse().unwrap());
        r.gw = Some("fd00:89::2".parse().unwrap());
        r.protocol = Some(97);
        let msg = route_message(&r, Op::Add);
        assert!(msg
            .attributes
            .iter()
            .any(|a| *a == RouteAttribute::Via(RouteVia::Inet6("fd00:89::2".parse().unwrap()))));
        assert!(!msg
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_))));
        let back = parse_route(&msg).unwrap();
        assert!(r.matches(&back), "{back:?}");
        assert_eq!(describe_route(&r), "10.244.1.0/26 via inet6 fd00:89::2");
        // Same family: RTA_GATEWAY as before.
        r.gw = Some("192.0.2.2".parse().unwrap());
        let msg = route_message(&r, Op::Add);
        assert!(msg
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_))));
        assert_eq!(parse_route(&msg).unwrap().gw, r.gw);
    }
}
