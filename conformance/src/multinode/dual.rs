//! Dual-stack and IPv6-only clusters: the fabric of [`super::topology`] with IPv6 added
//! to (or replacing IPv4 on) the underlay, a pool of both families or IPv6 only, pods
//! that may have no IPv4 address, and the checks of the IPv4 scenario for both families:
//! exact programming (routes of both families, a VXLAN neighbour per VTEP address, one
//! FDB entry per node), ping matrix per family, TCP over IPv6, the MTU probe per family,
//! node removal, a silent restart.
//!
//! Expectations are computed from the ADD results (addresses and gateways IPAM gave) and
//! the fabric's addresses, never from `ipamd`'s code.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use serde_json::{json, Value};

use crate::bins::{self, CniPath};
use crate::names;
use crate::subnet::Subnet;

use super::checks;
use super::cluster::BgpTor;
use super::kernel::{self, show, Entry};
use super::lifecycle;
use super::node::{self, Ipamd, IpamdConf};
use super::pod::{Attached, VERSION};
use super::router::{self, Frr, Router};
use super::topology::{Fabric, FabricSpec, NodeNs};
use super::{wait_until, Datapath, VXLAN_DEVICE};

/// IPv4 block prefix length of the tests' pools (IPv6 blocks: ipamd's default /122).
pub const BLOCK_SIZE: u8 = 26;
/// How long `ipamd` may take to program a change.
pub const CONVERGE: Duration = Duration::from_secs(20);

/// The underlay's families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnderlayKind {
    /// IPv4 only (`ipamd --underlay-ip` the IPv4 address).
    V4,
    /// IPv4 and IPv6 on `eth0`; `ipamd --underlay-ip` the IPv4 address.
    Dual,
    /// IPv6 only: no IPv4 address, an IPv6 default route.
    V6,
    /// IPv4 and IPv6 on `eth0` (the default route IPv4), `ipamd --underlay-ip` the IPv6
    /// address: the tunnel runs over IPv6 while the pod side, left to itself, would pick
    /// the IPv4 default route's interface.
    DualOverV6,
}

impl UnderlayKind {
    /// Whether `ipamd` runs over the IPv6 address.
    pub fn over_v6(self) -> bool {
        matches!(self, UnderlayKind::V6 | UnderlayKind::DualOverV6)
    }
}

/// The pool's families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Dual,
    V6,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct DualSpec {
    pub datapath: Datapath,
    pub underlay: UnderlayKind,
    pub pool: PoolKind,
    pub nodes: usize,
    pub pods_per_node: usize,
    pub mtu: u32,
    /// `ipamd --direct-routing` (vxlan): a block of a family the peer has an on-link
    /// underlay address of gets a plain route via it, the others go through VXLAN.
    pub direct_routing: bool,
}

/// A node's IPv6 underlay address: `fdaa:<b>:<c>::<10+i>` for the IPv4 subnet
/// `10.b.c.0/24` of the fabric (unique per test as the IPv4 one is).
pub fn underlay6(s: &Subnet, host: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfdaa, s.b as u16, s.c as u16, 0, 0, 0, 0, host as u16)
}

/// A pod of a dual-stack / IPv6-only cluster (the [`Attached`] pod's fields and methods
/// through `Deref`).
#[derive(Debug)]
pub struct DualPod {
    attached: Attached,
    /// Its addresses with the block's prefix length, per family (`None`: none of it).
    pub v4: Option<IpNetwork>,
    pub v6: Option<IpNetwork>,
    /// The gateways IPAM gave (the node's VTEP addresses in vxlan).
    pub gw4: Option<IpAddr>,
    pub gw6: Option<IpAddr>,
}

impl std::ops::Deref for DualPod {
    type Target = Attached;
    fn deref(&self) -> &Attached {
        &self.attached
    }
}

impl std::ops::DerefMut for DualPod {
    fn deref_mut(&mut self) -> &mut Attached {
        &mut self.attached
    }
}

impl DualPod {
    /// Its address of the family of `v6`.
    pub fn ip(&self, v6: bool) -> Option<IpAddr> {
        if v6 { self.v6 } else { self.v4 }.map(|n| n.ip())
    }

