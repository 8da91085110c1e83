//! Which address families a datapath can carry over which underlay, checked once at
//! start: a pool / datapath / underlay combination that cannot carry a family of the
//! pool fails `ipamd run` with a message naming what to change, instead of a node that
//! reports healthy while its pods of that family cannot reach other nodes.
//!
//! | datapath | IPv4 pods | IPv6 pods |
//! |---|---|---|
//! | vxlan | over an IPv4 or IPv6 underlay | the same (device MTU ≥ 1280) |
//! | host-gw | via the peers' IPv4 underlay addresses | via their IPv6 underlay addresses |
//! | ipip | over an IPv4 underlay (`tunl0`) | dual-stack: through `sit0` (module `sit`) over the IPv4 underlay; IPv6-only pool refused |
//! | bgp | next hop: the IPv4 underlay address; on an IPv6-only underlay the IPv6 one (RFC 8950 extended next hop, to peers that negotiate it) | next hop: the IPv6 underlay address (needs one: refused without) |

use cni_core::netlink::Underlay;
use ipnetwork::IpNetwork;

use crate::cli::{DatapathArgs, DatapathKind};
use crate::error::Error;

/// The smallest MTU IPv6 works with (RFC 8200 §5); the kernel turns IPv6 off on a link
/// with a smaller one.
pub(crate) const IPV6_MIN_MTU: u32 = 1280;

fn has(pools: &[IpNetwork], v6: bool) -> Option<&IpNetwork> {
    pools.iter().find(|p| p.is_ipv6() == v6)
}

/// What can be told from the flags alone (before the underlay is looked up).
pub(crate) fn check_pools(dp: &DatapathArgs, pools: &[IpNetwork]) -> Result<(), Error> {
    if dp.kind == DatapathKind::Ipip && has(pools, false).is_none() {
        if let Some(p) = has(pools, true) {
            return Err(Error::Usage(format!(
                "--datapath ipip carries IPv4 pods in tunl0 (IPv4-in-IPv4), and --pool {p} \
                 is an IPv6-only pool: use --datapath vxlan (carries IPv4 and IPv6 over an \
                 IPv4 or IPv6 underlay), host-gw or bgp for IPv6 pods, or add an IPv4 pool \
                 (IPv6 then goes through sit0)"
            )));
        }
    }
    Ok(())
}

/// ipip with a dual-stack pool carries IPv6 through `sit0`: the `sit` module must be
/// there (`has_sit`: this namespace has `sit0`).
pub(crate) fn check_ipip_sit(
    dp: &DatapathArgs,
    pools: &[IpNetwork],
    has_sit: bool,
) -> Result<(), Error> {
    match has(pools, true) {
        Some(p) if dp.kind == DatapathKind::Ipip && !has_sit => Err(Error::Usage(format!(
            "--datapath ipip carries the IPv6 pool {p} through sit0 (IPv6-in-IPv4), and this \
             kernel has no sit module loaded (no sit0): load it (modprobe sit), use \
             --datapath vxlan for a dual-stack pool, or remove the IPv6 pool (a dual-stack \
             pool)"
        ))),
        _ => Ok(()),
    }
}

