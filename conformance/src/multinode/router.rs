//! The fabric's router for the BGP datapath: the real BIRD 2 (Debian's `bird2`) running
//! in the fabric namespace as an iBGP route reflector for every node, exporting what it
//! learns into the fabric's kernel so that it forwards pod traffic between the underlay
//! subnets. Killed on drop; [`Router::kill`] and [`Router::start`] again for the tests
//! that take it away.
//!
//! Or [`Frr`]: FRR 8.4 (zebra + bgpd, Debian's `frr`) as the fabric's top-of-rack router
//! in its own AS ([`FRR_AS`]), an eBGP neighbour of every node while the nodes keep
//! their full iBGP mesh; zebra installs what bgpd learns in the fabric's kernel.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// The cluster's AS (ipamd's default).
pub const AS: u32 = 64512;

/// Hold time (seconds) on both sides of every session of the tests.
pub const HOLD_TIME: u64 = 3;

/// The graceful-restart time BIRD offers: how long the nodes keep its routes after it
/// goes away.
pub const GR_TIME: u64 = 5;

/// BIRD's configuration: a route reflector for `clients` (underlay addresses) that
/// offers graceful restart, and the kernel protocol exporting its BGP routes.
pub fn config(router_id: Ipv4Addr, clients: &[Ipv4Addr]) -> String {
    let mut c = format!(
        "router id {router_id};\n\
         protocol device {{ scan time 1; }}\n\
         protocol kernel {{ ipv4 {{ import none; export where source = RTS_BGP; }}; }}\n\
         template bgp node {{\n\
           local as {AS};\n\
           rr client;\n\
           direct;\n\
           hold time {HOLD_TIME}; connect retry time 1; error wait time 1, 3;\n\
           graceful restart on; graceful restart time {GR_TIME};\n\
           ipv4 {{ import all; export where source = RTS_BGP; gateway direct; }};\n\
         }}\n"
    );
    for (i, ip) in clients.iter().enumerate() {
        c.push_str(&format!(
            "protocol bgp node{} from node {{ neighbor {ip} as {AS}; }}\n",
            i + 1
        ));
    }
    c
}

/// BIRD's configuration for dual-stack and IPv6-only clusters: as [`config`], with an
/// IPv6 channel on every session and the kernel protocol of both families. A client
/// with an IPv4 address gets one IPv4 session carrying both families (IPv6 prefixes with
/// their IPv6 next hops, multiprotocol BGP); a client with an IPv6 address (an IPv6-only
/// node) an IPv6 session carrying both too, IPv4 prefixes with IPv6 next hops (RFC 8950,
/// `extended next hop on`).
pub fn config_dual_stack(router_id: Ipv4Addr, clients: &[IpAddr]) -> String {
    let session = "local as {AS};\n\
           rr client;\n\
           direct;\n\
           hold time {HOLD}; connect retry time 1; error wait time 1, 3;\n\
           graceful restart on; graceful restart time {GR};\n"
        .replace("{AS}", &AS.to_string())
        .replace("{HOLD}", &HOLD_TIME.to_string())
        .replace("{GR}", &GR_TIME.to_string());
    let v4 = "ipv4 { import all; export where source = RTS_BGP; gateway direct; };\n";
    let v6 = "ipv6 { import all; export where source = RTS_BGP; gateway direct; };\n";
    let v4x = "ipv4 { import all; export where source = RTS_BGP; gateway direct; extended next hop on; };\n";
    let mut c = format!(
        "router id {router_id};\n\
         protocol device {{ scan time 1; }}\n\
         protocol kernel {{ ipv4 {{ import none; export where source = RTS_BGP; }}; }}\n\
         protocol kernel {{ ipv6 {{ import none; export where source = RTS_BGP; }}; }}\n\
         template bgp node4 {{\n{session}{v4}{v6}}}\n\
         template bgp node6 {{\n{session}{v4x}{v6}}}\n"
    );
    for (i, ip) in clients.iter().enumerate() {
        let t = if ip.is_ipv4() { "node4" } else { "node6" };
        c.push_str(&format!(
            "protocol bgp node{} from {t} {{ neighbor {ip} as {AS}; }}\n",
            i + 1
        ));
    }
    c
}

/// BIRD in a namespace.
#[derive(Debug)]
pub struct Router {
    ns: String,
    conf: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Router {
    /// Writes `config` to `dir` and starts BIRD in netns `ns`; waits until it is up.
    pub fn new(ns: &str, dir: &Path, config: &str) -> Router {
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, config).expect("write bird.conf");
        let mut r = Router {
            ns: ns.to_string(),
            conf,
            socket: dir.join("bird.ctl"),
            log: dir.join("bird.log"),
            child: None,
        };
        r.start();
        r
    }

