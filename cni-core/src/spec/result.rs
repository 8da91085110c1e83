//! The ADD result. [`CniResult`] is the 1.1.0 shape, the richest one; every other
//! version is converted to and from it at the edge (see [`super::convert`]).

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use super::error::CniError;
use super::version::Version;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// 1.1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path; `None` for host-side interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// 1.1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// 1.1.0 only.
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length, e.g. `10.22.0.5/24`.
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// 1.1.0 only (as are the fields below).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

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
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// The configuration's `dns` when IPAM gave none.
    pub fn fill_dns(&mut self, dns: Option<&Dns>) {
        if let (true, Some(dns)) = (self.dns.is_empty(), dns) {
            self.dns = dns.clone();
        }
    }

    /// This plugin's result placed after `prev` (the chain's `prevResult`), as SPEC
    /// "ADD" asks of a plugin that receives one: `prev`'s interfaces, addresses, routes
    /// and DNS are kept; ours are appended, with our `ips[].interface` indexes shifted
    /// past `prev`'s interfaces; our DNS wins only when we have one.
    pub fn chained_after(mut self, prev: Option<&CniResult>) -> CniResult {
        let Some(prev) = prev else { return self };
        let offset = prev.interfaces.len();
        for ip in &mut self.ips {
            ip.interface = ip.interface.map(|i| i + offset);
        }
        let mut out = prev.clone();
        out.interfaces.append(&mut self.interfaces);
        out.ips.append(&mut self.ips);
        out.routes.append(&mut self.routes);
        if !self.dns.is_empty() {
            out.dns = self.dns;
        }
        out
    }

    /// The result as JSON in the shape of `version`, with `cniVersion` set.
    /// Fields a version does not know are dropped, as libcni's conversion does.
    pub fn to_json(&self, version: Version) -> serde_json::Value {
        super::convert::to_json(self, version)
    }

    /// Parses a result (a `prevResult`, or a delegated plugin's stdout) written in
    /// `version`'s shape. Errors are `ErrorCode::Decode` (6).
    pub fn from_json(value: &serde_json::Value, version: Version) -> Result<Self, CniError> {
        super::convert::from_json(value, version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_after_keeps_prev_and_shifts_interface_indexes() {
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                address: "127.0.0.1/8".parse().unwrap(),
                gateway: None,
                interface: Some(0),
            }],
            routes: vec![Route::new("10.9.0.0/16".parse().unwrap(), None)],
            dns: Dns {
                nameservers: vec!["10.0.0.53".into()],
                ..Default::default()
            },
        };
        let ours = CniResult {
            interfaces: vec![
                Interface {
                    name: "br0".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    ..Default::default()
                },
            ],
            ips: vec![IpConfig {
                address: "10.1.0.2/24".parse().unwrap(),
                gateway: None,
                interface: Some(1),
            }],
            routes: vec![Route::new("0.0.0.0/0".parse().unwrap(), None)],
            dns: Dns::default(),
        };
        let out = ours.clone().chained_after(Some(&prev));
        assert_eq!(out.interfaces.len(), 3);
        assert_eq!(out.interfaces[2].name, "eth0");
        assert_eq!(out.ips.len(), 2);
        assert_eq!(out.ips[1].interface, Some(2));
        assert_eq!(out.routes.len(), 2);
        assert_eq!(out.dns, prev.dns);
        assert_eq!(ours.clone().chained_after(None), ours);
    }
}
