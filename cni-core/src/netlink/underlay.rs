//! The underlay: the interface and address other nodes reach this one at, chosen like
//! flannel (a configured interface or address, else the interface of the default route).

use ipnetwork::IpNetwork;
use std::net::IpAddr;

use super::{Link, Netlink, RouteSpec};
use crate::kernel_error::KernelError;

/// How the underlay is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnderlaySelect {
    /// This interface (its first global address of the wanted family).
    Interface(String),
    /// The interface holding this address.
    Address(IpAddr),
    /// The interface of the default route (IPv4 first, then IPv6).
    DefaultRoute,
}

/// The chosen underlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Underlay {
    pub index: u32,
    pub name: String,
    /// The address other nodes reach this node at.
    pub addr: IpAddr,
    /// Every address of the interface with its prefix: the directly connected subnets.
    pub networks: Vec<IpNetwork>,
    pub mtu: u32,
}

impl Underlay {
    /// Whether `ip` is on a directly connected subnet of the underlay interface.
    pub fn on_link(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// This node's underlay address of the family of `v6`: [`Underlay::addr`] when of
    /// that family, else the interface's first global address of it.
    pub fn addr_of(&self, v6: bool) -> Option<IpAddr> {
        if self.addr.is_ipv6() == v6 {
            return Some(self.addr);
        }
        self.networks
            .iter()
            .map(|n| n.ip())
            .find(|ip| ip.is_ipv6() == v6 && is_global(*ip))
    }
}

/// The operation named in the underlay's errors.
const OP: &str = "choosing the underlay";

impl Netlink {
    /// Finds the underlay. Errors say what to configure ([`crate::KernelErrorKind::Invalid`]
    /// when the configured interface or address does not exist, `NotReady` when there is
    /// no default route or no address yet).
    pub async fn underlay(&self, select: &UnderlaySelect) -> Result<Underlay, KernelError> {
        match select {
            UnderlaySelect::Interface(name) => {
                let link = self.underlay_interface(name).await?;
                let networks = self.addresses(link.index).await?;
                // An interface still waiting for its address (DHCP) is worth a retry.
                let addr = pick_address(&networks, false).ok_or_else(|| {
                    KernelError::not_ready(
                        OP,
                        format!(
                            "underlayInterface {name} has no global address yet: give it one, \
                         or choose another interface"
                        ),
                    )
                })?;
                Ok(underlay_of(link, addr, networks))
            }
            UnderlaySelect::Address(ip) => {
                let (link, networks) = self.underlay_by_address(*ip).await?;
                Ok(underlay_of(link, *ip, networks))
            }
            UnderlaySelect::DefaultRoute => {
                let (link, src, v6) = self.default_route_link().await?;
                let networks = self.addresses(link.index).await?;
                let addr = src
                    .filter(|s| networks.iter().any(|n| n.ip() == *s))
                    .or_else(|| pick_address(&networks, v6))
                    .ok_or_else(|| {
                        KernelError::not_ready(
                            OP,
                            format!(
                                "{}, the default route's interface, has no global address: \
                             give it one, or configure underlayInterface",
                                link.name
                            ),
                        )
                    })?;
                Ok(underlay_of(link, addr, networks))
            }
        }
    }
}

impl Netlink {
    /// The underlay's link alone (its MTU, name and index), as [`Netlink::underlay`]
    /// chooses it but without reading its addresses where the choice does not need them
    /// (`Interface`, `DefaultRoute`): what a pod's MTU is computed from. Errors as
    /// [`Netlink::underlay`]'s, but for the underlay having no global address yet, which
    /// does not matter to an MTU.
    pub async fn underlay_link(&self, select: &UnderlaySelect) -> Result<Link, KernelError> {
        match select {
            UnderlaySelect::Interface(name) => self.underlay_interface(name).await,
            UnderlaySelect::DefaultRoute => Ok(self.default_route_link().await?.0),
            UnderlaySelect::Address(ip) => Ok(self.underlay_by_address(*ip).await?.0),
        }
    }

    /// The interface holding the configured `underlayAddress`, with its addresses.
    async fn underlay_by_address(&self, ip: IpAddr) -> Result<(Link, Vec<IpNetwork>), KernelError> {
        for link in self.links().await? {
            let networks = self.addresses(link.index).await?;
            if networks.iter().any(|n| n.ip() == ip) {
                return Ok((link, networks));
            }
        }
        Err(KernelError::invalid(
            OP,
            format!(
                "underlayAddress {ip} is not an address of any interface of this node: \
                 set underlayAddress to one of this node's addresses, or remove it to \
                 use the default route's interface"
            ),
        ))
    }

    /// The configured `underlayInterface`.
    async fn underlay_interface(&self, name: &str) -> Result<Link, KernelError> {
        self.link_by_name(name).await?.ok_or_else(|| {
            KernelError::invalid(
                OP,
                format!(
                    "underlayInterface {name:?} does not exist on this node: set \
                     underlayInterface to an existing interface, or remove it to use \
                     the default route's"
                ),
            )
        })
    }

