//! The command line: `ipamd run` (the daemon) and the inspection / repair subcommands.
//! Every flag can also be given as an environment variable (`IPAMD_<FLAG>`).

use clap::{Args, Parser, Subcommand};
use ipam::cluster::{Pool, StoreUrl};
use ipnetwork::IpNetwork;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;

#[derive(Debug, Parser)]
#[command(
    name = "ipamd",
    version,
    about = "Cluster IPAM node daemon and its CLI"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of `Run` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: register this node, keep its lease, claim its first blocks,
    /// follow the other nodes, expire dead ones, GC local reservations, serve metrics.
    Run(RunArgs),
    /// Nodes in the cluster store: name, underlay IP, blocks, lease left.
    Nodes(StoreArgs),
    /// Blocks and their owners.
    Blocks(StoreArgs),
    /// Per node: blocks, capacity, and addresses used (from the node-local store, for
    /// this node).
    Usage(UsageArgs),
    /// A container's addresses, from the node-local store.
    Pod(PodArgs),
    /// Release a leaked reservation by hand (all of the container's interfaces, or one).
    Release(PodArgs),
    /// Remove a node that is gone for good: its record and blocks, at once (instead of
    /// waiting for its lease to run out). Every other node removes its routes to it.
    RemoveNode(RemoveNodeArgs),
    /// Time ADDs through `cni-ipam`: with a block at hand vs one that must be claimed.
    Bench(BenchArgs),
    /// BGP sessions of the running daemon (`--datapath bgp`): peer, AS, state, uptime,
    /// prefixes sent and received.
    BgpPeers(BgpPeersArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BgpPeersArgs {
    /// The daemon's metrics address (its `--listen`).
    #[arg(long, env = "IPAMD_LISTEN", default_value = "127.0.0.1:9645")]
    pub listen: SocketAddr,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The cluster store: file:///path/cluster.json or etcd://host:port[,host:port][/prefix].
    #[arg(
        long,
        env = "IPAMD_STORE",
        default_value = ipam::DEFAULT_CLUSTER_STORE
    )]
    pub store: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RemoveNodeArgs {
    pub name: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Which datapath `ipamd run` programs toward the other nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatapathKind {
    /// Follow the other nodes and log their changes; program nothing.
    None,
    /// A VXLAN device; per remote node: FDB, neighbour, routes via its VTEP (`cni-vxlan`).
    Vxlan,
    /// `tunl0`; per remote node: routes via its underlay address, onlink (`cni-ipip`).
    Ipip,
    /// Plain routes via each remote node's underlay address, one L2 segment (`cni-routed`).
    HostGw,
    /// Plain routes learned over BGP (mesh or routers), across L3 (`cni-routed`).
    Bgp,
}

#[derive(Debug, Clone, Args)]
pub struct DatapathArgs {
    #[arg(
        long = "datapath",
        env = "IPAMD_DATAPATH",
        value_enum,
        default_value = "none"
    )]
    pub kind: DatapathKind,
    /// The underlay interface [default: the interface of --underlay-ip, else of the
    /// default route].
    #[arg(long, env = "IPAMD_UNDERLAY_INTERFACE")]
    pub underlay_interface: Option<String>,
    /// MTU of the tunnel device [default: the underlay's minus the encapsulation: 50 for
    /// vxlan, 20 for ipip].
    #[arg(long, env = "IPAMD_MTU")]
    pub mtu: Option<u32>,
    #[arg(long, env = "IPAMD_VXLAN_VNI", default_value_t = 1)]
    pub vxlan_vni: u32,
    /// UDP port of the VXLAN device (8472: the Linux and flannel default; 4789: IANA).
    #[arg(long, env = "IPAMD_VXLAN_PORT", default_value_t = 8472)]
    pub vxlan_port: u16,
    /// Name of the VXLAN device [default: cni-vx.<vni>].
    #[arg(long, env = "IPAMD_VXLAN_DEVICE")]
    pub vxlan_device: Option<String>,
    /// vxlan / ipip: plain routes to nodes on a directly connected subnet, encapsulation
    /// only across subnets (flannel's DirectRouting, Calico's CrossSubnet).
    #[arg(long, env = "IPAMD_DIRECT_ROUTING")]
    pub direct_routing: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// The network: the node-local store is <data-dir>/<network>.
    #[arg(long, env = "IPAMD_NETWORK")]
    pub network: String,
    #[arg(long, env = "IPAMD_DATA_DIR", default_value = ipam::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The network's `ipam.reserveGateway` is on: the first host address of every block
    /// is never a pod's, so capacity counts one address less per block (implied by
    /// `run --datapath vxlan`, whose VTEP address it is).
    #[arg(long, env = "IPAMD_RESERVE_GATEWAY")]
    pub reserve_gateway: bool,
}

