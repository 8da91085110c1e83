//! The plugin's own configuration, parsed and validated once per invocation.

use cni_core::netlink::UnderlaySelect;
use cni_core::spec::config::NetConf;
use cni_core::spec::fields::{self, Mtu, UnderlayFields};
use cni_core::CniError;
use serde::Deserialize;

use crate::Datapath;

/// The operator's fields, typed and checked one by one as they are read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RoutedFields {
    ip_masq: bool,
    mtu: Mtu,
    #[serde(flatten)]
    underlay: UnderlayFields,
}

/// The validated configuration of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutedConfig {
    /// Masquerade pod traffic leaving the pod's addresses (`ipMasq`, default false).
    pub ip_masq: bool,
    /// MTU of both veth ends (`mtu`); `None` (absent or 0): the underlay's MTU minus the
    /// datapath's overhead.
    pub mtu: Option<u32>,
    /// Where the underlay MTU is read (`underlayInterface` or `underlayAddress`, else
    /// the interface of the default route).
    pub underlay: UnderlaySelect,
    /// IPAM plugin type (`ipam.type`, required: a routed pod without an address has no
    /// route to it).
    pub ipam: String,
}

impl RoutedConfig {
    /// Validates the plugin fields of `conf`. Every problem is `InvalidConfig` (7).
    pub fn from_conf(dp: &Datapath, conf: &NetConf) -> Result<RoutedConfig, CniError> {
        let ipam = conf.ipam.as_ref().map(|i| i.plugin_type.clone());
        RoutedConfig::from_parts(dp, &conf.raw, ipam)
    }

    /// The testable core of [`RoutedConfig::from_conf`].
    fn from_parts(
        dp: &Datapath,
        raw: &serde_json::Value,
        ipam: Option<String>,
    ) -> Result<RoutedConfig, CniError> {
        let f: RoutedFields = fields::parse(raw)?;
        let underlay = f.underlay.select()?;
        let ipam = match ipam {
            None => {
                return Err(CniError::invalid_config(format!(
                    "{} needs an \"ipam\" section (e.g. {{\"type\": \"cni-ipam\", ...}}): \
                     a routed pod without an address is unreachable",
                    dp.name
                )))
            }
            Some(t) => {
                fields::validate_ipam_type(&t)?;
                t
            }
        };
        Ok(RoutedConfig {
            ip_masq: f.ip_masq,
            mtu: f.mtu.0,
            underlay,
            ipam,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ROUTED;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<RoutedConfig, CniError> {
        RoutedConfig::from_parts(&ROUTED, &v, Some("host-local".into()))
    }

    #[test]
    fn defaults() {
        let c = parse(json!({"name": "n", "type": "cni-routed"})).unwrap();
        assert!(!c.ip_masq);
        assert_eq!(c.mtu, None);
        assert_eq!(c.underlay, UnderlaySelect::DefaultRoute);
        assert_eq!(c.ipam, "host-local");
    }

    #[test]
    fn all_fields() {
        let c = parse(json!({"ipMasq": true, "mtu": 1400, "underlayInterface": "eth1"})).unwrap();
        assert!(c.ip_masq);
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.underlay, UnderlaySelect::Interface("eth1".into()));
        let c = parse(json!({"underlayAddress": "fd00::2", "mtu": 0})).unwrap();
        assert_eq!(
            c.underlay,
            UnderlaySelect::Address("fd00::2".parse().unwrap())
        );
        assert_eq!(c.mtu, None);
    }

    #[test]
    fn bad_values_are_code_7_and_name_the_field() {
        for (v, word) in [
            (json!({"mtu": 20}), "mtu"),
            (json!({"mtu": 70000}), "mtu"),
            (json!({"mtu": -1}), "mtu"),
            (json!({"mtu": "big"}), "mtu"),
            (json!({"ipMasq": "yes"}), "ipMasq"),
            (json!({"underlayInterface": ""}), "underlayInterface"),
            (
                json!({"underlayInterface": "a-name-longer-than-15"}),
                "underlayInterface",
            ),
            (json!({"underlayInterface": "a b"}), "underlayInterface"),
            (json!({"underlayInterface": 3}), "underlayInterface"),
            (json!({"underlayAddress": "10.0.0"}), "underlayAddress"),
            (json!({"underlayAddress": "10.0.0.1/24"}), "underlayAddress"),
            (
                json!({"underlayInterface": "eth0", "underlayAddress": "10.0.0.1"}),
                "choose one",
            ),
        ] {
            let e = parse(v.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{v}: {e}");
            assert!(e.msg.contains(word), "{v}: {e} does not mention {word}");
        }
        assert_eq!(
            RoutedConfig::from_parts(&ROUTED, &json!([]), Some("x".into()))
                .unwrap_err()
                .code,
            7
        );
    }

    #[test]
    fn ipam_is_required_and_valid() {
        for ipam in [None, Some(""), Some("../x"), Some("..")] {
            let e =
                RoutedConfig::from_parts(&ROUTED, &json!({}), ipam.map(String::from)).unwrap_err();
            assert_eq!(e.code, 7, "{ipam:?}: {e}");
            assert!(e.msg.contains("ipam"), "{e}");
        }
    }
}
