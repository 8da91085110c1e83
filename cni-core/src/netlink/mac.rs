//! MAC addresses.

use std::fmt;
use std::str::FromStr;

use crate::spec::error::CniError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A random locally administered unicast address.
    pub fn random() -> MacAddr {
        let mut m: [u8; 6] = rand::random();
        // Clear the multicast bit, set the locally administered bit.
        m[0] = (m[0] & 0xfe) | 0x02;
        MacAddr(m)
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddr {
    type Err = CniError;
    /// `aa:bb:cc:dd:ee:ff` (case-insensitive); anything else is `InvalidConfig` (7).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            CniError::invalid_config(format!("invalid MAC address {s:?}: want aa:bb:cc:dd:ee:ff"))
        };
        let mut m = [0u8; 6];
        let mut parts = s.split(':');
        for b in m.iter_mut() {
            let part = parts.next().ok_or_else(bad)?;
            // from_str_radix alone would take "+a".
            if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *b = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(m))
    }
}

impl fmt::Display for MacAddr {
    /// Lower-case, colon-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl TryFrom<&[u8]> for MacAddr {
    type Error = CniError;
    fn try_from(b: &[u8]) -> Result<Self, Self::Error> {
        <[u8; 6]>::try_from(b).map(MacAddr).map_err(|_| {
            CniError::internal(format!(
                "hardware address of {} bytes is not a MAC",
                b.len()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::MacAddr;

    #[test]
    fn parse_and_print() {
        let m: MacAddr = "0A:bb:cc:dd:ee:0f".parse().unwrap();
        assert_eq!(m.to_string(), "0a:bb:cc:dd:ee:0f");
        for bad in [
            "",
            "0a:bb:cc:dd:ee",
            "0a:bb:cc:dd:ee:ff:00",
            "0a:bb:cc:dd:ee:f",
            "0a-bb-cc-dd-ee-ff",
            "+a:bb:cc:dd:ee:ff",
        ] {
            assert_eq!(bad.parse::<MacAddr>().unwrap_err().code, 7, "{bad}");
        }
    }

    #[test]
    fn random_is_local_unicast() {
        for _ in 0..64 {
            let m = MacAddr::random();
            assert_eq!(m.0[0] & 0x03, 0x02);
        }
    }
}
