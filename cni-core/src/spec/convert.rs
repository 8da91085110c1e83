//! Conversion between [`CniResult`] (1.1.0 shape) and every older result shape:
//! 0.1.0/0.2.0 (`ip4`/`ip6`), 0.3.x/0.4.0 (`version` per IP), 1.0.0 (no 1.1 fields).
//!
//! Parsing is done by hand over `serde_json::Value` so that every error names the
//! offending field (`ips[1].address: ...`), and so that `null` reads as absent, as Go's
//! decoder treats it.

use ipnetwork::IpNetwork;
use serde_json::{json, Map, Value};
use std::net::IpAddr;

use super::error::CniError;
use super::result::{CniResult, Dns, Interface, IpConfig, Route};
use super::version::Version;

pub(crate) fn to_json(result: &CniResult, version: Version) -> Value {
    let mut out = Map::new();
    out.insert("cniVersion".into(), json!(version.as_str()));
    if version.is_legacy_result() {
        legacy_to_json(result, &mut out);
    } else {
        modern_to_json(result, version, &mut out);
    }
    if !result.dns.is_empty() {
        out.insert("dns".into(), dns_to_json(&result.dns));
    }
    Value::Object(out)
}

/// 0.1.0/0.2.0 hold one address per family: like libcni, keep the first IPv4 and the
/// first IPv6 address, and attach each route to the family of its destination (a route
/// whose family has no address is dropped). Interfaces do not exist in this shape.
fn legacy_to_json(result: &CniResult, out: &mut Map<String, Value>) {
    let first = |v4: bool| result.ips.iter().find(|ip| ip.address.is_ipv4() == v4);
    for (key, v4) in [("ip4", true), ("ip6", false)] {
        let Some(ip) = first(v4) else { continue };
        let mut m = Map::new();
        m.insert("ip".into(), json!(ip.address.to_string()));
        if let Some(gw) = ip.gateway {
            m.insert("gateway".into(), json!(gw.to_string()));
        }
        let routes: Vec<Value> = result
            .routes
            .iter()
            .filter(|r| r.dst.is_ipv4() == v4)
            .map(|r| route_to_json(r, false))
            .collect();
        if !routes.is_empty() {
            m.insert("routes".into(), Value::Array(routes));
        }
        out.insert(key.into(), Value::Object(m));
    }
}

fn modern_to_json(result: &CniResult, version: Version, out: &mut Map<String, Value>) {
    let rich = version >= Version::V1_1_0;
    if !result.interfaces.is_empty() {
        let ifs = result
            .interfaces
            .iter()
            .map(|i| interface_to_json(i, rich))
            .collect();
        out.insert("interfaces".into(), Value::Array(ifs));
    }
    if !result.ips.is_empty() {
        let ips = result
            .ips
            .iter()
            .map(|ip| {
                let mut m = Map::new();
                // 0.3.x/0.4.0 tag each address with its family; 1.0.0 dropped it.
                if version < Version::V1_0_0 {
                    m.insert(
                        "version".into(),
                        json!(if ip.address.is_ipv4() { "4" } else { "6" }),
                    );
                }
                if let Some(i) = ip.interface {
                    m.insert("interface".into(), json!(i));
                }
                m.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    m.insert("gateway".into(), json!(gw.to_string()));
                }
                Value::Object(m)
            })
            .collect();
        out.insert("ips".into(), Value::Array(ips));
    }
    if !result.routes.is_empty() {
        let routes = result
            .routes
            .iter()
            .map(|r| route_to_json(r, rich))
            .collect();
        out.insert("routes".into(), Value::Array(routes));
    }
}

fn interface_to_json(i: &Interface, rich: bool) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(i.name));
    if let Some(mac) = &i.mac {
        m.insert("mac".into(), json!(mac));
    }
    if let Some(sandbox) = &i.sandbox {
        m.insert("sandbox".into(), json!(sandbox));
    }
    if rich {
        if let Some(mtu) = i.mtu {
            m.insert("mtu".into(), json!(mtu));
        }
        if let Some(p) = &i.socket_path {
            m.insert("socketPath".into(), json!(p));
        }
        if let Some(p) = &i.pci_id {
            m.insert("pciID".into(), json!(p));
        }
    }
    Value::Object(m)
}

