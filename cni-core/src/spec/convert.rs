//! Conversion between [`CniResult`] (1.1.0 shape) and every older result shape:
//! 0.1.0/0.2.0 (`ip4`/`ip6`), 0.3.x/0.4.0 (`version` per IP), 1.0.0 (no 1.1 fields).

use super::error::CniError;
use super::result::CniResult;
use super::version::Version;

pub(crate) fn to_json(result: &CniResult, version: Version) -> serde_json::Value {
    let _ = (result, version);
    todo!()
}

pub(crate) fn from_json(value: &serde_json::Value, version: Version) -> Result<CniResult, CniError> {
    let _ = (value, version);
    todo!()
}
