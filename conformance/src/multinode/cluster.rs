//! A whole cluster on one machine (fabric + one `ipamd` per node + pods attached by the
//! datapath plugin; for BGP, BIRD as the fabric's route reflector) and the end-to-end
//! scenarios: [`three_node_scenario`] that every datapath runs, [`direct_routing_scenario`]
//! and [`bgp_scenario`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::bins::{self, CniPath};
use crate::names;
use crate::subnet::Subnet;

use super::checks::{self, Endpoint};
use super::kernel::{self, show, Entry};
use super::lifecycle;
use super::node::{self, Ipamd, IpamdConf};
use super::pod::{MnPod, NetConf};
use super::router::{self, Router};
use super::topology::{Fabric, FabricSpec, NodeNs};
use super::{wait_until, Datapath, VXLAN_DEVICE};

/// Block prefix length of the tests' pools.
pub const BLOCK_SIZE: u8 = 26;

/// How long `ipamd` may take to program a change.
pub const CONVERGE: Duration = Duration::from_secs(20);

/// What to build.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub datapath: Datapath,
    pub fabric: FabricSpec,
    pub pods_per_node: usize,
    /// `ipamd --direct-routing`: plain routes to nodes on the same underlay subnet.
    pub direct_routing: bool,
    /// BGP only: what the fabric runs and how the nodes peer.
    pub bgp_tor: BgpTor,
    /// The cluster store is a real etcd in the fabric namespace (else a file).
    pub etcd: bool,
    /// `ipamd --resync` (default 2s).
    pub resync: Option<String>,
    /// Further `ipamd run` flags (e.g. `--lease-ttl`).
    pub ipamd_extra: Vec<String>,
}

/// The BGP fabric of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BgpTor {
    /// BIRD as iBGP route reflector, the nodes without a mesh (`--bgp-no-mesh`).
    BirdReflector,
    /// FRR as an eBGP top-of-rack router ([`router::FRR_AS`]) and the nodes' full iBGP
    /// mesh (see `bgp_frr`).
    FrrMesh,
}

impl ClusterSpec {
    /// `nodes` nodes on one subnet (MTU 1500), `pods` pods each.
    pub fn new(datapath: Datapath, nodes: usize, pods: usize) -> ClusterSpec {
        ClusterSpec {
            datapath,
            fabric: FabricSpec::flat(nodes),
            pods_per_node: pods,
            direct_routing: false,
            bgp_tor: BgpTor::BirdReflector,
            etcd: false,
            resync: None,
            ipamd_extra: Vec::new(),
        }
    }
}

/// What the other nodes need to know of a node to check its entries.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub name: String,
    pub underlay: Ipv4Addr,
    pub subnet: Subnet,
    /// Its blocks (those of its pods), `a.b.c.d/26`.
    pub blocks: BTreeSet<String>,
    /// Address and MAC of its VXLAN device (vxlan only).
    pub vtep: Option<(String, String)>,
}

impl PeerInfo {
    /// Every token by which one of its entries can name it.
    pub fn tokens(&self) -> Vec<String> {
        let mut t: Vec<String> = self.blocks.iter().cloned().collect();
        t.push(self.underlay.to_string());
        if let Some((ip, mac)) = &self.vtep {
            t.push(ip.clone());
            t.push(mac.clone());
        }
        t
    }
}

/// A running cluster. Drop order (field order): pods, daemons, router, etcd, temp dir,
/// fabric.
#[derive(Debug)]
pub struct Cluster {
    pub pods: Vec<MnPod>,
    pub daemons: Vec<Ipamd>,
    /// BIRD in the fabric namespace (BGP only).
    pub router: Option<Router>,
    /// FRR in the fabric namespace (BGP with [`BgpTor::FrrMesh`]).
    pub frr: Option<router::Frr>,
    pub spec: ClusterSpec,
    /// The etcd store ([`ClusterSpec::etcd`]).
    pub etcd: Option<super::etcd::Etcd>,
    pub net: NetConf,
    pub ipamd_conf: IpamdConf,
    /// The nodes still in the cluster (not removed).
    pub live: BTreeSet<String>,
    pub cni_path: CniPath,
    pub tag: String,
    pub work: tempfile::TempDir,
    pub fabric: Fabric,
}

