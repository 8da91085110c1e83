//! MAC addresses.

use std::fmt;
use std::str::FromStr;

use crate::spec::error::CniError;

/// `N` random bytes from one getrandom(2) call (the kernel's CSPRNG), for names and MACs
/// that must not collide. Not `rand::random`: its thread-local generator seeds itself
/// and detects CPU features (a CPUID each, ~5 us in a VM) on first use, more than the
/// whole draw costs here. Should the call fail (it cannot on Linux >= 3.17 once the pool
/// is initialised), the bytes come from the clock, the pid and a counter: unique enough
/// for a name that is checked by its create anyway.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr().cast::<libc::c_void>(),
                N - filled,
                0,
            )
        };
        match n {
            n if n > 0 => filled += n as usize,
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => return fallback_bytes(),
        }
    }
    buf
}

/// The fallback of [`random_bytes`]: a stable hash of the time, the pid and a counter.
fn fallback_bytes<const N: usize>() -> [u8; N] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut buf = [0u8; N];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
        .to_string();
    let pid = std::process::id().to_string();
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed).to_string();
        let h = crate::hash::stable_hash(&[&now, &pid, &n, &i.to_string()]).to_be_bytes();
        chunk.copy_from_slice(&h[..chunk.len()]);
    }
    buf
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A random locally administered unicast address.
    pub fn random() -> MacAddr {
        let mut m: [u8; 6] = random_bytes();
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
    fn random_bytes_differ() {
        let a: [u8; 16] = super::random_bytes();
        let b: [u8; 16] = super::random_bytes();
        assert_ne!(a, b);
        let c: [u8; 16] = super::fallback_bytes();
        let d: [u8; 16] = super::fallback_bytes();
        assert_ne!(c, d);
    }

    #[test]
    fn random_is_local_unicast() {
        for _ in 0..64 {
            let m = MacAddr::random();
            assert_eq!(m.0[0] & 0x03, 0x02);
        }
    }
}
