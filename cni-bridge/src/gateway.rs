//! Gateways: which address the pod routes through, and that address on the bridge.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cni_core::netlink::Netlink;
use cni_core::spec::result::{CniResult, Route};
use cni_core::CniError;
use ipnetwork::IpNetwork;
use tracing::debug;

/// The first host address of `net`'s subnet (reference `calcGatewayIP`).
pub fn first_host(net: IpNetwork) -> IpAddr {
    match net {
        IpNetwork::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()).wrapping_add(1))),
        IpNetwork::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()).wrapping_add(1))),
    }
}

/// Points every IP at the pod interface (`iface`), fills in missing gateways when the
/// bridge is the gateway, and adds a default route per family when asked to.
/// Returns the gateway addresses to put on the bridge (gateway IP with the pod prefix).
pub fn plan(
    result: &mut CniResult,
    iface: usize,
    is_gateway: bool,
    is_default_gateway: bool,
) -> Result<Vec<IpNetwork>, CniError> {
    let mut bridge_addrs = Vec::new();
    let mut default_gw: [Option<IpAddr>; 2] = [None, None];
    for ip in &mut result.ips {
        ip.interface = Some(iface);
        if ip.gateway.is_none() && is_gateway {
            ip.gateway = Some(first_host(ip.address));
        }
        let Some(gw) = ip.gateway else { continue };
        if gw == ip.address.ip() {
            return Err(CniError::invalid_config(format!(
                "IPAM gave the pod {} and the same address as its gateway: reserve the gateway in the IPAM range",
                ip.address
            )));
        }
        let fam = usize::from(gw.is_ipv6());
        if default_gw[fam].is_none() {
            default_gw[fam] = Some(gw);
        }
        if is_gateway {
            let net = IpNetwork::new(gw, ip.address.prefix())
                .map_err(|e| CniError::internal(format!("gateway {gw}: {e}")))?;
            if !bridge_addrs.contains(&net) {
                bridge_addrs.push(net);
            }
        }
    }
    if is_default_gateway {
        for gw in default_gw.into_iter().flatten() {
            let v6 = gw.is_ipv6();
            let has_default = result
                .routes
                .iter()
                .any(|r| r.dst.prefix() == 0 && r.dst.is_ipv6() == v6);
            if !has_default {
                let dst = if v6 {
                    IpNetwork::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
                } else {
                    IpNetwork::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
                }
                .map_err(|e| CniError::internal(format!("default route: {e}")))?;
                result.routes.push(Route::new(dst, Some(gw)));
            }
        }
    }
    Ok(bridge_addrs)
}

/// Puts `gw` on the bridge. Another address of the same subnet is an error unless
/// `force` (reference `forceAddress`), which replaces it. IPv6 link-local addresses are
/// left alone.
pub async fn ensure_on_bridge(
    nl: &Netlink,
    bridge: &str,
    index: u32,
    gw: IpNetwork,
    force: bool,
) -> Result<(), CniError> {
    // Only the gateway's family can conflict with it.
    let existing = nl
        .addresses_of_family(index, gw.is_ipv6())
        .await
        .map_err(|e| e.context(format!("listing addresses of bridge {bridge}")))?;
    for a in existing {
        if a.is_ipv6() != gw.is_ipv6() {
            continue;
        }
        if a == gw {
            return Ok(());
        }
        if let IpNetwork::V6(n) = a {
            if n.ip().segments()[0] & 0xffc0 == 0xfe80 {
                continue;
            }
        }
        if a.contains(gw.ip()) || gw.contains(a.ip()) {
            if !force {
                return Err(CniError::internal(format!(
                    "bridge {bridge} already has address {a}, which differs from the gateway {gw}: \
                     remove it, or set \"forceAddress\": true to replace it"
                )));
            }
            debug!(bridge, old = %a, new = %gw, "forceAddress: replacing bridge address");
            nl.del_address(index, a)
                .await
                .map_err(|e| e.context(format!("removing {a} from bridge {bridge}")))?;
        }
    }
    Ok(nl
        .add_address(index, gw)
        .await
        .map_err(|e| e.context(format!("adding gateway {gw} to bridge {bridge}")))?)
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
    fn first_host_of_subnet() {
        assert_eq!(
            first_host("10.1.2.7/24".parse().unwrap()),
            "10.1.2.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            first_host("fd00::9/64".parse().unwrap()),
            "fd00::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn gateway_filled_and_default_route_added() {
        let mut r = CniResult {
            ips: vec![
                ipc("10.1.2.7/24", None),
                ipc("fd00::9/64", Some("fd00::fe")),
            ],
            ..Default::default()
        };
        let addrs = plan(&mut r, 2, true, true).unwrap();
        assert_eq!(
            addrs,
            vec![
                "10.1.2.1/24".parse().unwrap(),
                "fd00::fe/64".parse().unwrap()
            ]
        );
        assert!(r.ips.iter().all(|i| i.interface == Some(2)));
        assert_eq!(r.routes.len(), 2);
        assert_eq!(r.routes[0].gw, Some("10.1.2.1".parse().unwrap()));
        assert_eq!(r.routes[1].dst, "::/0".parse().unwrap());
    }

    #[test]
    fn existing_default_route_kept() {
        let mut r = CniResult {
            ips: vec![ipc("10.1.2.7/24", Some("10.1.2.254"))],
            ..Default::default()
        };
        r.routes
            .push(Route::new("0.0.0.0/0".parse().unwrap(), None));
        plan(&mut r, 2, true, true).unwrap();
        assert_eq!(r.routes.len(), 1);
    }

    #[test]
    fn not_gateway_means_no_bridge_address() {
        let mut r = CniResult {
            ips: vec![ipc("10.1.2.7/24", Some("10.1.2.1"))],
            ..Default::default()
        };
        assert!(plan(&mut r, 2, false, false).unwrap().is_empty());
        assert_eq!(r.ips[0].gateway, Some("10.1.2.1".parse().unwrap()));
    }

    #[test]
    fn gateway_equal_to_pod_ip_rejected() {
        let mut r = CniResult {
            ips: vec![ipc("10.1.2.1/24", None)],
            ..Default::default()
        };
        assert_eq!(plan(&mut r, 2, true, false).unwrap_err().code, 7);
    }
}