/// The network block of `ip` for prefix length `len`.
pub fn block_of(ip: Ipv4Addr, len: u8) -> String {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    format!("{}/{len}", Ipv4Addr::from(u32::from(ip) & mask))
}

fn normalise(set: &BTreeSet<Entry>) -> BTreeSet<Entry> {
    // `onlink` is only required of routes through a tunnel; a plain route via a directly
    // connected underlay address may carry it or not.
    set.iter()
        .map(|e| match e {
            Entry::Route { dst, via, dev, .. } if dev == "eth0" => Entry::Route {
                dst: dst.clone(),
                via: via.clone(),
                dev: dev.clone(),
                onlink: false,
            },
            e => e.clone(),
        })
        .collect()
}

impl Cluster {
    /// Builds the fabric, starts every `ipamd`, waits until each is healthy, attaches the
    /// pods and waits until every node has programmed exactly what it should.
    pub fn up(tag: &str, spec: ClusterSpec) -> Cluster {
        let t0 = Instant::now();
        let fabric = Fabric::new(tag, &spec.fabric);
        let work = tempfile::Builder::new()
            .prefix("cni-multinode-")
            .tempdir()
            .expect("tempdir");
        let pool = Subnet::for_test(&format!("{tag}-pool"));
        let network = format!("mn-{}", names::unique("n", tag));
        let etcd = spec.etcd.then(|| {
            super::etcd::Etcd::start(
                fabric.fabric.name(),
                fabric.subnets[0].gateway(),
                &work.path().join("etcd"),
            )
        });
        let store = match &etcd {
            Some(e) => e.store_url(&network),
            None => format!("file://{}", work.path().join("cluster.json").display()),
        };
        let mut extra = spec.ipamd_extra.clone();
        if spec.direct_routing {
            extra.push("--direct-routing".to_string());
        }
        if spec.datapath == Datapath::Bgp {
            if spec.bgp_tor == BgpTor::BirdReflector {
                extra.push("--bgp-no-mesh".to_string());
            }
            extra.extend(
                [
                    "--bgp-hold-time",
                    &router::HOLD_TIME.to_string(),
                    "--bgp-connect-retry",
                    "1s",
                ]
                .map(String::from),
            );
        }
        let ipamd_conf = IpamdConf {
            store: store.clone(),
            pool: pool.cidr(),
            block_size: BLOCK_SIZE,
            network: network.clone(),
            datapath: spec.datapath.ipamd_arg().to_string(),
            resync: spec.resync.clone().unwrap_or_else(|| "2s".into()),
            extra,
        };
        let net = NetConf {
            network,
            plugin: spec.datapath.plugin().to_string(),
            pool: pool.cidr(),
            block_size: BLOCK_SIZE,
            store,
        };
        let cni_path = CniPath::from_dirs(&[bins::our_bin_dir(), bins::ref_bin_dir()]);
        std::fs::create_dir_all(work.path().join("wrappers")).expect("mkdir");
        let mut c = Cluster {
            pods: Vec::new(),
            daemons: Vec::new(),
            router: None,
            frr: None,
            etcd,
            live: fabric.nodes.iter().map(|n| n.name.clone()).collect(),
            spec,
            net,
            ipamd_conf,
            cni_path,
            tag: tag.to_string(),
            work,
            fabric,
        };
        match (c.spec.datapath, c.spec.bgp_tor) {
            (Datapath::Bgp, BgpTor::BirdReflector) => c.router = Some(c.start_router()),
            (Datapath::Bgp, BgpTor::FrrMesh) => c.frr = Some(c.start_frr()),
            _ => {}
        }
        let peer_as = match c.spec.bgp_tor {
            BgpTor::BirdReflector => router::AS,
            BgpTor::FrrMesh => router::FRR_AS,
        };
        for n in &c.fabric.nodes {
            let mut conf = c.ipamd_conf.clone();
            if c.spec.datapath == Datapath::Bgp {
                // Each node peers with the router's address on its own subnet only.
                conf.extra
                    .extend(["--bgp-peer".to_string(), format!("{},{peer_as}", n.gateway)]);
            }
            let d = Ipamd::start(
                n,
                &conf,
                &c.data_dir(&n.name),
                &c.work.path().join(format!("{}-ipamd.log", n.name)),
            );
            c.daemons.push(d);
        }
        for d in &mut c.daemons {
            d.wait_healthy(CONVERGE).unwrap_or_else(|e| panic!("{e}"));
        }
        let plugin = bins::our_bin(c.spec.datapath.plugin());
        let wrappers = c.work.path().join("wrappers");
        for n in &c.fabric.nodes {
            for _ in 0..c.spec.pods_per_node {
                let conf = c.net.for_node(&n.name, &c.data_dir(&n.name));
                let p = MnPod::add(tag, n, &plugin, &wrappers, &c.cni_path, conf);
                c.pods.push(p);
            }
        }
        c.wait_converged(CONVERGE).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "[{tag}] cluster up: {} nodes, {} pods, {:?} (datapath {:?}, direct routing {})",
            c.fabric.nodes.len(),
            c.pods.len(),
            t0.elapsed(),
            c.spec.datapath,
            c.spec.direct_routing
        );
        c
    }

    /// BIRD in the fabric namespace, route reflector for every node.
    fn start_router(&self) -> Router {
        let dir = self.work.path().join("router");
        std::fs::create_dir_all(&dir).expect("mkdir router");
        let clients: Vec<Ipv4Addr> = self.fabric.nodes.iter().map(|n| n.underlay_ip).collect();
        let conf = router::config(self.fabric.subnets[0].gateway(), &clients);
        Router::new(self.fabric.fabric.name(), &dir, &conf)
    }

    /// FRR in the fabric namespace, eBGP neighbour of every node.
    fn start_frr(&self) -> router::Frr {
        let dir = self.work.path().join("router-frr");
        let clients: Vec<Ipv4Addr> = self.fabric.nodes.iter().map(|n| n.underlay_ip).collect();
        let conf = router::frr_config(self.fabric.subnets[0].gateway(), &clients);
        router::Frr::new(self.fabric.fabric.name(), &dir, &conf)
    }

    /// The router (BGP clusters only).
    pub fn router(&mut self) -> &mut Router {
        self.router.as_mut().expect("a BGP cluster has a router")
    }

    /// The node-local data dir of `node` (ipamd's `--data-dir`, the config's `dataDir`).
    pub fn data_dir(&self, node: &str) -> PathBuf {
        self.work.path().join(node).join("data")
    }

    pub fn node(&self, name: &str) -> &NodeNs {
        self.fabric.node(name)
    }

    pub fn daemon(&mut self, name: &str) -> &mut Ipamd {
        self.daemons
            .iter_mut()
            .find(|d| d.node == name)
            .unwrap_or_else(|| panic!("no ipamd for {name}"))
    }

    /// The pods of `node`.
    pub fn pods_of(&self, node: &str) -> Vec<&MnPod> {
        self.pods.iter().filter(|p| p.node == node).collect()
    }

    /// The VXLAN device the nodes are expected to have, if any.
    fn vxlan_dev(&self) -> Option<&'static str> {
        (self.spec.datapath == Datapath::Vxlan).then_some(VXLAN_DEVICE)
    }

    /// What the other nodes must know of `name` (its VTEP read from its own VXLAN device).
    pub fn peer_info(&self, name: &str) -> Result<PeerInfo, String> {
        let n = self.node(name);
        let blocks = self
            .pods_of(name)
            .iter()
            .map(|p| block_of(p.ip, BLOCK_SIZE))
            .collect();
        let vtep = match self.vxlan_dev() {
            Some(dev) => {
                let (ip, mac) = kernel::link_addr(n.ns(), dev)?;
                let ip = ip.ok_or_else(|| format!("{dev} of {name} has no IPv4 address"))?;
                Some((ip, mac))
            }
            None => None,
        };
        Ok(PeerInfo {
            name: name.to_string(),
            underlay: n.underlay_ip,
            subnet: n.subnet,
            blocks,
            vtep,
        })
    }

    /// Whether `from` reaches `peer` with a plain route through the underlay.
    fn plain_route(&self, from: &NodeNs, peer: &PeerInfo) -> bool {
        match self.spec.datapath {
            Datapath::HostGw | Datapath::Bgp => true,
            _ => self.spec.direct_routing && from.subnet == peer.subnet,
        }
    }

    /// The objects node `name` must hold for the peers in `peers`.
    pub fn expected(&self, name: &str, peers: &[PeerInfo]) -> BTreeSet<Entry> {
        let me = self.node(name);
        let mut want = BTreeSet::new();
        for p in peers.iter().filter(|p| p.name != name) {
            let plain = self.plain_route(me, p);
            // Over BGP a node on another subnet is reached through the router.
            let via = if self.spec.datapath == Datapath::Bgp && me.subnet != p.subnet {
                me.gateway
            } else {
                p.underlay
            };
            for b in &p.blocks {
                let r = if plain {
                    Entry::Route {
                        dst: b.clone(),
                        via: Some(via.to_string()),
                        dev: "eth0".into(),
                        onlink: false,
                    }
                } else {
                    match self.spec.datapath {
                        Datapath::Vxlan => Entry::Route {
                            dst: b.clone(),
                            via: p.vtep.as_ref().map(|v| v.0.clone()),
                            dev: VXLAN_DEVICE.into(),
                            onlink: true,
                        },
                        Datapath::Ipip => Entry::Route {
                            dst: b.clone(),
                            via: Some(p.underlay.to_string()),
                            dev: "tunl0".into(),
                            onlink: true,
                        },
                        Datapath::HostGw | Datapath::Bgp => unreachable!(),
                    }
                };
                want.insert(r);
            }
            if !plain {
                if let Some((ip, mac)) = &p.vtep {
                    want.insert(Entry::Neigh {
                        ip: ip.clone(),
                        mac: mac.clone(),
                    });
                    want.insert(Entry::Fdb {
                        mac: mac.clone(),
                        dst: p.underlay.to_string(),
                    });
                }
            }
        }
        want
    }

    /// What `ipamd` owns in node `name` now.
    pub fn owned(&self, name: &str) -> BTreeSet<Entry> {
        kernel::owned(self.node(name).ns(), self.vxlan_dev())
    }

    /// Waits until every live node holds exactly the objects it should for the other
    /// live nodes.
    pub fn wait_converged(&self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        wait_until("every node programmed for every peer", timeout, || {
            let peers: Vec<PeerInfo> = self
                .live
                .iter()
                .map(|n| self.peer_info(n))
                .collect::<Result<_, _>>()?;
            let mut diffs = Vec::new();
            for n in &self.live {
                let want = normalise(&self.expected(n, &peers));
                let have = normalise(&self.owned(n));
                if want != have {
                    diffs.push(format!(
                        "{n}:\n  missing:\n{}\n  unexpected:\n{}",
                        show(&want.difference(&have).cloned().collect()),
                        show(&have.difference(&want).cloned().collect())
                    ));
                }
            }
            if diffs.is_empty() {
                Ok(())
            } else {
                Err(diffs.join("\n"))
            }
        })
        .map(|_| start.elapsed())
    }

    /// Every pod as a ping/transfer endpoint.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.pods
            .iter()
            .map(|p| Endpoint {
                ns: p.ns().to_string(),
                ip: p.ip,
                label: p.label(),
            })
            .collect()
    }

    /// Every pod pings every other pod.
    pub fn check_ping_matrix(&self) {
        let t = Instant::now();
        let eps = self.endpoints();
        let failures = checks::ping_matrix(&eps);
        assert!(
            failures.is_empty(),
            "{} of {} pod pairs cannot ping:\n{}",
            failures.len(),
            eps.len() * (eps.len() - 1),
            failures.join("\n")
        );
        eprintln!(
            "[{}] ping matrix: {} pairs ok in {:?}",
            self.tag,
            eps.len() * (eps.len() - 1),
            t.elapsed()
        );
    }

    /// A TCP transfer of `bytes` from the first pod of `from` to the first pod of `to`,
    /// checked byte for byte.
    pub fn check_transfer(&self, from: &str, to: &str, bytes: usize) {
        let a = self.pods_of(from)[0];
        let b = self.pods_of(to)[0];
        let port = 20000 + (names::unique_hash(&self.tag) % 30000) as u16;
        let seed = names::unique_hash("seed");
        let t = checks::tcp_transfer(a.ns(), b.ns(), b.ip, port, bytes, seed).unwrap_or_else(|e| {
            panic!(
                "TCP transfer of {bytes} bytes {} -> {} failed: {e}",
                a.label(),
                b.label()
            )
        });
        eprintln!(
            "[{}] TCP {} -> {}: {} bytes intact in {:?} ({:.0} Mbit/s)",
            self.tag,
            a.label(),
            b.label(),
            t.bytes,
            t.elapsed,
            t.mbit_per_s()
        );
    }

    /// The pod MTU is the underlay's minus the datapath's overhead on every pod, and the
    /// largest unfragmented ping from a pod of `from` to a pod of `to` passes, one byte
    /// more does not.
    pub fn check_mtu(&self, from: &str, to: &str) {
        let want = self.fabric.mtu - self.spec.datapath.overhead();
        for p in &self.pods {
            assert_eq!(
                p.mtu(),
                want,
                "MTU of pod {} (underlay {}, {:?})",
                p.label(),
                self.fabric.mtu,
                self.spec.datapath
            );
        }
        let a = self.pods_of(from)[0];
        let b = self.pods_of(to)[0];
        checks::mtu_probe(a.ns(), b.ip, want)
            .unwrap_or_else(|e| panic!("MTU probe {} -> {}: {e}", a.label(), b.label()));
        eprintln!(
            "[{}] MTU {want}: ping -M do -s {} {} -> {} passes, -s {} does not",
            self.tag,
            want - 28,
            a.label(),
            b.label(),
            want - 27
        );
    }

    /// CHECK passes for every pod.
    pub fn check_pods(&self) {
        for p in &self.pods {
            let o = p.check();
            assert!(
                o.success(),
                "CHECK of {} failed:\n{}",
                p.label(),
                o.describe()
            );
        }
    }

    /// `gone`'s ipamd stops and the node is removed from the store: within
    /// [`CONVERGE`] no live node holds any entry for it, and the rest is unchanged.
    pub fn check_node_removal(&mut self, gone: &str) {
        let info = self.peer_info(gone).unwrap_or_else(|e| panic!("{e}"));
        let tokens = info.tokens();
        let before = lifecycle::entries_naming(&self.live, gone, &tokens, |n| self.owned(n));
        for (n, mine) in &before {
            assert!(
                !mine.is_empty(),
                "{n} holds no entry for {gone} before its removal"
            );
            eprintln!("[{}] {n} holds for {gone}:\n{}", self.tag, show(mine));
        }
        self.daemon(gone).stop();
        let out = node::remove_node(&self.net.store, gone)
            .unwrap_or_else(|e| panic!("ipamd remove-node {gone}: {e}"));
        let t = Instant::now();
        self.live.remove(gone);
        let r = lifecycle::wait_entries_gone(gone, &before, &tokens, |n| self.owned(n));
        if let Err(e) = r {
            panic!("after `ipamd remove-node {gone}` ({}): {e}", out.trim());
        }
        let took = t.elapsed();
        self.wait_converged(CONVERGE)
            .unwrap_or_else(|e| panic!("after removing {gone}: {e}"));
        eprintln!(
            "[{}] {gone} removed: its entries gone from every node after {took:?}",
            self.tag
        );
    }

    /// `node`'s ipamd restarts: no route, neighbour or FDB event concerns what it owns,
    /// the new process sends no netlink request, and its objects are the same.
    pub fn check_restart(&mut self, node: &str) {
        let ns = self.node(node).ns().to_string();
        let before = self.owned(node);
        assert!(!before.is_empty(), "{node} owns nothing before the restart");
        // The counter counts: the old process programmed what it owns.
        let old_requests = self.daemon(node).metric("ipamd_datapath_requests_total");
        assert!(
            old_requests.is_some_and(|r| r >= 1.0),
            "ipamd_datapath_requests_total of {node} before the restart is {old_requests:?}, \
             yet it programmed {} objects",
            before.len()
        );
        let tunnel = self.spec.datapath.tunnel_device();
        let restart = lifecycle::restart_watched(&ns, self.daemon(node), tunnel, "192.0.2.77/32");
        restart.assert_silent(node);
        let resyncs = restart.resyncs;
        let after = self.owned(node);
        assert_eq!(
            after,
            before,
            "objects of {node} changed across the restart:\nbefore:\n{}\nafter:\n{}",
            show(&before),
            show(&after)
        );
        eprintln!(
            "[{}] {node}'s ipamd restarted: {resyncs} resync(s), 0 netlink requests, \
             no event on its {} objects",
            self.tag,
            before.len()
        );
    }

    /// DEL every pod; each succeeds and its interface is gone.
    pub fn detach_all(&mut self) {
        for p in &mut self.pods {
            let label = p.label();
            p.detach(&label);
        }
    }

    /// Every daemon's log.
    pub fn logs(&self) -> String {
        node::logs(&self.daemons)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[{}] ipamd logs:\n{}", self.tag, self.logs());
            if let Some(r) = &self.router {
                eprintln!(
                    "[{}] BIRD:\n{}\n{}",
                    self.tag,
                    r.birdc(&["show", "protocols", "all"]),
                    r.log_text()
                );
            }
        }
    }
}