    pub fn label(&self) -> String {
        let ips: Vec<String> = [self.v4, self.v6]
            .iter()
            .flatten()
            .map(|n| n.ip().to_string())
            .collect();
        format!("{}/{}", self.node, ips.join(","))
    }
}

/// IPv6 block prefix length (`ipamd`'s default).
pub const BLOCK_SIZE6: u8 = 122;

/// The pool block holding the address `n` (routed pods carry /32 and /128 addresses,
/// bridged ones the block's prefix).
fn block(n: &IpNetwork) -> String {
    let len = if n.is_ipv6() { BLOCK_SIZE6 } else { BLOCK_SIZE };
    let b = IpNetwork::new(n.ip(), len).expect("block prefix");
    format!("{}/{len}", b.network())
}

/// A running dual-stack / IPv6-only cluster. Drop order: pods, daemons, work, fabric.
#[derive(Debug)]
pub struct DualCluster {
    pub pods: Vec<DualPod>,
    pub daemons: Vec<Ipamd>,
    /// BIRD in the fabric namespace, route reflector of every node (BGP only).
    pub router: Option<Router>,
    /// FRR in the fabric namespace, eBGP neighbour of every node (BGP with
    /// [`BgpTor::FrrMesh`] only).
    pub frr: Option<Frr>,
    pub spec: DualSpec,
    pub store: String,
    pub live: BTreeSet<String>,
    pub tag: String,
    /// The `CNI_PATH` dir the pods' plugins run with (kept until the pods are gone).
    pub cni_path: CniPath,
    pub work: tempfile::TempDir,
    pub fabric: Fabric,
}

/// What a node's peers must know of it.
#[derive(Clone, Debug)]
pub struct PeerInfo6 {
    pub name: String,
    pub underlay4: Option<IpAddr>,
    pub underlay6: Option<IpAddr>,
    pub blocks: BTreeSet<(bool, String)>,
    /// VTEP addresses (IPAM's gateways) and the VXLAN device's MAC (vxlan only).
    pub vtep4: Option<IpAddr>,
    pub vtep6: Option<IpAddr>,
    pub mac: Option<String>,
}

impl PeerInfo6 {
    /// Every token by which one of its entries can name it.
    pub fn tokens(&self) -> Vec<String> {
        let mut t: Vec<String> = self.blocks.iter().map(|(_, b)| b.clone()).collect();
        for ip in [self.underlay4, self.underlay6, self.vtep4, self.vtep6]
            .iter()
            .flatten()
        {
            t.push(ip.to_string());
        }
        t.extend(self.mac.clone());
        t
    }
}

/// The global addresses of `dev` in `ns`, with prefix length.
pub fn global_addrs(ns: &str, dev: &str) -> Vec<String> {
    let out =
        crate::try_sh("ip", &["-n", ns, "-j", "addr", "show", "dev", dev]).unwrap_or_default();
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Array(vec![]));
    v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["scope"].as_str() == Some("global"))
        .filter_map(|a| {
            Some(format!(
                "{}/{}",
                a["local"].as_str()?,
                a["prefixlen"].as_u64()?
            ))
        })
        .collect()
}

/// The family-aware traffic checks, where the dual-stack tests have always found them.
pub use super::checks::{icmp_headers, mtu_probe, ping_from as ping};

impl DualCluster {
    /// Builds the fabric (IPv6 added or swapped in), starts every `ipamd`, attaches the
    /// pods and waits until every node holds exactly what it should.
    pub fn up(tag: &str, spec: DualSpec) -> DualCluster {
        Self::up_with(tag, spec, BgpTor::BirdReflector)
    }