impl LocalArgs {
    pub fn store_dir(&self) -> PathBuf {
        ipam::IpamConfig::store_dir(&self.data_dir, &self.network)
    }
}

#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub local: LocalArgs,
    /// This node's name (whose addresses are counted from the node-local store).
    #[arg(long, env = "IPAMD_NODE_NAME")]
    pub node_name: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PodArgs {
    pub container_id: String,
    pub ifname: Option<String>,
    #[command(flatten)]
    pub local: LocalArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// This node's name in the cluster store [default: the hostname].
    #[arg(long, env = "IPAMD_NODE_NAME")]
    pub node_name: Option<String>,
    #[arg(
        long,
        env = "IPAMD_STORE",
        default_value = ipam::DEFAULT_CLUSTER_STORE
    )]
    pub store: String,
    /// A cluster pool CIDR; repeat (or comma-separate) for IPv4 + IPv6.
    #[arg(
        long = "pool",
        env = "IPAMD_POOL",
        value_delimiter = ',',
        required = true
    )]
    pub pools: Vec<IpNetwork>,
    /// IPv4 block prefix length [default: 26].
    #[arg(long, env = "IPAMD_BLOCK_SIZE")]
    pub block_size: Option<u8>,
    /// IPv6 block prefix length [default: 122].
    #[arg(long, env = "IPAMD_BLOCK_SIZE6")]
    pub block_size6: Option<u8>,
    #[command(flatten)]
    pub local: LocalArgs,
    /// The address other nodes reach this one at [default with a datapath: the
    /// underlay interface's address].
    #[arg(long, env = "IPAMD_UNDERLAY_IP")]
    pub underlay_ip: Option<IpAddr>,
    /// Node lease TTL (renewed every fifth of it): 30s, 2500ms, 1m.
    #[arg(long, env = "IPAMD_LEASE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// How long a reservation whose netns is gone is kept before GC releases it.
    #[arg(long, env = "IPAMD_GC_GRACE", default_value = "5m", value_parser = parse_duration)]
    pub gc_grace: Duration,
    /// How long a block (not the node's last of its family) stays empty before it is
    /// given back to the pool; 0 disables.
    #[arg(
        long,
        env = "IPAMD_BLOCK_RELEASE_GRACE",
        default_value = "10m",
        value_parser = parse_duration_or_zero
    )]
    pub block_release_grace: Duration,
    /// How long the blocks of a node whose lease expired stay its own (nobody else can
    /// claim them: its pods may still use their addresses) before they go back to the
    /// pool; it takes them back if it registers again within it. 0: until
    /// `ipamd remove-node`.
    #[arg(
        long,
        env = "IPAMD_EXPIRED_NODE_GRACE",
        default_value = "24h",
        value_parser = parse_duration_or_zero
    )]
    pub expired_node_grace: Duration,
    /// Full resync of the other nodes (and GC, usage metrics) period.
    #[arg(long, env = "IPAMD_RESYNC", default_value = "60s", value_parser = parse_duration)]
    pub resync: Duration,
    /// Metrics and health address (loopback only unless --listen-any).
    #[arg(long, env = "IPAMD_LISTEN", default_value = "127.0.0.1:9645")]
    pub listen: SocketAddr,
    /// Allow a non-loopback --listen address.
    #[arg(long, env = "IPAMD_LISTEN_ANY")]
    pub listen_any: bool,
    #[command(flatten)]
    pub datapath: DatapathArgs,
    #[command(flatten)]
    pub bgp: BgpArgs,
}

