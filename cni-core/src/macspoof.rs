//! MAC spoof check (bridge `macspoofchk`): frames entering the bridge from a pod's host
//! veth must carry the pod's MAC as source. nftables `bridge` family, over netlink,
//! tagged per (network, attachment) like [`crate::masq`].

use crate::netlink::MacAddr;
use crate::spec::config::Attachment;
use crate::spec::error::CniError;
use crate::spec::names::NetworkName;

/// Drops frames from `host_veth` whose source MAC is not `mac`. Idempotent.
pub fn add(network: &NetworkName, att: &Attachment, host_veth: &str, mac: MacAddr) -> Result<(), CniError> {
    let _ = (network, att, host_veth, mac);
    todo!()
}

/// Removes the rules of (`network`, `att`). Nothing to remove is not an error.
pub fn del(network: &NetworkName, att: &Attachment) -> Result<(), CniError> {
    let _ = (network, att);
    todo!()
}

/// Removes the rules of `network` whose attachment is not in `keep`.
pub fn gc(network: &NetworkName, keep: &[Attachment]) -> Result<(), CniError> {
    let _ = (network, keep);
    todo!()
}
