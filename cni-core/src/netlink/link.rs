//! Links: lookup, bridge, veth, up/MTU/MAC/master/hairpin/promisc, delete.

use super::{MacAddr, Netlink};
use crate::netns::NetNs;
use crate::spec::error::CniError;

/// What the kernel says about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    pub promisc: bool,
    /// Index of the master (bridge) if enslaved.
    pub master: Option<u32>,
    /// `IFLA_INFO_KIND`: "bridge", "veth", "vxlan", ...
    pub kind: Option<String>,
}

/// A bridge to create or adopt.
#[derive(Clone, Debug, Default)]
pub struct BridgeSpec {
    pub name: String,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub promisc: bool,
    pub vlan_filtering: bool,
}

impl Netlink {
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, CniError> {
        let _ = name;
        todo!()
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, CniError> {
        let _ = index;
        todo!()
    }

    /// Creates the bridge if missing (a concurrent creator winning the race is fine),
    /// refuses a same-named link of another kind, applies MTU/promisc/vlan filtering,
    /// and brings it up.
    pub async fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<Link, CniError> {
        let _ = spec;
        todo!()
    }

    /// Creates a veth pair `host_name` <-> `peer_name` whose peer is born inside
    /// `peer_ns` (never visible on the host under a name that could collide).
    /// Returns the host end. Neither end is brought up.
    pub async fn create_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_ns: &NetNs,
        mtu: Option<u32>,
        peer_mac: Option<MacAddr>,
    ) -> Result<Link, CniError> {
        let _ = (host_name, peer_name, peer_ns, mtu, peer_mac);
        todo!()
    }

    /// Deletes a link; a link that is already gone is not an error.
    pub async fn delete_link(&self, index: u32) -> Result<(), CniError> {
        let _ = index;
        todo!()
    }

    pub async fn set_up(&self, index: u32) -> Result<(), CniError> {
        let _ = index;
        todo!()
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), CniError> {
        let _ = (index, mtu);
        todo!()
    }

    pub async fn set_mac(&self, index: u32, mac: MacAddr) -> Result<(), CniError> {
        let _ = (index, mac);
        todo!()
    }

    pub async fn set_master(&self, index: u32, master: u32) -> Result<(), CniError> {
        let _ = (index, master);
        todo!()
    }

    pub async fn set_promisc(&self, index: u32, on: bool) -> Result<(), CniError> {
        let _ = (index, on);
        todo!()
    }

    /// Bridge port hairpin mode (`IFLA_BRPORT_MODE`) on an enslaved port.
    pub async fn set_hairpin(&self, port_index: u32, on: bool) -> Result<(), CniError> {
        let _ = (port_index, on);
        todo!()
    }

    /// Bridge port VLAN: `vid` as PVID and untagged on the port (bridge `vlan` option).
    pub async fn set_port_vlan(&self, port_index: u32, vid: u16) -> Result<(), CniError> {
        let _ = (port_index, vid);
        todo!()
    }
}