/// Bytes of the cross-node TCP transfer.
pub const TRANSFER_BYTES: usize = 4 << 20;

/// The end-to-end scenario of a datapath: 3 nodes x 2 pods; exact programming on every
/// node; every pod pings every other; a 4 MiB TCP transfer across nodes arrives intact
/// (both directions of the fabric); pod MTU = underlay - overhead, largest unfragmented
/// ping passes and one byte more does not; CHECK passes; node3 removed -> its routes,
/// neighbours and FDB entries are gone from node1 and node2; node1's ipamd restarted ->
/// no event on its objects, no netlink request; DEL of every pod.
pub fn three_node_scenario(tag: &str, datapath: Datapath, underlay_mtu: u32) {
    let t = Instant::now();
    let mut spec = ClusterSpec::new(datapath, 3, 2);
    spec.fabric = spec.fabric.mtu(underlay_mtu);
    let mut c = Cluster::up(tag, spec);
    for n in ["node1", "node2", "node3"] {
        eprintln!("[{tag}] {n} owns:\n{}", show(&c.owned(n)));
    }
    c.check_pods();
    c.check_ping_matrix();
    c.check_transfer("node1", "node3", TRANSFER_BYTES);
    c.check_transfer("node2", "node1", TRANSFER_BYTES);
    c.check_mtu("node1", "node2");
    c.check_node_removal("node3");
    c.check_ping_matrix_among(&["node1", "node2"]);
    c.check_restart("node1");
    c.check_ping_matrix_among(&["node1", "node2"]);
    c.detach_all();
    eprintln!("[{tag}] scenario done in {:?}", t.elapsed());
}

