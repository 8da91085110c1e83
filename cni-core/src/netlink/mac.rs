//! MAC addresses.

use std::fmt;
use std::str::FromStr;

use crate::spec::error::CniError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A random locally administered unicast address.
    pub fn random() -> MacAddr {
        todo!()
    }
}

impl FromStr for MacAddr {
    type Err = CniError;
    /// `aa:bb:cc:dd:ee:ff` (case-insensitive); anything else is `InvalidConfig` (7).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let _ = s;
        todo!()
    }
}

impl fmt::Display for MacAddr {
    /// Lower-case, colon-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}
