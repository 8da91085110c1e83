//! VXLAN devices.
//!
//! SKELETON: filled in by the cni-core node-side work.

use std::net::IpAddr;

use super::{Link, MacAddr, Netlink};
use crate::spec::error::CniError;

/// A VXLAN device as the node side wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    /// UDP destination port (flannel's default 8472; IANA 4789).
    pub port: u16,
    /// Local underlay address (source of the encapsulated packets).
    pub local: IpAddr,
    /// Underlay interface index the encapsulated packets leave by.
    pub underlay: u32,
    pub mtu: u32,
    pub mac: MacAddr,
    // Learning is always off: every remote VTEP is programmed.
}

impl Netlink {
    /// Creates the device, or adopts an existing one: MTU, MAC and up-state are fixed in
    /// place; a device whose VNI, port, local address or underlay differ (or that is not
    /// VXLAN) is deleted and created again. Returns the link and whether it was
    /// (re)created.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<(Link, bool), CniError> {
        let _ = spec;
        Err(CniError::internal("ensure_vxlan: not implemented yet"))
    }
}
