//! Network configuration as a plugin receives it on stdin: the fields every plugin
//! shares. A plugin parses its own fields from [`NetConf::raw`] into its own typed struct.

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
        let _ = s;
        todo!()
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
        let _ = stdin;
        todo!()
    }

    /// Addresses the runtime asked for: `runtimeConfig.ips`, then `args.cni.ips`
    /// (CONVENTIONS.md order), de-duplicated.
    pub fn requested_ips(&self) -> Vec<IpOrNet> {
        todo!()
    }

    /// MAC the runtime asked for: `runtimeConfig.mac`, then `args.cni.mac`.
    pub fn requested_mac(&self) -> Option<&str> {
        todo!()
    }

    /// Deserializes the plugin-specific fields from [`NetConf::raw`] into `T`.
    /// Type errors are `InvalidConfig` (7) with serde's message (field and position).
    pub fn plugin_config<T: serde::de::DeserializeOwned>(&self) -> Result<T, CniError> {
        todo!()
    }
}
