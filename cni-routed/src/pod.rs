//! What the pod and the host end agree on without asking each other: the host veth's
//! name, its MAC and link-local gateway addresses, and the pod's addresses and routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cni_core::hash::stable_hash;
use cni_core::netlink::MacAddr;
use cni_core::spec::names::NetworkName;
use cni_core::spec::result::{CniResult, Route};
use cni_core::CniError;
use ipnetwork::IpNetwork;

/// The pod's IPv4 gateway: never on the wire, answered by the host end (a permanent
/// neighbour entry in the pod, and proxy ARP on the host end), as Calico does.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The MAC of every host end: fixed, so the pod's gateway entries are known up front.
pub const HOST_MAC: MacAddr = MacAddr([0xee; 6]);
/// The host end's IPv6 link-local address, derived (EUI-64) from [`HOST_MAC`]: the pod's
/// IPv6 gateway.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);
/// Prefix of the host veth names.
pub const VETH_PREFIX: &str = "rt";

/// Index of the pod interface in the result's `interfaces` (host veth, pod).
pub const POD_IFACE: usize = 1;

/// The host end's name for an attachment: `rt` + 12 hex digits of a stable hash of
/// (network, container id, ifname), so DEL, CHECK and a retried ADD find it without state.
pub fn host_veth_name(network: &NetworkName, container_id: &str, ifname: &str) -> String {
    let h = stable_hash(&[network.as_str(), container_id, ifname]);
    format!("{VETH_PREFIX}{:012x}", h & 0xffff_ffff_ffff)
}

/// The pod's gateway for addresses of `ip`'s family.
pub fn gateway_for(ip: IpAddr) -> IpAddr {
    if ip.is_ipv4() {
        IpAddr::V4(GATEWAY_V4)
    } else {
        IpAddr::V6(GATEWAY_V6)
    }
}

/// `ip` as a host prefix (/32, /128): whatever the pool's prefix, the pod has no
/// neighbours, only its gateway.
pub fn host_prefix(ip: IpAddr) -> IpNetwork {
    match ip {
        IpAddr::V4(v4) => IpNetwork::V4(v4.into()),
        IpAddr::V6(v6) => IpNetwork::V6(v6.into()),
    }
}

/// Rewrites IPAM's answer for a routed pod: each address as a host prefix on the pod
/// interface with the link-local gateway; every route via that gateway; a default route
/// per family unless IPAM gave one.
pub fn plan(result: &mut CniResult) -> Result<(), CniError> {
    if result.ips.is_empty() {
        return Err(CniError::internal("IPAM returned no IP address"));
    }
    for ip in &mut result.ips {
        ip.address = host_prefix(ip.address.ip());
        ip.gateway = Some(gateway_for(ip.address.ip()));
        ip.interface = Some(POD_IFACE);
    }
    // Routes of a family the pod has no address of could never be used.
    let has = |v6: bool| result.ips.iter().any(|i| i.address.is_ipv6() == v6);
    result.routes.retain(|r| has(r.dst.is_ipv6()));
    for r in &mut result.routes {
        r.gw = Some(gateway_for(r.dst.ip()));
    }
    for v6 in [false, true] {
        let has_default = result
            .routes
            .iter()
            .any(|r| r.dst.prefix() == 0 && r.dst.is_ipv6() == v6);
        if has(v6) && !has_default {
            let any: IpAddr = if v6 {
                Ipv6Addr::UNSPECIFIED.into()
            } else {
                Ipv4Addr::UNSPECIFIED.into()
            };
            let dst = IpNetwork::new(any, 0)
                .map_err(|e| CniError::internal(format!("default route: {e}")))?;
            result.routes.push(Route::new(dst, Some(gateway_for(any))));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_core::spec::result::IpConfig;

    #[test]
    fn veth_name_is_stable_short_and_distinct() {
        let n = NetworkName::parse("net").unwrap();
        let a = host_veth_name(&n, "c1", "eth0");
        assert_eq!(a, host_veth_name(&n, "c1", "eth0"));
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("rt"));
        assert_ne!(a, host_veth_name(&n, "c1", "eth1"));
        assert_ne!(a, host_veth_name(&n, "c2", "eth0"));
        let m = NetworkName::parse("other").unwrap();
        assert_ne!(a, host_veth_name(&m, "c1", "eth0"));
    }

    #[test]
    fn gateway_v6_is_the_eui64_of_the_host_mac() {
        let m = HOST_MAC.0;
        let eui = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
        let mut o = [0u8; 16];
        o[0] = 0xfe;
        o[1] = 0x80;
        o[8..].copy_from_slice(&eui);
        assert_eq!(GATEWAY_V6, Ipv6Addr::from(o));
    }

    fn ipc(a: &str, gw: Option<&str>) -> IpConfig {
        IpConfig {
            address: a.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            interface: None,
        }
    }

    #[test]
    fn plan_makes_host_prefixes_and_link_local_routes() {
        let mut r = CniResult {
            ips: vec![
                ipc("10.1.2.7/24", Some("10.1.2.1")),
                ipc("fd00::9/64", None),
            ],
            routes: vec![
                Route::new(
                    "198.51.100.0/24".parse().unwrap(),
                    Some("10.1.2.1".parse().unwrap()),
                ),
                Route::new("fd01::/64".parse().unwrap(), None),
            ],
            ..Default::default()
        };
        plan(&mut r).unwrap();
        assert_eq!(r.ips[0].address, "10.1.2.7/32".parse().unwrap());
        assert_eq!(r.ips[0].gateway, Some(IpAddr::V4(GATEWAY_V4)));
        assert_eq!(r.ips[1].address, "fd00::9/128".parse().unwrap());
        assert_eq!(r.ips[1].gateway, Some(IpAddr::V6(GATEWAY_V6)));
        assert!(r.ips.iter().all(|i| i.interface == Some(POD_IFACE)));
        let dsts: Vec<String> = r.routes.iter().map(|x| x.dst.to_string()).collect();
        assert_eq!(dsts, ["198.51.100.0/24", "fd01::/64", "0.0.0.0/0", "::/0"]);
        assert!(r
            .routes
            .iter()
            .all(|x| x.gw == Some(gateway_for(x.dst.ip()))));
    }

    #[test]
    fn plan_keeps_ipam_default_and_drops_routes_of_missing_family() {
        let mut r = CniResult {
            ips: vec![ipc("10.1.2.7/24", None)],
            routes: vec![
                Route::new("0.0.0.0/0".parse().unwrap(), None),
                Route::new("fd01::/64".parse().unwrap(), None),
            ],
            ..Default::default()
        };
        plan(&mut r).unwrap();
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.routes[0].gw, Some(IpAddr::V4(GATEWAY_V4)));
        assert!(plan(&mut CniResult::default()).is_err());
    }
}
