//! The plugins' own configuration fields, read the same way by every plugin.
//!
//! Each plugin declares a serde struct of its fields (`#[serde(rename_all =
//! "camelCase", default)]`: every field optional, unknown fields ignored as CNI
//! requires) and reads it once, at the edge, with [`parse`]. The field types here
//! validate as they are read ([`LinkName`], [`Mtu`], [`UnderlayFields`]); a plugin's own
//! rules attach the same way (`#[serde(deserialize_with = ...)]`). Every error is
//! `InvalidConfig` (7) and reads `<field>: <what is wrong and what to write instead>`.

use std::fmt;
use std::net::IpAddr;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::error::CniError;
use super::names::IfName;
use crate::netlink::UnderlaySelect;

/// Smallest MTU accepted (the IPv4 minimum).
pub const MIN_MTU: u32 = 68;
/// Largest MTU accepted.
pub const MAX_MTU: u32 = 65535;

/// Reads a plugin's fields `T` from the whole configuration `raw` (a JSON object).
/// `null` reads as absent (as Go's decoder reads it). `T` must default every field
/// (`#[serde(default)]`): the field at fault is found by reading each alone.
pub fn parse<T: DeserializeOwned>(raw: &Value) -> Result<T, CniError> {
    let obj = raw.as_object().ok_or_else(|| {
        CniError::invalid_config("the network configuration must be a JSON object")
    })?;
    let present: Map<String, Value> = obj
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::from_value(Value::Object(present.clone())).map_err(|whole| {
        // serde_json does not say which field it stopped at: on this error path only,
        // read each field alone to name it.
        let at_fault = present.into_iter().find_map(|(k, v)| {
            serde_json::from_value::<T>(Value::Object(Map::from_iter([(k.clone(), v)])))
                .err()
                .map(|e| (k, e))
        });
        match at_fault {
            Some((key, e)) => CniError::invalid_config(format!("{key}: {e}")),
            None => CniError::invalid_config(format!("invalid network configuration: {whole}")),
        }
    })
}

/// A link name (`bridge`, `device`, `underlayInterface`): a name Linux accepts, the rule
/// of [`IfName`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkName(String);

impl LinkName {
    /// `name` checked by the rule of [`IfName`]; the error says what to write.
    pub fn parse(name: &str) -> Result<LinkName, String> {
        match IfName::parse(name) {
            Ok(_) => Ok(LinkName(name.to_string())),
            Err(_) => Err(format!(
                "{name:?} is not a valid interface name: use 1 to 15 characters without \
                 '/', ':' or whitespace"
            )),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for LinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for LinkName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        LinkName::parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// The `mtu` field: absent or 0 is `None` (the plugin's default, e.g. the bridge's or
/// the underlay's MTU), else within [`MIN_MTU`]..=[`MAX_MTU`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mtu(pub Option<u32>);

impl<'de> Deserialize<'de> for Mtu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            0 => Ok(Mtu(None)),
            m if (MIN_MTU..=MAX_MTU).contains(&m) => Ok(Mtu(Some(m))),
            m => Err(D::Error::custom(format!(
                "{m} is out of range: use a value between {MIN_MTU} and {MAX_MTU}, or 0 / \
                 omit it for the default"
            ))),
        }
    }
}

/// `underlayInterface` or `underlayAddress` (at most one): where the underlay is found
/// (flatten it into a plugin's fields).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UnderlayFields {
    pub underlay_interface: Option<LinkName>,
    #[serde(deserialize_with = "underlay_address")]
    pub underlay_address: Option<IpAddr>,
}

impl UnderlayFields {
    /// The choice these fields make; both set is refused.
    pub fn select(&self) -> Result<UnderlaySelect, CniError> {
        match (&self.underlay_interface, self.underlay_address) {
            (Some(_), Some(_)) => Err(CniError::invalid_config(
                "underlayInterface and underlayAddress are both set: choose one",
            )),
            (Some(i), None) => Ok(UnderlaySelect::Interface(i.as_str().to_string())),
            (None, Some(a)) => Ok(UnderlaySelect::Address(a)),
            (None, None) => Ok(UnderlaySelect::DefaultRoute),
        }
    }
}