/// `--datapath bgp`: the BGP speaker.
#[derive(Debug, Clone, Args)]
pub struct BgpArgs {
    /// Local AS number.
    #[arg(long = "bgp-as", env = "IPAMD_BGP_AS", default_value_t = 64512)]
    pub local_as: u32,
    /// BGP router id [default: the underlay's IPv4 address].
    #[arg(long, env = "IPAMD_BGP_ROUTER_ID")]
    pub bgp_router_id: Option<std::net::Ipv4Addr>,
    /// Where the speaker accepts sessions; a specific address is also the source of its
    /// own connections.
    #[arg(long, env = "IPAMD_BGP_LISTEN", default_value = "0.0.0.0:179")]
    pub bgp_listen: SocketAddr,
    /// No full iBGP mesh with the other nodes of the cluster store (peer with
    /// --bgp-peer routers / route reflectors only).
    #[arg(long, env = "IPAMD_BGP_NO_MESH")]
    pub bgp_no_mesh: bool,
    /// An explicit peer, `ADDR,AS[,PASSWORD]` (TCP MD5); repeat for more.
    #[arg(long = "bgp-peer", env = "IPAMD_BGP_PEER", value_parser = parse_bgp_peer)]
    pub bgp_peers: Vec<BgpPeerArg>,
    /// Install learned prefixes outside --pool too (by default they are refused).
    #[arg(long, env = "IPAMD_BGP_ACCEPT_OUTSIDE_POOL")]
    pub bgp_accept_outside_pool: bool,
    /// Hold time proposed to peers, in seconds (0 or at least 3).
    #[arg(long, env = "IPAMD_BGP_HOLD_TIME", default_value_t = 90, value_parser = parse_hold_time)]
    pub bgp_hold_time: u16,
    /// Wait between connection attempts (and connect timeout).
    #[arg(long, env = "IPAMD_BGP_CONNECT_RETRY", default_value = "5s", value_parser = parse_duration)]
    pub bgp_connect_retry: Duration,
    /// Restarts keep forwarding: peers are told (graceful restart, forwarding bit) and
    /// SIGTERM closes the sessions without a Cease, so the peers keep this node's routes
    /// for --bgp-restart-time while ipamd restarts. A node that stops for good then
    /// keeps its routes at the peers for that long too (`ipamd remove-node` or a Cease
    /// from a restart without this flag ends that).
    #[arg(long, env = "IPAMD_BGP_GRACEFUL_RESTART")]
    pub bgp_graceful_restart: bool,
    /// Restart time in our graceful restart capability, in seconds (at most 4095).
    #[arg(long, env = "IPAMD_BGP_RESTART_TIME", default_value_t = 120,
          value_parser = clap::value_parser!(u16).range(1..=4095))]
    pub bgp_restart_time: u16,
}

/// One `--bgp-peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeerArg {
    pub address: IpAddr,
    pub remote_as: u32,
    pub password: Option<String>,
}

/// `ADDR,AS[,PASSWORD]`; the password may itself contain commas.
pub(crate) fn parse_bgp_peer(s: &str) -> Result<BgpPeerArg, String> {
    let mut it = s.splitn(3, ',');
    let address = it
        .next()
        .unwrap_or_default()
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected ADDR,AS[,PASSWORD]"))?;
    let remote_as = it
        .next()
        .ok_or_else(|| format!("{s:?}: the AS is missing (ADDR,AS[,PASSWORD])"))?
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: the AS is not a number"))?;
    if remote_as == 0 {
        return Err(format!("{s:?}: AS 0"));
    }
    let password = it.next().filter(|p| !p.is_empty()).map(str::to_string);
    if password.as_ref().is_some_and(|p| p.len() > 80) {
        return Err(format!("{s:?}: a TCP MD5 key is at most 80 octets"));
    }
    Ok(BgpPeerArg {
        address,
        remote_as,
        password,
    })
}

fn parse_hold_time(s: &str) -> Result<u16, String> {
    let n: u16 = s
        .trim()
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{s:?}: seconds, 0 or 3..65535"))?;
    bgp::HoldTime::new(n)
        .map(|h| h.secs())
        .ok_or_else(|| format!("{s:?}: RFC 4271 forbids a hold time of 1 or 2 s"))
}

