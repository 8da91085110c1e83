//! CHECK of a pod's interface against `prevResult`: the checks every plugin with a pod
//! interface makes alike. Failures are `Internal` (999) "CHECK: ...".

use std::fmt::Display;
use std::path::Path;

use ipnetwork::IpNetwork;

use crate::netlink::{Link, Netlink};
use crate::spec::config::Attachment;
use crate::spec::error::CniError;
use crate::spec::names::NetworkName;
use crate::spec::result::{CniResult, Route};

/// A CHECK failure.
pub fn failed(msg: impl Display) -> CniError {
    CniError::internal(format!("CHECK: {msg}"))
}

/// Index in `prev.interfaces` of the pod interface (`ifname`, in a sandbox).
pub(crate) fn pod_iface(prev: &CniResult, ifname: &str, netns: &Path) -> Result<usize, CniError> {
    prev.interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some())
        .ok_or_else(|| {
            failed(format!(
                "prevResult lists no interface {ifname} in a sandbox (expected {})",
                netns.display()
            ))
        })
}

/// The addresses `prev` puts on the pod interface (those with no interface index too).
pub(crate) fn pod_ips(
    prev: &CniResult,
    ifname: &str,
    netns: &Path,
) -> Result<Vec<IpNetwork>, CniError> {
    let idx = pod_iface(prev, ifname, netns)?;
    Ok(prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == idx))
        .map(|ip| ip.address)
        .collect())
}

/// The pod interface `ifname` as the kernel has it, with the MAC `prev` gives it (if it
/// gives one).
pub async fn pod_link(
    pod: &Netlink,
    prev: &CniResult,
    ifname: &str,
    netns: &Path,
) -> Result<Link, CniError> {
    let link = pod.link_by_name(ifname).await?.ok_or_else(|| {
        failed(format!(
            "interface {ifname} does not exist in {}",
            netns.display()
        ))
    })?;
    let idx = pod_iface(prev, ifname, netns)?;
    if let Some(mac) = prev.interfaces[idx].mac.as_deref() {
        let want = mac.parse().ok();
        if want.is_none() || link.mac != want {
            return Err(failed(format!(
                "{ifname} has MAC {}, prevResult says {mac}",
                link.mac
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "none".into())
            )));
        }
    }
    Ok(link)
}

/// Each of `ips` is in `have` (the addresses of `ifname`).
pub fn addresses_present(
    have: &[IpNetwork],
    ips: &[IpNetwork],
    ifname: &str,
) -> Result<(), CniError> {
    match ips.iter().find(|a| !have.contains(a)) {
        Some(addr) => Err(failed(format!("address {addr} is missing on {ifname}"))),
        None => Ok(()),
    }
}

/// Each of `routes` (prevResult's) is in the pod's routing tables, with its gateway if it
/// names one.
pub async fn routes_present(pod: &Netlink, routes: &[Route], netns: &Path) -> Result<(), CniError> {
    for r in routes {
        let kernel = pod.routes(r.dst.is_ipv6(), r.table).await?;
        let found = kernel.iter().any(|k| {
            k.dst.ip() == r.dst.ip()
                && k.dst.prefix() == r.dst.prefix()
                && (r.gw.is_none() || k.gw == r.gw)
        });
        if !found {
            let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(failed(format!(
                "route {}{via} is missing in {}",
                r.dst,
                netns.display()
            )));
        }
    }
    Ok(())
}

/// A masquerade rule of the attachment for each of `ips`.
pub(crate) fn masq_present(
    network: &NetworkName,
    att: &Attachment,
    ips: &[IpNetwork],
) -> Result<(), CniError> {
    let have = crate::masq::list(network, att)?;
    for ip in ips {
        if !have.iter().any(|h| h.ip() == ip.ip()) {
            return Err(failed(format!(
                "masquerade rule for {} is missing",
                ip.ip()
            )));
        }
    }
    Ok(())
}