    /// Starts BIRD (again) with the same configuration; waits until it answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "BIRD already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("bird log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "bird", "-f", "-c"])
            .arg(&self.conf)
            .arg("-s")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("bird (Debian package bird2)");
        self.child = Some(child);
        wait_until("BIRD up", Duration::from_secs(10), || {
            let s = self.birdc(&["show", "status"]);
            if s.contains("Daemon is up") {
                Ok(())
            } else {
                Err(format!("{s}\n{}", self.log_text()))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGKILL: no NOTIFICATION, its sessions end when the kernel closes the sockets.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `birdc -s <socket> args...` (stdout; empty when BIRD does not answer).
    pub fn birdc(&self, args: &[&str]) -> String {
        Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The prefixes in BIRD's table (`show route`), as `a.b.c.d/len`.
    pub fn prefixes(&self) -> Vec<String> {
        self.birdc(&["show", "route"])
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.contains('/') && w.parse::<ipnetwork::IpNetwork>().is_ok())
            .map(String::from)
            .collect()
    }

    /// BIRD's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The AS of the FRR top-of-rack router (the nodes are in [`AS`]: eBGP).
pub const FRR_AS: u32 = 65100;

/// FRR's configuration: an eBGP neighbour for each of `clients` (the nodes' underlay
/// addresses), test timers, graceful restart with forwarding kept.
pub fn frr_config(router_id: Ipv4Addr, clients: &[Ipv4Addr]) -> String {
    let clients: Vec<IpAddr> = clients.iter().copied().map(IpAddr::V4).collect();
    frr_neighbours(router_id, &clients)
}

/// FRR's configuration for dual-stack and IPv6-only clusters: as [`frr_config`], with
/// IPv6 unicast activated on every session. A client with an IPv4 address gets one IPv4
/// session carrying both families; a client with an IPv6 address (an IPv6-only node) an
/// IPv6 session carrying both too, IPv4 prefixes with IPv6 next hops (RFC 8950:
/// `capability extended-nexthop`).
pub fn frr_config_dual_stack(router_id: Ipv4Addr, clients: &[IpAddr]) -> String {
    let mut c = frr_neighbours(router_id, clients);
    for ip in clients.iter().filter(|ip| ip.is_ipv6()) {
        c.push_str(&format!(" neighbor {ip} capability extended-nexthop\n"));
    }
    c.push_str(" address-family ipv4 unicast\n");
    for ip in clients.iter().filter(|ip| ip.is_ipv6()) {
        c.push_str(&format!("  neighbor {ip} activate\n"));
    }
    c.push_str(" exit-address-family\n address-family ipv6 unicast\n");
    for ip in clients {
        c.push_str(&format!("  neighbor {ip} activate\n"));
    }
    c.push_str(" exit-address-family\n");
    c
}

/// The `router bgp` section both configurations start with: the router, graceful
/// restart, and an eBGP neighbour with test timers for each of `clients`.
fn frr_neighbours(router_id: Ipv4Addr, clients: &[IpAddr]) -> String {
    let mut c = format!(
        "frr defaults datacenter\n\
         hostname tor\n\
         router bgp {FRR_AS}\n\
          bgp router-id {router_id}\n\
          no bgp ebgp-requires-policy\n\
          no bgp network import-check\n\
          bgp graceful-restart\n\
          bgp graceful-restart preserve-fw-state\n\
          bgp graceful-restart restart-time {GR_TIME}\n"
    );
    for ip in clients {
        c.push_str(&format!(
            " neighbor {ip} remote-as {AS}\n \
             neighbor {ip} timers 1 {HOLD_TIME}\n \
             neighbor {ip} timers connect 1\n"
        ));
    }
    c
}

/// FRR (zebra + bgpd) in a namespace, as user `frr` (its dir is `frr`'s, see
/// [`testkit::frr_dir`]), not daemonized: its config, pid files, zebra socket and vty sockets in the test's dir.
#[derive(Debug)]
pub struct Frr {
    ns: String,
    dir: PathBuf,
    zebra: Option<Child>,
    bgpd: Option<Child>,
}

impl Frr {
    /// Writes `config` to `dir` and starts zebra and bgpd in netns `ns`.
    pub fn new(ns: &str, dir: &Path, config: &str) -> Frr {
        // zebra and bgpd run as `frr`: the dir is theirs, its parents passable.
        testkit::frr_dir(dir);
        std::fs::write(dir.join("bgpd.conf"), config).expect("write bgpd.conf");
        std::fs::write(dir.join("zebra.conf"), "").expect("write zebra.conf");
        let mut f = Frr {
            ns: ns.to_string(),
            dir: dir.to_path_buf(),
            zebra: None,
            bgpd: None,
        };
        f.zebra = Some(f.spawn("zebra"));
        wait_until("zebra up", Duration::from_secs(10), || {
            if f.dir.join("zserv.api").exists() {
                Ok(())
            } else {
                Err(f.log_text("zebra"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
        f.bgpd = Some(f.spawn("bgpd"));
        wait_until("bgpd up", Duration::from_secs(10), || {
            let s = f.vtysh("show bgp summary json");
            if s.contains("routerId") {
                Ok(())
            } else {
                Err(f.log_text("bgpd"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
        f
    }

    fn spawn(&self, daemon: &str) -> Child {
        let d = &self.dir;
        Command::new("ip")
            .args(["netns", "exec", &self.ns, &format!("/usr/lib/frr/{daemon}")])
            .arg("-f")
            .arg(d.join(format!("{daemon}.conf")))
            .arg("-i")
            .arg(d.join(format!("{daemon}.pid")))
            .arg("-z")
            .arg(d.join("zserv.api"))
            .arg("--vty_socket")
            .arg(d)
            .args(["--log", "stdout", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(File::create(d.join(format!("{daemon}.log"))).expect("frr log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("FRR (Debian package frr)")
    }

    /// `vtysh --vty_socket <dir> -c cmd` (stdout; empty when FRR does not answer).
    pub fn vtysh(&self, cmd: &str) -> String {
        Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&self.dir)
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The IPv4 prefixes bgpd has, each with the next hops of its paths.
    pub fn routes(&self) -> BTreeMap<String, Vec<String>> {
        self.routes_of("ipv4")
    }

    /// The prefixes of both families bgpd has, each with the next hops of its paths.
    pub fn routes_dual_stack(&self) -> BTreeMap<String, Vec<String>> {
        let mut r = self.routes_of("ipv4");
        r.extend(self.routes_of("ipv6"));
        r
    }

    /// The prefixes of address family `afi` (`ipv4`, `ipv6`) with their next hops.
    fn routes_of(&self, afi: &str) -> BTreeMap<String, Vec<String>> {
        let v: serde_json::Value =
            serde_json::from_str(&self.vtysh(&format!("show bgp {afi} unicast json")))
                .unwrap_or_default();
        let mut out = BTreeMap::new();
        if let Some(routes) = v["routes"].as_object() {
            for (prefix, paths) in routes {
                let hops = paths
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|p| p["nexthops"].as_array().cloned().unwrap_or_default())
                    .filter_map(|h| h["ip"].as_str().map(String::from))
                    .collect();
                out.insert(prefix.clone(), hops);
            }
        }
        out
    }

    /// `connectionsEstablished` of the session with `peer` (0 when unknown).
    pub fn sessions_established(&self, peer: Ipv4Addr) -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&self.vtysh("show bgp summary json")).unwrap_or_default();
        v["ipv4Unicast"]["peers"][peer.to_string()]["connectionsEstablished"]
            .as_u64()
            .unwrap_or(0)
    }

    pub fn log_text(&self, daemon: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{daemon}.log"))).unwrap_or_default()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for c in [self.bgpd.take(), self.zebra.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frr_config_makes_every_node_an_ebgp_neighbour() {
        let c = frr_config(
            "10.200.0.1".parse().unwrap(),
            &["10.200.0.10".parse().unwrap()],
        );
        assert!(c.contains("router bgp 65100"));
        assert!(c.contains(" neighbor 10.200.0.10 remote-as 64512\n"));
        assert!(c.contains(" neighbor 10.200.0.10 timers 1 3\n"));
    }

    #[test]
    fn config_names_every_client() {
        let c = config(
            "10.200.0.1".parse().unwrap(),
            &[
                "10.200.0.10".parse().unwrap(),
                "10.201.0.11".parse().unwrap(),
            ],
        );
        assert!(c.contains("router id 10.200.0.1;"));
        assert!(c.contains("protocol bgp node1 from node { neighbor 10.200.0.10 as 64512; }"));
        assert!(c.contains("protocol bgp node2 from node { neighbor 10.201.0.11 as 64512; }"));
        assert!(c.contains("graceful restart time 5;"));
    }

    #[test]
    fn dual_stack_config_is_valid_bird() {
        let c = config_dual_stack(
            "10.200.0.1".parse().unwrap(),
            &["10.200.0.10".parse().unwrap(), "fdaa::11".parse().unwrap()],
        );
        assert!(c.contains("protocol bgp node1 from node4 { neighbor 10.200.0.10 as 64512; }"));
        assert!(c.contains("protocol bgp node2 from node6 { neighbor fdaa::11 as 64512; }"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bird.conf");
        std::fs::write(&f, &c).unwrap();
        // `bird -p`: parse the configuration and exit.
        let out = Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{c}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
