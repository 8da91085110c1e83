//! IP masquerade for pod traffic leaving its network, in nftables, programmed over
//! netlink (our own nf_tables messages, see `nft`): never the `nft` binary.
//!
//! One table per address family (`ip cni_masq` / `ip6 cni_masq`) with a NAT
//! postrouting chain; one rule per (network, attachment, address), tagged in the rule's
//! user data so that DEL and GC find it without the pod's netns.
//!
//! Traffic between pods of one network is never masqueraded: the rule skips destinations
//! in the pod's own subnet and in every pod network of the IPAM configuration
//! ([`pod_networks`]: the range subnets of range-mode IPAM, the whole cluster pool of
//! pool-mode IPAM, so pods on other nodes see the pod's own address too).
//!
//! The tag is the rule comment `cni-masq net=<hash> att=<hash> src=<pod ip/prefix>`
//! (see `nft::Tag`); [`list`] reads the addresses back from it.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use crate::kernel_error::KernelError;
use crate::nft::{self, ChainType, Expr, Family, Hook, Nft, NftChain, Tag};
use crate::spec::config::{Attachment, NetConf};
use crate::spec::names::NetworkName;

const KIND: &str = "cni-masq";

fn chain(v6: bool) -> NftChain {
    NftChain {
        family: if v6 { Family::Ip6 } else { Family::Ip },
        table: "cni_masq",
        chain: "postrouting",
        chain_type: ChainType::Nat,
        hook: Hook::PostRouting,
        // NF_IP_PRI_NAT_SRC: where `srcnat` chains sit.
        priority: 100,
    }
}

const CHAINS: [bool; 2] = [false, true];

/// The pod networks of `conf`'s IPAM section, whose addresses a pod reaches without
/// masquerade: `ipam.pool` (a CIDR or a list: cluster mode) if set, else `ipam.subnet`,
/// every `ipam.ranges[][].subnet` and `runtimeConfig.ipRanges[][].subnet` (range mode,
/// host-local's shape). What is not a CIDR is skipped (the IPAM plugin refuses it).
pub fn pod_networks(conf: &NetConf) -> Vec<IpNetwork> {
    use serde_json::Value;
    let cidr = |v: &Value| v.as_str().and_then(|s| s.parse::<IpNetwork>().ok());
    let sets = |v: Option<&Value>| -> Vec<IpNetwork> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|r| r.get("subnet").and_then(cidr))
            .collect()
    };
    let Some(ipam) = conf.raw.get("ipam") else {
        return Vec::new();
    };
    let mut out: Vec<IpNetwork> = match ipam.get("pool") {
        Some(Value::Array(a)) => a.iter().filter_map(cidr).collect(),
        Some(p) => cidr(p).into_iter().collect(),
        None => {
            let mut v: Vec<IpNetwork> = ipam.get("subnet").and_then(cidr).into_iter().collect();
            v.extend(sets(ipam.get("ranges")));
            v.extend(sets(
                conf.raw
                    .get("runtimeConfig")
                    .and_then(|r| r.get("ipRanges")),
            ));
            v
        }
    };
    // As networks (host bits cleared), each once.
    out = out
        .into_iter()
        .filter_map(|n| IpNetwork::new(n.network(), n.prefix()).ok())
        .collect();
    out.sort_by_key(|n| (n.is_ipv6(), n.to_string()));
    out.dedup();
    out
}

/// Masquerades traffic from `pod.ip()` to destinations outside `pod` (the pod's subnet),
/// outside each of `pod_nets` (of the same family: see [`pod_networks`]) and outside
/// 224.0.0.0/4 (multicast). Idempotent.
pub fn add(
    network: &NetworkName,
    att: &Attachment,
    pod: IpNetwork,
    pod_nets: &[IpNetwork],
) -> Result<(), KernelError> {
    let _timing = crate::timing::phase("masq.add");
    let ch = chain(pod.is_ipv6());
    let comment = Tag::new(
        network.as_str(),
        att.container_id.as_str(),
        att.ifname.as_str(),
    )
    .comment(KIND, &format!("src={pod}"));
    let mut nft = Nft::new();
    if nft
        .list_rules(&ch)?
        .iter()
        .any(|r| r.comment.as_deref() == Some(comment.as_str()))
    {
        return Ok(());
    }
    let mut keep = vec![pod];
    let same =
        |a: &IpNetwork, b: &IpNetwork| a.network() == b.network() && a.prefix() == b.prefix();
    for n in pod_nets {
        if n.is_ipv6() == pod.is_ipv6() && !keep.iter().any(|k| same(k, n)) {
            keep.push(*n);
        }
    }
    nft.add_rule(&ch, &comment, &build(pod, &keep))
        .map_err(|e| e.context(format!("masquerading {pod} of network {network}")))
}

