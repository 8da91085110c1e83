//! `--datapath bgp`: `cni-routed` pods across L3 with no encapsulation. The `bgp` crate's
//! speaker runs inside the daemon:
//!
//! - [`handler`]: the [`crate::events::PeerHandler`]: announces this node's blocks with
//!   its underlay address as next hop, withdraws released ones, keeps the full iBGP mesh
//!   with the other BGP nodes of the cluster store (or none: `--bgp-no-mesh`).
//! - [`import`]: learned prefixes -> kernel routes (`proto 97`) through the
//!   [`cni_core::node::Reconciler`], repaired at once from kernel notifications
//!   ([`cni_core::node::KernelWatch`]), resynced against the kernel on every tick.
//! - [`status`]: `GET /bgp/peers` and `ipamd bgp-peers`.
//!
//! The import filter refuses a prefix outside the pool (unless
//! `--bgp-accept-outside-pool`) and any that overlaps this node's own blocks.

pub(crate) mod handler;
pub(crate) mod import;
pub(crate) mod status;

use bgp::{HoldTime, ImportFilter, PeerConfig, Speaker, SpeakerConfig, Timers};
use cni_core::netlink::{Netlink, Underlay};
use ipam::cluster::Pool;
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::cli::{BgpArgs, RunArgs};
use crate::error::Error;
use crate::metrics::Metrics;

/// This node's blocks, as the handler last saw them (read by the import filter).
pub(crate) type OwnBlocks = Arc<RwLock<BTreeSet<IpNetwork>>>;

/// Whether a prefix learned from a peer may be installed.
pub(crate) fn accept(
    pool: &Pool,
    outside_ok: bool,
    own: &BTreeSet<IpNetwork>,
    prefix: &IpNetwork,
) -> bool {
    let overlaps_own = own.iter().any(|b| {
        b.is_ipv4() == prefix.is_ipv4()
            && (b.contains(prefix.network()) || prefix.contains(b.network()))
    });
    !overlaps_own && (outside_ok || pool.contains(*prefix))
}

fn import_filter(pool: Pool, outside_ok: bool, own: OwnBlocks) -> ImportFilter {
    ImportFilter::new(move |peer, prefix, _| {
        let ok = match own.read() {
            Ok(o) => accept(&pool, outside_ok, &o, prefix),
            Err(_) => false,
        };
        if !ok {
            tracing::debug!(%peer, %prefix, "BGP: prefix refused by the import filter");
        }
        ok
    })
}

/// The router id: the flag, else the next hop if IPv4, else the underlay's IPv4 address,
/// else (an IPv6-only node) the last 32 bits of its IPv6 next hop.
fn router_id(b: &BgpArgs, next_hop: IpAddr, underlay: &Underlay) -> Result<Ipv4Addr, Error> {
    let from_underlay = || {
        underlay.networks.iter().find_map(|n| match n.ip() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
    };
    b.bgp_router_id
        .or(match next_hop {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
        .or_else(from_underlay)
        .or_else(|| match next_hop {
            IpAddr::V6(a) => {
                let o = a.octets();
                let id = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
                let ok = !id.is_unspecified() && !id.is_broadcast() && !id.is_multicast();
                ok.then(|| {
                    tracing::info!(router_id = %id, from = %a, "BGP: IPv6-only node: router id from the last 32 bits of its underlay address (--bgp-router-id to choose one)");
                    id
                })
            }
            IpAddr::V4(_) => None,
        })
        .ok_or_else(|| {
            Error::Usage(
                "no IPv4 address to take a BGP router id from: give --bgp-router-id".into(),
            )
        })
}

/// Where the speaker listens: `--bgp-listen`, except that the unspecified IPv4 address
/// (the default) becomes `[::]` (which takes IPv4 too) on a node whose underlay address
/// is IPv6: its peers (an IPv6-only mesh, a router) connect over IPv6.
fn listen_address(flag: SocketAddr, next_hop: IpAddr) -> SocketAddr {
    match flag.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() && next_hop.is_ipv6() => {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), flag.port())
        }
        _ => flag,
    }
}

fn speaker_config(
    args: &RunArgs,
    next_hop: IpAddr,
    underlay: &Underlay,
    own: OwnBlocks,
) -> Result<SpeakerConfig, Error> {
    let b = &args.bgp;
    let mut cfg = SpeakerConfig::new(router_id(b, next_hop, underlay)?);
    cfg.local_as = b.local_as;
    cfg.listen = listen_address(b.bgp_listen, next_hop);
    cfg.timers = Timers {
        hold_time: HoldTime::new(b.bgp_hold_time)
            .ok_or_else(|| Error::Usage("--bgp-hold-time: 0 or at least 3".into()))?,
        connect_retry: b.bgp_connect_retry,
        max_backoff: b.bgp_connect_retry * 12,
        graceful_restart: b.bgp_restart_time,
        ..Timers::default()
    };
    cfg.forwarding_survives_restart = b.bgp_graceful_restart;
    cfg.peers = b
        .bgp_peers
        .iter()
        .map(|p| PeerConfig {
            password: p.password.clone(),
            ..PeerConfig::new(p.address, p.remote_as)
        })
        .collect();
    cfg.import_filter = import_filter(args.pool()?, b.bgp_accept_outside_pool, own);
    Ok(cfg)
}

