//! The plugins' own configuration fields, read from [`super::config::NetConf::raw`] the
//! same way by every plugin: one rule and one message for a wrong type, an interface
//! name, an MTU and an IPAM plugin name. Every error is `InvalidConfig` (7) naming the
//! field.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::CniError;
use super::names::IfName;

/// Smallest MTU accepted (the IPv4 minimum).
pub const MIN_MTU: u32 = 68;
/// Largest MTU accepted.
pub const MAX_MTU: u32 = 65535;

/// The configuration as a JSON object (anything else is refused).
pub fn object(raw: &Value) -> Result<&Map<String, Value>, CniError> {
    raw.as_object()
        .ok_or_else(|| CniError::invalid_config("the network configuration must be a JSON object"))
}

/// Field `key` of `raw` as a `T`; absent or `null` is `None`. A value of the wrong type
/// is refused, naming the field.
pub fn field<T: DeserializeOwned>(raw: &Value, key: &str) -> Result<Option<T>, CniError> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
            CniError::invalid_config(format!("field {key:?} has a wrong type ({e}): got {v}"))
        }),
    }
}

/// Boolean field `key`; absent or `null` is false.
pub fn flag(raw: &Value, key: &str) -> Result<bool, CniError> {
    field::<bool>(raw, key).map(|v| v.unwrap_or(false))
}

/// `name`, the value of field `key`, is a name Linux accepts for a link (the rule of
/// [`IfName`]).
pub fn validate_link_name(key: &str, name: &str) -> Result<(), CniError> {
    IfName::parse(name).map(|_| ()).map_err(|_| {
        CniError::invalid_config(format!(
            "{key} {name:?} is not a valid interface name: use 1 to 15 characters without \
             '/', ':' or whitespace"
        ))
    })
}

/// The `mtu` field's value checked: absent or 0 is `None` (the MTU follows `follows`,
/// e.g. "the bridge"), else within [`MIN_MTU`]..=[`MAX_MTU`].
pub fn mtu(value: Option<u32>, follows: &str) -> Result<Option<u32>, CniError> {
    match value {
        None | Some(0) => Ok(None),
        Some(m) if (MIN_MTU..=MAX_MTU).contains(&m) => Ok(Some(m)),
        Some(m) => Err(CniError::invalid_config(format!(
            "mtu {m} is out of range: use a value between {MIN_MTU} and {MAX_MTU}, or omit \
             it to follow {follows}"
        ))),
    }
}

/// `ipam.type` names a binary to look up in `CNI_PATH`: not empty, no path.
pub fn validate_ipam_type(t: &str) -> Result<(), CniError> {
    if t.is_empty() || t.contains('/') || t == "." || t == ".." {
        return Err(CniError::invalid_config(format!(
            "ipam.type {t:?} is invalid: name an IPAM plugin binary in CNI_PATH (e.g. \
             \"host-local\" or \"cni-ipam\")"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_fields_name_the_field() {
        let raw = json!({"a": true, "n": null, "m": 1400, "s": "x"});
        assert_eq!(field::<bool>(&raw, "a").unwrap(), Some(true));
        assert_eq!(field::<u32>(&raw, "n").unwrap(), None);
        assert_eq!(field::<u32>(&raw, "absent").unwrap(), None);
        assert!(!flag(&raw, "absent").unwrap());
        let e = field::<u32>(&raw, "s").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("\"s\""), "{e}");
        assert_eq!(object(&json!([])).unwrap_err().code, 7);
    }

    #[test]
    fn link_names() {
        assert!(validate_link_name("bridge", "cni0").is_ok());
        for bad in ["", "a-name-longer-than-15", "a b", ".", "..", "a/b", "a:b"] {
            let e = validate_link_name("device", bad).unwrap_err();
            assert_eq!(e.code, 7);
            assert!(e.msg.starts_with("device "), "{e}");
        }
    }

    #[test]
    fn mtu_range() {
        assert_eq!(mtu(None, "the bridge").unwrap(), None);
        assert_eq!(mtu(Some(0), "the bridge").unwrap(), None);
        assert_eq!(mtu(Some(68), "the bridge").unwrap(), Some(68));
        assert_eq!(mtu(Some(65535), "the bridge").unwrap(), Some(65535));
        let e = mtu(Some(67), "the underlay").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("follow the underlay"), "{e}");
        assert!(mtu(Some(65536), "the bridge").is_err());
    }

    #[test]
    fn ipam_types() {
        assert!(validate_ipam_type("host-local").is_ok());
        for bad in ["", "../x", ".", "..", "/bin/x"] {
            assert_eq!(validate_ipam_type(bad).unwrap_err().code, 7, "{bad}");
        }
    }
}