    /// As [`DualCluster::up`]; with the BGP datapath, `tor` chooses the fabric's
    /// router: BIRD as route reflector (`--bgp-no-mesh`), or FRR as eBGP top-of-rack
    /// with the nodes' full iBGP mesh.
    pub fn up_with(tag: &str, spec: DualSpec, tor: BgpTor) -> DualCluster {
        let t0 = Instant::now();
        let fabric = Fabric::new(tag, &FabricSpec::flat(spec.nodes).mtu(spec.mtu));
        let s = fabric.subnets[0];
        if spec.underlay != UnderlayKind::V4 {
            let gw6 = underlay6(&s, 1);
            fabric.fabric.exec(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{gw6}/64"),
                "dev",
                "br0",
                "nodad",
            ]);
            for (i, n) in fabric.nodes.iter().enumerate() {
                let a = underlay6(&s, 10 + i as u8);
                n.exec(&[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{a}/64"),
                    "dev",
                    "eth0",
                    "nodad",
                ]);
                if spec.underlay == UnderlayKind::V6 {
                    // No IPv4 left on the node at all: its address (and with it the
                    // default route) goes, an IPv6 default route replaces it.
                    n.exec(&["ip", "-4", "addr", "flush", "dev", "eth0"]);
                    n.exec(&[
                        "ip",
                        "-6",
                        "route",
                        "add",
                        "default",
                        "via",
                        &gw6.to_string(),
                        "dev",
                        "eth0",
                    ]);
                }
            }
        }
        let work = tempfile::Builder::new()
            .prefix("cni-multinode6-")
            .tempdir()
            .expect("tempdir");
        let pool4 = Subnet::for_test(&format!("{tag}-pool"));
        let pool6 = format!("fdbb:{:x}:{:x}::/112", pool4.b, pool4.c);
        let pools: Vec<String> = match spec.pool {
            PoolKind::Dual => vec![pool4.cidr(), pool6],
            PoolKind::V6 => vec![pool6],
        };
        let store = format!("file://{}", work.path().join("cluster.json").display());
        let network = format!("mn6-{}", names::unique("n", tag));
        let conf = IpamdConf {
            store: store.clone(),
            pool: pools.join(","),
            block_size: BLOCK_SIZE,
            network: network.clone(),
            datapath: spec.datapath.ipamd_arg().to_string(),
            resync: "2s".into(),
            extra: if spec.direct_routing {
                vec!["--direct-routing".into()]
            } else {
                vec![]
            },
        };
        let mut c = DualCluster {
            pods: Vec::new(),
            daemons: Vec::new(),
            router: None,
            frr: None,
            live: fabric.nodes.iter().map(|n| n.name.clone()).collect(),
            spec,
            store: store.clone(),
            tag: tag.to_string(),
            cni_path: CniPath::from_dirs(&[bins::our_bin_dir(), bins::ref_bin_dir()]),
            work,
            fabric,
        };
        let ips: Vec<IpAddr> = (c.fabric.nodes.iter().enumerate())
            .map(|(i, n)| {
                if c.spec.underlay.over_v6() {
                    underlay6(&s, 10 + i as u8).into()
                } else {
                    n.underlay_ip.into()
                }
            })
            .collect();
        let mut conf = conf;
        if c.spec.datapath == Datapath::Bgp {
            // Each node peers with the router over its own underlay family only.
            let peer: IpAddr = if c.spec.underlay.over_v6() {
                underlay6(&s, 1).into()
            } else {
                s.gateway().into()
            };
            let peer_as = match tor {
                BgpTor::BirdReflector => {
                    c.router = Some(c.start_router(&ips));
                    conf.extra.push("--bgp-no-mesh".into());
                    router::AS
                }
                BgpTor::FrrMesh => {
                    let dir = c.work.path().join("router-frr");
                    let frr = router::frr_config_dual_stack(s.gateway(), &ips);
                    c.frr = Some(Frr::new(c.fabric.fabric.name(), &dir, &frr));
                    router::FRR_AS
                }
            };
            conf.extra.extend(
                [
                    "--bgp-hold-time",
                    &router::HOLD_TIME.to_string(),
                    "--bgp-connect-retry",
                    "1s",
                    "--bgp-peer",
                    &format!("{peer},{peer_as}"),
                ]
                .map(String::from),
            );
        }
        for (n, ip) in c.fabric.nodes.iter().zip(ips) {
            let d = Ipamd::start_at(
                n,
                ip,
                &conf,
                &c.data_dir(&n.name),
                &c.work.path().join(format!("{}-ipamd.log", n.name)),
            );
            c.daemons.push(d);
        }
        for d in &mut c.daemons {
            d.wait_healthy(CONVERGE).unwrap_or_else(|e| panic!("{e}"));
        }
        // Healthy is not yet programmed: the VXLAN device comes with the first resync.
        // Pods attached before it exists would take the MTU of their own underlay
        // lookup instead of the device's (what a node's CNI config written by its agent
        // once ready avoids).
        if c.vxlan() {
            for n in &c.fabric.nodes {
                wait_until(&format!("{VXLAN_DEVICE} on {}", n.name), CONVERGE, || {
                    kernel::link_mtu(n.ns(), VXLAN_DEVICE)
                })
                .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let plugin = bins::our_bin(c.spec.datapath.plugin());
        let wrappers = c.work.path().join("wrappers");
        std::fs::create_dir_all(&wrappers).expect("mkdir");
        for n in &c.fabric.nodes {
            for _ in 0..c.spec.pods_per_node {
                let conf = json!({
                    "cniVersion": VERSION,
                    "name": network,
                    "type": c.spec.datapath.plugin(),
                    "ipam": {
                        "type": "cni-ipam",
                        "pool": pools,
                        "blockSize": BLOCK_SIZE,
                        "nodeName": n.name,
                        "store": store,
                        "dataDir": c.data_dir(&n.name).display().to_string(),
                        "reserveGateway": true,
                    }
                });
                let p = add_pod(tag, n, &plugin, &wrappers, &c.cni_path, conf);
                c.pods.push(p);
            }
        }
        for p in &c.pods {
            assert!(p.v6.is_some(), "pod {} got no IPv6 address", p.label());
            assert_eq!(
                p.v4.is_some(),
                c.spec.pool == PoolKind::Dual,
                "pod {}: IPv4 address against the pool's families",
                p.label()
            );
        }
        c.wait_converged(CONVERGE).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "[{tag}] cluster up: {} nodes, {} pods, {:?} ({:?}, underlay {:?}, pool {:?})",
            c.fabric.nodes.len(),
            c.pods.len(),
            t0.elapsed(),
            c.spec.datapath,
            c.spec.underlay,
            c.spec.pool
        );
        c
    }

