//! The test topology: a *fabric* network namespace holding one underlay bridge per
//! underlay subnet (`br0`, `br1`), and N *node* namespaces, each joined to a bridge by a
//! veth whose node end is `eth0`, with an address of that subnet and a default route via
//! the bridge's address (`.1`). With two subnets the fabric routes between them.
//!
//! Every link lives inside the fabric or a node namespace, never on the host, so
//! deleting the namespaces (the [`Netns`] guards) removes everything.

use std::net::Ipv4Addr;

use crate::netns::Netns;
use crate::subnet::Subnet;

/// One node: its namespace and underlay address.
#[derive(Debug)]
pub struct NodeNs {
    /// The node's name in the cluster (`node1`, `node2`, ...).
    pub name: String,
    pub netns: Netns,
    /// Its address on the underlay (`eth0`).
    pub underlay_ip: Ipv4Addr,
    /// Its underlay subnet.
    pub subnet: Subnet,
    /// Its default gateway (the fabric's address on its subnet).
    pub gateway: Ipv4Addr,
}

impl NodeNs {
    /// The netns name (for `ip -n`, `ip netns exec`).
    pub fn ns(&self) -> &str {
        self.netns.name()
    }
    /// Runs a command inside the node (`ip netns exec`); panics on failure.
    pub fn exec(&self, argv: &[&str]) -> String {
        self.netns.exec(argv)
    }
    /// `ip -n <node> args...`; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.ns()];
        a.extend_from_slice(args);
        crate::sh("ip", &a)
    }
}

/// The shape of a fabric.
#[derive(Clone, Debug)]
pub struct FabricSpec {
    /// For every node, the index of its underlay subnet (0 or 1).
    pub node_subnets: Vec<usize>,
    /// MTU of the underlay (bridges and every veth).
    pub mtu: u32,
}

impl FabricSpec {
    /// `n` nodes on one subnet, MTU 1500.
    pub fn flat(n: usize) -> FabricSpec {
        FabricSpec {
            node_subnets: vec![0; n],
            mtu: 1500,
        }
    }
    pub fn mtu(mut self, mtu: u32) -> FabricSpec {
        self.mtu = mtu;
        self
    }
}

/// The fabric and its nodes. Drop order: the nodes, then the fabric.
#[derive(Debug)]
pub struct Fabric {
    pub nodes: Vec<NodeNs>,
    /// One per subnet; `subnets[i]` is on bridge `br<i>`, the fabric holds `.1`.
    pub subnets: Vec<Subnet>,
    pub mtu: u32,
    pub fabric: Netns,
}

/// The address of node `i` (0-based) on its subnet.
fn node_host(i: usize) -> u8 {
    10 + i as u8
}

impl Fabric {
    /// Builds the fabric of `spec`; names and subnets unique for `tag`.
    pub fn new(tag: &str, spec: &FabricSpec) -> Fabric {
        assert!(spec.node_subnets.len() <= 200, "too many nodes");
        let n_subnets = spec.node_subnets.iter().copied().max().map_or(1, |m| m + 1);
        assert!(n_subnets <= 2, "at most two underlay subnets");
        let fabric = Netns::new(&format!("{tag}-fabric"));
        let subnets: Vec<Subnet> = (0..n_subnets)
            .map(|_| Subnet::for_test(&format!("{tag}-underlay")))
            .collect();
        let mtu = spec.mtu.to_string();
        for (i, s) in subnets.iter().enumerate() {
            let br = format!("br{i}");
            fabric.exec(&["ip", "link", "add", &br, "mtu", &mtu, "type", "bridge"]);
            fabric.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", s.gateway()),
                "dev",
                &br,
            ]);
            fabric.exec(&["ip", "link", "set", &br, "up"]);
        }
        if n_subnets > 1 {
            fabric.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        }
        let mut f = Fabric {
            nodes: Vec::new(),
            subnets,
            mtu: spec.mtu,
            fabric,
        };
        for (i, &si) in spec.node_subnets.iter().enumerate() {
            let node = f.add_node(tag, i, si);
            f.nodes.push(node);
        }
        f
    }

    fn add_node(&self, tag: &str, i: usize, si: usize) -> NodeNs {
        let name = format!("node{}", i + 1);
        let netns = Netns::new(&format!("{tag}-{name}"));
        let subnet = self.subnets[si];
        let mtu = self.mtu.to_string();
        let port = format!("p{}", i + 1);
        self.fabric.exec(&[
            "ip",
            "link",
            "add",
            &port,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "mtu",
            &mtu,
            "netns",
            netns.name(),
        ]);
        self.fabric
            .exec(&["ip", "link", "set", &port, "master", &format!("br{si}")]);
        self.fabric.exec(&["ip", "link", "set", &port, "up"]);
        let ip = subnet.host(node_host(i));
        netns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        netns.exec(&["ip", "link", "set", "eth0", "up"]);
        netns.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &subnet.gateway().to_string(),
            "dev",
            "eth0",
        ]);
        NodeNs {
            name,
            netns,
            underlay_ip: ip,
            subnet,
            gateway: subnet.gateway(),
        }
    }

    /// The node called `name` (`node1`, ...).
    pub fn node(&self, name: &str) -> &NodeNs {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }
}
