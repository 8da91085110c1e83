//! ADD results, read with [`cni_runtime`]'s result structs and checked against the
//! shape of each spec version by the harness itself (not by `cni-core`, which is under
//! test):
//! - 0.1.0 / 0.2.0: `ip4` / `ip6` objects (`ip`, `gateway`, `routes`), `dns`; no
//!   `interfaces`, no `ips`;
//! - 0.3.0 / 0.3.1 / 0.4.0: `interfaces`, `ips` whose entries carry `"version": "4"|"6"`
//!   and an `interface` index, `routes`, `dns`;
//! - 1.0.0 / 1.1.0: the same without `version` in `ips`.
//!
//! In every version `cniVersion` must be the requested one.

use std::net::IpAddr;

use cni_runtime::{AddResult, Version};
use ipnetwork::IpNetwork;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultIp {
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultInterface {
    pub name: String,
    pub mac: Option<String>,
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRoute {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
}

/// A result read in the shape of its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedResult {
    pub cni_version: String,
    pub interfaces: Vec<ResultInterface>,
    pub ips: Vec<ResultIp>,
    pub routes: Vec<ResultRoute>,
}

impl ParsedResult {
    /// The IPv4 addresses of the result.
    pub fn ipv4(&self) -> Vec<ResultIp> {
        self.ips
            .iter()
            .filter(|i| i.address.is_ipv4())
            .cloned()
            .collect()
    }
    /// The only IPv4 address; panics if there is not exactly one.
    pub fn the_ipv4(&self) -> ResultIp {
        let v = self.ipv4();
        assert_eq!(v.len(), 1, "expected exactly one IPv4 address in {self:?}");
        v[0].clone()
    }
}

fn route(r: &cni_runtime::Route) -> ResultRoute {
    ResultRoute {
        dst: r.dst,
        gw: r.gw,
    }
}

/// Parses `v` as an ADD result of `version` (with [`cni_runtime`]'s structs, written from
/// the spec), failing on any deviation from that version's shape.
pub fn parse(v: &Value, version: &str) -> Result<ParsedResult, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("result is not an object: {v}"))?;
    let got = obj.get("cniVersion").and_then(Value::as_str).unwrap_or("");
    if got != version {
        return Err(format!(
            "result cniVersion {got:?}, asked for {version:?}: {v}"
        ));
    }
    let parsed = AddResult::from_json(v)?;
    let legacy_keys = obj.contains_key("ip4") || obj.contains_key("ip6");
    let current_keys = obj.contains_key("interfaces") || obj.contains_key("ips");
    let r = match parsed {
        AddResult::Legacy(l) => {
            if current_keys {
                return Err(format!(
                    "{version} result must not have interfaces/ips: {v}"
                ));
            }
            let mut ips = Vec::new();
            let mut routes = Vec::new();
            for (k, ipc, want_v4) in [("ip4", &l.ip4, true), ("ip6", &l.ip6, false)] {
                let Some(ipc) = ipc else { continue };
                if ipc.ip.is_ipv4() != want_v4 {
                    return Err(format!("{k}.ip has the wrong family: {v}"));
                }
                ips.push(ResultIp {
                    address: ipc.ip,
                    gateway: ipc.gateway,
                    interface: None,
                });
                routes.extend(ipc.routes.iter().map(route));
            }
            ParsedResult {
                cni_version: got.into(),
                interfaces: vec![],
                ips,
                routes,
            }
        }
        AddResult::Current(c) => {
            if legacy_keys {
                return Err(format!("{version} result must not have ip4/ip6: {v}"));
            }
            let with_version = Version::parse(version).is_some_and(Version::ips_have_version);
            let mut ips = Vec::new();
            for ip in &c.ips {
                let address = ip.address;
                match (with_version, ip.version.as_deref()) {
                    (true, Some(fam)) => {
                        let want = if address.is_ipv4() { "4" } else { "6" };
                        if fam != want {
                            return Err(format!("ips[].version {fam:?} for {address}: {v}"));
                        }
                    }
                    (true, None) => {
                        return Err(format!("{version} ips[] entry without \"version\": {v}"))
                    }
                    (false, Some(_)) => {
                        return Err(format!(
                            "{version} ips[] entry must not have \"version\": {v}"
                        ))
                    }
                    (false, None) => {}
                }
                if let Some(n) = ip.interface.filter(|n| *n >= c.interfaces.len()) {
                    return Err(format!("ips[].interface {n} out of range: {v}"));
                }
                ips.push(ResultIp {
                    address,
                    gateway: ip.gateway,
                    interface: ip.interface,
                });
            }
            ParsedResult {
                cni_version: got.into(),
                interfaces: c
                    .interfaces
                    .iter()
                    .map(|i| ResultInterface {
                        name: i.name.clone(),
                        mac: i.mac.clone(),
                        sandbox: i.sandbox.clone(),
                    })
                    .collect(),
                ips,
                routes: c.routes.iter().map(route).collect(),
            }
        }
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ips(version: &str, with_version: bool) -> Value {
        let mut ip = json!({"address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0});
        if with_version {
            ip["version"] = json!("4");
        }
        json!({"cniVersion": version, "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}], "ips": [ip]})
    }

    #[test]
    fn accepts_each_version_shape() {
        let legacy =
            json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.2.3/24", "gateway": "10.1.2.1"}});
        let r = parse(&legacy, "0.2.0").unwrap();
        assert_eq!(r.the_ipv4().address.to_string(), "10.1.2.3/24");
        assert_eq!(
            parse(&ips("0.3.1", true), "0.3.1")
                .unwrap()
                .the_ipv4()
                .interface,
            Some(0)
        );
        assert_eq!(
            parse(&ips("1.1.0", false), "1.1.0").unwrap().interfaces[0].name,
            "eth0"
        );
    }

    #[test]
    fn rejects_wrong_shapes() {
        assert!(
            parse(&ips("0.4.0", false), "0.4.0").is_err(),
            "0.4.0 needs ips[].version"
        );
        assert!(
            parse(&ips("1.0.0", true), "1.0.0").is_err(),
            "1.0.0 has no ips[].version"
        );
        assert!(
            parse(&ips("0.1.0", false), "0.1.0").is_err(),
            "0.1.0 has no ips"
        );
        assert!(
            parse(&ips("1.0.0", false), "1.1.0").is_err(),
            "cniVersion mismatch"
        );
        let mut bad_idx = ips("1.0.0", false);
        bad_idx["ips"][0]["interface"] = json!(3);
        assert!(
            parse(&bad_idx, "1.0.0").is_err(),
            "interface index out of range"
        );
        let mut fam = ips("0.3.0", true);
        fam["ips"][0]["version"] = json!("6");
        assert!(
            parse(&fam, "0.3.0").is_err(),
            "version 6 on an IPv4 address"
        );
    }
}
