//! Network configuration as a plugin receives it on stdin: the fields every plugin
//! shares. A plugin reads its own fields from [`NetConf::raw`] into its own typed struct
//! with [`super::fields::parse`].

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

use super::error::CniError;
use super::names::{ContainerId, IfName, NetworkName};
use super::result::{CniResult, Dns};
use super::version::Version;

/// The common part of a plugin's configuration, validated.
#[derive(Clone, Debug)]
pub struct NetConf {
    pub cni_version: Version,
    pub name: NetworkName,
    /// `type`: the plugin's binary name.
    pub plugin_type: String,
    /// The `ipam` section, if any; its own fields belong to the IPAM plugin.
    pub ipam: Option<IpamSection>,
    pub dns: Option<Dns>,
    /// `prevResult`, parsed in the shape of `cni_version`.
    pub prev_result: Option<CniResult>,
    pub runtime_config: RuntimeConfig,
    pub args: ConfArgs,
    pub capabilities: BTreeMap<String, bool>,
    /// GC: `cni.dev/valid-attachments` (or the older `cni.dev/attachments`).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// `logFile`: where the plugin logs (absent, empty or not a string: stderr).
    pub log_file: Option<String>,
    /// `logLevel` (absent or not a string: the default level).
    pub log_level: Option<String>,
    /// The whole configuration as received, unknown fields included.
    pub raw: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamSection {
    #[serde(rename = "type")]
    pub plugin_type: String,
}

/// `runtimeConfig`: capability arguments filled in by the runtime.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Requested addresses; entries may be written with or without a prefix length.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpOrNet>,
    /// `ipRanges`: range sets, same shape as host-local `ranges` (kept raw; IPAM parses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_ranges: Option<serde_json::Value>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `args` (CONVENTIONS.md): `args.cni.ips`, `args.cni.mac`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfArgs {
    #[serde(default)]
    pub cni: CniConfArgs,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CniConfArgs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpOrNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// An address as runtimes write it: `10.1.2.3` or `10.1.2.3/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpOrNet {
    pub ip: IpAddr,
    pub prefix: Option<u8>,
}

impl IpOrNet {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let bad = || CniError::invalid_config(format!("invalid IP address \"{s}\""));
        match s.split_once('/') {
            None => Ok(IpOrNet {
                ip: s.parse().map_err(|_| bad())?,
                prefix: None,
            }),
            Some((ip, prefix)) => {
                let ip: IpAddr = ip.parse().map_err(|_| bad())?;
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let prefix: u8 = prefix.parse().map_err(|_| bad())?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if prefix > max {
                    return Err(bad());
                }
                Ok(IpOrNet {
                    ip,
                    prefix: Some(prefix),
                })
            }
        }
    }
    pub fn to_network(self) -> Option<IpNetwork> {
        self.prefix.and_then(|p| IpNetwork::new(self.ip, p).ok())
    }
}

impl Serialize for IpOrNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.prefix {
            Some(p) => s.serialize_str(&format!("{}/{}", self.ip, p)),
            None => s.serialize_str(&self.ip.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for IpOrNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IpOrNet::parse(&s).map_err(|e| serde::de::Error::custom(e.msg))
    }
}

/// One (container id, interface) attachment, as GC lists them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: ContainerId,
    pub ifname: IfName,
}

impl NetConf {
    /// Parses stdin. Undecodable JSON is `ErrorCode::Decode` (6); a missing or invalid
    /// `name`/`type`/`cniVersion` is `InvalidConfig` (7); an unknown version is
    /// `IncompatibleVersion` (1). Messages name the offending field.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let raw: serde_json::Value = serde_json::from_slice(stdin)
            .map_err(|e| CniError::decode(format!("error parsing network configuration: {e}")))?;
        let obj = raw.as_object().ok_or_else(|| {
            CniError::decode("error parsing network configuration: not a JSON object")
        })?;

