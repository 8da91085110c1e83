//! The CNI spec versions this runtime speaks, and what each one has (SPEC.md
//! §"Version"; CHECK came in 0.4.0, GC and STATUS in 1.1.0). Written here, not taken
//! from `cni-core`: the runtime is the other side of the plugins under test.

use std::fmt;

/// One spec version; ordered oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(usize);

/// Every released spec version, oldest first.
pub const VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

impl Version {
    /// Every version, oldest first.
    pub fn all() -> impl Iterator<Item = Version> {
        (0..VERSIONS.len()).map(Version)
    }

    /// The newest version (what VERSION is asked with).
    pub fn latest() -> Version {
        Version(VERSIONS.len() - 1)
    }

    /// One of [`VERSIONS`], exactly as written there.
    pub fn parse(s: &str) -> Option<Version> {
        VERSIONS.iter().position(|v| *v == s).map(Version)
    }

    pub fn as_str(self) -> &'static str {
        VERSIONS[self.0]
    }

    /// 0.1.0 and 0.2.0: results with `ip4`/`ip6` instead of `interfaces`/`ips`.
    pub fn is_legacy(self) -> bool {
        self < Version::v("0.3.0")
    }

    /// 0.3.0 to 0.4.0: `ips[]` entries carry `"version": "4" | "6"`.
    pub fn ips_have_version(self) -> bool {
        !self.is_legacy() && self < Version::v("1.0.0")
    }

    /// CHECK exists (0.4.0 and later).
    pub fn has_check(self) -> bool {
        self >= Version::v("0.4.0")
    }

    /// GC and STATUS exist (1.1.0 and later).
    pub fn has_gc_status(self) -> bool {
        self >= Version::v("1.1.0")
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(Version::latest)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_features() {
        let all: Vec<&str> = Version::all().map(Version::as_str).collect();
        assert_eq!(all, VERSIONS);
        assert!(Version::parse("0.3.1").unwrap() < Version::parse("0.4.0").unwrap());
        assert_eq!(Version::parse("1.2.0"), None);
        assert_eq!(Version::parse("1.0"), None);
        let has = |s: &str| {
            let v = Version::parse(s).unwrap();
            (
                v.is_legacy(),
                v.ips_have_version(),
                v.has_check(),
                v.has_gc_status(),
            )
        };
        assert_eq!(has("0.2.0"), (true, false, false, false));
        assert_eq!(has("0.3.1"), (false, true, false, false));
        assert_eq!(has("0.4.0"), (false, true, true, false));
        assert_eq!(has("1.0.0"), (false, false, true, false));
        assert_eq!(has("1.1.0"), (false, false, true, true));
    }
}
