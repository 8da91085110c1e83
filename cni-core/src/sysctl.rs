//! sysctls through `/proc/sys`, in the calling thread's network namespace.

use crate::spec::error::CniError;

/// Sets `key` (dotted, e.g. `net.ipv4.ip_forward`, or an interface key such as
/// `net.ipv6.conf.eth0.accept_dad`) to `value`.
pub fn set(key: &str, value: &str) -> Result<(), CniError> {
    let _ = (key, value);
    todo!()
}

pub fn get(key: &str) -> Result<String, CniError> {
    let _ = key;
    todo!()
}