impl Cluster {
    /// The ping matrix among the pods of `nodes` only.
    pub fn check_ping_matrix_among(&self, nodes: &[&str]) {
        let eps: Vec<Endpoint> = self
            .pods
            .iter()
            .filter(|p| nodes.contains(&p.node.as_str()))
            .map(|p| Endpoint {
                ns: p.ns().to_string(),
                ip: p.ip,
                label: p.label(),
            })
            .collect();
        let failures = checks::ping_matrix(&eps);
        assert!(
            failures.is_empty(),
            "pods of {nodes:?} cannot ping:\n{}",
            failures.join("\n")
        );
    }
}

/// The direct-routing case of `cni-vxlan`: node1 and node2 share an underlay subnet,
/// node3 is on another one behind the fabric's router. node1 <-> node2 use plain routes
/// via the underlay (no neighbour, no FDB entry), anything to or from node3 goes through
/// VXLAN. Pings, a transfer across each kind of path, and the programming are checked.
pub fn direct_routing_scenario(tag: &str) {
    let mut spec = ClusterSpec::new(Datapath::Vxlan, 3, 1);
    spec.fabric.node_subnets = vec![0, 0, 1];
    spec.direct_routing = true;
    let mut c = Cluster::up(tag, spec);
    for n in ["node1", "node2", "node3"] {
        eprintln!("[{tag}] {n} owns:\n{}", show(&c.owned(n)));
    }
    // The exact sets were checked by `up`; spell out the two kinds of path once more.
    let n2 = c.peer_info("node2").unwrap();
    let n1_owns = c.owned("node1");
    assert!(
        n1_owns
            .iter()
            .all(|e| !(matches!(e, Entry::Neigh { .. } | Entry::Fdb { .. })
                && e.mentions(&n2.tokens()))),
        "node1 has VXLAN entries for node2 on its own subnet:\n{}",
        show(&n1_owns)
    );
    c.check_ping_matrix();
    c.check_transfer("node1", "node2", TRANSFER_BYTES);
    c.check_transfer("node1", "node3", TRANSFER_BYTES);
    c.detach_all();
}

