//! The plugin's own configuration, parsed and validated once per invocation.

use std::str::FromStr;

use cni_core::netlink::MacAddr;
use cni_core::spec::config::NetConf;
use cni_core::spec::fields::{self, field, flag, validate_link_name};
use cni_core::CniError;

/// Bridge used when `bridge` is not set.
pub const DEFAULT_BRIDGE: &str = "cni0";

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
        // `"ipam": {"type": ""}` means layer 2 only, as in the reference plugin.
        let ipam = conf
            .ipam
            .as_ref()
            .map(|i| i.plugin_type.clone())
            .filter(|t| !t.is_empty());
        BridgeConfig::from_parts(&conf.raw, ipam, conf.requested_mac())
    }

    /// The testable core of [`BridgeConfig::from_conf`].
    pub fn from_parts(
        raw: &serde_json::Value,
        ipam: Option<String>,
        mac: Option<&str>,
    ) -> Result<BridgeConfig, CniError> {
        fields::object(raw)?;
        let r = RawConfig {
            bridge: field(raw, "bridge")?,
            is_gateway: flag(raw, "isGateway")?,
            is_default_gateway: flag(raw, "isDefaultGateway")?,
            force_address: flag(raw, "forceAddress")?,
            ip_masq: flag(raw, "ipMasq")?,
            mtu: field(raw, "mtu")?,
            hairpin_mode: flag(raw, "hairpinMode")?,
            promisc_mode: flag(raw, "promiscMode")?,
            vlan: field(raw, "vlan")?,
            enable_dad: flag(raw, "enabledad")?,
            macspoofchk: flag(raw, "macspoofchk")?,
        };

        let bridge = match r.bridge {
            None => DEFAULT_BRIDGE.to_string(),
            Some(b) => {
                validate_link_name("bridge", &b)?;
                b
            }
        };
        let mtu = fields::mtu(r.mtu, "the bridge")?;
        let vlan = match r.vlan {
            None | Some(0) => None,
            Some(v) if (1..=4094).contains(&v) => u16::try_from(v).ok(),
            Some(v) => {
                return Err(CniError::invalid_config(format!(
                    "vlan {v} is invalid: use a VLAN id between 1 and 4094, or 0 / omit it for none"
                )))
            }
        };
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

        if r.hairpin_mode && r.promisc_mode {
            return Err(CniError::invalid_config(
                "hairpinMode and promiscMode cannot both be true: choose one",
            ));
        }

        Ok(BridgeConfig {
            bridge,
            is_gateway: r.is_gateway || r.is_default_gateway,
            is_default_gateway: r.is_default_gateway,
            force_address: r.force_address,
            ip_masq: r.ip_masq,
            mtu,
            hairpin_mode: r.hairpin_mode,
            promisc_mode: r.promisc_mode,
            vlan,
            enable_dad: r.enable_dad,
            macspoofchk: r.macspoofchk,
            mac,
            ipam,
        })
    }
}

/// The operator's fields, typed but not yet validated (reference `bridge` names).
struct RawConfig {
    bridge: Option<String>,
    is_gateway: bool,
    is_default_gateway: bool,
    force_address: bool,
    ip_masq: bool,
    mtu: Option<u32>,
    hairpin_mode: bool,
    promisc_mode: bool,
    vlan: Option<i64>,
    enable_dad: bool,
    macspoofchk: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<BridgeConfig, CniError> {
        BridgeConfig::from_parts(&v, Some("host-local".into()), None)
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
        for v in [
            json!({"vlan": 4095}),
            json!({"vlan": -1}),
            json!({"mtu": 20}),
            json!({"mtu": "big"}),
            json!({"isGateway": "yes"}),
            json!({"bridge": "a-name-longer-than-15"}),
            json!({"bridge": ""}),
            json!({"bridge": "a b"}),
            json!({"hairpinMode": true, "promiscMode": true}),
        ] {
            let e = parse(v.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{v}: {e}");
        }
    }

    #[test]
    fn no_ipam_is_layer2() {
        let c = BridgeConfig::from_parts(&json!({}), None, None).unwrap();
        assert_eq!(c.ipam, None);
    }
}