fn route_to_json(r: &Route, rich: bool) -> Value {
    let mut m = Map::new();
    m.insert("dst".into(), json!(r.dst.to_string()));
    if let Some(gw) = r.gw {
        m.insert("gw".into(), json!(gw.to_string()));
    }
    if rich {
        let extra = [
            ("mtu", r.mtu),
            ("advmss", r.advmss),
            ("priority", r.priority),
            ("table", r.table),
            ("scope", r.scope.map(u32::from)),
        ];
        for (k, v) in extra {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
    }
    Value::Object(m)
}

fn dns_to_json(d: &Dns) -> Value {
    let mut m = Map::new();
    if !d.nameservers.is_empty() {
        m.insert("nameservers".into(), json!(d.nameservers));
    }
    if let Some(domain) = &d.domain {
        m.insert("domain".into(), json!(domain));
    }
    if !d.search.is_empty() {
        m.insert("search".into(), json!(d.search));
    }
    if !d.options.is_empty() {
        m.insert("options".into(), json!(d.options));
    }
    Value::Object(m)
}

pub(crate) fn from_json(value: &Value, version: Version) -> Result<CniResult, CniError> {
    let m = value
        .as_object()
        .ok_or_else(|| CniError::decode("result: expected a JSON object"))?;
    let has = |k: &str| m.get(k).is_some_and(|v| !v.is_null());
    let legacy_keys = has("ip4") || has("ip6");
    let modern_keys = has("ips") || has("interfaces") || has("routes");
    // The shape follows `version`; a result plainly written in the other shape (a
    // plugin that answered in another version) is still read rather than emptied.
    let legacy = if version.is_legacy_result() {
        legacy_keys || !modern_keys
    } else {
        legacy_keys && !modern_keys
    };
    let mut result = if legacy {
        legacy_from_json(m)?
    } else {
        modern_from_json(m, version)?
    };
    result.dns = match opt_obj(m, "dns", "dns")? {
        Some(d) => dns_from_json(d)?,
        None => Dns::default(),
    };
    Ok(result)
}

fn legacy_from_json(m: &Map<String, Value>) -> Result<CniResult, CniError> {
    let mut result = CniResult::default();
    for (key, v4) in [("ip4", true), ("ip6", false)] {
        let Some(ipc) = opt_obj(m, key, key)? else {
            continue;
        };
        let address = cidr(
            req_str(ipc, "ip", &format!("{key}.ip"))?,
            &format!("{key}.ip"),
        )?;
        if address.is_ipv4() != v4 {
            return Err(CniError::decode(format!(
                "{key}.ip: {address} is not an IPv{}",
                if v4 { 4 } else { 6 }
            )));
        }
        let gateway = opt_ip(ipc, "gateway", &format!("{key}.gateway"))?;
        result.ips.push(IpConfig {
            address,
            gateway,
            interface: None,
        });
        for (i, r) in opt_arr(ipc, "routes", &format!("{key}.routes"))?
            .iter()
            .enumerate()
        {
            result
                .routes
                .push(route_from_json(r, &format!("{key}.routes[{i}]"), false)?);
        }
    }
    Ok(result)
}

fn modern_from_json(m: &Map<String, Value>, version: Version) -> Result<CniResult, CniError> {
    // Fields newer than `version` are ignored, as a decoder of that version would.
    let rich = version >= Version::V1_1_0;
    let mut result = CniResult::default();
    for (i, v) in opt_arr(m, "interfaces", "interfaces")?.iter().enumerate() {
        let path = format!("interfaces[{i}]");
        let o = as_obj(v, &path)?;
        let mut iface = Interface {
            name: req_str(o, "name", &format!("{path}.name"))?.to_string(),
            mac: opt_str(o, "mac", &format!("{path}.mac"))?,
            sandbox: opt_str(o, "sandbox", &format!("{path}.sandbox"))?,
            ..Interface::default()
        };
        if rich {
            iface.mtu = opt_u32(o, "mtu", &format!("{path}.mtu"))?;
            iface.socket_path = opt_str(o, "socketPath", &format!("{path}.socketPath"))?;
            iface.pci_id = opt_str(o, "pciID", &format!("{path}.pciID"))?;
        }
        result.interfaces.push(iface);
    }
    for (i, v) in opt_arr(m, "ips", "ips")?.iter().enumerate() {
        let path = format!("ips[{i}]");
        let o = as_obj(v, &path)?;
        let address = cidr(
            req_str(o, "address", &format!("{path}.address"))?,
            &format!("{path}.address"),
        )?;
        if let Some(fam) = opt_str(o, "version", &format!("{path}.version"))? {
            let expect = if address.is_ipv4() { "4" } else { "6" };
            if fam != expect {
                return Err(CniError::decode(format!(
                    "{path}.version: \"{fam}\" does not match address {address}"
                )));
            }
        }
        let gateway = opt_ip(o, "gateway", &format!("{path}.gateway"))?;
        let interface = match get(o, "interface") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        CniError::decode(format!(
                            "{path}.interface: expected a non-negative integer, got {v}"
                        ))
                    })?,
            ),
        };
        result.ips.push(IpConfig {
            address,
            gateway,
            interface,
        });
    }
    for (i, r) in opt_arr(m, "routes", "routes")?.iter().enumerate() {
        result
            .routes
            .push(route_from_json(r, &format!("routes[{i}]"), rich)?);
    }
    Ok(result)
}

