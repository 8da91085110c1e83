//! The pod side: `cni-bridge`'s steps of the veth transaction with this datapath's
//! configuration. Only ADD differs: it needs the pod MTU (from the VXLAN device or the
//! underlay unless configured) and refuses an IPAM result without a gateway. DEL, CHECK,
//! GC and STATUS need no underlay (they must work when the node is half gone).

use cni_bridge::Bridge;
use cni_core::attach::{Ctx, Links, Made, Shared, VethDatapath, VethPlugin};
use cni_core::netlink::{Netlink, UnderlaySelect};
use cni_core::spec::config::NetConf;
use cni_core::{CniError, CniResult, KernelError};
use ipnetwork::IpNetwork;
use tracing::debug;

use crate::config::{mtu_or_underlay, VxlanConfig, VxlanOptions};

/// What an operator reads when IPAM gives an IPv4 address without a gateway.
pub const NEEDS_GATEWAY: &str =
    "cni-vxlan needs a gateway from IPAM: with cni-ipam cluster mode set ipam.reserveGateway: true";

/// The `cni-vxlan` plugin.
pub struct VxlanPlugin;

impl VethPlugin for VxlanPlugin {
    type Datapath = Vxlan;
    fn datapath(&self, conf: &NetConf) -> Result<Vxlan, CniError> {
        let VxlanConfig {
            bridge,
            underlay,
            node,
        } = VxlanConfig::from_conf(conf)?;
        Ok(Vxlan {
            bridge: Bridge::new(bridge),
            underlay,
            node,
        })
    }
}

/// The bridge's steps with this datapath's MTU and checks of IPAM's answer.
pub struct Vxlan {
    bridge: Bridge,
    underlay: UnderlaySelect,
    node: VxlanOptions,
}

impl VethDatapath for Vxlan {
    type Prepared = Option<u32>;

    fn shared(&self) -> Shared<'_> {
        self.bridge.shared()
    }
    /// Found before IPAM runs: a missing underlay fails the ADD with nothing to undo.
    async fn prepare(&self, ctx: &Ctx<'_>) -> Result<Option<u32>, CniError> {
        pod_mtu(&self.node, &self.underlay, ctx.host)
            .await
            .map(Some)
    }
    async fn links(
        &self,
        ctx: &Ctx<'_>,
        mtu: Option<u32>,
        made: &mut Made,
    ) -> Result<Links, CniError> {
        self.bridge.links(ctx, mtu, made).await
    }
    async fn configure(
        &self,
        ctx: &Ctx<'_>,
        links: &Links,
        result: &mut CniResult,
    ) -> Result<(), CniError> {
        require_gateway(result)?;
        require_ipv6_mtu(result, links.mtu)?;
        self.bridge.configure(ctx, links, result).await
    }
    async fn check(
        &self,
        ctx: &Ctx<'_>,
        prev: &CniResult,
        ips: &[IpNetwork],
    ) -> Result<(), CniError> {
        self.bridge.check(ctx, prev, ips).await
    }
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
async fn pod_mtu(
    node: &VxlanOptions,
    underlay: &UnderlaySelect,
    host: &Netlink,
) -> Result<u32, CniError> {
    if let Some(m) = node.mtu {
        return Ok(m);
    }
    let device = node.device_name();
    let context = |e: KernelError| e.context("finding the underlay for the pod MTU (or set mtu)");
    if let Some(l) = host.link_by_name(&device).await.map_err(context)? {
        if l.kind.as_deref() == Some("vxlan") {
            debug!(device = %device, mtu = l.mtu, "pod MTU from the VXLAN device");
            return Ok(l.mtu);
        }
    }
    let underlay = host.underlay(underlay).await.map_err(context)?;
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