/// What needs the underlay: its families and MTU. `tunnel_mtu` is the MTU of the
/// datapath's device (vxlan: configured or derived from the underlay).
pub(crate) fn check_underlay(
    dp: &DatapathArgs,
    pools: &[IpNetwork],
    underlay: &Underlay,
    tunnel_mtu: Option<u32>,
) -> Result<(), Error> {
    match dp.kind {
        DatapathKind::HostGw => {
            for v6 in [false, true] {
                let Some(p) = has(pools, v6) else { continue };
                if underlay.addr_of(v6).is_none() {
                    let family = if v6 { "IPv6" } else { "IPv4" };
                    return Err(Error::Usage(format!(
                        "--datapath host-gw routes the {family} pool {p} via each node's \
                         {family} underlay address, and the underlay interface {} has none \
                         ({}): give {} a global {family} address (every node on the same \
                         link), use --datapath vxlan, or remove the {family} pool",
                        underlay.name,
                        shown(underlay),
                        underlay.name
                    )));
                }
            }
        }
        DatapathKind::Ipip => {
            if underlay.addr_of(false).is_none() {
                return Err(Error::Usage(format!(
                    "--datapath ipip needs an IPv4 underlay (tunl0 sends IPv4-in-IPv4), and \
                     {} has no IPv4 address ({}): give it one, or use --datapath vxlan, \
                     which runs over an IPv6 underlay",
                    underlay.name,
                    shown(underlay)
                )));
            }
        }
        DatapathKind::Vxlan => {
            if let (Some(p), Some(mtu)) = (has(pools, true), tunnel_mtu) {
                if mtu < IPV6_MIN_MTU {
                    let why = match dp.mtu {
                        Some(m) => format!("--mtu {m}"),
                        None => format!(
                            "underlay {} MTU {} minus {} of VXLAN over {}",
                            underlay.name,
                            underlay.mtu,
                            underlay.mtu.saturating_sub(mtu),
                            if underlay.addr.is_ipv6() {
                                "IPv6"
                            } else {
                                "IPv4"
                            },
                        ),
                    };
                    return Err(Error::Usage(format!(
                        "the VXLAN device MTU would be {mtu} ({why}), below IPv6's minimum \
                         {IPV6_MIN_MTU}, and --pool {p} is IPv6: raise the underlay MTU, set \
                         --mtu {IPV6_MIN_MTU} or more, or remove the IPv6 pool"
                    )));
                }
            }
        }
        DatapathKind::Bgp => {
            // IPv6 blocks need an IPv6 next hop: an IPv4 one would need IPv4-mapped next
            // hops and a tunnel (RFC 4798), which plain routing has not.
            if let (Some(p), None) = (has(pools, true), underlay.addr_of(true)) {
                return Err(Error::Usage(format!(
                    "--datapath bgp announces the IPv6 pool {p}'s blocks with this node's \
                     IPv6 underlay address as next hop, and the underlay interface {} has \
                     no global IPv6 address ({}): give {} one, use --datapath vxlan \
                     (carries IPv6 pods over an IPv4 underlay), or remove the IPv6 pool",
                    underlay.name,
                    shown(underlay),
                    underlay.name
                )));
            }
            // An IPv4 pool on an IPv6-only underlay is carried: RFC 8950 (see
            // `ipv4_via_ipv6`).
        }
        DatapathKind::None => {}
    }
    Ok(())
}

/// `--datapath bgp` with an IPv4 pool on an underlay with no IPv4 address: the IPv4
/// blocks go out with the node's IPv6 address as next hop (RFC 8950 extended next hop)
/// and learned ones are installed `via inet6`. Allowed: a peer that does not negotiate
/// the capability gets no IPv4 blocks (the speaker WARNs per peer); the pool it is.
pub(crate) fn ipv4_via_ipv6(
    dp: &DatapathArgs,
    pools: &[IpNetwork],
    underlay: &Underlay,
) -> Option<IpNetwork> {
    let p = has(pools, false)?;
    (dp.kind == DatapathKind::Bgp && underlay.addr_of(false).is_none()).then_some(*p)
}

fn shown(u: &Underlay) -> String {
    let nets: Vec<String> = u.networks.iter().map(ToString::to_string).collect();
    if nets.is_empty() {
        "no address".into()
    } else {
        nets.join(", ")
    }
}

