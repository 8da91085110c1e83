//! The configuration of a VXLAN network, parsed once: the pod side (a [`BridgeConfig`]
//! with this datapath's defaults) and the node side ([`VxlanOptions`], for `ipamd`),
//! both read from the same network configuration.
//!
//! | field | default | |
//! |---|---|---|
//! | `bridge` | `cni-vx0` | the pods' bridge |
//! | `mtu` | underlay MTU − 50 (IPv6 underlay: − 70) | pod, bridge and VXLAN device MTU |
//! | `underlayInterface` / `underlayAddress` | the default route's interface | the underlay |
//! | `vni` | 1 | VXLAN network identifier |
//! | `port` | 8472 | UDP port (flannel's; IANA's is 4789) |
//! | `device` | `cni-vx.<vni>` | the VXLAN device |
//! | `directRouting` | false | plain routes to nodes on a directly connected subnet |
//!
//! `isGateway` and `isDefaultGateway` are always on (`false` or a non-boolean such as
//! `"yes"` or `0` is refused with code 7, as `cni-bridge` types them); every other `cni-bridge` option
//! (`ipMasq`, `hairpinMode`, `macspoofchk`, `vlan`, ...) means what it means there.

use cni_bridge::config::{BridgeConfig, BridgeFields};
use cni_core::netlink::{Underlay, UnderlaySelect};
use cni_core::spec::config::NetConf;
use cni_core::spec::fields::{self, LinkName, UnderlayFields, MIN_MTU};
use cni_core::CniError;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// Bridge used when `bridge` is not set (not `cni0`: both plugins may share a node).
pub const DEFAULT_BRIDGE: &str = "cni-vx0";
/// VNI used when `vni` is not set (flannel's).
pub const DEFAULT_VNI: u32 = 1;
/// UDP port used when `port` is not set (flannel's, the Linux default).
pub const DEFAULT_PORT: u16 = 8472;
/// Bytes VXLAN adds on an IPv4 underlay: outer IP 20 + UDP 8 + VXLAN 8 + inner
/// Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;
/// Bytes VXLAN adds on an IPv6 underlay: outer IPv6 40 + UDP 8 + VXLAN 8 + inner
/// Ethernet 14.
pub const VXLAN_OVERHEAD_V6: u32 = 70;

/// The encapsulation overhead on an underlay of the family of `underlay_v6`.
pub fn overhead(underlay_v6: bool) -> u32 {
    if underlay_v6 {
        VXLAN_OVERHEAD_V6
    } else {
        VXLAN_OVERHEAD
    }
}
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The node side's settings (what `ipamd` needs besides the underlay and node name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanOptions {
    /// `vni`, default [`DEFAULT_VNI`].
    pub vni: u32,
    /// `port`, default [`DEFAULT_PORT`].
    pub port: u16,
    /// `device`; `None`: `cni-vx.<vni>` (see [`VxlanOptions::device_name`]).
    pub device: Option<String>,
    /// `mtu`; `None`: the underlay's MTU − [`overhead`] of its family.
    pub mtu: Option<u32>,
    /// `directRouting`: plain routes to nodes on a directly connected subnet.
    pub direct_routing: bool,
}

impl Default for VxlanOptions {
    fn default() -> Self {
        VxlanOptions {
            vni: DEFAULT_VNI,
            port: DEFAULT_PORT,
            device: None,
            mtu: None,
            direct_routing: false,
        }
    }
}

impl VxlanOptions {
    /// The VXLAN device's name: `device`, else `cni-vx.<vni>` (at most 15 bytes).
    pub fn device_name(&self) -> String {
        self.device
            .clone()
            .unwrap_or_else(|| format!("cni-vx.{}", self.vni))
    }

    /// The configured MTU, else `underlay`'s minus the [`overhead`] of its address's
    /// family; an underlay too small to carry VXLAN is `InvalidConfig` (7).
    pub fn mtu_for(&self, underlay: &Underlay) -> Result<u32, CniError> {
        mtu_or_underlay(self.mtu, underlay)
    }
}