        let version = match field(obj, "cniVersion") {
            None => {
                return Err(CniError::invalid_config(
                    "missing cniVersion in network configuration",
                ))
            }
            Some(serde_json::Value::String(s)) => Version::parse(s)?,
            Some(v) => {
                return Err(CniError::invalid_config(format!(
                    "cniVersion: expected a string, got {v}"
                )))
            }
        };
        let name = match field(obj, "name") {
            None => {
                return Err(CniError::invalid_config(
                    "missing name in network configuration",
                ))
            }
            Some(serde_json::Value::String(s)) => NetworkName::parse(s)?,
            Some(v) => {
                return Err(CniError::invalid_config(format!(
                    "name: expected a string, got {v}"
                )))
            }
        };
        let plugin_type = match field(obj, "type") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(serde_json::Value::String(_)) | None => {
                return Err(CniError::invalid_config(
                    "missing type in network configuration",
                ))
            }
            Some(v) => {
                return Err(CniError::invalid_config(format!(
                    "type: expected a string, got {v}"
                )))
            }
        };

        // An `ipam` section without a type means "no IPAM", as the reference bridge
        // plugin reads `"ipam": {}`.
        let ipam = match section::<BTreeMap<String, serde_json::Value>>(obj, "ipam")? {
            None => None,
            Some(m) => match m.get("type") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(t)) if t.is_empty() => None,
                Some(serde_json::Value::String(t)) => Some(IpamSection {
                    plugin_type: t.clone(),
                }),
                Some(v) => {
                    return Err(CniError::invalid_config(format!(
                        "ipam.type: expected a string, got {v}"
                    )))
                }
            },
        };
        let dns = section::<Dns>(obj, "dns")?;
        let runtime_config = section::<RuntimeConfig>(obj, "runtimeConfig")?.unwrap_or_default();
        let args = section::<ConfArgs>(obj, "args")?.unwrap_or_default();
        let capabilities =
            section::<BTreeMap<String, bool>>(obj, "capabilities")?.unwrap_or_default();
        let valid_attachments = match section::<Vec<Attachment>>(obj, "cni.dev/valid-attachments")?
        {
            Some(a) => Some(a),
            None => section::<Vec<Attachment>>(obj, "cni.dev/attachments")?,
        };
        // Logging settings never fail a call: a value of another type is ignored.
        let log_str = |key: &str| field(obj, key).and_then(|v| v.as_str()).map(String::from);
        let log_file = log_str("logFile").filter(|f| !f.is_empty());
        let log_level = log_str("logLevel");
        let prev_result = field(obj, "prevResult")
            .map(|v| CniResult::from_json(v, version).map_err(|e| e.context("prevResult")))
            .transpose()?;

        Ok(NetConf {
            cni_version: version,
            name,
            plugin_type,
            ipam,
            dns,
            prev_result,
            runtime_config,
            args,
            capabilities,
            valid_attachments,
            log_file,
            log_level,
            raw,
        })
    }

    /// Addresses the runtime asked for: `runtimeConfig.ips`, then `args.cni.ips`
    /// (CONVENTIONS.md order), de-duplicated.
    pub fn requested_ips(&self) -> Vec<IpOrNet> {
        let mut out: Vec<IpOrNet> = Vec::new();
        for ip in self.runtime_config.ips.iter().chain(&self.args.cni.ips) {
            if !out.contains(ip) {
                out.push(*ip);
            }
        }
        out
    }

    /// MAC the runtime asked for: `runtimeConfig.mac`, then `args.cni.mac`.
    pub fn requested_mac(&self) -> Option<&str> {
        self.runtime_config
            .mac
            .as_deref()
            .filter(|m| !m.is_empty())
            .or(self.args.cni.mac.as_deref().filter(|m| !m.is_empty()))
    }
}

