//! The plugin's own configuration, parsed and validated once per invocation: the
//! operator's fields as typed [`BridgeFields`] (reference `bridge` names), then
//! [`BridgeConfig`] with the rules between fields. A plugin built on this one reads the
//! same [`BridgeFields`], sets its own defaults on them and builds the config with
//! [`BridgeConfig::from_fields`].

use std::str::FromStr;

use cni_core::netlink::MacAddr;
use cni_core::spec::config::NetConf;
use cni_core::spec::fields::{self, LinkName, Mtu};
use cni_core::CniError;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// Bridge used when `bridge` is not set.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// The operator's fields, typed and checked one by one as they are read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BridgeFields {
    /// `bridge`; absent: [`DEFAULT_BRIDGE`].
    pub bridge: Option<LinkName>,
    /// `isGateway`; absent is false (kept apart from `false` for derived plugins).
    pub is_gateway: Option<bool>,
    /// `isDefaultGateway`; absent is false.
    pub is_default_gateway: Option<bool>,
    pub force_address: bool,
    pub ip_masq: bool,
    pub mtu: Mtu,
    pub hairpin_mode: bool,
    pub promisc_mode: bool,
    /// `vlan`: 1..=4094; 0 or absent is none.
    #[serde(deserialize_with = "vlan")]
    pub vlan: Option<u16>,
    #[serde(rename = "enabledad")]
    pub enable_dad: bool,
    #[serde(rename = "macspoofchk")]
    pub macspoofchk: bool,
}

fn vlan<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    match i64::deserialize(d)? {
        0 => Ok(None),
        v => u16::try_from(v)
            .ok()
            .filter(|v| (1..=4094).contains(v))
            .map(Some)
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "{v} is invalid: use a VLAN id between 1 and 4094, or 0 / omit it for none"
                ))
            }),
    }
}

/// The validated configuration of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Bridge name (`bridge`, default `cni0`).
    pub bridge: String,
    /// Gateway address(es) on the bridge (`isGateway`, implied by `isDefaultGateway`).
    pub is_gateway: bool,
    /// Default route in the pod via the gateway (`isDefaultGateway`).
    pub is_default_gateway: bool,
    /// Replace a different address of the same subnet on the bridge (`forceAddress`).
    pub force_address: bool,
    /// Masquerade pod traffic leaving the pod subnet (`ipMasq`).
    pub ip_masq: bool,
    /// MTU of the bridge (on creation) and of the veth; `None`: the bridge's MTU.
    pub mtu: Option<u32>,
    /// Hairpin on the host veth's bridge port (`hairpinMode`).
    pub hairpin_mode: bool,
    /// Bridge in promiscuous mode (`promiscMode`).
    pub promisc_mode: bool,
    /// Port VLAN (PVID, untagged) of the host veth; turns on VLAN filtering (`vlan`).
    pub vlan: Option<u16>,
    /// Keep IPv6 duplicate address detection in the pod (`enabledad`, default false).
    pub enable_dad: bool,
    /// Drop frames from the pod whose source MAC is not the pod's (`macspoofchk`).
    pub macspoofchk: bool,
    /// MAC requested for the pod interface (`runtimeConfig.mac`, then `args.cni.mac`).
    pub mac: Option<MacAddr>,
    /// IPAM plugin type (`ipam.type`); `None`: layer 2 only, no addresses.
    pub ipam: Option<String>,
}

impl BridgeConfig {
    /// Validates the plugin fields of `conf`. Every problem is `InvalidConfig` (7).
    pub fn from_conf(conf: &NetConf) -> Result<BridgeConfig, CniError> {
        BridgeConfig::from_fields(fields::parse(&conf.raw)?, conf)
    }

    /// The configuration from already-read fields (a derived plugin's defaults set) and
    /// what `conf` says about IPAM and the requested MAC.
    pub fn from_fields(f: BridgeFields, conf: &NetConf) -> Result<BridgeConfig, CniError> {
        // `"ipam": {"type": ""}` means layer 2 only, as in the reference plugin.
        let ipam = conf
            .ipam
            .as_ref()
            .map(|i| i.plugin_type.clone())
            .filter(|t| !t.is_empty());
        BridgeConfig::build(f, ipam, conf.requested_mac())
    }