/// The BGP datapath across L3: node1 and node2 on one underlay subnet, node3 on another,
/// the fabric routing between them and running BIRD as route reflector for all three
/// (no mesh: every route a node has comes from BIRD). `cni-routed` pods, 2 per node.
///
/// Checked: exact routes on every node (same subnet: via the node; across: via the
/// router); BIRD holds every block with its node as next hop; CHECK; every pod pings
/// every other; TCP transfers across and within a subnet; MTU; BIRD killed -> the nodes
/// keep its routes for its graceful-restart time, then hold none (pods on different
/// nodes no longer reach each other: the routes came only from BGP), BIRD back ->
/// everything back; node3's ipamd frozen -> its blocks leave every node and BIRD within
/// the hold time, thawed -> back; node1's ipamd restarted -> no event on its routes, no
/// netlink request (its routes wait for BIRD's table); DEL of every pod.
pub fn bgp_scenario(tag: &str) {
    let t = Instant::now();
    let mut spec = ClusterSpec::new(Datapath::Bgp, 3, 2);
    spec.fabric.node_subnets = vec![0, 0, 1];
    let mut c = Cluster::up(tag, spec);
    for n in ["node1", "node2", "node3"] {
        eprintln!("[{tag}] {n} owns:\n{}", show(&c.owned(n)));
    }
    c.check_router_has_every_block();
    c.check_pods();
    c.check_ping_matrix();
    c.check_transfer("node1", "node3", TRANSFER_BYTES);
    c.check_transfer("node2", "node1", TRANSFER_BYTES);
    c.check_mtu("node3", "node2");
    c.check_router_loss();
    c.check_ping_matrix();
    c.check_node_frozen("node3");
    c.check_ping_matrix();
    c.check_restart("node1");
    c.check_router_has_every_block();
    c.check_ping_matrix();
    c.detach_all();
    eprintln!("[{tag}] scenario done in {:?}", t.elapsed());
}

