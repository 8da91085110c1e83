//! The BGP datapath end to end with FRR 8.4 as the fabric's top-of-rack router (eBGP)
//! and the nodes in a full iBGP mesh: three nodes on two underlay subnets, two
//! `cni-routed` pods each. See `conformance::multinode::bgp_frr`.
//!
//! Needs root, the built binaries (`cni-routed`, `cni-ipam`, `ipamd`) and FRR (`frr`).

use conformance::multinode::bgp_frr;

#[test]
fn bgp_frr_tor_and_full_mesh() {
    bgp_frr::bgp_frr_mesh_scenario("mn-bgpfrr");
}
