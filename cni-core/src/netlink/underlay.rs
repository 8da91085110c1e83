//! The underlay: the interface and address other nodes reach this one at, chosen like
//! flannel (a configured interface or address, else the interface of the default route).
//!
//! SKELETON: filled in by the routed-datapath work.

use ipnetwork::IpNetwork;
use std::net::IpAddr;

use super::Netlink;
use crate::spec::error::CniError;

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
}

impl Netlink {
    /// Finds the underlay. Errors say what to configure (code 7 when the configured
    /// interface or address does not exist; 11 when there is no default route yet).
    pub async fn underlay(&self, select: &UnderlaySelect) -> Result<Underlay, CniError> {
        let _ = select;
        Err(CniError::internal("Netlink::underlay: not implemented yet"))
    }
}