fn underlay_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let a = String::deserialize(d)?;
    a.trim().parse().map(Some).map_err(|_| {
        D::Error::custom(format!(
            "{a:?} is not an IP address: write one of this node's addresses, e.g. \
             \"192.0.2.10\""
        ))
    })
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

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct Fields {
        flag: bool,
        count: Option<u32>,
        device: Option<LinkName>,
        mtu: Mtu,
        #[serde(flatten)]
        underlay: UnderlayFields,
    }

    fn err(v: Value) -> CniError {
        parse::<Fields>(&v).unwrap_err()
    }

    #[test]
    fn typed_fields_name_the_field() {
        let f: Fields = parse(
            &json!({"flag": true, "count": null, "mtu": 1400, "other": "x",
            "device": "vx0"}),
        )
        .unwrap();
        assert!(f.flag);
        assert_eq!(f.count, None);
        assert_eq!(f.mtu, Mtu(Some(1400)));
        assert_eq!(f.device.unwrap().as_str(), "vx0");
        assert_eq!(f.underlay.select().unwrap(), UnderlaySelect::DefaultRoute);
        for (v, key) in [
            (json!({"flag": "yes"}), "flag: "),
            (json!({"count": -1}), "count: "),
            (json!({"ok": 1, "count": "many"}), "count: "),
            (json!({"underlayAddress": 7}), "underlayAddress: "),
        ] {
            let e = err(v.clone());
            assert_eq!(e.code, 7, "{v}");
            assert!(e.msg.starts_with(key), "{v}: {e}");
        }
        assert_eq!(parse::<Fields>(&json!([])).unwrap_err().code, 7);
    }

    #[test]
    fn link_names() {
        assert!(LinkName::parse("cni0").is_ok());
        for bad in ["", "a-name-longer-than-15", "a b", ".", "..", "a/b", "a:b"] {
            let e = err(json!({ "device": bad }));
            assert_eq!(e.code, 7);
            assert!(
                e.msg.starts_with("device: ") && e.msg.contains("not a valid interface name"),
                "{e}"
            );
        }
    }

    #[test]
    fn mtu_range() {
        let mtu = |v: Value| parse::<Fields>(&json!({ "mtu": v })).map(|f| f.mtu.0);
        assert_eq!(parse::<Fields>(&json!({})).unwrap().mtu, Mtu(None));
        assert_eq!(mtu(json!(0)).unwrap(), None);
        assert_eq!(mtu(json!(68)).unwrap(), Some(68));
        assert_eq!(mtu(json!(65535)).unwrap(), Some(65535));
        let e = mtu(json!(67)).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.starts_with("mtu: 67 is out of range"), "{e}");
        assert!(mtu(json!(65536)).is_err());
        assert!(mtu(json!("big")).unwrap_err().msg.starts_with("mtu: "));
    }

    #[test]
    fn underlay() {
        let sel = |v: Value| parse::<Fields>(&v).and_then(|f| f.underlay.select());
        assert_eq!(
            sel(json!({"underlayInterface": "eth1"})).unwrap(),
            UnderlaySelect::Interface("eth1".into())
        );
        assert_eq!(
            sel(json!({"underlayAddress": " fd00::2 "})).unwrap(),
            UnderlaySelect::Address("fd00::2".parse().unwrap())
        );
        for (v, word) in [
            (json!({"underlayInterface": "a b"}), "underlayInterface: "),
            (json!({"underlayAddress": "10.0.0"}), "underlayAddress: "),
            (
                json!({"underlayAddress": "10.0.0.1/24"}),
                "underlayAddress: ",
            ),
            (
                json!({"underlayInterface": "a", "underlayAddress": "192.0.2.1"}),
                "choose one",
            ),
        ] {
            let e = sel(v.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{v}");
            assert!(e.msg.contains(word), "{v}: {e}");
        }
    }

    #[test]
    fn ipam_types() {
        assert!(validate_ipam_type("host-local").is_ok());
        for bad in ["", "../x", ".", "..", "/bin/x"] {
            assert_eq!(validate_ipam_type(bad).unwrap_err().code, 7, "{bad}");
        }
    }
}