    /// BIRD in the fabric namespace (the fabric's address on `br0` is the nodes'
    /// neighbour), route reflector for `clients` with both families' channels.
    fn start_router(&self, clients: &[IpAddr]) -> Router {
        let dir = self.work.path().join("router");
        std::fs::create_dir_all(&dir).expect("mkdir router");
        let conf = router::config_dual_stack(self.fabric.subnets[0].gateway(), clients);
        Router::new(self.fabric.fabric.name(), &dir, &conf)
    }

    pub fn data_dir(&self, node: &str) -> PathBuf {
        self.work.path().join(node).join("data")
    }

    pub fn node(&self, name: &str) -> &NodeNs {
        self.fabric.node(name)
    }

    fn node_index(&self, name: &str) -> usize {
        self.fabric
            .nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn daemon(&mut self, name: &str) -> &mut Ipamd {
        self.daemons
            .iter_mut()
            .find(|d| d.node == name)
            .unwrap_or_else(|| panic!("no ipamd for {name}"))
    }

    pub fn pods_of(&self, node: &str) -> Vec<&DualPod> {
        self.pods.iter().filter(|p| p.node == node).collect()
    }

    /// The families the pods have.
    pub fn families(&self) -> Vec<bool> {
        match self.spec.pool {
            PoolKind::Dual => vec![false, true],
            PoolKind::V6 => vec![true],
        }
    }

    fn vxlan(&self) -> bool {
        self.spec.datapath == Datapath::Vxlan
    }

    /// What the other nodes must know of `name`.
    pub fn peer_info(&self, name: &str) -> Result<PeerInfo6, String> {
        let n = self.node(name);
        let s = self.fabric.subnets[0];
        let i = self.node_index(name);
        let (u4, u6): (Option<IpAddr>, Option<IpAddr>) = match self.spec.underlay {
            UnderlayKind::V4 => (Some(n.underlay_ip.into()), None),
            UnderlayKind::Dual | UnderlayKind::DualOverV6 => (
                Some(n.underlay_ip.into()),
                Some(underlay6(&s, 10 + i as u8).into()),
            ),
            UnderlayKind::V6 => (None, Some(underlay6(&s, 10 + i as u8).into())),
        };
        let pods = self.pods_of(name);
        let mut blocks = BTreeSet::new();
        for p in &pods {
            for net in [p.v4, p.v6].iter().flatten() {
                blocks.insert((net.is_ipv6(), block(net)));
            }
        }
        let (mut vtep4, mut vtep6, mut mac) = (None, None, None);
        if self.vxlan() {
            vtep4 = pods.iter().find_map(|p| p.gw4);
            vtep6 = pods.iter().find_map(|p| p.gw6);
            mac = Some(kernel::link_addr(n.ns(), VXLAN_DEVICE)?.1);
        }
        Ok(PeerInfo6 {
            name: name.to_string(),
            underlay4: u4,
            underlay6: u6,
            blocks,
            vtep4,
            vtep6,
            mac,
        })
    }

    /// The objects node `name` must hold for `peers`.
    pub fn expected(&self, name: &str, peers: &[PeerInfo6]) -> BTreeSet<Entry> {
        let mut want = BTreeSet::new();
        let underlay_v6 = self.spec.underlay.over_v6();
        for p in peers.iter().filter(|p| p.name != name) {
            // directRouting: every node is on the one subnet, so a block goes direct
            // when the peer has an underlay address of its family.
            let direct = |v6: bool| {
                let u = if v6 { p.underlay6 } else { p.underlay4 };
                u.filter(|_| self.spec.direct_routing)
            };
            for (v6, b) in &p.blocks {
                if let Some(u) = direct(*v6) {
                    want.insert(Entry::Route {
                        dst: b.clone(),
                        via: Some(u.to_string()),
                        dev: "eth0".into(),
                        onlink: false,
                    });
                    continue;
                }
                let (via, dev, onlink) = match self.spec.datapath {
                    Datapath::Vxlan => {
                        let vtep = if *v6 { p.vtep6 } else { p.vtep4 };
                        (vtep.map(|v| v.to_string()), VXLAN_DEVICE, true)
                    }
                    // IPv4 in tunl0 via the node's IPv4 address; IPv6 in sit0 via its
                    // IPv4-compatible address (as iproute2 prints it: ::a.b.c.d).
                    Datapath::Ipip if *v6 => (p.underlay4.map(|u| format!("::{u}")), "sit0", true),
                    Datapath::Ipip => (p.underlay4.map(|u| u.to_string()), "tunl0", true),
                    _ => {
                        // bgp on an IPv6-only underlay: IPv4 blocks via inet6 (RFC 8950).
                        let u = if *v6 {
                            p.underlay6
                        } else {
                            p.underlay4.or(p.underlay6)
                        };
                        (u.map(|u| u.to_string()), "eth0", false)
                    }
                };
                want.insert(Entry::Route {
                    dst: b.clone(),
                    via,
                    dev: dev.into(),
                    onlink,
                });
            }
            let tunnelled = p.blocks.iter().any(|(v6, _)| direct(*v6).is_none());
            if self.vxlan() && (tunnelled || !self.spec.direct_routing) {
                let mac = p.mac.clone().unwrap_or_default();
                let vteps = [(false, p.vtep4), (true, p.vtep6)];
                let vteps = vteps.iter().filter(|(v6, _)| direct(*v6).is_none());
                for vtep in vteps.filter_map(|(_, v)| v.as_ref()) {
                    want.insert(Entry::Neigh {
                        ip: vtep.to_string(),
                        mac: mac.clone(),
                    });
                }
                let dst = if underlay_v6 {
                    p.underlay6
                } else {
                    p.underlay4
                };
                want.insert(Entry::Fdb {
                    mac,
                    dst: dst.map(|d| d.to_string()).unwrap_or_default(),
                });
            }
        }
        want
    }

    /// What `ipamd` owns in node `name`: routes of both families, and the VXLAN
    /// device's permanent neighbours (both families) and FDB entries.
    pub fn owned(&self, name: &str) -> BTreeSet<Entry> {
        let ns = self.node(name).ns();
        let mut s = kernel::routes_of(ns, false);
        s.extend(kernel::routes_of(ns, true));
        if self.vxlan() {
            s.extend(kernel::neighs(ns, VXLAN_DEVICE));
            s.extend(kernel::neighs_of(ns, VXLAN_DEVICE, true));
            s.extend(kernel::fdb(ns, VXLAN_DEVICE));
        }
        // host-gw routes via the underlay may or may not carry `onlink`.
        s.into_iter()
            .map(|e| match e {
                Entry::Route { dst, via, dev, .. } if dev == "eth0" => Entry::Route {
                    dst,
                    via,
                    dev,
                    onlink: false,
                },
                e => e,
            })
            .collect()
    }

    /// Waits until every live node holds exactly what it should, and (vxlan) every
    /// node's VXLAN device carries exactly its VTEP addresses.
    pub fn wait_converged(&self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        wait_until("every node programmed for every peer", timeout, || {
            let peers: Vec<PeerInfo6> = self
                .live
                .iter()
                .map(|n| self.peer_info(n))
                .collect::<Result<_, _>>()?;
            let mut diffs = Vec::new();
            for n in &self.live {
                let want = self.expected(n, &peers);
                let have = self.owned(n);
                if want != have {
                    diffs.push(format!(
                        "{n}:\n  missing:\n{}\n  unexpected:\n{}",
                        show(&want.difference(&have).cloned().collect()),
                        show(&have.difference(&want).cloned().collect())
                    ));
                }
                if self.vxlan() {
                    let me = peers.iter().find(|p| &p.name == n).expect("self");
                    let mut want: Vec<String> = [
                        me.vtep4.map(|v| format!("{v}/32")),
                        me.vtep6.map(|v| format!("{v}/128")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    let mut have = global_addrs(self.node(n).ns(), VXLAN_DEVICE);
                    want.sort();
                    have.sort();
                    if want != have {
                        diffs.push(format!(
                            "{n}: {VXLAN_DEVICE} carries {have:?}, not {want:?}"
                        ));
                    }
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

    /// Every pod of `nodes` pings every other one, on every family of the pool.
    pub fn check_ping_matrix_among(&self, nodes: &[&str]) {
        let t = Instant::now();
        let pods: Vec<&DualPod> = self
            .pods
            .iter()
            .filter(|p| nodes.contains(&p.node.as_str()))
            .collect();
        let failures = std::sync::Mutex::new(Vec::new());
        let mut pairs = 0;
        for v6 in self.families() {
            pairs += pods.len() * (pods.len() - 1);
            std::thread::scope(|s| {
                for src in &pods {
                    let (failures, pods) = (&failures, &pods);
                    s.spawn(move || {
                        for dst in pods.iter().filter(|d| d.ns() != src.ns()) {
                            let ip = dst.ip(v6).expect("address of the family");
                            // One retry: the first packets may race neighbour discovery.
                            let r = ping(src.ns(), ip, &[]).or_else(|_| ping(src.ns(), ip, &[]));
                            if let Err(e) = r {
                                failures.lock().unwrap().push(format!(
                                    "{} -> {ip}: {}",
                                    src.label(),
                                    e.lines().last().unwrap_or("").trim()
                                ));
                            }
                        }
                    });
                }
            });
        }
        let failures = failures.into_inner().unwrap();
        assert!(
            failures.is_empty(),
            "{} of {pairs} pings among the pods of {nodes:?} failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
        eprintln!(
            "[{}] ping matrix {nodes:?}: {pairs} pairs (families {:?}) ok in {:?}",
            self.tag,
            self.families(),
            t.elapsed()
        );
    }

    /// Every pod pings every other pod, on every family.
    pub fn check_ping_matrix(&self) {
        let nodes: Vec<&str> = self.live.iter().map(String::as_str).collect();
        self.check_ping_matrix_among(&nodes);
    }

    /// A TCP transfer over IPv6 from the first pod of `from` to the first pod of `to`,
    /// checked byte for byte.
    pub fn check_transfer6(&self, from: &str, to: &str, bytes: usize) {
        let a = self.pods_of(from)[0];
        let b = self.pods_of(to)[0];
        let dst = b.ip(true).expect("IPv6 address");
        let port = 20000 + (names::unique_hash(&self.tag) % 30000) as u16;
        let t = checks::tcp_transfer(a.ns(), b.ns(), dst, port, bytes, names::unique_hash("seed"))
            .unwrap_or_else(|e| panic!("TCP over IPv6 {} -> {}: {e}", a.label(), b.label()));
        eprintln!(
            "[{}] TCP over IPv6 {} -> [{dst}]: {} bytes intact in {:?} ({:.0} Mbit/s)",
            self.tag,
            a.label(),
            t.bytes,
            t.elapsed,
            t.mbit_per_s()
        );
    }

    /// The pod MTU the datapath must give: the underlay's minus 50 (vxlan, IPv4
    /// underlay), 70 (vxlan, IPv6 underlay), 0 (host-gw).
    pub fn pod_mtu(&self) -> u32 {
        let over = match self.spec.datapath {
            Datapath::Vxlan if self.spec.underlay.over_v6() => 70,
            Datapath::Vxlan => 50,
            d => d.overhead(),
        };
        self.spec.mtu - over
    }

    /// Every pod has the pod MTU, and for each family the largest unfragmented echo from
    /// a pod of `from` to a pod of `to` passes, one byte more does not.
    pub fn check_mtu(&self, from: &str, to: &str) {
        let want = self.pod_mtu();
        for p in &self.pods {
            assert_eq!(p.mtu(), want, "MTU of pod {}", p.label());
        }
        let a = self.pods_of(from)[0];
        let b = self.pods_of(to)[0];
        for v6 in self.families() {
            let dst = b.ip(v6).expect("address");
            mtu_probe(a.ns(), dst, want)
                .unwrap_or_else(|e| panic!("MTU probe {} -> {dst}: {e}", a.label()));
            eprintln!(
                "[{}] MTU {want}: ping -M do -s {} {} -> {dst} passes, one byte more does not",
                self.tag,
                want - icmp_headers(v6),
                a.label()
            );
        }
    }

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

    /// `gone`'s ipamd stops and the node is removed from the store: no live node keeps
    /// any entry naming it (IPv4 and IPv6 routes, both neighbours, the FDB entry).
    pub fn check_node_removal(&mut self, gone: &str) {
        let info = self.peer_info(gone).unwrap_or_else(|e| panic!("{e}"));
        let tokens = info.tokens();
        let before = lifecycle::entries_naming(&self.live, gone, &tokens, |n| self.owned(n));
        for (n, mine) in &before {
            let v6_routes = mine
                .iter()
                .filter(|e| matches!(e, Entry::Route { dst, .. } if dst.contains(':')))
                .count();
            assert!(
                v6_routes > 0,
                "{n} holds no IPv6 route for {gone}:\n{}",
                show(mine)
            );
        }
        self.daemon(gone).stop();
        let out = node::remove_node(&self.store, gone)
            .unwrap_or_else(|e| panic!("ipamd remove-node {gone}: {e}"));
        let t = Instant::now();
        self.live.remove(gone);
        lifecycle::wait_entries_gone(gone, &before, &tokens, |n| self.owned(n))
            .unwrap_or_else(|e| panic!("after `ipamd remove-node {gone}` ({}): {e}", out.trim()));
        let took = t.elapsed();
        self.wait_converged(CONVERGE)
            .unwrap_or_else(|e| panic!("after removing {gone}: {e}"));
        let n: usize = before.values().map(BTreeSet::len).sum();
        eprintln!(
            "[{}] {gone} removed: its {n} entries (both families) gone from every node after {took:?}",
            self.tag
        );
    }

    /// `node`'s ipamd restarts under `ip monitor route neigh` and `bridge monitor fdb`:
    /// no event concerns an IPv4 or IPv6 object it owns, the new process sends no
    /// netlink request, its objects are the same.
    pub fn check_restart(&mut self, node: &str) {
        let ns = self.node(node).ns().to_string();
        let before = self.owned(node);
        assert!(
            before
                .iter()
                .any(|e| matches!(e, Entry::Route { dst, .. } if dst.contains(':'))),
            "{node} owns no IPv6 route before the restart:\n{}",
            show(&before)
        );
        let tunnel = self.spec.datapath.tunnel_device();
        lifecycle::restart_watched(&ns, self.daemon(node), tunnel, "2001:db8:77::/64")
            .assert_silent(node);
        assert_eq!(
            self.owned(node),
            before,
            "objects of {node} changed across the restart"
        );
        eprintln!(
            "[{}] {node}'s ipamd restarted: 0 netlink requests, no event on its {} objects \
             (both families)",
            self.tag,
            before.len()
        );
    }

    pub fn detach_all(&mut self) {
        for p in &mut self.pods {
            let label = p.label();
            p.detach(&label);
        }
    }

    pub fn logs(&self) -> String {
        node::logs(&self.daemons)
    }
}

impl Drop for DualCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[{}] ipamd logs:\n{}", self.tag, self.logs());
        }
    }
}

/// ADD through `plugin` run inside `node`; asserts success and that the pod holds every
/// address of the result.
fn add_pod(
    tag: &str,
    node: &NodeNs,
    plugin: &Path,
    wrapper_dir: &Path,
    cni_path: &CniPath,
    conf: Value,
) -> DualPod {
    let attached = Attached::add(tag, node, plugin, wrapper_dir, cni_path, conf);
    let mut p = DualPod {
        attached,
        v4: None,
        v6: None,
        gw4: None,
        gw6: None,
    };
    let raw = &p.result;
    let mut found = Vec::new();
    for ip in raw["ips"].as_array().into_iter().flatten() {
        let addr: IpNetwork = ip["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("bad address in {raw}"));
        let gw: Option<IpAddr> = ip["gateway"].as_str().and_then(|g| g.parse().ok());
        found.push((addr, gw));
    }
    for (addr, gw) in found {
        p.assert_holds(addr.ip());
        if addr.is_ipv6() {
            p.v6 = Some(addr);
            p.gw6 = gw;
        } else {
            p.v4 = Some(addr);
            p.gw4 = gw;
        }
    }
    p
}

/// Bytes of the cross-node TCP transfer over IPv6.
pub const TRANSFER_BYTES: usize = 4 << 20;

/// The dual-stack / IPv6-only scenario: 3 nodes x 2 pods; exact programming of both
/// families on every node; every pod pings every other on every family; a 4 MiB TCP
/// transfer over IPv6 across nodes arrives intact (two pairs); the MTU probe per family;
/// CHECK; node3 removed -> its IPv4 and IPv6 entries gone from the others; node1's
/// ipamd restarted -> silent; DEL of every pod.
pub fn scenario(tag: &str, spec: DualSpec) {
    let t = Instant::now();
    let mut c = DualCluster::up(tag, spec);
    for n in ["node1", "node2", "node3"] {
        eprintln!("[{tag}] {n} owns:\n{}", show(&c.owned(n)));
    }
    c.check_pods();
    c.check_ping_matrix();
    c.check_transfer6("node1", "node3", TRANSFER_BYTES);
    c.check_transfer6("node2", "node1", TRANSFER_BYTES);
    c.check_mtu("node1", "node2");
    c.check_node_removal("node3");
    c.check_ping_matrix_among(&["node1", "node2"]);
    c.check_restart("node1");
    c.check_ping_matrix_among(&["node1", "node2"]);
    c.detach_all();
    eprintln!("[{tag}] scenario done in {:?}", t.elapsed());
}
