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
/// else (an IPv6-only node) one derived from its IPv6 next hop ([`derived_router_id`]).
fn router_id(b: &BgpArgs, next_hop: IpAddr, underlay: &Underlay) -> Ipv4Addr {
    let from_underlay = || {
        underlay.networks.iter().find_map(|n| match n.ip() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
    };
    let v6 = match next_hop {
        IpAddr::V4(a) => return b.bgp_router_id.unwrap_or(a),
        IpAddr::V6(a) => a,
    };
    b.bgp_router_id.or_else(from_underlay).unwrap_or_else(|| {
        let id = derived_router_id(v6);
        tracing::info!(router_id = %id, from = %v6,
            "BGP: IPv6-only node: router id derived from a hash of its underlay address \
             (--bgp-router-id to choose one)");
        id
    })
}

/// The router id of a node without an IPv4 address, from its whole IPv6 address: nodes
/// whose addresses differ only in the prefix (`2001:db8:1::1`, `2001:db8:2::1`) get
/// different ids (the low 32 bits, used before, were equal). FNV-1a 64
/// ([`cni_core::hash::stable_hash`]: the same on every build, so a restarted node keeps
/// its id) of `bgp-router-id` and the address's RFC 5952 text, then MurmurHash3's 64-bit
/// finalizer (FNV-1a alone spreads its last bytes badly into the high bits: over 20,000
/// addresses that differ in the last hextet only 112 of the 223 first octets occurred),
/// folded to 32 bits (high xor low); its first octet is then mapped into 1..=223, so the
/// id is never 0.0.0.0 and never in 224.0.0.0/3 (classes D and E: FRR refuses such an
/// identifier in an OPEN, our decoder refuses multicast ones). Two of n IPv6-only nodes
/// share an id with a probability of about n²/(2·223·2²⁴): 1.3·10⁻⁴ for 1,000 nodes;
/// two such nodes cannot peer with each other (each refuses the other's OPEN: RFC 4271
/// §6.2, Bad BGP Identifier): give one a `--bgp-router-id`.
pub(crate) fn derived_router_id(addr: std::net::Ipv6Addr) -> Ipv4Addr {
    let mut h = cni_core::hash::stable_hash(&["bgp-router-id", &addr.to_string()]);
    // fmix64: every input bit reaches every output bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    let folded = ((h >> 32) ^ h) as u32;
    let first = 1 + (folded >> 24) % 223;
    Ipv4Addr::from((first << 24) | (folded & 0x00ff_ffff))
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
    let mut cfg = SpeakerConfig::new(router_id(b, next_hop, underlay));
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

    fn bgp_args(flag: Option<&str>) -> BgpArgs {
        BgpArgs {
            local_as: 64512,
            bgp_router_id: flag.map(|f| f.parse().unwrap()),
            bgp_listen: "0.0.0.0:179".parse().unwrap(),
            bgp_no_mesh: false,
            bgp_peers: vec![],
            bgp_accept_outside_pool: false,
            bgp_hold_time: 90,
            bgp_connect_retry: Duration::from_secs(5),
            bgp_graceful_restart: false,
            bgp_restart_time: 120,
        }
    }

    fn underlay(addrs: &[&str]) -> Underlay {
        crate::families::test_underlay(addrs, 1500)
    }

    #[test]
    fn ipv6_only_router_ids_hash_the_whole_address() {
        let id = |a: &str| derived_router_id(a.parse().unwrap());
        // Same low 32 bits, different prefixes: different ids (equal before).
        assert_ne!(id("2001:db8:1::1"), id("2001:db8:2::1"));
        // Pinned (computed apart, in Python, from the FNV-1a and fmix64 definitions): a node keeps
        // its id across restarts and versions.
        assert_eq!(id("2001:db8:1::1"), Ipv4Addr::new(161, 72, 90, 246));
        assert_eq!(id("2001:db8:2::1"), Ipv4Addr::new(158, 21, 78, 33));
        assert_eq!(id("fd00:113::1"), Ipv4Addr::new(11, 132, 54, 217));
        // Never 0, never class D or E, whatever the address; addresses that differ in
        // the last hextet only reach every allowed first octet, all distinct.
        let mut firsts = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for i in 0..20_000u16 {
            let a = std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, i >> 8, i);
            let o = derived_router_id(a).octets();
            assert!((1..=223).contains(&o[0]), "{a}: {o:?}");
            firsts.insert(o[0]);
            ids.insert(o);
        }
        assert_eq!(firsts.len(), 223, "every allowed first octet is reached");
        assert_eq!(ids.len(), 20_000, "no two of these addresses share an id");
    }

    #[test]
    fn router_id_flag_then_ipv4_then_derived() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let v4 = Ipv4Addr::new;
        // An IPv4 node: its address.
        let n = underlay(&["192.168.1.5/24", "fd00:1::5/64"]);
        assert_eq!(
            router_id(&bgp_args(None), ip("192.168.1.5"), &n),
            v4(192, 168, 1, 5)
        );
        // An IPv6 next hop on a dual-stack underlay: the underlay's IPv4 address.
        assert_eq!(
            router_id(&bgp_args(None), ip("fd00:1::5"), &n),
            v4(192, 168, 1, 5)
        );
        // IPv6-only: derived from the whole address.
        let n6 = underlay(&["2001:db8:1::1/64"]);
        assert_eq!(
            router_id(&bgp_args(None), ip("2001:db8:1::1"), &n6),
            derived_router_id("2001:db8:1::1".parse().unwrap())
        );
        // The flag wins, as configured, in every case.
        let flag = bgp_args(Some("10.9.8.7"));
        for (hop, u) in [
            ("192.168.1.5", &n),
            ("fd00:1::5", &n),
            ("2001:db8:1::1", &n6),
        ] {
            assert_eq!(router_id(&flag, ip(hop), u), v4(10, 9, 8, 7), "{hop}");
        }
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
