//! A cluster pool: one or more CIDRs (at most one per family is typical) cut into
//! blocks of a fixed size.

use ipnetwork::IpNetwork;

use crate::error::IpamError;

pub const DEFAULT_BLOCK_V4: u8 = 26;
pub const DEFAULT_BLOCK_V6: u8 = 122;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    cidrs: Vec<IpNetwork>,
    block_v4: u8,
    block_v6: u8,
}

impl Pool {
    /// Validates that every block size fits its family's CIDRs and that CIDRs do not
    /// overlap. Errors are `IpamError::Config` naming the field.
    pub fn new(
        cidrs: Vec<IpNetwork>,
        block_v4: Option<u8>,
        block_v6: Option<u8>,
    ) -> Result<Pool, IpamError> {
        let _ = (cidrs, block_v4, block_v6);
        todo!()
    }

    pub fn cidrs(&self) -> &[IpNetwork] {
        &self.cidrs
    }

    pub fn block_prefix(&self, v6: bool) -> u8 {
        if v6 {
            self.block_v6
        } else {
            self.block_v4
        }
    }

    /// Every block of the family, in address order.
    pub fn blocks(&self, v6: bool) -> Box<dyn Iterator<Item = IpNetwork> + '_> {
        let _ = v6;
        todo!()
    }

    /// Whether `net` lies inside the pool.
    pub fn contains(&self, net: IpNetwork) -> bool {
        let _ = net;
        todo!()
    }
}