/// The BGP datapath, started: the speaker and the importer of its routes, until
/// [`Bgp::stop`].
pub(crate) struct Bgp {
    /// Its peers are what `/metrics` and `/bgp/peers` show.
    pub speaker: Speaker,
    importer: tokio::task::JoinHandle<()>,
    stop_importer: tokio::sync::watch::Sender<bool>,
    graceful: bool,
}

/// Starts the BGP speaker and the importer of its routes; returns them and the
/// [`handler::BgpHandler`] the daemon hands its peer events to. `args.underlay_ip` is
/// set (the next hop).
pub(crate) async fn start(
    args: &RunArgs,
    nl: Netlink,
    underlay: Underlay,
    metrics: Arc<Metrics>,
) -> Result<(Bgp, handler::BgpHandler), Error> {
    crate::families::check_underlay(&args.datapath, &args.pools, &underlay, None)?;
    if let Some(pool) = crate::families::ipv4_via_ipv6(&args.datapath, &args.pools, &underlay) {
        tracing::info!(
            %pool, underlay = %underlay.name,
            "BGP: no IPv4 underlay address: IPv4 blocks go out with this node's IPv6 address \
             as next hop (RFC 8950 extended next hop) to the peers that negotiate it \
             (BIRD: `extended next hop on` in the ipv4 channel; FRR: `neighbor X capability \
             extended-nexthop`); learned IPv4 routes are installed via inet6"
        );
    }
    let next_hop = args.underlay_ip.unwrap_or(underlay.addr);
    let other_next_hop = other_family_address(next_hop, &underlay);
    let own = OwnBlocks::default();
    let mut cfg = speaker_config(args, next_hop, &underlay, own.clone())?;
    if cfg.listen.ip().is_unspecified() {
        // Our connections come from the addresses the mesh and the routers know this
        // node by, not from whatever the kernel picks (a SLAAC address, once a router
        // advertisement arrived, which every peer refuses).
        cfg.sources = [Some(next_hop), other_next_hop]
            .into_iter()
            .flatten()
            .collect();
    }
    // The handler adds them once this node's blocks are announced.
    let explicit = std::mem::take(&mut cfg.peers);
    let (speaker, events) = Speaker::start(cfg)
        .await
        .map_err(|e| Error::Usage(format!("BGP speaker: {e}")))?;

    let (stop_importer, stop) = tokio::sync::watch::channel(false);
    // Routes from before a restart wait for the peers at most one hold time.
    let startup = match args.bgp.bgp_hold_time {
        0 => Duration::from_secs(90),
        h => Duration::from_secs(h.into()),
    };
    let importer =
        import::Importer::new(nl, underlay, metrics, speaker.clone(), startup).watch_kernel();
    let importer = tokio::spawn(importer.run(events, args.resync, stop));
    let handler = handler::BgpHandler::new(
        speaker.clone(),
        next_hop,
        other_next_hop,
        args.bgp.local_as,
        !args.bgp.bgp_no_mesh,
        explicit,
        own,
    );
    let bgp = Bgp {
        speaker,
        importer,
        stop_importer,
        graceful: args.bgp.bgp_graceful_restart,
    };
    Ok((bgp, handler))
}

impl Bgp {
    /// Stops the importer, then the speaker (after the daemon's loops ended).
    pub(crate) async fn stop(self) {
        // The importer stops first: the sessions' ends must not take our kernel routes,
        // which stay, as with the other datapaths (a restart reprograms nothing).
        let _ = self.stop_importer.send(true);
        let _ = self.importer.await;
        if self.graceful {
            // No NOTIFICATION: the peers keep our routes through the restart.
            self.speaker.shutdown_for_restart().await;
        } else {
            // A Cease to every peer: they drop our routes now, not after the hold time.
            self.speaker.shutdown().await;
        }
    }
}

/// The underlay interface's address of the other family than `next_hop` (global scope:
/// no IPv6 link-local), the next hop of this node's blocks of that family.
fn other_family_address(next_hop: IpAddr, underlay: &Underlay) -> Option<IpAddr> {
    underlay.networks.iter().map(|n| n.ip()).find(|ip| {
        ip.is_ipv4() != next_hop.is_ipv4()
            && !ip.is_loopback()
            && !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_node_listens_on_ipv6_by_default() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            listen_address(sa("0.0.0.0:179"), ip("fd00::1")),
            sa("[::]:179")
        );
        assert_eq!(
            listen_address(sa("0.0.0.0:179"), ip("10.0.0.1")),
            sa("0.0.0.0:179")
        );
        assert_eq!(
            listen_address(sa("10.0.0.1:1179"), ip("fd00::1")),
            sa("10.0.0.1:1179")
        );
    }

    #[test]
    fn import_filter_keeps_to_the_pool_and_off_our_blocks() {
        let pool = Pool::new(vec!["10.244.0.0/16".parse().unwrap()], Some(26), None).unwrap();
        let own: BTreeSet<IpNetwork> = ["10.244.0.0/26".parse().unwrap()].into();
        let net = |s: &str| s.parse::<IpNetwork>().unwrap();
        assert!(accept(&pool, false, &own, &net("10.244.1.0/26")));
        assert!(!accept(&pool, false, &own, &net("10.244.0.0/26")));
        assert!(!accept(&pool, false, &own, &net("10.244.0.0/24")));
        assert!(!accept(&pool, false, &own, &net("172.16.0.0/24")));
        assert!(!accept(&pool, false, &own, &net("10.0.0.0/8")));
        assert!(accept(&pool, true, &own, &net("172.16.0.0/24")));
        assert!(!accept(&pool, true, &own, &net("10.244.0.32/27")));
    }
}
