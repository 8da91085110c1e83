//! ADD results as the spec writes them (SPEC.md §"ADD Success" and, for 0.1.0/0.2.0, the
//! old `ip4`/`ip6` shape), read with serde structs of our own, and converted between
//! versions the way libcni converts a cached result (`convertTo02`/`convertFrom02`):
//!
//! - 0.1.0 / 0.2.0 ([`LegacyResult`]): `ip4` / `ip6` objects (`ip`, `gateway`,
//!   `routes`), `dns`; no `interfaces`, no `ips`;
//! - 0.3.0 / 0.3.1 / 0.4.0 ([`CurrentResult`]): `interfaces`, `ips` whose entries carry
//!   `"version": "4" | "6"` and an `interface` index, `routes`, `dns`;
//! - 1.0.0 / 1.1.0: the same without `version` in `ips` (1.1.0's extra interface and
//!   route fields are kept as they are).
//!
//! This is the runtime's (and so the test harness's) reading of a result: it shares no
//! code with the plugins under test.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Version;

/// A result of 0.3.0 or later.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentResult {
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// `interfaces[]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// 1.1.0's `mtu`, `socketPath`, `pciID`.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `ips[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` or `"6"`: present in 0.3.0 to 0.4.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// An index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// `routes[]` (and `ip4.routes[]` of the old shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// 1.1.0's `mtu`, `advmss`, `priority`, `table`, `scope`.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `dns`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

/// A result of 0.1.0 or 0.2.0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyResult {
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip4: Option<LegacyIp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<LegacyIp>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// `ip4` / `ip6` of the old shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LegacyIp {
    pub ip: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// A result in the shape of its own `cniVersion`.
#[derive(Clone, Debug, PartialEq)]
pub enum AddResult {
    Legacy(LegacyResult),
    Current(CurrentResult),
}

impl AddResult {
    /// Reads `v` in the shape its `cniVersion` says.
    pub fn from_json(v: &Value) -> Result<AddResult, String> {
        let ver = v["cniVersion"].as_str().unwrap_or("");
        let version =
            Version::parse(ver).ok_or_else(|| format!("result with cniVersion {ver:?}: {v}"))?;
        if version.is_legacy() {
            serde_json::from_value(v.clone())
                .map(AddResult::Legacy)
                .map_err(|e| format!("not a {version} result ({e}): {v}"))
        } else {
            serde_json::from_value(v.clone())
                .map(AddResult::Current)
                .map_err(|e| format!("not a {version} result ({e}): {v}"))
        }
    }

    /// The same result in 0.3.0+ form (an old one's `ip4`/`ip6` become `ips` on no
    /// interface, their routes the result's routes).
    pub fn into_current(self) -> CurrentResult {
        match self {
            AddResult::Current(c) => c,
            AddResult::Legacy(l) => {
                let mut c = CurrentResult {
                    cni_version: l.cni_version,
                    dns: l.dns,
                    ..Default::default()
                };
                for ip in [l.ip4, l.ip6].into_iter().flatten() {
                    c.ips.push(IpConfig {
                        version: None,
                        address: ip.ip,
                        gateway: ip.gateway,
                        interface: None,
                    });
                    c.routes.extend(ip.routes);
                }
                c
            }
        }
    }

    /// The result in `to`'s shape. Going to 0.1.0/0.2.0 keeps the first address of each
    /// family and puts each route under the family of its destination (dropped when the
    /// result has no address of that family), as libcni does.
    pub fn convert(self, to: Version) -> Value {
        let mut c = self.into_current();
        if to.is_legacy() {
            let mut l = LegacyResult {
                cni_version: to.as_str().into(),
                dns: c.dns,
                ..Default::default()
            };
            for ip in c.ips {
                let slot = if ip.address.is_ipv4() {
                    &mut l.ip4
                } else {
                    &mut l.ip6
                };
                if slot.is_none() {
                    *slot = Some(LegacyIp {
                        ip: ip.address,
                        gateway: ip.gateway,
                        routes: vec![],
                    });
                }
            }
            for r in c.routes {
                let slot = if r.dst.is_ipv4() {
                    &mut l.ip4
                } else {
                    &mut l.ip6
                };
                if let Some(s) = slot {
                    s.routes.push(r);
                }
            }
            return serde_json::to_value(l).unwrap_or(Value::Null);
        }
        c.cni_version = to.as_str().into();
        for ip in &mut c.ips {
            ip.version = to
                .ips_have_version()
                .then(|| if ip.address.is_ipv4() { "4" } else { "6" }.into());
        }
        serde_json::to_value(c).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn current_to_every_version() {
        let r = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x", "mtu": 1400}],
            "ips": [{"address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0},
                    {"address": "fd00::3/64", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1"}, {"dst": "::/0", "table": 7}],
            "dns": {"nameservers": ["10.0.0.53"]}
        });
        let a = AddResult::from_json(&r).unwrap();
        assert_eq!(a.clone().convert(v("1.1.0")), r);
        let old = a.clone().convert(v("0.4.0"));
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        assert_eq!(old["interfaces"][0]["mtu"], 1400);
        assert_eq!(
            a.convert(v("0.2.0")),
            json!({
                "cniVersion": "0.2.0",
                "ip4": {"ip": "10.1.2.3/24", "gateway": "10.1.2.1",
                        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1"}]},
                "ip6": {"ip": "fd00::3/64", "routes": [{"dst": "::/0", "table": 7}]},
                "dns": {"nameservers": ["10.0.0.53"]}
            })
        );
    }

    #[test]
    fn legacy_to_current() {
        let r = json!({"cniVersion": "0.2.0",
                       "ip4": {"ip": "10.1.2.3/24", "gateway": "10.1.2.1",
                               "routes": [{"dst": "10.9.0.0/16"}]}});
        let c = AddResult::from_json(&r).unwrap().convert(v("1.0.0"));
        assert_eq!(
            c,
            json!({"cniVersion": "1.0.0",
                   "ips": [{"address": "10.1.2.3/24", "gateway": "10.1.2.1"}],
                   "routes": [{"dst": "10.9.0.0/16"}]})
        );
    }

    #[test]
    fn rejects_what_is_not_a_result() {
        for bad in [
            json!({"cniVersion": "9.9.9"}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "ten"}]}),
            json!({"cniVersion": "0.2.0", "ip4": {"gateway": "10.1.2.1"}}),
        ] {
            assert!(AddResult::from_json(&bad).is_err(), "{bad}");
        }
    }
}