/// `ip saddr == ip, ip daddr & mask != net (for each of keep), ip daddr & 240.0.0.0 !=
/// 224.0.0.0, masquerade` (IPv6: multicast is ff00::/8).
fn build(pod: IpNetwork, keep: &[IpNetwork]) -> Vec<Expr> {
    let mut r = Vec::with_capacity(3 * keep.len() + 6);
    match pod {
        IpNetwork::V4(p) => {
            r.extend([Expr::ip_saddr(), Expr::eq(p.ip().octets())]);
            for k in keep {
                if let IpNetwork::V4(k) = k {
                    r.extend([
                        Expr::ip_daddr(),
                        Expr::and(k.mask().octets()),
                        Expr::neq(k.network().octets()),
                    ]);
                }
            }
            r.extend([
                Expr::ip_daddr(),
                Expr::and(Ipv4Addr::new(240, 0, 0, 0).octets()),
                Expr::neq(Ipv4Addr::new(224, 0, 0, 0).octets()),
            ]);
        }
        IpNetwork::V6(p) => {
            let mcast = Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0).octets();
            r.extend([Expr::ip6_saddr(), Expr::eq(p.ip().octets())]);
            for k in keep {
                if let IpNetwork::V6(k) = k {
                    r.extend([
                        Expr::ip6_daddr(),
                        Expr::and(k.mask().octets()),
                        Expr::neq(k.network().octets()),
                    ]);
                }
            }
            r.extend([Expr::ip6_daddr(), Expr::and(mcast), Expr::neq(mcast)]);
        }
    }
    r.push(Expr::Masquerade);
    r
}

/// Removes every rule of (`network`, `att`), whatever the address. Nothing to remove is
/// not an error; nor is a missing table.
pub fn del(network: &NetworkName, att: &Attachment) -> Result<(), KernelError> {
    let _timing = crate::timing::phase("masq.del");
    let want = Tag::new(
        network.as_str(),
        att.container_id.as_str(),
        att.ifname.as_str(),
    );
    let mut nft = Nft::new();
    for v6 in CHAINS {
        let removed = nft
            .delete_rules(&chain(v6), |r| {
                tag_of(r.comment.as_deref()).is_some_and(|(t, _)| t == want)
            })
            .map_err(|e| {
                e.context(format!(
                    "removing masquerade of {} in network {network}",
                    att.container_id
                ))
            })?;
        nft.drop_table_if_emptied(&chain(v6), removed);
    }
    Ok(())
}

/// Removes the rules of `network` whose attachment is not in `keep`.
pub fn gc(network: &NetworkName, keep: &[Attachment]) -> Result<(), KernelError> {
    let net = nft::net_hash(network.as_str());
    let keep: HashSet<u64> = keep
        .iter()
        .map(|a| nft::att_hash(network.as_str(), a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let mut nft = Nft::new();
    for v6 in CHAINS {
        let removed = nft
            .delete_rules(&chain(v6), |r| {
                tag_of(r.comment.as_deref())
                    .is_some_and(|(t, _)| t.net == net && !keep.contains(&t.att))
            })
            .map_err(|e| {
                e.context(format!(
                    "garbage-collecting masquerade rules of network {network}"
                ))
            })?;
        nft.drop_table_if_emptied(&chain(v6), removed);
    }
    Ok(())
}

/// The source addresses masqueraded for (`network`, `att`), for CHECK and tests.
pub fn list(network: &NetworkName, att: &Attachment) -> Result<Vec<IpNetwork>, KernelError> {
    let want = Tag::new(
        network.as_str(),
        att.container_id.as_str(),
        att.ifname.as_str(),
    );
    let mut out = Vec::new();
    let mut nft = Nft::new();
    for v6 in CHAINS {
        for r in nft.list_rules(&chain(v6))? {
            if let Some((t, src)) = tag_of(r.comment.as_deref()) {
                if t == want && !out.contains(&src) {
                    out.push(src);
                }
            }
        }
    }
    Ok(out)
}

fn tag_of(comment: Option<&str>) -> Option<(Tag, IpNetwork)> {
    let (tag, detail) = Tag::parse(KIND, comment?)?;
    let src: IpNetwork = detail.strip_prefix("src=")?.parse().ok()?;
    Some((tag, src))
}