fn route_from_json(v: &Value, path: &str, rich: bool) -> Result<Route, CniError> {
    let o = as_obj(v, path)?;
    let dst = cidr(
        req_str(o, "dst", &format!("{path}.dst"))?,
        &format!("{path}.dst"),
    )?;
    let mut r = Route::new(dst, opt_ip(o, "gw", &format!("{path}.gw"))?);
    if rich {
        r.mtu = opt_u32(o, "mtu", &format!("{path}.mtu"))?;
        r.advmss = opt_u32(o, "advmss", &format!("{path}.advmss"))?;
        r.priority = opt_u32(o, "priority", &format!("{path}.priority"))?;
        r.table = opt_u32(o, "table", &format!("{path}.table"))?;
        r.scope = match opt_u32(o, "scope", &format!("{path}.scope"))? {
            None => None,
            Some(s) => Some(u8::try_from(s).map_err(|_| {
                CniError::decode(format!("{path}.scope: {s} is out of range 0..=255"))
            })?),
        };
    }
    Ok(r)
}

fn dns_from_json(o: &Map<String, Value>) -> Result<Dns, CniError> {
    Ok(Dns {
        nameservers: str_list(o, "nameservers", "dns.nameservers")?,
        domain: opt_str(o, "domain", "dns.domain")?,
        search: str_list(o, "search", "dns.search")?,
        options: str_list(o, "options", "dns.options")?,
    })
}

/// A field, with `null` read as absent.
fn get<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn as_obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, CniError> {
    v.as_object()
        .ok_or_else(|| CniError::decode(format!("{path}: expected an object, got {v}")))
}

fn opt_obj<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, CniError> {
    get(o, key).map(|v| as_obj(v, path)).transpose()
}

fn opt_arr<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a [Value], CniError> {
    match get(o, key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(v) => Err(CniError::decode(format!(
            "{path}: expected an array, got {v}"
        ))),
    }
}

fn opt_str(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, CniError> {
    match get(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(CniError::decode(format!(
            "{path}: expected a string, got {v}"
        ))),
    }
}

fn req_str<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, CniError> {
    match get(o, key) {
        None => Err(CniError::decode(format!("{path}: missing"))),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(CniError::decode(format!(
            "{path}: expected a string, got {v}"
        ))),
    }
}

fn opt_u32(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u32>, CniError> {
    match get(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                CniError::decode(format!(
                    "{path}: expected an unsigned 32-bit integer, got {v}"
                ))
            }),
    }
}

fn str_list(o: &Map<String, Value>, key: &str, path: &str) -> Result<Vec<String>, CniError> {
    opt_arr(o, key, path)?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(CniError::decode(format!(
                "{path}[{i}]: expected a string, got {v}"
            ))),
        })
        .collect()
}

fn opt_ip(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<IpAddr>, CniError> {
    opt_str(o, key, path)?
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| CniError::decode(format!("{path}: invalid IP address \"{s}\"")))
        })
        .transpose()
}

