//! CHECK's part particular to the routed veth (the rest is `cni_core::attach::check`):
//! the veth (both ends), the pod's addresses, gateway and routes, the host routes.

use std::net::IpAddr;

use cni_core::attach::Ctx;
use cni_core::check::{self, failed};
use cni_core::netlink::RouteSpec;
use cni_core::spec::result::CniResult;
use cni_core::CniError;
use ipnetwork::IpNetwork;

use crate::pod::{self, GATEWAY_V4};

pub(crate) async fn links(
    ctx: &Ctx<'_>,
    prev: &CniResult,
    ips: &[IpNetwork],
) -> Result<(), CniError> {
    let (host, pod, ifname, netns) = (ctx.host, ctx.pod, ctx.ifname, ctx.netns);
    let veth = &pod::host_veth_name(
        &ctx.call.conf.name,
        ctx.target.container_id.as_str(),
        ifname,
    );

    let hv = host
        .link_by_name(veth)
        .await?
        .ok_or_else(|| failed(format!("host veth {veth} does not exist")))?;
    if !hv.up {
        return Err(failed(format!("host veth {veth} is down")));
    }
    let link = check::pod_link(pod, prev, ifname, netns).await?;

    // The pod's addresses, and the host's route to each on the host end.
    let have = pod.addresses(link.index).await?;
    for v6 in [false, true] {
        let fam: Vec<IpNetwork> = ips.iter().filter(|a| a.is_ipv6() == v6).copied().collect();
        if fam.is_empty() {
            continue;
        }
        check::addresses_present(&have, &fam, ifname)?;
        let host_routes = host.routes(v6, None).await?;
        for addr in fam {
            let want = RouteSpec {
                oif: Some(hv.index),
                ..RouteSpec::new(pod::host_prefix(addr.ip()))
            };
            if !host_routes.iter().any(|r| want.matches(r)) {
                return Err(failed(format!(
                    "host route {} dev {veth} is missing",
                    want.dst
                )));
            }
        }
    }

    // The pod's gateway, then the routes of prevResult.
    if ips.iter().any(|a| a.is_ipv4()) {
        let gw = pod::host_prefix(IpAddr::V4(GATEWAY_V4));
        let routes = pod.routes(false, None).await?;
        if !routes
            .iter()
            .any(|r| r.dst == gw && r.oif == Some(link.index))
        {
            return Err(failed(format!(
                "route {gw} dev {ifname} (the gateway) is missing in {}",
                netns.display()
            )));
        }
    }
    check::routes_present(pod, &prev.routes, netns).await
}