    /// The interface of the main table's default route with the lowest metric (IPv4
    /// first, then IPv6), with the route's preferred source and whether it is IPv6.
    /// A dump of the family's routes: no targeted request answers "the default route of
    /// the main table" (a route lookup answers for a destination, through the policy
    /// rules).
    async fn default_route_link(&self) -> Result<(Link, Option<IpAddr>, bool), KernelError> {
        let mut found = None;
        for v6 in [false, true] {
            if let Some(r) = pick_default_route(&self.routes(v6, None).await?) {
                found = Some((r.oif, r.src, v6));
                break;
            }
        }
        let Some((Some(oif), src, v6)) = found else {
            return Err(KernelError::not_ready(
                OP,
                "no default route with an output interface in the main table to \
                 choose the underlay from: configure underlayInterface (or \
                 underlayAddress), or add a default route",
            ));
        };
        let link = self.link_by_index(oif).await?.ok_or_else(|| {
            KernelError::not_ready(
                OP,
                format!(
                    "the default route's interface #{oif} vanished: retry, or configure \
                     underlayInterface"
                ),
            )
        })?;
        Ok((link, src, v6))
    }

    /// The underlay `old` as it is now: the same interface (by index), its current
    /// addresses and MTU; the address is `old`'s while the interface still holds it, else
    /// its first global address of the same family (then of any). `None` when the
    /// interface is gone or holds no global address (nothing to move to yet).
    pub async fn underlay_now(&self, old: &Underlay) -> Result<Option<Underlay>, KernelError> {
        let Some(link) = self.link_by_index(old.index).await? else {
            return Ok(None);
        };
        let networks = self.addresses(link.index).await?;
        let addr = if networks.iter().any(|n| n.ip() == old.addr) {
            Some(old.addr)
        } else {
            pick_address(&networks, old.addr.is_ipv6())
        };
        Ok(addr.map(|a| underlay_of(link, a, networks)))
    }
}

fn underlay_of(link: Link, addr: IpAddr, networks: Vec<IpNetwork>) -> Underlay {
    Underlay {
        index: link.index,
        name: link.name,
        addr,
        networks,
        mtu: link.mtu,
    }
}

/// Link-local addresses only reach the segment: never an underlay address.
fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_loopback() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) != 0xfe80 && !v6.is_loopback() && !v6.is_unspecified()
        }
    }
}

/// The first global address, of the preferred family if there is one.
fn pick_address(networks: &[IpNetwork], prefer_v6: bool) -> Option<IpAddr> {
    let global = || networks.iter().map(|n| n.ip()).filter(|ip| is_global(*ip));
    global()
        .find(|ip| ip.is_ipv6() == prefer_v6)
        .or_else(|| global().next())
}

/// The default route with the lowest metric that names an output interface (a
/// multipath route has none at the top level).
fn pick_default_route(routes: &[RouteSpec]) -> Option<&RouteSpec> {
    routes
        .iter()
        .filter(|r| r.dst.prefix() == 0 && r.oif.is_some())
        .min_by_key(|r| r.metric.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNetwork> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn address_prefers_v4_and_skips_link_local() {
        let n = nets(&["fe80::1/64", "fd00::2/64", "169.254.3.4/16", "192.0.2.2/24"]);
        assert_eq!(pick_address(&n, false), Some("192.0.2.2".parse().unwrap()));
        assert_eq!(pick_address(&n, true), Some("fd00::2".parse().unwrap()));
        assert_eq!(
            pick_address(&nets(&["fd00::2/64"]), false),
            Some("fd00::2".parse().unwrap())
        );
        assert_eq!(pick_address(&nets(&["fe80::1/64"]), false), None);
    }

    #[test]
    fn default_route_lowest_metric_with_oif() {
        let mut a = RouteSpec::new("0.0.0.0/0".parse().unwrap());
        a.oif = Some(3);
        a.metric = Some(100);
        let mut b = a.clone();
        b.oif = Some(4);
        b.metric = Some(50);
        let mut multipath = a.clone();
        multipath.oif = None;
        multipath.metric = Some(1);
        let mut other = a.clone();
        other.dst = "10.0.0.0/8".parse().unwrap();
        other.metric = None;
        let routes = [a, multipath, b, other];
        assert_eq!(pick_default_route(&routes).and_then(|r| r.oif), Some(4));
        assert!(pick_default_route(&routes[3..]).is_none());
    }

    #[test]
    fn on_link() {
        let u = Underlay {
            index: 2,
            name: "eth0".into(),
            addr: "192.0.2.2".parse().unwrap(),
            networks: nets(&["192.0.2.2/24", "fd00::2/64"]),
            mtu: 1500,
        };
        assert!(u.on_link("192.0.2.77".parse().unwrap()));
        assert!(u.on_link("fd00::9".parse().unwrap()));
        assert!(!u.on_link("198.51.100.1".parse().unwrap()));
    }
}
