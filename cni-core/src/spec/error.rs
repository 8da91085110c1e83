//! The CNI error object and the spec's well-known codes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Well-known error codes of the CNI spec (section "Error").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnv = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// STATUS: the plugin is not available.
    NotAvailable = 50,
    /// STATUS: not available, and existing containers may have limited connectivity.
    NotAvailableLimited = 51,
    /// Plugin-specific failures (netlink, store, ...) use codes >= 100.
    Internal = 999,
}

/// A CNI error object: what a plugin prints on stdout when it fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }
    pub fn with_details(mut self, details: impl fmt::Display) -> Self {
        self.details = details.to_string();
        self
    }
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidEnv, msg)
    }
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Decode, msg)
    }
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfig, msg)
    }
    pub fn incompatible_version(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::IncompatibleVersion, msg)
    }
    pub fn try_again(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::TryAgainLater, msg)
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Io, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, msg)
    }
    /// The error object as a plugin prints it, `cniVersion` included.
    pub fn to_json(&self, version: super::version::Version) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("cniVersion".into(), version.as_str().into());
        m.insert("code".into(), self.code.into());
        m.insert("msg".into(), self.msg.clone().into());
        if !self.details.is_empty() {
            m.insert("details".into(), self.details.clone().into());
        }
        serde_json::Value::Object(m)
    }
    /// Prefixes the message with context, keeping code and details.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::version::Version;

    #[test]
    fn error_object() {
        let e = CniError::invalid_config("bad").context("ipam");
        assert_eq!(e.code, 7);
        assert_eq!(e.to_string(), "ipam: bad (code 7)");
        assert_eq!(
            e.to_json(Version::V0_4_0),
            serde_json::json!({"cniVersion": "0.4.0", "code": 7, "msg": "ipam: bad"})
        );
        let e = CniError::internal("x").with_details("y");
        assert_eq!(e.to_json(Version::V1_1_0)["details"], "y");
        let back: CniError = serde_json::from_value(e.to_json(Version::V1_1_0)).unwrap();
        assert_eq!(back, e);
    }
}
