//! Config builders: a bridge-type plugin (`cni-bridge`, or the reference `bridge`) with
//! a host-local-compatible IPAM section (`cni-ipam`, or the reference `host-local`).

use std::path::PathBuf;

use serde_json::{json, Map, Value};

/// The IPAM section: host-local's format, which `cni-ipam` accepts as a drop-in.
#[derive(Clone, Debug)]
pub struct IpamConf {
    /// `cni-ipam` or `host-local`.
    pub plugin: String,
    /// e.g. `10.213.7.0/24`.
    pub subnet: String,
    pub range_start: Option<String>,
    pub range_end: Option<String>,
    pub gateway: Option<String>,
    /// Route destinations (`0.0.0.0/0`, ...).
    pub routes: Vec<String>,
    pub data_dir: PathBuf,
}

impl IpamConf {
    pub fn new(plugin: &str, subnet: &str, data_dir: impl Into<PathBuf>) -> IpamConf {
        IpamConf {
            plugin: plugin.into(),
            subnet: subnet.into(),
            range_start: None,
            range_end: None,
            gateway: None,
            routes: Vec::new(),
            data_dir: data_dir.into(),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut range = Map::new();
        range.insert("subnet".into(), json!(self.subnet));
        if let Some(s) = &self.range_start {
            range.insert("rangeStart".into(), json!(s));
        }
        if let Some(s) = &self.range_end {
            range.insert("rangeEnd".into(), json!(s));
        }
        if let Some(s) = &self.gateway {
            range.insert("gateway".into(), json!(s));
        }
        let mut v = json!({
            "type": self.plugin,
            "ranges": [[Value::Object(range)]],
            "dataDir": self.data_dir.display().to_string(),
        });
        if !self.routes.is_empty() {
            v["routes"] = self.routes.iter().map(|d| json!({ "dst": d })).collect();
        }
        v
    }
}

/// A bridge-type plugin's config (the reference `bridge` plugin's options).
#[derive(Clone, Debug)]
pub struct BridgeConf {
    pub cni_version: String,
    pub name: String,
    /// `cni-bridge` or `bridge`.
    pub plugin: String,
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub ip_masq: bool,
    pub mtu: Option<u32>,
    pub hairpin_mode: Option<bool>,
    pub promisc_mode: Option<bool>,
    pub ipam: IpamConf,
    /// Extra top-level keys (e.g. `cni.dev/valid-attachments`, `prevResult`).
    pub extra: Map<String, Value>,
}

impl BridgeConf {
    pub fn new(version: &str, name: &str, plugin: &str, bridge: &str, ipam: IpamConf) -> Self {
        BridgeConf {
            cni_version: version.into(),
            name: name.into(),
            plugin: plugin.into(),
            bridge: bridge.into(),
            is_gateway: true,
            is_default_gateway: false,
            ip_masq: false,
            mtu: None,
            hairpin_mode: None,
            promisc_mode: None,
            ipam,
            extra: Map::new(),
        }
    }

    pub fn set(mut self, key: &str, v: Value) -> Self {
        self.extra.insert(key.into(), v);
        self
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "type": self.plugin,
            "bridge": self.bridge,
            "isGateway": self.is_gateway,
            "ipMasq": self.ip_masq,
            "ipam": self.ipam.to_json(),
        });
        if self.is_default_gateway {
            v["isDefaultGateway"] = json!(true);
        }
        if let Some(m) = self.mtu {
            v["mtu"] = json!(m);
        }
        if let Some(h) = self.hairpin_mode {
            v["hairpinMode"] = json!(h);
        }
        if let Some(p) = self.promisc_mode {
            v["promiscMode"] = json!(p);
        }
        for (k, x) in &self.extra {
            v[k] = x.clone();
        }
        v
    }
}

pub use cni_runtime::valid_attachments;
