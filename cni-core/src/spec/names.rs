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
        if is_id(s) {
            Ok(ContainerId(s.to_string()))
        } else {
            Err(CniError::invalid_env(format!(
                "invalid CNI_CONTAINERID \"{s}\": must match [A-Za-z0-9][A-Za-z0-9_.-]*"
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl IfName {
    /// Errors are `ErrorCode::InvalidEnv` (4).
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let bad = |why: &str| {
            Err(CniError::invalid_env(format!(
                "invalid CNI_IFNAME \"{s}\": {why}"
            )))
        };
        if s.is_empty() {
            return bad("empty");
        }
        // IFNAMSIZ is 16 including the terminating NUL.
        if s.len() > 15 {
            return bad("longer than 15 bytes");
        }
        if s == "." || s == ".." {
            return bad("\".\" and \"..\" are not interface names");
        }
        if s.chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
        {
            return bad("must not contain '/', ':' or whitespace");
        }
        Ok(IfName(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl NetworkName {
    /// Errors are `ErrorCode::InvalidConfig` (7).
    pub fn parse(s: &str) -> Result<Self, CniError> {
        if is_id(s) {
            Ok(NetworkName(s.to_string()))
        } else {
            Err(CniError::invalid_config(format!(
                "invalid network name \"{s}\": must match [A-Za-z0-9][A-Za-z0-9_.-]*"
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]*`, the spec's rule for container ids and network names.
fn is_id(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::error::ErrorCode;

    #[test]
    fn container_ids() {
        for ok in ["a", "0", "abc-123_x.y", "A.b-C_d", "3f2a9e0b1c"] {
            assert_eq!(ContainerId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "-a", "_a", ".a", "a b", "a/b", "a:b", "é", "a\n", "a;b"] {
            let e = ContainerId::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidEnv as u32, "{bad:?}");
            assert!(e.msg.contains("CNI_CONTAINERID"));
        }
    }

    #[test]
    fn if_names() {
        for ok in ["eth0", "a", "net1.100", "123456789012345", "veth-x_y", "é"] {
            assert_eq!(IfName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            ".",
            "..",
            "1234567890123456",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "eth0\n",
        ] {
            let e = IfName::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidEnv as u32, "{bad:?}");
            assert!(e.msg.contains("CNI_IFNAME"));
        }
        // 15 bytes but 8 chars: the limit is on bytes.
        assert!(IfName::parse("éééééééé").is_err());
        assert!(IfName::parse("...").is_ok());
    }

    #[test]
    fn network_names() {
        assert_eq!(
            NetworkName::parse("mynet-1.x_y").unwrap().to_string(),
            "mynet-1.x_y"
        );
        for bad in ["", "-net", "my net", "a/b"] {
            let e = NetworkName::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig as u32, "{bad:?}");
        }
    }

    #[test]
    fn serde_validates() {
        let id: ContainerId = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"abc\"");
        assert!(serde_json::from_str::<IfName>("\"a/b\"").is_err());
        assert!(serde_json::from_str::<NetworkName>("\"\"").is_err());
    }
}