    /// The testable core of [`BridgeConfig::from_fields`]: the rules between fields.
    fn build(
        f: BridgeFields,
        ipam: Option<String>,
        mac: Option<&str>,
    ) -> Result<BridgeConfig, CniError> {
        let mac = match mac {
            None => None,
            Some(s) => Some(MacAddr::from_str(s).map_err(|e| {
                CniError::invalid_config(format!(
                    "requested MAC {s:?} (runtimeConfig.mac / args.cni.mac) is invalid: {}",
                    e.msg
                ))
            })?),
        };
        if let Some(t) = &ipam {
            fields::validate_ipam_type(t)?;
        }
        if f.hairpin_mode && f.promisc_mode {
            return Err(CniError::invalid_config(
                "hairpinMode and promiscMode cannot both be true: choose one",
            ));
        }
        let is_default_gateway = f.is_default_gateway.unwrap_or(false);
        Ok(BridgeConfig {
            bridge: f
                .bridge
                .map_or_else(|| DEFAULT_BRIDGE.to_string(), LinkName::into_string),
            is_gateway: f.is_gateway.unwrap_or(false) || is_default_gateway,
            is_default_gateway,
            force_address: f.force_address,
            ip_masq: f.ip_masq,
            mtu: f.mtu.0,
            hairpin_mode: f.hairpin_mode,
            promisc_mode: f.promisc_mode,
            vlan: f.vlan,
            enable_dad: f.enable_dad,
            macspoofchk: f.macspoofchk,
            mac,
            ipam,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<BridgeConfig, CniError> {
        BridgeConfig::build(fields::parse(&v)?, Some("host-local".into()), None)
    }

    #[test]
    fn defaults() {
        let c = parse(json!({"name": "n", "type": "cni-bridge"})).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.is_default_gateway && !c.ip_masq && !c.enable_dad);
        assert_eq!(c.mtu, None);
        assert_eq!(c.vlan, None);
        assert_eq!(c.ipam.as_deref(), Some("host-local"));
    }

    #[test]
    fn default_gateway_implies_gateway() {
        let c = parse(json!({"isDefaultGateway": true, "bridge": "br-x"})).unwrap();
        assert!(c.is_gateway && c.is_default_gateway);
        assert_eq!(c.bridge, "br-x");
    }

    #[test]
    fn all_fields() {
        let c = parse(json!({
            "bridge": "b0", "isGateway": true, "forceAddress": true, "ipMasq": true,
            "mtu": 1400, "hairpinMode": true, "vlan": 100,
            "enabledad": true, "macspoofchk": true
        }))
        .unwrap();
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.vlan, Some(100));
        assert!(c.force_address && c.ip_masq && c.hairpin_mode && !c.promisc_mode);
        assert!(c.enable_dad && c.macspoofchk);
    }

    #[test]
    fn zero_means_unset() {
        let c = parse(json!({"mtu": 0, "vlan": 0})).unwrap();
        assert_eq!((c.mtu, c.vlan), (None, None));
    }

    #[test]
    fn bad_values_are_code_7() {
        for (v, word) in [
            (json!({"vlan": 4095}), "vlan: 4095"),
            (json!({"vlan": -1}), "vlan: -1"),
            (json!({"vlan": "x"}), "vlan: "),
            (json!({"mtu": 20}), "mtu: 20"),
            (json!({"mtu": "big"}), "mtu: "),
            (json!({"isGateway": "yes"}), "isGateway: "),
            (json!({"enabledad": 1}), "enabledad: "),
            (json!({"bridge": "a-name-longer-than-15"}), "bridge: "),
            (json!({"bridge": ""}), "bridge: "),
            (json!({"bridge": "a b"}), "bridge: "),
            (
                json!({"hairpinMode": true, "promiscMode": true}),
                "choose one",
            ),
        ] {
            let e = parse(v.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{v}: {e}");
            assert!(e.msg.contains(word), "{v}: {e} does not name {word}");
        }
    }

    #[test]
    fn no_ipam_is_layer2() {
        let c = BridgeConfig::build(BridgeFields::default(), None, None).unwrap();
        assert_eq!(c.ipam, None);
    }
}
