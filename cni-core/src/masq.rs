//! IP masquerade for pod traffic leaving its network, in nftables, programmed over
//! netlink (libnftnl through the `nftnl` crate): never the `nft` binary.
//!
//! One table per address family (`ip cni_masq` / `ip6 cni_masq`) with a NAT
//! postrouting chain; one rule per (network, attachment, address), tagged in the rule's
//! user data so that DEL and GC find it without the pod's netns.

use ipnetwork::IpNetwork;

use crate::spec::config::Attachment;
use crate::spec::error::CniError;
use crate::spec::names::NetworkName;

/// Masquerades traffic from `pod.ip()` to destinations outside `pod` (the pod's subnet)
/// and outside 224.0.0.0/4 (multicast). Idempotent.
pub fn add(network: &NetworkName, att: &Attachment, pod: IpNetwork) -> Result<(), CniError> {
    let _ = (network, att, pod);
    todo!()
}

/// Removes every rule of (`network`, `att`), whatever the address. Nothing to remove is
/// not an error; nor is a missing table.
pub fn del(network: &NetworkName, att: &Attachment) -> Result<(), CniError> {
    let _ = (network, att);
    todo!()
}

/// Removes the rules of `network` whose attachment is not in `keep`.
pub fn gc(network: &NetworkName, keep: &[Attachment]) -> Result<(), CniError> {
    let _ = (network, keep);
    todo!()
}

/// The source addresses masqueraded for (`network`, `att`), for CHECK and tests.
pub fn list(network: &NetworkName, att: &Attachment) -> Result<Vec<IpNetwork>, CniError> {
    let _ = (network, att);
    todo!()
}