/// A node's underlay `eth0` (index 2) holding `addrs` (CIDR text; the first is its
/// address), for the tests of this module and of `bgp`.
#[cfg(test)]
pub(crate) fn test_underlay(addrs: &[&str], mtu: u32) -> Underlay {
    let networks: Vec<IpNetwork> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    Underlay {
        index: 2,
        name: "eth0".into(),
        addr: networks[0].ip(),
        networks,
        mtu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn dp(kind: &str) -> DatapathArgs {
        let c = crate::cli::Cli::try_parse_from([
            "ipamd",
            "run",
            "--network",
            "n",
            "--pool",
            "10.0.0.0/16",
            "--datapath",
            kind,
        ])
        .unwrap();
        match c.command {
            crate::cli::Command::Run(r) => r.datapath,
            _ => unreachable!(),
        }
    }

    fn pools(p: &[&str]) -> Vec<IpNetwork> {
        p.iter().map(|p| p.parse().unwrap()).collect()
    }

    #[test]
    fn ipip_refuses_an_ipv6_only_pool_and_ipv6_without_sit() {
        let d = dp("ipip");
        assert!(check_pools(&d, &pools(&["10.0.0.0/16"])).is_ok());
        let e = check_pools(&d, &pools(&["fd00::/64"]))
            .unwrap_err()
            .to_string();
        for w in ["IPv6-only pool", "ipip", "fd00::/64", "--datapath vxlan"] {
            assert!(e.contains(w), "{e} lacks {w}");
        }
        let dual = pools(&["10.0.0.0/16", "fd00::/64"]);
        assert!(check_pools(&d, &dual).is_ok());
        assert!(check_ipip_sit(&d, &dual, true).is_ok());
        assert!(check_ipip_sit(&d, &pools(&["10.0.0.0/16"]), false).is_ok());
        let e = check_ipip_sit(&d, &dual, false).unwrap_err().to_string();
        for w in [
            "sit0",
            "modprobe sit",
            "--datapath vxlan",
            "dual-stack",
            "fd00::/64",
        ] {
            assert!(e.contains(w), "{e} lacks {w}");
        }
        let e = check_underlay(
            &d,
            &pools(&["10.0.0.0/16"]),
            &test_underlay(&["2001:db8::2/64"], 1500),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("IPv4 underlay") && e.contains("eth0"), "{e}");
        // Every other datapath takes IPv6 pools.
        for k in ["vxlan", "host-gw", "bgp", "none"] {
            assert!(check_pools(&dp(k), &pools(&["fd00::/64"])).is_ok(), "{k}");
        }
    }

    #[test]
    fn host_gw_needs_an_underlay_address_of_each_pool_family() {
        let d = dp("host-gw");
        let dual = pools(&["10.0.0.0/16", "fd00::/64"]);
        let v4_only = test_underlay(&["192.0.2.2/24", "fe80::1/64"], 1500);
        let e = check_underlay(&d, &dual, &v4_only, None)
            .unwrap_err()
            .to_string();
        for w in ["IPv6", "fd00::/64", "eth0", "--datapath vxlan"] {
            assert!(e.contains(w), "{e} lacks {w}");
        }
        let both = test_underlay(&["192.0.2.2/24", "2001:db8::2/64"], 1500);
        assert!(check_underlay(&d, &dual, &both, None).is_ok());
        let v6 = test_underlay(&["2001:db8::2/64"], 1500);
        assert!(check_underlay(&d, &pools(&["fd00::/64"]), &v6, None).is_ok());
        let e = check_underlay(&d, &dual, &v6, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("IPv4") && e.contains("10.0.0.0/16"), "{e}");
    }

    #[test]
    fn bgp_needs_an_ipv6_underlay_for_ipv6_and_carries_ipv4_over_ipv6() {
        let d = dp("bgp");
        let dual = pools(&["10.0.0.0/16", "fd00::/64"]);
        let v4_only = test_underlay(&["192.0.2.2/24", "fe80::1/64"], 1500);
        let e = check_underlay(&d, &dual, &v4_only, None)
            .unwrap_err()
            .to_string();
        for w in [
            "IPv6 pool fd00::/64",
            "eth0",
            "global IPv6",
            "--datapath vxlan",
        ] {
            assert!(e.contains(w), "{e} lacks {w}");
        }
        assert!(check_underlay(&d, &pools(&["10.0.0.0/16"]), &v4_only, None).is_ok());
        assert_eq!(ipv4_via_ipv6(&d, &dual, &v4_only), None);
        // IPv6-only underlay: IPv4 pools are allowed (RFC 8950), and said so.
        let v6 = test_underlay(&["2001:db8::2/64", "fe80::1/64"], 1500);
        assert!(check_underlay(&d, &dual, &v6, None).is_ok());
        assert!(check_underlay(&d, &pools(&["10.0.0.0/16"]), &v6, None).is_ok());
        assert_eq!(ipv4_via_ipv6(&d, &dual, &v6), Some(dual[0]));
        assert_eq!(ipv4_via_ipv6(&dp("host-gw"), &dual, &v6), None);
    }

    #[test]
    fn vxlan_needs_an_ipv6_mtu_for_ipv6_pools() {
        let d = dp("vxlan");
        let u = test_underlay(&["2001:db8::2/64"], 1340);
        let v6 = pools(&["fd00::/64"]);
        let e = check_underlay(&d, &v6, &u, Some(1270))
            .unwrap_err()
            .to_string();
        for w in [
            "1270",
            "1280",
            "--mtu",
            "fd00::/64",
            "minus 70 of VXLAN over IPv6",
        ] {
            assert!(e.contains(w), "{e} lacks {w}");
        }
        assert!(check_underlay(&d, &v6, &u, Some(1280)).is_ok());
        assert!(check_underlay(&d, &pools(&["10.0.0.0/16"]), &u, Some(1270)).is_ok());
    }
}