/// A top-level field, with `null` read as absent.
fn field<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Option<&'a serde_json::Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// Deserializes an optional section; `null` anywhere inside reads as absent (Go's
/// decoder does the same), so `"ips": null` is no error.
fn section<T: serde::de::DeserializeOwned>(
    obj: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<T>, CniError> {
    let Some(v) = field(obj, key) else {
        return Ok(None);
    };
    serde_json::from_value(strip_nulls(v.clone()))
        .map(Some)
        .map_err(|e| CniError::invalid_config(format!("{key}: {e}")))
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(strip_nulls).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::error::ErrorCode;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<NetConf, CniError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn minimal_config() {
        let c =
            parse(json!({"cniVersion": "1.0.0", "name": "net1", "type": "cni-bridge"})).unwrap();
        assert_eq!(c.cni_version, Version::V1_0_0);
        assert_eq!(c.name.as_str(), "net1");
        assert_eq!(c.plugin_type, "cni-bridge");
        assert!(c.ipam.is_none() && c.dns.is_none() && c.prev_result.is_none());
        assert!(c.valid_attachments.is_none());
        assert!(c.requested_ips().is_empty());
        assert_eq!(c.requested_mac(), None);
        assert_eq!(c.raw["type"], "cni-bridge");
    }

    #[test]
    fn full_config() {
        let c = parse(json!({
            "cniVersion": "1.1.0",
            "name": "net1",
            "type": "cni-bridge",
            "bridge": "br0",
            "ipam": {"type": "cni-ipam", "subnet": "10.1.0.0/16"},
            "dns": {"nameservers": ["10.1.0.10"]},
            "capabilities": {"ips": true, "mac": false},
            "runtimeConfig": {"ips": ["10.1.0.7/16", "fd00::7"], "mac": "0a:00:00:00:00:01", "portMappings": []},
            "args": {"cni": {"ips": ["10.1.0.7/16", "10.1.0.8"], "mac": "0a:00:00:00:00:02"}, "other": 1},
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
            "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.1.0.7/16"}]}
        }))
        .unwrap();
        assert_eq!(
            c.ipam,
            Some(IpamSection {
                plugin_type: "cni-ipam".into()
            })
        );
        assert_eq!(
            c.dns.as_ref().unwrap().nameservers,
            vec!["10.1.0.10".to_string()]
        );
        assert_eq!(c.capabilities.get("ips"), Some(&true));
        assert!(c.runtime_config.other.contains_key("portMappings"));
        assert_eq!(c.args.other.get("other"), Some(&json!(1)));
        let ips: Vec<String> = c
            .requested_ips()
            .iter()
            .map(|i| {
                serde_json::to_value(i)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ips, ["10.1.0.7/16", "fd00::7", "10.1.0.8"]);
        assert_eq!(c.requested_mac(), Some("0a:00:00:00:00:01"));
        let att = c.valid_attachments.as_ref().unwrap();
        assert_eq!(att[0].container_id.as_str(), "c1");
        assert_eq!(att[0].ifname.as_str(), "eth0");
        assert_eq!(
            c.prev_result.unwrap().ips[0].address.to_string(),
            "10.1.0.7/16"
        );
        assert_eq!(c.raw["bridge"], "br0");
    }

    #[test]
    fn older_attachment_key_and_args_mac() {
        let c = parse(json!({
            "cniVersion": "1.1.0", "name": "n", "type": "t",
            "cni.dev/attachments": [{"containerID": "c2", "ifname": "net1"}],
            "args": {"cni": {"mac": "0a:00:00:00:00:02"}}
        }))
        .unwrap();
        assert_eq!(
            c.valid_attachments.as_ref().unwrap()[0]
                .container_id
                .as_str(),
            "c2"
        );
        assert_eq!(c.requested_mac(), Some("0a:00:00:00:00:02"));
    }

    #[test]
    fn nulls_are_tolerated() {
        let c = parse(json!({
            "cniVersion": "0.4.0", "name": "n", "type": "t",
            "ipam": null, "dns": null, "prevResult": null, "capabilities": null,
            "runtimeConfig": {"ips": null, "mac": null},
            "args": {"cni": {"ips": null}},
            "cni.dev/valid-attachments": null
        }))
        .unwrap();
        assert!(c.ipam.is_none() && c.dns.is_none() && c.prev_result.is_none());
        assert!(c.valid_attachments.is_none());
        assert!(c.requested_ips().is_empty());
        // `"ipam": {}` means no IPAM.
        let c =
            parse(json!({"cniVersion": "0.4.0", "name": "n", "type": "t", "ipam": {}})).unwrap();
        assert!(c.ipam.is_none());
    }

    #[test]
    fn legacy_prev_result() {
        let c = parse(json!({
            "cniVersion": "0.2.0", "name": "n", "type": "t",
            "prevResult": {"ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1"}}
        }))
        .unwrap();
        let p = c.prev_result.unwrap();
        assert_eq!(p.ips[0].address.to_string(), "10.0.0.2/24");
        assert_eq!(p.ips[0].gateway.unwrap().to_string(), "10.0.0.1");
    }

    fn code(v: serde_json::Value) -> (u32, String) {
        let e = parse(v).unwrap_err();
        (e.code, e.msg)
    }

    #[test]
    fn errors() {
        for bad in [&b"{"[..], b"", b"not json", b"[1,2]", b"\"x\""] {
            assert_eq!(
                NetConf::parse(bad).unwrap_err().code,
                ErrorCode::Decode as u32
            );
        }
        let (c, m) = code(json!({"name": "n", "type": "t"}));
        assert_eq!(c, 7);
        assert!(m.contains("cniVersion"));
        let (c, m) = code(json!({"cniVersion": "1.0.0", "type": "t"}));
        assert_eq!(c, 7);
        assert!(m.contains("name"));
        let (c, m) = code(json!({"cniVersion": "1.0.0", "name": "n"}));
        assert_eq!(c, 7);
        assert!(m.contains("type"));
        let (c, m) = code(json!({"cniVersion": 1, "name": "n", "type": "t"}));
        assert_eq!(c, 7);
        assert!(m.contains("cniVersion"));
        assert_eq!(
            code(json!({"cniVersion": "1.0.0", "name": "-bad", "type": "t"})).0,
            7
        );
        assert_eq!(
            code(json!({"cniVersion": "1.0.0", "name": "n", "type": 3})).0,
            7
        );
        assert_eq!(
            code(json!({"cniVersion": "0.5.0", "name": "n", "type": "t"})).0,
            1
        );
        assert_eq!(
            code(json!({"cniVersion": "2.0.0", "name": "n", "type": "t"})).0,
            1
        );
        assert_eq!(
            code(json!({"cniVersion": "junk", "name": "n", "type": "t"})).0,
            7
        );
        let (c, m) = code(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "runtimeConfig": {"ips": ["x"]}}),
        );
        assert_eq!(c, 7);
        assert!(m.contains("runtimeConfig"));
        let (c, m) = code(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "capabilities": {"a": "yes"}}),
        );
        assert_eq!(c, 7);
        assert!(m.contains("capabilities"));
        let (c, m) = code(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "prevResult": {"ips": 1}}),
        );
        assert_eq!(c, 6);
        assert!(m.starts_with("prevResult: ips"), "{m}");
        let (c, _) = code(json!({"cniVersion": "1.1.0", "name": "n", "type": "t",
            "cni.dev/valid-attachments": [{"containerID": "-x", "ifname": "eth0"}]}));
        assert_eq!(c, 7);
    }

    #[test]
    fn empty_version_is_0_1_0() {
        let c = parse(json!({"cniVersion": "", "name": "n", "type": "t"})).unwrap();
        assert_eq!(c.cni_version, Version::V0_1_0);
    }

    #[test]
    fn log_settings() {
        let c = parse(json!({"cniVersion": "1.0.0", "name": "n", "type": "t",
            "logFile": "/tmp/x.log", "logLevel": "debug"}))
        .unwrap();
        assert_eq!(c.log_file.as_deref(), Some("/tmp/x.log"));
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        let c = parse(json!({"cniVersion": "1.0.0", "name": "n", "type": "t",
            "logFile": "", "logLevel": 3}))
        .unwrap();
        assert_eq!((c.log_file, c.log_level), (None, None));
    }

    #[test]
    fn ip_or_net() {
        let a = IpOrNet::parse("10.1.2.3").unwrap();
        assert_eq!((a.ip.to_string(), a.prefix), ("10.1.2.3".to_string(), None));
        assert_eq!(a.to_network(), None);
        let b = IpOrNet::parse("10.1.2.3/24").unwrap();
        assert_eq!(b.prefix, Some(24));
        assert_eq!(b.to_network().unwrap().to_string(), "10.1.2.3/24");
        assert_eq!(IpOrNet::parse("fd00::1/64").unwrap().prefix, Some(64));
        for bad in [
            "",
            "x",
            "10.1.2.3/",
            "10.1.2.3/33",
            "fd00::1/129",
            "10.1.2.3/x",
            "10.1.2/24",
            "10.1.2.3/+1",
        ] {
            assert_eq!(IpOrNet::parse(bad).unwrap_err().code, 7, "{bad}");
        }
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"10.1.2.3/24\"");
        assert_eq!(
            serde_json::from_str::<IpOrNet>("\"fd00::1\"")
                .unwrap()
                .ip
                .to_string(),
            "fd00::1"
        );
    }
}
