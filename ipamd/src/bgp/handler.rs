//! The [`PeerHandler`] of `--datapath bgp`: what the cluster store says, turned into
//! what the speaker does. This node's blocks are announced (and withdrawn when
//! released); the other nodes that run BGP are peered with (the full mesh), unless
//! `--bgp-no-mesh`. Learned routes are the [`super::import`] task's business.
//!
//! A block goes out with the node's underlay address of its family as next hop; an IPv4
//! block of a node with no IPv4 underlay address (an IPv6-only underlay) goes out with
//! its IPv6 address (RFC 8950): the speaker sends it to the peers that negotiated the
//! extended next hop capability only, and WARNs about the others.
//!
//! No session starts before this node's own record has been seen (its blocks
//! announced): a session's initial table ends with End-of-RIB, and after a restart that
//! End-of-RIB makes a helper drop whatever of ours it kept and was not re-announced.

use bgp::{PeerConfig, Speaker};
use ipam::cluster::NodeRecord;
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::OwnBlocks;
use crate::events::{PeerEvent, PeerHandler};

/// The backend key under which a node publishes its AS: the nodes that publish it are
/// the mesh.
pub(crate) const BGP_AS_KEY: &str = "bgpAs";

pub(crate) struct BgpHandler {
    speaker: Speaker,
    /// This node's underlay address: the next hop of the blocks of its family.
    next_hop: IpAddr,
    /// The node's address of the other family on the underlay interface, if any: the
    /// next hop of the blocks of that family (announced over the same sessions).
    other_next_hop: Option<IpAddr>,
    local_as: u32,
    mesh: bool,
    /// `--bgp-peer`s (never touched by the mesh), added with the first own record.
    explicit: Vec<PeerConfig>,
    /// The first own record was seen (and announced): sessions may start.
    started: bool,
    /// Mesh peers added, by address.
    meshed: BTreeSet<IpAddr>,
    /// Every remote node that speaks BGP: name -> (underlay address, AS).
    nodes: BTreeMap<String, (IpAddr, u32)>,
    /// What we announce.
    exported: BTreeSet<IpNetwork>,
    own: OwnBlocks,
}

impl BgpHandler {
    pub(crate) fn new(
        speaker: Speaker,
        next_hop: IpAddr,
        other_next_hop: Option<IpAddr>,
        local_as: u32,
        mesh: bool,
        explicit: Vec<PeerConfig>,
        own: OwnBlocks,
    ) -> BgpHandler {
        BgpHandler {
            speaker,
            next_hop,
            other_next_hop: other_next_hop.filter(|o| o.is_ipv4() != next_hop.is_ipv4()),
            local_as,
            mesh,
            explicit,
            started: false,
            meshed: BTreeSet::new(),
            nodes: BTreeMap::new(),
            exported: BTreeSet::new(),
            own,
        }
    }

    /// A node as a mesh peer: its underlay address and the AS it publishes.
    fn mesh_peer(rec: &NodeRecord) -> Option<(IpAddr, u32)> {
        let asn = rec.info.backend.get(BGP_AS_KEY)?.parse().ok()?;
        Some((rec.info.underlay_ip?, asn))
    }

    fn node_seen(&mut self, rec: &NodeRecord) {
        match Self::mesh_peer(rec) {
            Some(p) => self.nodes.insert(rec.info.name.clone(), p),
            None => self.nodes.remove(&rec.info.name),
        };
    }

    /// The next hop for a block: the node's underlay address of its family; for an IPv4
    /// block on a node without an IPv4 one, its IPv6 address (RFC 8950).
    fn next_hop_for(&self, block: &IpNetwork) -> Option<IpAddr> {
        next_hop_for(self.next_hop, self.other_next_hop, block)
    }

    /// Announces this node's blocks (of a family it has an underlay address of) and
    /// withdraws the others.
    fn export(&mut self, rec: &NodeRecord) {
        if let Ok(mut own) = self.own.write() {
            *own = rec.blocks.iter().copied().collect();
        }
        let want: BTreeSet<IpNetwork> = rec
            .blocks
            .iter()
            .filter(|b| self.next_hop_for(b).is_some())
            .copied()
            .collect();
        for gone in self.exported.difference(&want) {
            self.speaker.withdraw(*gone);
            tracing::info!(block = %gone, "BGP: block withdrawn");
        }
        for new in want.difference(&self.exported) {
            let Some(next_hop) = self.next_hop_for(new) else {
                continue;
            };
            match self.speaker.announce(*new, next_hop) {
                Ok(()) if new.is_ipv4() && next_hop.is_ipv6() => tracing::info!(
                    block = %new, %next_hop,
                    "BGP: block announced with an IPv6 next hop (RFC 8950: to the peers that \
                     negotiated the extended next hop capability)"
                ),
                Ok(()) => {
                    tracing::info!(block = %new, %next_hop, "BGP: block announced")
                }
                Err(e) => tracing::error!(block = %new, error = %e, "BGP: cannot announce"),
            }
        }
        self.exported = want;
    }

