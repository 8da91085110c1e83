//! CNI spec versions.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

use super::error::CniError;

/// A CNI spec version this suite speaks. Ordered oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    /// Every supported version, oldest first.
    pub const ALL: [Version; 7] = [
        Version::V0_1_0,
        Version::V0_2_0,
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];
    pub const LATEST: Version = Version::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// The versions as a comma-separated list, for error messages.
    pub fn list(versions: &[Version]) -> String {
        versions
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Parses a version string. An empty string means 0.1.0 (as libcni does).
    /// A well-formed but unknown version is `ErrorCode::IncompatibleVersion` (1);
    /// a malformed one is `ErrorCode::InvalidConfig` (7).
    pub fn parse(s: &str) -> Result<Version, CniError> {
        if s.is_empty() {
            return Ok(Version::V0_1_0);
        }
        if let Some(v) = Version::ALL.iter().find(|v| v.as_str() == s) {
            return Ok(*v);
        }
        // libcni accepts 1 to 3 numeric components ("1", "1.0", "1.0.0") as a version:
        // such a string is a version we do not speak, anything else is a config error.
        let parts: Vec<&str> = s.split('.').collect();
        let well_formed = parts.len() <= 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if well_formed {
            Err(CniError::incompatible_version(format!(
                "unsupported CNI version \"{s}\" (supported versions: {})",
                Version::list(&Version::ALL)
            )))
        } else {
            Err(CniError::invalid_config(format!(
                "invalid cniVersion \"{s}\": not a version"
            )))
        }
    }

    /// 0.1.0 and 0.2.0 results use the `ip4`/`ip6` shape.
    pub fn is_legacy_result(self) -> bool {
        self < Version::V0_3_0
    }
    /// CHECK exists from 0.4.0 on.
    pub fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }
    /// GC and STATUS exist from 1.1.0 on.
    pub fn has_gc_status(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).map_err(|e| serde::de::Error::custom(e.msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::error::ErrorCode;

    #[test]
    fn round_trips_every_version() {
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()), Ok(v));
            assert_eq!(v.to_string(), v.as_str());
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<Version>(&json).unwrap(), v);
        }
    }

    #[test]
    fn empty_is_0_1_0() {
        assert_eq!(Version::parse(""), Ok(Version::V0_1_0));
    }

    #[test]
    fn unknown_well_formed_is_incompatible() {
        for s in ["0.5.0", "2.0.0", "1.0", "1", "0.3.2", "10.20.30"] {
            let e = Version::parse(s).unwrap_err();
            assert_eq!(e.code, ErrorCode::IncompatibleVersion as u32, "{s}");
            assert!(e.msg.contains(s));
        }
    }

    #[test]
    fn garbage_is_invalid_config() {
        for s in [
            "abc",
            "1.0.0.0",
            "v1.0.0",
            "1..0",
            "1.0.0-rc1",
            " 1.0.0",
            "1.0.",
        ] {
            let e = Version::parse(s).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig as u32, "{s}");
        }
    }

    #[test]
    fn ordering_and_features() {
        assert!(Version::V0_1_0 < Version::V1_1_0);
        assert!(Version::V0_2_0.is_legacy_result());
        assert!(!Version::V0_3_0.is_legacy_result());
        assert!(!Version::V0_3_1.has_check());
        assert!(Version::V0_4_0.has_check());
        assert!(!Version::V1_0_0.has_gc_status());
        assert!(Version::V1_1_0.has_gc_status());
        assert_eq!(Version::LATEST, Version::V1_1_0);
    }
}