/// `addr/prefix`, prefix required (Go's `net.ParseCIDR`); host bits are kept.
fn cidr(s: &str, path: &str) -> Result<IpNetwork, CniError> {
    let bad = || CniError::decode(format!("{path}: invalid CIDR \"{s}\""));
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    IpNetwork::new(ip, prefix).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::error::ErrorCode;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A result using every 1.1.0 field, two addresses per family.
    fn full() -> CniResult {
        let mut r6 = Route::new(net("::/0"), Some(ip("fd00::1")));
        r6.priority = Some(10);
        let mut r4 = Route::new(net("0.0.0.0/0"), Some(ip("10.1.0.1")));
        r4.mtu = Some(1400);
        r4.advmss = Some(1360);
        r4.priority = Some(100);
        r4.table = Some(254);
        r4.scope = Some(0);
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: Some("00:11:22:33:44:55".into()),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:0a:01:00:05".into()),
                    mtu: Some(1450),
                    sandbox: Some("/var/run/netns/x".into()),
                    socket_path: Some("/run/sock".into()),
                    pci_id: Some("0000:00:1f.6".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    address: net("10.1.0.5/16"),
                    gateway: Some(ip("10.1.0.1")),
                    interface: Some(1),
                },
                IpConfig {
                    address: net("fd00::5/64"),
                    gateway: Some(ip("fd00::1")),
                    interface: Some(1),
                },
                IpConfig {
                    address: net("10.2.0.5/16"),
                    gateway: None,
                    interface: Some(1),
                },
                IpConfig {
                    address: net("fd01::5/64"),
                    gateway: None,
                    interface: None,
                },
            ],
            routes: vec![r4, r6, Route::new(net("192.168.0.0/16"), None)],
            dns: Dns {
                nameservers: vec!["10.1.0.10".into()],
                domain: Some("cluster.local".into()),
                search: vec!["default.svc".into()],
                options: vec!["ndots:5".into()],
            },
        }
    }

    /// What survives a trip through a version that knows no 1.1 fields.
    fn without_1_1(mut r: CniResult) -> CniResult {
        for i in &mut r.interfaces {
            i.mtu = None;
            i.socket_path = None;
            i.pci_id = None;
        }
        r.routes = r.routes.iter().map(|x| Route::new(x.dst, x.gw)).collect();
        r
    }

    #[test]
    fn v1_1_0_round_trip_is_lossless() {
        let r = full();
        let j = to_json(&r, Version::V1_1_0);
        assert_eq!(j["cniVersion"], "1.1.0");
        assert_eq!(j["interfaces"][1]["mtu"], 1450);
        assert_eq!(j["interfaces"][1]["socketPath"], "/run/sock");
        assert_eq!(j["interfaces"][1]["pciID"], "0000:00:1f.6");
        assert_eq!(j["routes"][0]["advmss"], 1360);
        assert_eq!(j["routes"][0]["table"], 254);
        assert_eq!(j["routes"][0]["scope"], 0);
        assert!(j["ips"][0].get("version").is_none());
        assert_eq!(from_json(&j, Version::V1_1_0).unwrap(), r);
        // The serde derive of CniResult reads the same document.
        let via_serde: CniResult = serde_json::from_value(j).unwrap();
        assert_eq!(via_serde, r);
    }

    #[test]
    fn v1_0_0_drops_1_1_fields() {
        let j = to_json(&full(), Version::V1_0_0);
        assert_eq!(j["cniVersion"], "1.0.0");
        assert!(j["interfaces"][1].get("mtu").is_none());
        assert!(j["interfaces"][1].get("socketPath").is_none());
        assert!(j["interfaces"][1].get("pciID").is_none());
        assert_eq!(j["interfaces"][1]["sandbox"], "/var/run/netns/x");
        assert!(j["routes"][0].get("mtu").is_none());
        assert!(j["routes"][0].get("priority").is_none());
        assert!(j["ips"][0].get("version").is_none());
        assert_eq!(j["ips"][0]["interface"], 1);
        assert_eq!(from_json(&j, Version::V1_0_0).unwrap(), without_1_1(full()));
    }

    #[test]
    fn v0_3_and_0_4_tag_ip_versions() {
        for v in [Version::V0_3_0, Version::V0_3_1, Version::V0_4_0] {
            let j = to_json(&full(), v);
            assert_eq!(j["cniVersion"], v.as_str());
            assert_eq!(j["ips"][0]["version"], "4");
            assert_eq!(j["ips"][1]["version"], "6");
            assert_eq!(j["ips"][0]["interface"], 1);
            assert!(j["ips"][3].get("interface").is_none());
            assert_eq!(j["interfaces"].as_array().unwrap().len(), 2);
            assert!(j["interfaces"][1].get("mtu").is_none());
            assert!(j["routes"][0].get("mtu").is_none());
            assert_eq!(j["dns"]["nameservers"][0], "10.1.0.10");
            assert_eq!(from_json(&j, v).unwrap(), without_1_1(full()), "{v}");
        }
    }

    #[test]
    fn down_conversion_to_0_2_0_like_libcni() {
        for v in [Version::V0_1_0, Version::V0_2_0] {
            let j = to_json(&full(), v);
            let expected = json!({
                "cniVersion": v.as_str(),
                "ip4": {
                    "ip": "10.1.0.5/16",
                    "gateway": "10.1.0.1",
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "192.168.0.0/16"}]
                },
                "ip6": {
                    "ip": "fd00::5/64",
                    "gateway": "fd00::1",
                    "routes": [{"dst": "::/0", "gw": "fd00::1"}]
                },
                "dns": {
                    "nameservers": ["10.1.0.10"],
                    "domain": "cluster.local",
                    "search": ["default.svc"],
                    "options": ["ndots:5"]
                }
            });
            assert_eq!(j, expected);
            // And back up: first address of each family, routes, dns; no interfaces.
            let back = from_json(&j, v).unwrap();
            assert!(back.interfaces.is_empty());
            assert_eq!(back.ips.len(), 2);
            assert_eq!(back.ips[0].address, net("10.1.0.5/16"));
            assert_eq!(back.ips[0].interface, None);
            assert_eq!(back.ips[1].gateway, Some(ip("fd00::1")));
            assert_eq!(back.routes.len(), 3);
            assert_eq!(back.dns, full().dns);
            // Up to 1.1.0 and down again is stable.
            assert_eq!(to_json(&back, v), j);
            let up = to_json(&back, Version::V1_1_0);
            assert_eq!(from_json(&up, Version::V1_1_0).unwrap(), back);
        }
    }

    #[test]
    fn legacy_routes_need_an_address_of_their_family() {
        let r = CniResult {
            ips: vec![IpConfig {
                address: net("10.0.0.2/24"),
                gateway: None,
                interface: None,
            }],
            routes: vec![
                Route::new(net("0.0.0.0/0"), None),
                Route::new(net("::/0"), None),
            ],
            ..Default::default()
        };
        let j = to_json(&r, Version::V0_2_0);
        assert!(j.get("ip6").is_none());
        assert_eq!(j["ip4"]["routes"].as_array().unwrap().len(), 1);
        assert!(j.get("dns").is_none());
        assert_eq!(
            to_json(&CniResult::default(), Version::V0_2_0),
            json!({"cniVersion": "0.2.0"})
        );
        assert_eq!(
            to_json(&CniResult::default(), Version::V1_0_0),
            json!({"cniVersion": "1.0.0"})
        );
    }

    #[test]
    fn parses_reference_plugin_output() {
        // As the reference bridge plugin prints it for 0.4.0.
        let j = json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "cni0", "mac": "ce:a1:0f:2d:ee:1a"},
                {"name": "veth1", "mac": "ce:a1:0f:2d:ee:1b"},
                {"name": "eth0", "mac": "ce:a1:0f:2d:ee:1c", "sandbox": "/var/run/netns/t"}
            ],
            "ips": [{"version": "4", "interface": 2, "address": "10.22.0.2/16", "gateway": "10.22.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let r = from_json(&j, Version::V0_4_0).unwrap();
        assert_eq!(r.interfaces[2].sandbox.as_deref(), Some("/var/run/netns/t"));
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.routes[0].gw, None);
        assert!(r.dns.is_empty());
    }

    #[test]
    fn nulls_read_as_absent() {
        let j = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mac": null, "sandbox": null, "mtu": null}],
            "ips": [{"address": "10.0.0.2/24", "gateway": null, "interface": null}],
            "routes": null,
            "dns": null
        });
        let r = from_json(&j, Version::V1_1_0).unwrap();
        assert_eq!(
            r.interfaces[0],
            Interface {
                name: "eth0".into(),
                ..Default::default()
            }
        );
        assert_eq!(r.ips[0].gateway, None);
        assert!(r.routes.is_empty());
    }

    #[test]
    fn tolerates_shape_of_another_version() {
        // A 0.2.0-shaped prevResult in a 1.0.0 configuration, and the reverse.
        let old = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}});
        assert_eq!(
            from_json(&old, Version::V1_0_0).unwrap().ips[0].address,
            net("10.0.0.2/24")
        );
        let new = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]});
        assert_eq!(
            from_json(&new, Version::V0_2_0).unwrap().ips[0].address,
            net("10.0.0.2/24")
        );
    }

    #[test]
    fn malformed_results_are_decode_errors_naming_the_field() {
        let cases = [
            (json!([]), "result"),
            (json!({"ips": {}}), "ips"),
            (json!({"ips": [{"address": "10.0.0.2"}]}), "ips[0].address"),
            (
                json!({"ips": [{"address": "10.0.0.300/24"}]}),
                "ips[0].address",
            ),
            (
                json!({"ips": [{"address": "10.0.0.2/33"}]}),
                "ips[0].address",
            ),
            (json!({"ips": [{}]}), "ips[0].address"),
            (
                json!({"ips": [{"address": "10.0.0.2/24", "gateway": "x"}]}),
                "ips[0].gateway",
            ),
            (
                json!({"ips": [{"address": "10.0.0.2/24", "interface": -1}]}),
                "ips[0].interface",
            ),
            (
                json!({"ips": [{"address": "10.0.0.2/24", "version": "6"}]}),
                "ips[0].version",
            ),
            (json!({"interfaces": [{"mac": "x"}]}), "interfaces[0].name"),
            (
                json!({"interfaces": [{"name": "e", "mtu": "x"}]}),
                "interfaces[0].mtu",
            ),
            (json!({"routes": [{"gw": "10.0.0.1"}]}), "routes[0].dst"),
            (
                json!({"routes": [{"dst": "0.0.0.0/0", "scope": 300}]}),
                "routes[0].scope",
            ),
            (json!({"dns": {"nameservers": [1]}}), "dns.nameservers[0]"),
            (json!({"dns": "x"}), "dns"),
        ];
        for (j, field) in cases {
            let e = from_json(&j, Version::V1_1_0).unwrap_err();
            assert_eq!(e.code, ErrorCode::Decode as u32, "{j}");
            assert!(e.msg.starts_with(field), "{j}: {}", e.msg);
        }
        let legacy = [
            (json!({"ip4": {"ip": "fd00::1/64"}}), "ip4.ip"),
            (json!({"ip4": {}}), "ip4.ip"),
            (
                json!({"ip6": {"ip": "fd00::1/64", "routes": [{"dst": "bad"}]}}),
                "ip6.routes[0].dst",
            ),
        ];
        for (j, field) in legacy {
            let e = from_json(&j, Version::V0_2_0).unwrap_err();
            assert_eq!(e.code, ErrorCode::Decode as u32, "{j}");
            assert!(e.msg.starts_with(field), "{j}: {}", e.msg);
        }
    }

    #[test]
    fn older_versions_ignore_newer_fields_when_parsing() {
        let j = json!({
            "interfaces": [{"name": "eth0", "mtu": 9000}],
            "routes": [{"dst": "0.0.0.0/0", "table": 100}]
        });
        let r = from_json(&j, Version::V1_0_0).unwrap();
        assert_eq!(r.interfaces[0].mtu, None);
        assert_eq!(r.routes[0].table, None);
        let r = from_json(&j, Version::V1_1_0).unwrap();
        assert_eq!(r.interfaces[0].mtu, Some(9000));
        assert_eq!(r.routes[0].table, Some(100));
    }
}