impl RunArgs {
    pub fn node_name(&self) -> Result<String, Error> {
        node_name_or_hostname(self.node_name.as_deref())
    }

    pub fn store_url(&self) -> Result<StoreUrl, Error> {
        Ok(StoreUrl::parse(&self.store)?)
    }

    pub fn pool(&self) -> Result<Pool, Error> {
        Ok(Pool::new(
            self.pools.clone(),
            self.block_size,
            self.block_size6,
        )?)
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The cni-ipam binary.
    #[arg(long, default_value = "/opt/cni/bin/cni-ipam")]
    pub plugin: PathBuf,
    #[arg(long, env = "IPAMD_STORE")]
    pub store: String,
    #[arg(long = "pool", value_delimiter = ',', required = true)]
    pub pools: Vec<IpNetwork>,
    #[arg(long, default_value_t = 26)]
    pub block_size: u8,
    /// ADDs per series.
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// Where the node-local stores go (a temp dir by default).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub(crate) fn node_name_or_hostname(name: Option<&str>) -> Result<String, Error> {
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        return Ok(n.to_string());
    }
    let h = nix::unistd::gethostname()
        .map_err(|e| Error::io("gethostname", std::io::Error::from(e)))?;
    h.into_string()
        .map_err(|_| Error::Usage("the hostname is not UTF-8: give --node-name".into()))
}

/// As [`parse_duration`], and `0` (any unit) for zero: "disabled".
pub(crate) fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    parse_duration(s).or_else(|e| {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let zero = num.parse::<f64>().is_ok_and(|n| n == 0.0);
        if zero && matches!(unit, "" | "ms" | "s" | "m" | "h") {
            Ok(Duration::ZERO)
        } else {
            Err(e)
        }
    })
}

/// `30s`, `2500ms`, `5m`, `1h`, or plain seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 2500ms, 5m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_duration("2500ms").unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("x").is_err());
        assert_eq!(parse_duration_or_zero("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration_or_zero("0s").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration_or_zero("10m").unwrap(),
            Duration::from_secs(600)
        );
        assert!(parse_duration_or_zero("0d").is_err());
        assert!(parse_duration_or_zero("-1s").is_err());
    }

    #[test]
    fn bgp_peers_and_hold_time() {
        let p = parse_bgp_peer("192.0.2.1,65000").unwrap();
        assert_eq!(p.address, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!((p.remote_as, p.password), (65000, None));
        let p = parse_bgp_peer("fd00::1, 4200000000 ,k,e,y").unwrap();
        assert_eq!(p.remote_as, 4_200_000_000);
        assert_eq!(p.password.as_deref(), Some("k,e,y"));
        for bad in ["192.0.2.1", "x,1", "192.0.2.1,0", "192.0.2.1,as"] {
            assert!(parse_bgp_peer(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_hold_time("9"), Ok(9));
        assert_eq!(parse_hold_time("0"), Ok(0));
        assert!(parse_hold_time("2").is_err());
    }

    #[test]
    fn cli_is_consistent_and_pools_repeat() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "ipamd",
            "run",
            "--network",
            "n",
            "--pool",
            "10.0.0.0/16",
            "--pool",
            "fd00::/64",
        ])
        .unwrap();
        match c.command {
            Command::Run(r) => {
                assert_eq!(r.pools.len(), 2);
                assert_eq!(r.lease_ttl, Duration::from_secs(30));
                assert_eq!(r.block_release_grace, Duration::from_secs(600));
                assert_eq!(r.expired_node_grace, Duration::from_secs(24 * 3600));
                assert_eq!(r.listen, "127.0.0.1:9645".parse().unwrap());
                assert_eq!(r.datapath.kind, DatapathKind::None);
                assert_eq!(r.datapath.vxlan_port, 8472);
                assert_eq!(r.bgp.local_as, 64512);
                assert_eq!(r.bgp.bgp_hold_time, 90);
                assert!(!r.bgp.bgp_graceful_restart);
                assert_eq!(r.bgp.bgp_restart_time, 120);
                assert!(r.bgp.bgp_peers.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
}
