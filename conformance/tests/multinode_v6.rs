//! IPv6 across nodes (issue 16): three "nodes" (network namespaces on an underlay
//! bridge, each running `ipamd --datapath ...`) with two pods each, dual-stack or
//! IPv6-only, on an IPv4, dual-stack or IPv6-only underlay. See
//! `conformance::multinode::dual` for the scenario: exact routes/neighbours/FDB of both
//! families, ping matrix on both families, TCP over IPv6, MTU probe per family, node
//! removal, silent restart. And the refusal at start of what a datapath cannot carry.
//!
//! Needs root and the built binaries (`cni-vxlan`, `cni-routed`, `cni-ipam`, `ipamd`).

use conformance::multinode::dual::{self, DualSpec, PoolKind, UnderlayKind};
use conformance::multinode::Datapath;

fn spec(datapath: Datapath, underlay: UnderlayKind, pool: PoolKind, mtu: u32) -> DualSpec {
    DualSpec {
        datapath,
        underlay,
        pool,
        nodes: 3,
        pods_per_node: 2,
        mtu,
    }
}

/// VXLAN over an IPv4 underlay, dual-stack pool: pod MTU 1500 - 50.
#[test]
fn vxlan_v4_underlay_dual_stack() {
    dual::scenario(
        "mn6-vx4",
        spec(Datapath::Vxlan, UnderlayKind::V4, PoolKind::Dual, 1500),
    );
}

/// VXLAN over an IPv6-only underlay (no IPv4 on the nodes), dual-stack pool: the device
/// has an IPv6 local address, FDB entries an IPv6 dst; pod MTU 1400 - 70 (detected).
#[test]
fn vxlan_v6_underlay_dual_stack() {
    dual::scenario(
        "mn6-vx6d",
        spec(Datapath::Vxlan, UnderlayKind::V6, PoolKind::Dual, 1400),
    );
}

/// An IPv6-only cluster: IPv6 underlay, IPv6 pool, VXLAN.
#[test]
fn vxlan_v6_underlay_v6_only() {
    dual::scenario(
        "mn6-vx6",
        spec(Datapath::Vxlan, UnderlayKind::V6, PoolKind::V6, 1500),
    );
}

/// host-gw on a dual-stack underlay with a dual-stack pool: IPv6 blocks via the peers'
/// IPv6 underlay addresses.
#[test]
fn host_gw_dual_stack() {
    dual::scenario(
        "mn6-hg",
        spec(Datapath::HostGw, UnderlayKind::Dual, PoolKind::Dual, 1500),
    );
}
