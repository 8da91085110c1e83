//! `ipamd run`: the datapath named by `--datapath`, built from the flags and the
//! underlay, plugged into the daemon ([`crate::run`]). Only composition, and the only
//! place of it: each datapath's logic lives in its crate (`cni_vxlan::node`,
//! `cni_ipip::node`, `cni_routed::node`) or in [`crate::bgp`]; what the metrics and
//! `/bgp/peers` show of the BGP speaker is handed to them here as snapshot callbacks.

use cni_core::netlink::{Netlink, Underlay, UnderlaySelect};
use cni_core::node::NodeSide;
use std::sync::Arc;

use crate::cli::{DatapathKind, RunArgs};
use crate::datapath::DatapathHandler;
use crate::error::Error;
use crate::events::LogHandler;
use crate::http::JsonSnapshot;
use crate::metrics::{Metrics, PeerSample};
use crate::run::run_with_handler;

/// The daemon with the datapath of `args`.
pub(crate) async fn run(mut args: RunArgs) -> Result<(), Error> {
    let dp = args.datapath.clone();
    crate::families::check_pools(&dp, &args.pools)?;
    let metrics = Arc::new(Metrics::new());
    match dp.kind {
        DatapathKind::None => run_with_handler(args, LogHandler, metrics, None).await,
        DatapathKind::HostGw => {
            let (nl, underlay) = underlay(&mut args).await?;
            crate::families::check_underlay(&dp, &args.pools, &underlay, None)?;
            let side = cni_routed::node::HostGw::new(underlay.clone());
            serve(args, side, underlay, nl, metrics).await
        }
        DatapathKind::Ipip => {
            let (nl, underlay) = underlay(&mut args).await?;
            crate::families::check_underlay(&dp, &args.pools, &underlay, None)?;
            let has_sit = nl.link_by_name(cni_ipip::node::SIT).await?.is_some();
            crate::families::check_ipip_sit(&dp, &args.pools, has_sit)?;
            let mut side = cni_ipip::node::Ipip::new(underlay.clone(), dp.mtu, dp.direct_routing);
            if args.pools.iter().any(|p| p.is_ipv6()) {
                side = side.with_ipv6();
            }
            serve(args, side, underlay, nl, metrics).await
        }
        DatapathKind::Vxlan => {
            let (nl, underlay) = underlay(&mut args).await?;
            let opts = cni_vxlan::config::VxlanOptions {
                vni: dp.vxlan_vni,
                port: dp.vxlan_port,
                device: dp.vxlan_device.clone(),
                mtu: dp.mtu,
                direct_routing: dp.direct_routing,
            };
            let mtu = opts.mtu_for(&underlay).map_err(Error::datapath)?;
            crate::families::check_underlay(&dp, &args.pools, &underlay, Some(mtu))?;
            let side = cni_vxlan::node::Vxlan::new(args.node_name()?, underlay.clone(), &opts)
                .map_err(Error::datapath)?;
            serve(args, side, underlay, nl, metrics).await
        }
        DatapathKind::Bgp => {
            let (nl, underlay) = underlay(&mut args).await?;
            let (bgp, handler) = crate::bgp::start(&args, nl, underlay, metrics.clone()).await?;
            let speaker = bgp.speaker.clone();
            metrics.read_bgp_peers_with(move || {
                let peers = speaker.peers();
                peers.iter().map(peer_sample).collect()
            });
            let speaker = bgp.speaker.clone();
            let peers: JsonSnapshot =
                Arc::new(move || crate::bgp::status::to_json(&speaker.peers()));
            let result = run_with_handler(args, handler, metrics, Some(peers)).await;
            bgp.stop().await;
            result
        }
    }
}

/// A netlink connection in the daemon's namespace and the underlay, chosen by
/// `--underlay-interface`, else the interface holding `--underlay-ip`, else the default
/// route's; `--underlay-ip` defaults to the underlay's address.
async fn underlay(args: &mut RunArgs) -> Result<(Netlink, Underlay), Error> {
    let nl = Netlink::connect()?;
    let select = match (&args.datapath.underlay_interface, args.underlay_ip) {
        (Some(name), _) => UnderlaySelect::Interface(name.clone()),
        (None, Some(ip)) => UnderlaySelect::Address(ip),
        (None, None) => UnderlaySelect::DefaultRoute,
    };
    let mut u = nl.underlay(&select).await?;
    match args.underlay_ip {
        Some(ip) if !u.networks.iter().any(|n| n.ip() == ip) => {
            return Err(Error::Usage(format!(
                "--underlay-ip {ip} is not an address of the underlay interface {}",
                u.name
            )))
        }
        // The tunnel's source is the address the node is published at (on a dual-stack
        // interface the interface's first address may be of the other family).
        Some(ip) => u.addr = ip,
        None => args.underlay_ip = Some(u.addr),
    }
    tracing::info!(
        datapath = ?args.datapath.kind,
        underlay = %u.name,
        address = %u.addr,
        mtu = u.mtu,
        "underlay"
    );
    Ok((nl, u))
}

/// How long a node that left the store stays programmed in case it re-registers. Peers
/// see a lapsed lease when the store comes back; the node's renewal retries every second
/// at most, finds its record gone and registers again within about a second of that:
/// 3 s covers it with room, and delays a real removal (`remove-node`, a dead node)
/// by no more than that.
pub(crate) const REMOVAL_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

async fn serve<D: NodeSide>(
    args: RunArgs,
    side: D,
    underlay: Underlay,
    nl: Netlink,
    metrics: Arc<Metrics>,
) -> Result<(), Error> {
    let handler =
        DatapathHandler::new(side, nl, metrics.clone()).watch_kernel(underlay, REMOVAL_GRACE);
    run_with_handler(args, handler, metrics, None).await
}

fn peer_sample(p: &bgp::PeerStatus) -> PeerSample {
    PeerSample {
        peer: p.address,
        up: p.state == bgp::State::Established,
        prefixes_sent: p.prefixes_sent,
        prefixes_received: p.prefixes_received,
    }
}
