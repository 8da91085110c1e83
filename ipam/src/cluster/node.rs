//! Node records: what every node publishes about itself.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// What a node says about itself when it registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub name: String,
    /// The address other nodes reach this one at (routes, VXLAN FDB, BGP next hop).
    pub underlay_ip: Option<IpAddr>,
    /// Datapath data, e.g. `"vtepMac"`.
    #[serde(default)]
    pub backend: BTreeMap<String, String>,
}

/// A node as the cluster store holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    #[serde(flatten)]
    pub info: NodeInfo,
    /// Blocks this node owns, sorted.
    #[serde(default)]
    pub blocks: Vec<IpNetwork>,
    /// Unix time (seconds) after which the record is dead unless renewed.
    pub lease_expiry: u64,
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A node appeared or its record changed (address, backend data, blocks).
    Upsert(NodeRecord),
    /// A node left (removed, or its lease expired).
    Removed(String),
}
