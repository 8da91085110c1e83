//! The multi-node end-to-end harness: several "nodes" (network namespaces joined to an
//! underlay bridge), each running `ipamd`, with pods attached by a datapath plugin
//! (`cni-vxlan`, `cni-ipip`, `cni-routed`) run inside the node's namespace.
//!
//! - [`inns`]: run a closure on a thread that entered a network namespace (`setns`);
//! - [`topology`]: the fabric (underlay bridge in its own netns) and the node namespaces;
//! - [`node`]: one `ipamd` per node: start, stop, restart, metrics, health;
//! - [`pod`]: pods attached through a plugin run inside their node's namespace;
//! - [`checks`]: ping matrix, TCP transfer verified byte for byte, MTU probe;
//! - [`kernel`]: what `ipamd` programmed (proto-97 routes, neighbours, FDB) and monitors;
//! - [`lifecycle`]: node removal and a watched `ipamd` restart, checked alike for every
//!   cluster;
//! - [`cluster`]: a whole cluster (fabric + daemons + pods) and the shared scenario that
//!   every datapath's end-to-end test runs;
//! - [`dual`]: dual-stack and IPv6-only clusters (IPv6 on the underlay, pools of both
//!   families or IPv6 only) and their scenario;
//! - [`router`]: BIRD in the fabric namespace, the route reflector of the BGP datapath,
//!   or FRR as its top-of-rack router ([`bgp_frr`]: FRR plus the nodes' full mesh);
//! - [`bench`]: iperf3 throughput between namespaces;
//! - [`etcd`]: a real etcd in the fabric namespace (clusters on the etcd store);
//! - [`chaos`]: continuous pings measured for loss and outage, repair-time polling;
//! - [`uml`]: boot User-Mode Linux (for IPIP, which this machine's kernel lacks) and run a
//!   command inside it.
//!
//! Every resource (namespaces, daemons, monitors, temp dirs) is owned by a guard that
//! removes it on drop, also when the test panics.

pub mod bench;
pub mod bgp_frr;
pub mod chaos;
pub mod checks;
pub mod cluster;
pub mod dual;
pub mod etcd;
pub mod inns;
pub mod kernel;
pub mod lifecycle;
pub mod node;
pub mod pod;
pub mod router;
pub mod topology;
pub mod uml;

use std::time::{Duration, Instant};

/// A datapath under test: which plugin attaches pods, which `ipamd --datapath` programs
/// the node side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Datapath {
    Vxlan,
    Ipip,
    HostGw,
    /// `cni-routed` pods, routes learned over BGP from a route reflector (BIRD).
    Bgp,
}

impl Datapath {
    /// The CNI plugin binary (`type` of the config).
    pub fn plugin(self) -> &'static str {
        match self {
            Datapath::Vxlan => "cni-vxlan",
            Datapath::Ipip => "cni-ipip",
            Datapath::HostGw | Datapath::Bgp => "cni-routed",
        }
    }
    /// The value of `ipamd run --datapath`.
    pub fn ipamd_arg(self) -> &'static str {
        match self {
            Datapath::Vxlan => "vxlan",
            Datapath::Ipip => "ipip",
            Datapath::HostGw => "host-gw",
            Datapath::Bgp => "bgp",
        }
    }
    /// Encapsulation overhead: pod MTU = underlay MTU - this.
    pub fn overhead(self) -> u32 {
        match self {
            Datapath::Vxlan => 50,
            Datapath::Ipip => 20,
            Datapath::HostGw | Datapath::Bgp => 0,
        }
    }
    /// The tunnel device `ipamd` programs routes through, if any.
    pub fn tunnel_device(self) -> Option<&'static str> {
        match self {
            Datapath::Vxlan => Some(VXLAN_DEVICE),
            Datapath::Ipip => Some("tunl0"),
            Datapath::HostGw | Datapath::Bgp => None,
        }
    }
}

/// The VXLAN device of VNI 1 (ipamd's default name).
pub const VXLAN_DEVICE: &str = "cni-vx.1";

/// The route protocol number `ipamd` marks its routes with.
pub const ROUTE_PROTO: &str = "97";

/// Polls `f` every 100 ms until it returns `Some`, for at most `timeout`; the error
/// carries `what` and the last failure `f` reported.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => {
                return Err(format!("{what}: not after {timeout:?}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// True when running inside the User-Mode Linux guest started by [`uml`].
pub fn in_uml() -> bool {
    std::env::var_os(uml::IN_UML_ENV).is_some()
}
