//! Validated identifiers: container id, interface name, network name.
//! Each is checked once, where it enters (env or config), so the rest of the code
//! can rely on it.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

use super::error::CniError;

/// `CNI_CONTAINERID`: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ContainerId(String);

/// `CNI_IFNAME`: a name Linux accepts (1..=15 bytes, not `.`/`..`, no `/`, `:` or whitespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct IfName(String);

/// Network `name`: `[A-Za-z0-9][A-Za-z0-9_.-]*` (the spec's rule for network names).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct NetworkName(String);

impl ContainerId {
    /// Errors are `ErrorCode::InvalidEnv` (4), naming the variable and the rule.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let _ = s;
        todo!()
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl IfName {
    /// Errors are `ErrorCode::InvalidEnv` (4).
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let _ = s;
        todo!()
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl NetworkName {
    /// Errors are `ErrorCode::InvalidConfig` (7).
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let _ = s;
        todo!()
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! name_impls {
    ($($t:ident),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $t::parse(&s).map_err(|e| serde::de::Error::custom(e.msg))
            }
        }
    )*};
}
name_impls!(ContainerId, IfName, NetworkName);