    /// After the first own record: the explicit peers, and the mesh.
    async fn start_sessions(&mut self) {
        self.started = true;
        for p in &self.explicit {
            match self.speaker.add_peer(p.clone()) {
                Ok(()) => tracing::info!(peer = %p.address, asn = p.remote_as, "BGP: peer added"),
                Err(e) => tracing::error!(peer = %p.address, error = %e, "BGP: cannot add peer"),
            }
        }
        self.sync_mesh().await;
    }

    /// Brings the mesh sessions to the BGP nodes now known.
    async fn sync_mesh(&mut self) {
        if !self.mesh || !self.started {
            return;
        }
        let explicit: BTreeSet<IpAddr> = self.explicit.iter().map(|p| p.address).collect();
        let want: BTreeMap<IpAddr, u32> = self
            .nodes
            .values()
            .filter(|(ip, _)| *ip != self.next_hop && !explicit.contains(ip))
            .copied()
            .collect();
        let gone: Vec<IpAddr> = self
            .meshed
            .iter()
            .filter(|ip| !want.contains_key(ip))
            .copied()
            .collect();
        for ip in gone {
            self.meshed.remove(&ip);
            if let Err(e) = self.speaker.remove_peer(ip).await {
                tracing::warn!(peer = %ip, error = %e, "BGP: mesh peer removal");
            }
            tracing::info!(peer = %ip, "BGP: mesh peer removed");
        }
        for (ip, asn) in want {
            if self.meshed.contains(&ip) {
                continue;
            }
            match self.speaker.add_peer(PeerConfig::new(ip, asn)) {
                Ok(()) => {
                    tracing::info!(peer = %ip, asn, "BGP: mesh peer added");
                    self.meshed.insert(ip);
                }
                Err(e) => tracing::error!(peer = %ip, error = %e, "BGP: cannot add mesh peer"),
            }
        }
    }
}

fn next_hop_for(
    next_hop: IpAddr,
    other_next_hop: Option<IpAddr>,
    block: &IpNetwork,
) -> Option<IpAddr> {
    let ours = [Some(next_hop), other_next_hop];
    let of = |v4: bool| ours.into_iter().flatten().find(|nh| nh.is_ipv4() == v4);
    of(block.is_ipv4()).or_else(|| block.is_ipv4().then(|| of(false)).flatten())
}

impl PeerHandler for BgpHandler {
    async fn handle(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Local(rec) => {
                self.export(&rec);
                if !self.started {
                    self.start_sessions().await;
                }
            }
            PeerEvent::Added(rec) | PeerEvent::Changed { new: rec, .. } => {
                self.node_seen(&rec);
                self.sync_mesh().await;
            }
            PeerEvent::Removed(rec) => {
                self.nodes.remove(&rec.info.name);
                self.sync_mesh().await;
            }
            PeerEvent::Resync(all) => {
                self.nodes = all
                    .iter()
                    .filter_map(|r| Self::mesh_peer(r).map(|p| (r.info.name.clone(), p)))
                    .collect();
                self.sync_mesh().await;
            }
        }
    }

    fn node_backend(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(BGP_AS_KEY.to_string(), self.local_as.to_string())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_by_family_and_ipv4_via_ipv6() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let net = |s: &str| s.parse::<IpNetwork>().unwrap();
        let (v4, v6) = (net("10.244.0.0/26"), net("fd10::/64"));
        // Dual-stack underlay: each family its own.
        let dual = (ip("192.0.2.1"), Some(ip("2001:db8::1")));
        assert_eq!(next_hop_for(dual.0, dual.1, &v4), Some(ip("192.0.2.1")));
        assert_eq!(next_hop_for(dual.0, dual.1, &v6), Some(ip("2001:db8::1")));
        // IPv6-only underlay: IPv4 blocks via the IPv6 address (RFC 8950).
        let only6 = ip("2001:db8::1");
        assert_eq!(next_hop_for(only6, None, &v4), Some(only6));
        assert_eq!(next_hop_for(only6, None, &v6), Some(only6));
        // IPv4-only underlay: no IPv6 next hop for IPv6 blocks (refused at start).
        assert_eq!(next_hop_for(ip("192.0.2.1"), None, &v6), None);
    }
}