/// `mtu`, else the underlay's MTU − [`overhead`] of the family of its address.
pub fn mtu_or_underlay(mtu: Option<u32>, underlay: &Underlay) -> Result<u32, CniError> {
    if let Some(m) = mtu {
        return Ok(m);
    }
    let over = overhead(underlay.addr.is_ipv6());
    match underlay.mtu.checked_sub(over) {
        Some(m) if m >= MIN_MTU => Ok(m),
        _ => Err(CniError::invalid_config(format!(
            "underlay {} has MTU {}, too small for VXLAN (needs {}): \
             choose another underlay (underlayInterface) or set mtu",
            underlay.name,
            underlay.mtu,
            MIN_MTU + over
        ))),
    }
}

/// The operator's fields: `cni-bridge`'s, the underlay, and the node side's.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct VxlanFields {
    #[serde(flatten)]
    bridge: BridgeFields,
    #[serde(flatten)]
    underlay: UnderlayFields,
    #[serde(deserialize_with = "vni")]
    vni: Option<u32>,
    #[serde(deserialize_with = "port")]
    port: Option<u16>,
    device: Option<LinkName>,
    direct_routing: bool,
}

fn vni<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = u64::deserialize(d)?;
    match u32::try_from(v) {
        Ok(v) if v <= MAX_VNI => Ok(Some(v)),
        _ => Err(D::Error::custom(format!(
            "{v} is out of range: use 0 to {MAX_VNI}"
        ))),
    }
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let p = u64::deserialize(d)?;
    match u16::try_from(p) {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(D::Error::custom(format!(
            "{p} is not a UDP port: use 1 to 65535 (default {DEFAULT_PORT})"
        ))),
    }
}

/// The validated configuration of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The pod side, as `cni-bridge` runs it. Its `mtu` is the configured one; ADD
    /// fills in the underlay's when there is none (see [`VxlanConfig::underlay`]).
    pub bridge: BridgeConfig,
    /// How the underlay is found (`underlayInterface`, `underlayAddress`, else the
    /// default route's interface).
    pub underlay: UnderlaySelect,
    /// The node side.
    pub node: VxlanOptions,
}

