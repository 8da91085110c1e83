//! The pod side: `cni-bridge`'s ADD/DEL/CHECK/GC/STATUS driven with this datapath's
//! configuration. Only ADD differs: it needs the pod MTU (from the underlay unless
//! configured) and refuses an IPAM result without a gateway.

use cni_bridge::{attach, check as bcheck, detach, gc as bgc};
use cni_core::netlink::{block_on, Netlink, Underlay};
use cni_core::skel::{Call, Target};
use cni_core::{CniError, CniResult};
use tracing::debug;

use crate::config::{mtu_or_underlay, VxlanConfig};

/// What an operator reads when IPAM gives an IPv4 address without a gateway.
pub const NEEDS_GATEWAY: &str =
    "cni-vxlan needs a gateway from IPAM: with cni-ipam cluster mode set ipam.reserveGateway: true";

/// ADD: the bridge attachment with MTU = `mtu`, else the underlay's − 50.
pub fn add(call: &Call, target: &Target) -> Result<CniResult, CniError> {
    let cfg = VxlanConfig::from_conf(&call.conf)?;
    let mut bridge = cfg.bridge.clone();
    // Found before IPAM runs: a missing underlay fails the ADD with nothing to undo.
    let mtu = pod_mtu(&cfg)?;
    bridge.mtu = Some(mtu);
    attach::add_with(call, target, &bridge, &|r: &CniResult| {
        require_gateway(r)?;
        require_ipv6_mtu(r, mtu)
    })
}

/// The smallest MTU IPv6 works with (RFC 8200 §5): below it the kernel turns IPv6 off
/// on the link, and the pod's IPv6 address would silently not work.
pub const IPV6_MIN_MTU: u32 = 1280;

/// An IPv6 address from IPAM needs a pod MTU of at least [`IPV6_MIN_MTU`].
pub fn require_ipv6_mtu(result: &CniResult, mtu: u32) -> Result<(), CniError> {
    match result.ips.iter().find(|ip| ip.address.is_ipv6()) {
        Some(ip) if mtu < IPV6_MIN_MTU => Err(CniError::invalid_config(format!(
            "IPAM gave the IPv6 address {} but the pod MTU is {mtu}, below IPv6's minimum \
             {IPV6_MIN_MTU}: set mtu to at least {IPV6_MIN_MTU} with an underlay MTU of at \
             least {IPV6_MIN_MTU} + the VXLAN overhead (50 on an IPv4 underlay, 70 on an \
             IPv6 one), or remove the IPv6 pool",
            ip.address
        ))),
        _ => Ok(()),
    }
}

/// The pod MTU: the configured one, else the MTU of this network's VXLAN device when
/// `ipamd` has made it (so pods match the device whatever underlay family or `--mtu`
/// the daemon chose), else the underlay's minus the VXLAN overhead of its family (50 on
/// IPv4, 70 on IPv6).
pub fn pod_mtu(cfg: &VxlanConfig) -> Result<u32, CniError> {
    if let Some(m) = cfg.node.mtu {
        return Ok(m);
    }
    enum Found {
        Device(u32),
        Underlay(Underlay),
    }
    let device = cfg.node.device_name();
    let found = block_on(async {
        let nl = Netlink::connect()?;
        if let Some(l) = nl.link_by_name(&device).await? {
            if l.kind.as_deref() == Some("vxlan") {
                return Ok(Found::Device(l.mtu));
            }
        }
        Ok::<_, CniError>(nl.underlay(&cfg.underlay).await.map(Found::Underlay)?)
    })
    .and_then(|r| r)
    .map_err(|e| e.context("finding the underlay for the pod MTU (or set mtu)"))?;
    let underlay = match found {
        Found::Device(mtu) => {
            debug!(device = %device, mtu, "pod MTU from the VXLAN device");
            return Ok(mtu);
        }
        Found::Underlay(u) => u,
    };
    let mtu = mtu_or_underlay(None, &underlay)?;
    debug!(underlay = %underlay.name, underlay_mtu = underlay.mtu, mtu, "pod MTU from the underlay");
    Ok(mtu)
}

/// Every IPv4 address needs IPAM's gateway: it is the node's address on the bridge and
/// on the VXLAN device, which every other node routes this node's blocks through. A
/// gateway made up here (as `cni-bridge` does) would differ from the one peers use.
pub fn require_gateway(result: &CniResult) -> Result<(), CniError> {
    match result
        .ips
        .iter()
        .find(|ip| ip.address.is_ipv4() && ip.gateway.is_none())
    {
        Some(ip) => Err(CniError::invalid_config(format!(
            "{NEEDS_GATEWAY} (IPAM gave {} without one)",
            ip.address
        ))),
        None => Ok(()),
    }
}

/// DEL: needs no underlay (it must work when the node is half gone).
pub fn del(call: &Call, target: &Target) -> Result<(), CniError> {
    detach::del_with(call, target, &VxlanConfig::from_conf(&call.conf)?.bridge)
}

pub fn check(call: &Call, target: &Target) -> Result<(), CniError> {
    bcheck::check_with(call, target, &VxlanConfig::from_conf(&call.conf)?.bridge)
}

pub fn gc(call: &Call) -> Result<(), CniError> {
    bgc::gc_with(call, &VxlanConfig::from_conf(&call.conf)?.bridge)
}

pub fn status(call: &Call) -> Result<(), CniError> {
    bgc::status_with(call, &VxlanConfig::from_conf(&call.conf)?.bridge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_core::spec::result::IpConfig;

    fn ipc(a: &str, gw: Option<&str>) -> IpConfig {
        IpConfig {
            address: a.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            interface: None,
        }
    }

    #[test]
    fn gateway_required_for_every_ipv4_address() {
        let ok = CniResult {
            ips: vec![
                ipc("10.1.0.5/26", Some("10.1.0.1")),
                ipc("fd00::5/122", None),
            ],
            ..Default::default()
        };
        assert!(require_gateway(&ok).is_ok());
        let bad = CniResult {
            ips: vec![ipc("10.1.0.5/26", None)],
            ..Default::default()
        };
        let e = require_gateway(&bad).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.starts_with(NEEDS_GATEWAY) && e.msg.contains("10.1.0.5/26"),
            "{e}"
        );
    }

    #[test]
    fn ipv6_needs_an_mtu_of_1280() {
        let v6 = CniResult {
            ips: vec![ipc("fd00::5/122", Some("fd00::1"))],
            ..Default::default()
        };
        assert!(require_ipv6_mtu(&v6, 1280).is_ok());
        let e = require_ipv6_mtu(&v6, 1279).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("1280") && e.msg.contains("mtu"), "{e}");
        let v4 = CniResult {
            ips: vec![ipc("10.1.0.5/26", Some("10.1.0.1"))],
            ..Default::default()
        };
        assert!(require_ipv6_mtu(&v4, 600).is_ok());
    }
}
