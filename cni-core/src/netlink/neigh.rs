//! Neighbour and FDB entries (VXLAN).
//!
//! SKELETON: filled in by the cni-core node-side work.

use std::net::IpAddr;

use super::{MacAddr, Netlink};
use crate::spec::error::CniError;

impl Netlink {
    /// Adds or replaces a permanent neighbour entry `ip -> mac` on `dev`.
    pub async fn replace_neigh(&self, dev: u32, ip: IpAddr, mac: MacAddr) -> Result<(), CniError> {
        let _ = (dev, ip, mac);
        Err(CniError::internal("replace_neigh: not implemented yet"))
    }
}