impl VxlanConfig {
    /// Validates the plugin fields of `conf`. Every problem is `InvalidConfig` (7).
    pub fn from_conf(conf: &NetConf) -> Result<VxlanConfig, CniError> {
        let mut f: VxlanFields = fields::parse(&conf.raw)?;
        // The bridge's config with this datapath's defaults: a gateway on the bridge
        // and the pods' default route through it are what routes to other nodes need.
        for (key, on) in [
            ("isGateway", &mut f.bridge.is_gateway),
            ("isDefaultGateway", &mut f.bridge.is_default_gateway),
        ] {
            if *on == Some(false) {
                return Err(CniError::invalid_config(format!(
                    "{key}: cni-vxlan always puts the node's gateway on the bridge and routes \
                     pods through it; remove \"{key}\": false"
                )));
            }
            *on = Some(true);
        }
        if f.bridge.bridge.is_none() {
            f.bridge.bridge = Some(LinkName::parse(DEFAULT_BRIDGE).map_err(CniError::internal)?);
        }
        let bridge = BridgeConfig::from_fields(f.bridge, conf)?;
        if bridge.ipam.is_none() {
            return Err(CniError::invalid_config(
                "ipam: cni-vxlan needs an IPAM plugin (e.g. cni-ipam in cluster mode with \
                 reserveGateway: true): pods are routed between nodes by their addresses",
            ));
        }
        let node = VxlanOptions {
            vni: f.vni.unwrap_or(DEFAULT_VNI),
            port: f.port.unwrap_or(DEFAULT_PORT),
            device: f.device.map(LinkName::into_string),
            mtu: bridge.mtu,
            direct_routing: f.direct_routing,
        };
        Ok(VxlanConfig {
            bridge,
            underlay: f.underlay.select()?,
            node,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// `v` with the common fields and, unless `v` says otherwise, `ipam.type` cni-ipam.
    fn parse(mut v: Value) -> Result<VxlanConfig, CniError> {
        for (k, x) in [
            ("cniVersion", "1.0.0"),
            ("name", "n"),
            ("type", "cni-vxlan"),
        ] {
            v[k] = json!(x);
        }
        if v.get("ipam").is_none() {
            v["ipam"] = json!({"type": "cni-ipam"});
        }
        VxlanConfig::from_conf(&NetConf::parse(v.to_string().as_bytes())?)
    }

    #[test]
    fn defaults() {
        let c = parse(json!({"name": "n", "type": "cni-vxlan"})).unwrap();
        assert_eq!(c.bridge.bridge, DEFAULT_BRIDGE);
        assert!(c.bridge.is_gateway && c.bridge.is_default_gateway);
        assert!(!c.bridge.ip_masq);
        assert_eq!(c.bridge.mtu, None);
        assert_eq!(c.underlay, UnderlaySelect::DefaultRoute);
        assert_eq!(c.node, VxlanOptions::default());
        assert_eq!(c.node.device_name(), "cni-vx.1");
        assert_eq!((c.node.vni, c.node.port), (1, 8472));
    }

    #[test]
    fn every_field() {
        let c = parse(json!({
            "bridge": "vxbr", "mtu": 1400, "ipMasq": true, "hairpinMode": true,
            "macspoofchk": true, "underlayInterface": "eth1", "vni": 42, "port": 4789,
            "device": "vx42", "directRouting": true, "isGateway": true
        }))
        .unwrap();
        assert_eq!(c.bridge.bridge, "vxbr");
        assert_eq!(c.bridge.mtu, Some(1400));
        assert!(c.bridge.ip_masq && c.bridge.hairpin_mode && c.bridge.macspoofchk);
        assert_eq!(c.underlay, UnderlaySelect::Interface("eth1".into()));
        assert_eq!(
            c.node,
            VxlanOptions {
                vni: 42,
                port: 4789,
                device: Some("vx42".into()),
                mtu: Some(1400),
                direct_routing: true,
            }
        );
        let c = parse(json!({"underlayAddress": "192.0.2.7", "vni": 16777215})).unwrap();
        assert_eq!(
            c.underlay,
            UnderlaySelect::Address("192.0.2.7".parse().unwrap())
        );
        assert_eq!(c.node.device_name(), "cni-vx.16777215");
    }

    #[test]
    fn bad_values_are_code_7_naming_the_field() {
        for (v, word) in [
            (json!({"isGateway": false}), "isGateway"),
            (json!({"isDefaultGateway": false}), "isDefaultGateway"),
            // Not booleans: refused as cni-bridge refuses them (were taken as on).
            (json!({"isGateway": "yes"}), "isGateway"),
            (json!({"isGateway": "no"}), "isGateway"),
            (json!({"isGateway": 0}), "isGateway"),
            (json!({"isGateway": "false"}), "isGateway"),
            (json!({"isDefaultGateway": "true"}), "isDefaultGateway"),
            (
                json!({"underlayInterface": "a", "underlayAddress": "192.0.2.1"}),
                "both",
            ),
            (json!({"underlayAddress": "nope"}), "underlayAddress"),
            (json!({"underlayInterface": "a b"}), "underlayInterface"),
            (json!({"vni": 16777216}), "vni"),
            (json!({"vni": -1}), "vni"),
            (json!({"port": 0}), "port"),
            (json!({"port": "x"}), "port"),
            (json!({"device": "a-name-longer-than-15"}), "device"),
            (json!({"directRouting": "yes"}), "directRouting"),
            (json!({"mtu": 20}), "mtu"),
            (json!({"bridge": ""}), "bridge"),
        ] {
            let e = parse(v.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{v}: {e}");
            assert!(e.msg.contains(word), "{v}: {e} does not name {word}");
        }
        let e = parse(json!({"ipam": {}})).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("ipam"), "{e}");
    }

    #[test]
    fn mtu_from_the_underlay() {
        let mut u = Underlay {
            index: 2,
            name: "eth0".into(),
            addr: "192.0.2.2".parse().unwrap(),
            networks: vec![],
            mtu: 1500,
        };
        assert_eq!(mtu_or_underlay(None, &u).unwrap(), 1450);
        assert_eq!(mtu_or_underlay(Some(1300), &u).unwrap(), 1300);
        u.addr = "2001:db8::2".parse().unwrap();
        assert_eq!(
            mtu_or_underlay(None, &u).unwrap(),
            1430,
            "IPv6 underlay: -70"
        );
        u.mtu = 100;
        let e = mtu_or_underlay(None, &u).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("eth0") && e.msg.contains("mtu"), "{e}");
    }
}
