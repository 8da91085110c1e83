//! Routes.

use ipnetwork::IpNetwork;
use std::net::IpAddr;

use super::Netlink;
use crate::spec::error::CniError;

/// A route as we program and read it. `None` fields are left to the kernel on add and
/// ignored when matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: IpNetwork,
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
}

impl Netlink {
    /// Adds a route; an identical existing route is not an error.
    pub async fn add_route(&self, route: &RouteSpec) -> Result<(), CniError> {
        let _ = route;
        todo!()
    }

    /// Adds or replaces (NLM_F_REPLACE) a route.
    pub async fn replace_route(&self, route: &RouteSpec) -> Result<(), CniError> {
        let _ = route;
        todo!()
    }

    /// Deletes a route; already absent is not an error.
    pub async fn del_route(&self, route: &RouteSpec) -> Result<(), CniError> {
        let _ = route;
        todo!()
    }

    /// Routes of one family (`v6 == false` for IPv4) in `table` (`None` = main),
    /// unicast only.
    pub async fn routes(&self, v6: bool, table: Option<u32>) -> Result<Vec<RouteSpec>, CniError> {
        let _ = (v6, table);
        todo!()
    }
}
