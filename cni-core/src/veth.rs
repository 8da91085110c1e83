//! The pod's veth pair, set up and torn down the same way by every plugin that makes
//! one: the pod end's addresses and routes, the result's interfaces, undoing a failed
//! ADD and DEL's half inside the pod.

use std::net::IpAddr;
use std::path::Path;

use tracing::{debug, warn};

use crate::netlink::{delete_link_detached, Link, MacAddr, Netlink, RouteSpec};
use crate::netns::NetNs;
use crate::spec::error::CniError;
use crate::spec::result::{Interface, IpConfig, Route};

/// A random host veth name: `prefix` and 8 hex digits (one getrandom(2) call). Free but
/// for a one in 2^32 chance: the create that uses it fails on a taken name.
pub fn random_name(prefix: &str) -> String {
    format!(
        "{prefix}{:08x}",
        u32::from_ne_bytes(crate::netlink::mac::random_bytes())
    )
}

/// ADD refuses an `ifname` already taken in the pod, before anything is allocated (so
/// a repeated ADD never releases the first one's address).
pub(crate) async fn ensure_ifname_free(
    pod: &Netlink,
    ifname: &str,
    netns: &Path,
) -> Result<(), CniError> {
    let _timing = crate::timing::phase("pod.ifname-check");
    if pod.link_by_name(ifname).await?.is_some() {
        return Err(CniError::invalid_config(format!(
            "interface {ifname} already exists in {}: DEL the attachment first or use another CNI_IFNAME",
            netns.display()
        )));
    }
    Ok(())
}

/// Puts `ips` on the pod end (`index`, named `ifname`) and sets it up.
pub async fn address_and_up(
    pod: &Netlink,
    index: u32,
    ifname: &str,
    ips: &[IpConfig],
) -> Result<(), CniError> {
    let _timing = crate::timing::phase("pod.addr-up");
    for ip in ips {
        pod.add_address(index, ip.address)
            .await
            .map_err(|e| e.context(format!("adding {} to {ifname}", ip.address)))?;
    }
    Ok(pod
        .set_up(index)
        .await
        .map_err(|e| e.context(format!("setting {ifname} up")))?)
}

/// Adds the result's `routes` in the pod through the pod end `oif`, each via `gw(route)`.
pub async fn add_pod_routes(
    pod: &Netlink,
    oif: u32,
    routes: &[Route],
    gw: impl Fn(&Route) -> Option<IpAddr>,
) -> Result<(), CniError> {
    let _timing = crate::timing::phase("pod.routes");
    for r in routes {
        let spec = RouteSpec {
            gw: gw(r),
            oif: Some(oif),
            scope: r.scope,
            table: r.table,
            metric: r.priority,
            mtu: r.mtu,
            advmss: r.advmss,
            ..RouteSpec::new(r.dst)
        };
        pod.add_route(&spec)
            .await
            .map_err(|e| e.context(format!("adding route {} in the pod", r.dst)))?;
    }
    Ok(())
}

/// The result's entries for the pair: the host end, then the pod end in `netns`.
pub(crate) fn result_interfaces(
    host_veth: &Link,
    ifname: &str,
    pod_mac: MacAddr,
    mtu: u32,
    netns: &Path,
) -> [Interface; 2] {
    [
        Interface {
            name: host_veth.name.clone(),
            mac: host_veth.mac.map(|m| m.to_string()),
            mtu: Some(mtu),
            ..Default::default()
        },
        Interface {
            name: ifname.to_string(),
            mac: Some(pod_mac.to_string()),
            mtu: Some(mtu),
            sandbox: Some(netns.display().to_string()),
            ..Default::default()
        },
    ]
}

/// Undo of a failed ADD: deletes the host end `veth` and the pod end `ifname`, each
/// looked up first. Either end takes the pair (and routes on it) with it; both are
/// tried in case one is already gone. Best effort: failures are logged.
pub(crate) async fn undo_pair(host: &Netlink, pod: &Netlink, veth: &str, ifname: &str) {
    match host.link_by_name(veth).await {
        Ok(Some(l)) => {
            if let Err(e) = host.delete_link(l.index).await {
                warn!(error = %e, veth, "undo: deleting host veth");
            }
        }
        Ok(None) => {}
        Err(e) => warn!(error = %e, veth, "undo: looking up host veth"),
    }
    match pod.link_by_name(ifname).await {
        Ok(Some(l)) => {
            if let Err(e) = pod.delete_link(l.index).await {
                warn!(error = %e, ifname, "undo: deleting pod interface");
            }
        }
        Ok(None) => {}
        Err(e) => warn!(error = %e, ifname, "undo: looking up pod interface"),
    }
}

/// The loopback device: never a pod interface of ours, and the kernel refuses to delete
/// it (a DEL naming it used to fail with 999 on every retry).
pub(crate) const LOOPBACK: &str = "lo";

/// DEL: deletes `ifname` inside the netns at `path`; a netns that is gone is nothing
/// to do, and so is `lo` (no ADD can have made it: ADD refuses a name already taken).
pub(crate) fn del_in_netns(path: &Path, ifname: &str) -> Result<(), CniError> {
    let _timing = crate::timing::phase("veth.del-in-netns");
    if ifname == LOOPBACK {
        debug!(netns = %path.display(), "CNI_IFNAME is lo: not ours, left as it is");
        return Ok(());
    }
    if !path.exists() {
        debug!(netns = %path.display(), "netns gone; nothing to delete inside it");
        return Ok(());
    }
    let ns = match NetNs::open(path) {
        Ok(ns) => ns,
        Err(e) => {
            // A leftover mount point of a destroyed namespace is not a namespace any more.
            warn!(error = %e, netns = %path.display(), "cannot open netns; treating it as gone");
            return Ok(());
        }
    };
    // Returns once the interface (and its host end) is gone; the kernel's last wait
    // (an RCU barrier of ~15 ms) finishes in a detached child.
    delete_link_detached(&ns, ifname)?;
    Ok(())
}
