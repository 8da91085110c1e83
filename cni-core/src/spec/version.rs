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
        todo!()
    }

    /// Parses a version string. An empty string means 0.1.0 (as libcni does).
    /// A well-formed but unknown version is `ErrorCode::IncompatibleVersion` (1);
    /// a malformed one is `ErrorCode::InvalidConfig` (7).
    pub fn parse(s: &str) -> Result<Version, CniError> {
        let _ = s;
        todo!()
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
