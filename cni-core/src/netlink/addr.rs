//! Addresses.

use ipnetwork::IpNetwork;

use super::Netlink;
use crate::spec::error::CniError;

impl Netlink {
    /// Adds `addr` to link `index`; already present is not an error.
    pub async fn add_address(&self, index: u32, addr: IpNetwork) -> Result<(), CniError> {
        let _ = (index, addr);
        todo!()
    }

    /// Removes `addr` from link `index`; already absent is not an error.
    pub async fn del_address(&self, index: u32, addr: IpNetwork) -> Result<(), CniError> {
        let _ = (index, addr);
        todo!()
    }

    /// Addresses on link `index` (global and link scope, both families).
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNetwork>, CniError> {
        let _ = index;
        todo!()
    }
}
