//! MAC spoof check (bridge `macspoofchk`): frames entering the bridge from a pod's host
//! veth must carry the pod's MAC as source. nftables `bridge` family, over netlink,
//! tagged per (network, attachment) like [`crate::masq`].
//!
//! Table `bridge cni_macspoof`, filter chain `prerouting` (hook prerouting), one rule per
//! attachment: `iifname <host veth> ether saddr != <mac> drop`, commented
//! `cni-macspoof net=<hash> att=<hash> dev=<veth> mac=<mac>`.

use std::collections::HashSet;

use crate::kernel_error::KernelError;
use crate::netlink::MacAddr;
use crate::nft::{self, ChainType, Expr, Family, Hook, Nft, NftChain, Tag, Verdict};
use crate::spec::config::Attachment;
use crate::spec::names::NetworkName;

const KIND: &str = "cni-macspoof";

const CHAIN: NftChain = NftChain {
    family: Family::Bridge,
    table: "cni_macspoof",
    chain: "prerouting",
    chain_type: ChainType::Filter,
    hook: Hook::PreRouting,
    // Early (the `bridge` dstnat priority): spoofed frames die before other filtering.
    priority: -300,
};

/// Drops frames from `host_veth` whose source MAC is not `mac`. Idempotent.
pub fn add(
    network: &NetworkName,
    att: &Attachment,
    host_veth: &str,
    mac: MacAddr,
) -> Result<(), KernelError> {
    let tag = Tag::new(
        network.as_str(),
        att.container_id.as_str(),
        att.ifname.as_str(),
    );
    let comment = tag.comment(KIND, &format!("dev={host_veth} mac={mac}"));
    let what = || format!("mac spoof check for {host_veth} ({mac}) in network {network}");
    if host_veth.contains('\0') {
        return Err(KernelError::invalid(
            what(),
            "the interface name contains NUL",
        ));
    }
    let mut nft = Nft::new();
    let rules = nft.list_rules(&CHAIN)?;
    if rules
        .iter()
        .any(|r| r.comment.as_deref() == Some(comment.as_str()))
    {
        return Ok(());
    }
    // Same attachment with another veth or MAC (a re-ADD): the new rule replaces it.
    if rules.iter().any(|r| is_ours(r, |t| t == tag)) {
        nft.delete_rules(&CHAIN, |r| is_ours(r, |t| t == tag))
            .map_err(|e| e.context(what()))?;
    }
    // `iifname <host veth> ether saddr != <mac> drop`
    let rule = [
        Expr::MetaIifName,
        Expr::eq(Expr::ifname(host_veth)),
        Expr::ether_saddr(),
        Expr::neq(mac.0),
        Expr::Verdict(Verdict::Drop),
    ];
    nft.add_rule(&CHAIN, &comment, &rule)
        .map_err(|e| e.context(what()))
}

fn is_ours(r: &nft::ListedRule, pred: impl Fn(Tag) -> bool) -> bool {
    r.comment
        .as_deref()
        .and_then(|c| Tag::parse(KIND, c))
        .is_some_and(|(t, _)| pred(t))
}

/// Removes the rules of (`network`, `att`). Nothing to remove is not an error.
pub fn del(network: &NetworkName, att: &Attachment) -> Result<(), KernelError> {
    let tag = Tag::new(
        network.as_str(),
        att.container_id.as_str(),
        att.ifname.as_str(),
    );
    let mut nft = Nft::new();
    let removed = nft
        .delete_rules(&CHAIN, |r| is_ours(r, |t| t == tag))
        .map_err(|e| {
            e.context(format!(
                "removing mac spoof check of {} in network {network}",
                att.container_id
            ))
        })?;
    nft.drop_table_if_emptied(&CHAIN, removed);
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
    let removed = nft
        .delete_rules(&CHAIN, |r| {
            is_ours(r, |t| t.net == net && !keep.contains(&t.att))
        })
        .map_err(|e| {
            e.context(format!(
                "garbage-collecting mac spoof checks of network {network}"
            ))
        })?;
    nft.drop_table_if_emptied(&CHAIN, removed);
    Ok(())
}

/// The (host veth, MAC) pairs checked for (`network`, `att`), read back from the kernel.
pub fn list(
    network: &NetworkName,
    att: &Attachment,
) -> Result<Vec<(String, MacAddr)>, KernelError> {
    let tag = Tag::new(
        network.as_str(),
        att.container_id.as_str(),
        att.ifname.as_str(),
    );
    let mut out = Vec::new();
    for r in Nft::new().list_rules(&CHAIN)? {
        let Some((t, detail)) = r.comment.as_deref().and_then(|c| Tag::parse(KIND, c)) else {
            continue;
        };
        if t != tag {
            continue;
        }
        let mut dev = None;
        let mut mac = None;
        for kv in detail.split(' ') {
            if let Some(d) = kv.strip_prefix("dev=") {
                dev = Some(d.to_string());
            } else if let Some(m) = kv.strip_prefix("mac=") {
                mac = m.parse::<MacAddr>().ok();
            }
        }
        if let (Some(d), Some(m)) = (dev, mac) {
            out.push((d, m));
        }
    }
    Ok(out)
}