impl Cluster {
    /// The block of every pod of a live node, with that node's underlay address: what
    /// a router must have learned.
    pub fn live_blocks(&self) -> Vec<(String, Ipv4Addr)> {
        self.pods
            .iter()
            .filter(|p| self.live.contains(&p.node))
            .map(|p| (block_of(p.ip, BLOCK_SIZE), self.node(&p.node).underlay_ip))
            .collect()
    }

    /// BIRD's (or FRR's) table holds every block of every live node, with the node as
    /// next hop.
    pub fn check_router_has_every_block(&mut self) {
        if self.frr.is_some() {
            return super::bgp_frr::check_frr_has_every_block(self);
        }
        let want = self.live_blocks();
        let r = self.router();
        wait_until("BIRD learned every block", CONVERGE, || {
            let missing: Vec<String> = want
                .iter()
                .filter(|(b, via)| {
                    !r.birdc(&["show", "route", b])
                        .contains(&format!("via {via} "))
                })
                .map(|(b, via)| format!("{b} via {via}"))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "missing {missing:?}; BIRD has:\n{}",
                    r.birdc(&["show", "route"])
                ))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The first pod of `from` gets no answer from the first pod of `to`.
    fn unreachable(&self, from: &str, to: &str) -> bool {
        let (a, b) = (self.pods_of(from)[0], self.pods_of(to)[0]);
        checks::ping_from(a.ns(), b.ip, &[]).is_err()
    }

    /// BIRD killed (no NOTIFICATION): the nodes keep its routes as stale for its
    /// graceful-restart time and pods keep talking; then every node holds no route at
    /// all and, once the fabric's copies of BIRD's routes are gone too, pods of different
    /// nodes cannot reach each other, not even on one subnet (so no route came from
    /// anywhere but BGP). BIRD restarted: everything comes back.
    pub fn check_router_loss(&mut self) {
        let tag = self.tag.clone();
        let before: BTreeMap<String, BTreeSet<Entry>> = self
            .live
            .iter()
            .map(|n| (n.clone(), self.owned(n)))
            .collect();
        self.router().kill();
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        for (n, old) in &before {
            assert_eq!(
                &self.owned(n),
                old,
                "{n} changed its routes within BIRD's graceful-restart time"
            );
        }
        self.check_ping_matrix();
        let grace = Duration::from_secs(router::GR_TIME);
        wait_until(
            "every node dropped BIRD's routes",
            grace + Duration::from_secs(5),
            || {
                let left: Vec<String> = self
                    .live
                    .iter()
                    .filter(|n| !self.owned(n).is_empty())
                    .map(|n| format!("{n}:\n{}", show(&self.owned(n))))
                    .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(left.join("\n"))
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let kept = t.elapsed();
        assert!(
            kept + Duration::from_millis(500) >= grace,
            "routes dropped after {kept:?}, before BIRD's graceful-restart time {grace:?}"
        );
        // A killed BIRD leaves its routes in the fabric's kernel, and a node with no
        // route of its own would still reach the others through its default route to
        // the fabric: take them away, as a dead router would.
        self.fabric
            .fabric
            .exec(&["ip", "route", "flush", "proto", "bird"]);
        for (a, b) in [("node1", "node2"), ("node1", "node3")] {
            assert!(
                self.unreachable(a, b),
                "a pod of {a} still reaches a pod of {b} with no BGP route"
            );
        }
        eprintln!(
            "[{tag}] BIRD killed: routes kept {kept:?} (graceful restart {grace:?}), \
             then none on any node and no pod reaches another node"
        );
        self.router().start();
        let back = self
            .wait_converged(CONVERGE)
            .unwrap_or_else(|e| panic!("after BIRD came back: {e}"));
        eprintln!("[{tag}] BIRD back: every node converged in {back:?}");
    }

    /// `node`'s ipamd frozen (SIGSTOP: no NOTIFICATION, no closed socket): within the
    /// hold time BIRD drops its session and no other node (nor BIRD) holds a route to
    /// its blocks; the others still reach each other. Thawed: its session and routes
    /// come back.
    pub fn check_node_frozen(&mut self, node: &str) {
        let info = self.peer_info(node).unwrap_or_else(|e| panic!("{e}"));
        let others: Vec<String> = self.live.iter().filter(|n| *n != node).cloned().collect();
        self.daemon(node).freeze();
        let hold = Duration::from_secs(router::HOLD_TIME);
        let r = lifecycle::wait_blocks_withdrawn(
            node,
            &others,
            &info.tokens(),
            &info.blocks.iter().cloned().collect::<Vec<_>>(),
            |n| self.owned(n),
            || {
                let mut learned = self
                    .router
                    .as_ref()
                    .map(Router::prefixes)
                    .unwrap_or_default();
                learned.extend(self.frr.iter().flat_map(|f| f.routes().into_keys()));
                learned
            },
        );
        let took = match r {
            Ok(took) => took,
            Err(e) => {
                self.daemon(node).thaw();
                panic!("{e}");
            }
        };
        let among: Vec<&str> = others.iter().map(String::as_str).collect();
        self.check_ping_matrix_among(&among);
        eprintln!(
            "[{}] {node}'s ipamd frozen: its blocks gone from {among:?} and the router after \
             {took:?} (hold time {hold:?})",
            self.tag
        );
        self.daemon(node).thaw();
        let back = self
            .wait_converged(CONVERGE)
            .unwrap_or_else(|e| panic!("after {node}'s ipamd was thawed: {e}"));
        self.check_router_has_every_block();
        eprintln!(
            "[{}] {node}'s ipamd thawed: converged in {back:?}",
            self.tag
        );
    }
}
