//! Links: lookup, bridge, veth, up/MTU/MAC/master/hairpin/promisc, delete.

use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::link::{
    BridgeVlanInfoFlags, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use rtnetlink::{
    LinkBridge, LinkBridgePort, LinkBridgeVlan, LinkMessageBuilder, LinkUnspec, LinkVeth,
};

use netlink_packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;

use super::{errno, nl_err, request_echo, MacAddr, Netlink};
use crate::kernel_error::KernelError;

/// The flags of a link creation (as `rtnetlink`'s `LinkAddRequest` sets them).
const NEW_LINK_FLAGS: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
use crate::netns::NetNs;

/// What the kernel says about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    pub promisc: bool,
    /// Index of the master (bridge) if enslaved.
    pub master: Option<u32>,
    /// `IFLA_INFO_KIND`: "bridge", "veth", "vxlan", ...
    pub kind: Option<String>,
    /// `IFLA_LINK`: for a veth, the index of its peer (in the peer's namespace).
    pub peer: Option<u32>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            promisc: msg.header.flags.contains(LinkFlags::Promisc),
            master: None,
            kind: None,
            peer: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = MacAddr::try_from(a.as_slice()).ok(),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::Controller(m) if *m != 0 => link.master = Some(*m),
                LinkAttribute::Link(p) if *p != 0 => link.peer = Some(*p),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            link.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A bridge to create or adopt.
#[derive(Clone, Debug, Default)]
pub struct BridgeSpec {
    pub name: String,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub promisc: bool,
    pub vlan_filtering: bool,
}

impl BridgeSpec {
    /// The MAC a bridge made or adopted through this spec carries: the one asked for, else
    /// the one derived from its name. Set explicitly (at creation or by
    /// [`Netlink::ensure_bridge`]), it stays when ports come and go; a bridge that shows
    /// another MAC was made elsewhere and may take its lowest port's MAC.
    pub fn pinned_mac(&self) -> MacAddr {
        self.mac.unwrap_or_else(|| bridge_mac_for(&self.name))
    }
}

/// The MAC of a bridge created without one: locally administered, unicast, stable for
/// its name.
fn bridge_mac_for(name: &str) -> MacAddr {
    let h = crate::hash::stable_hash(&["bridge", name]).to_be_bytes();
    MacAddr([(h[0] & 0xfe) | 0x02, h[1], h[2], h[3], h[4], h[5]])
}

impl Netlink {
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, KernelError> {
        let _timing = crate::timing::phase("link.get");
        let req = self.handle.link().get().match_name(name.to_string());
        self.get_one(req, || format!("looking up link {name}"))
            .await
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, KernelError> {
        let _timing = crate::timing::phase("link.get");
        let req = self.handle.link().get().match_index(index);
        self.get_one(req, || format!("looking up link #{index}"))
            .await
    }

    async fn get_one(
        &self,
        req: rtnetlink::LinkGetRequest,
        what: impl Fn() -> String,
    ) -> Result<Option<Link>, KernelError> {
        match req.execute().try_next().await {
            Ok(Some(msg)) => Ok(Some(Link::from_message(&msg))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl_err(what(), e)),
        }
    }

    /// Every link in the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, KernelError> {
        let _timing = crate::timing::phase("link.dump");
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(|m| Link::from_message(&m))
            .try_collect()
            .await
            .map_err(|e| nl_err("listing links", e))
    }

    /// Creates the bridge if missing (a concurrent creator winning the race is fine),
    /// refuses a same-named link of another kind, applies MTU/promisc/vlan filtering,
    /// and brings it up.
    pub async fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<Link, KernelError> {
        Ok(self.ensure_bridge_created(spec).await?.0)
    }

    /// [`Netlink::ensure_bridge`], and whether this call created the bridge (an ADD that
    /// did undoes it on failure): one lookup where a lookup before the call took two.
    pub async fn ensure_bridge_created(
        &self,
        spec: &BridgeSpec,
    ) -> Result<(Link, bool), KernelError> {
        let _timing = crate::timing::phase("bridge.ensure");
        let name = spec.name.as_str();
        let mut created = false;
        let existing = match self.link_by_name(name).await? {
            Some(l) => l,
            None => {
                // vlan_filtering is applied below, on the created or adopted bridge alike
                // (and only when asked: kernels without it refuse the attribute).
                let mut b = LinkBridge::new(name);
                if let Some(mtu) = spec.mtu {
                    b = b.mtu(mtu);
                }
                // Always created with a MAC: a bridge without one takes the lowest MAC
                // of its ports, so it changes when a pod with a lower veth MAC comes or
                // the lowest one goes, and every pod's ARP entry for the gateway is
                // wrong until it is revalidated (seconds to minutes without traffic:
                // kubernetes#30783, flannel#1381). A MAC given at creation is fixed;
                // derived from the name, a recreated bridge gets the same one.
                b = b.address(spec.pinned_mac().0.to_vec());
                match self.handle.link().add(b.build()).execute().await {
                    Ok(()) => created = true,
                    // Another plugin instance created it between our lookup and add.
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(nl_err(format!("creating bridge {name}"), e)),
                }
                self.link_by_name(name).await?.ok_or_else(|| {
                    KernelError::other(
                        format!("creating bridge {name}"),
                        "it vanished right after creation",
                    )
                })?
            }
        };
        if existing.kind.as_deref() != Some("bridge") {
            return Err(KernelError::invalid(
                format!("ensuring bridge {name}"),
                format!(
                    "link {name} exists and is a {}, not a bridge",
                    existing.kind.as_deref().unwrap_or("device of unknown kind")
                ),
            ));
        }
        let index = existing.index;
        // Read back only what was changed here (an adopted bridge as it is is returned as
        // read).
        let mut changed = false;
        if let Some(mtu) = spec.mtu {
            if existing.mtu != mtu {
                self.set_mtu(index, mtu).await?;
                changed = true;
            }
        }
        if let Some(mac) = spec.mac {
            if existing.mac != Some(mac) {
                self.set_mac(index, mac).await?;
                changed = true;
            }
        }
        if spec.promisc && !existing.promisc {
            self.set_promisc(index, true).await?;
            changed = true;
        }
        if spec.vlan_filtering {
            // Idempotent, and cheaper than reading IFLA_BR_VLAN_FILTERING back.
            let msg = LinkMessageBuilder::<LinkBridge>::new_with_info_kind(InfoKind::Bridge)
                .index(index)
                .vlan_filtering(true)
                .build();
            self.handle
                .link()
                .set_port(msg)
                .execute()
                .await
                .map_err(|e| nl_err(format!("enabling vlan_filtering on bridge {name}"), e))?;
        }
        if !existing.up {
            self.set_up(index).await?;
            changed = true;
        }
        if !changed {
            return Ok((existing, created));
        }
        let link = self.link_by_index(index).await?.ok_or_else(|| {
            KernelError::other(
                format!("configuring bridge {name}"),
                "it vanished while being configured",
            )
        })?;
        Ok((link, created))
    }

    /// Creates a veth pair `host_name` <-> `peer_name` whose peer is born inside
    /// `peer_ns` (never visible on the host under a name that could collide).
    /// Returns the host end, whose [`Link::peer`] is the peer's index inside `peer_ns`
    /// (`IFLA_LINK`), so that with `peer_mac` given the peer needs no lookup. Neither end
    /// is brought up.
    pub async fn create_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_ns: &NetNs,
        mtu: Option<u32>,
        peer_mac: Option<MacAddr>,
    ) -> Result<Link, KernelError> {
        let _timing = crate::timing::phase("veth.create");
        // The peer's own link message carries IFLA_NET_NS_FD: the kernel creates it
        // directly in `peer_ns`, so its name never has to be unique on the host.
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name.to_string())
            .setns_by_fd(peer_ns.file().as_raw_fd());
        let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host_name.to_string());
        if let Some(mtu) = mtu {
            peer = peer.mtu(mtu);
            host = host.mtu(mtu);
        }
        if let Some(mac) = peer_mac {
            peer = peer.address(mac.0.to_vec());
        }
        let msg = host
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        // One request: the kernel echoes the host end it created (index, MAC), so no
        // lookup follows (older kernels do not echo: looked up then).
        let req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg));
        let echoed = request_echo(&self.handle, req, NEW_LINK_FLAGS)
            .await
            .map_err(|e| {
                nl_err(
                    format!(
                        "creating veth {host_name} (peer {peer_name} in {})",
                        peer_ns.path().display()
                    ),
                    e,
                )
            })?;
        match echoed {
            Some(RouteNetlinkMessage::NewLink(m)) if m.header.index != 0 => {
                Ok(Link::from_message(&m))
            }
            _ => self.link_by_name(host_name).await?.ok_or_else(|| {
                KernelError::other(
                    format!("creating veth {host_name}"),
                    "it vanished right after creation",
                )
            }),
        }
    }

    /// Deletes a link; a link that is already gone is not an error.
    pub async fn delete_link(&self, index: u32) -> Result<(), KernelError> {
        let _timing = crate::timing::phase("link.delete");
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(nl_err(
                format!("deleting link {}", self.label(index).await),
                e,
            )),
        }
    }

    /// `name (#index)` for error messages, or `#index` when the link cannot be read.
    pub(crate) async fn label(&self, index: u32) -> String {
        match self.link_by_index(index).await {
            Ok(Some(l)) => format!("{} (#{index})", l.name),
            _ => format!("#{index}"),
        }
    }

    async fn set_link(
        &self,
        msg: LinkMessage,
        index: u32,
        what: impl FnOnce(&str) -> String,
    ) -> Result<(), KernelError> {
        match self.handle.link().set(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(nl_err(what(&self.label(index).await), e)),
        }
    }

    pub async fn set_up(&self, index: u32) -> Result<(), KernelError> {
        let _timing = crate::timing::phase("link.up");
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.set_link(msg, index, |l| format!("setting link {l} up"))
            .await
    }

    /// Sets the link administratively down.
    pub async fn set_down(&self, index: u32) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(index).down().build();
        self.set_link(msg, index, |l| format!("setting link {l} down"))
            .await
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.set_link(msg, index, |l| format!("setting MTU {mtu} on link {l}"))
            .await
    }

    pub async fn set_mac(&self, index: u32, mac: MacAddr) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(index)
            .address(mac.0.to_vec())
            .build();
        self.set_link(msg, index, |l| format!("setting MAC {mac} on link {l}"))
            .await
    }

    pub async fn set_master(&self, index: u32, master: u32) -> Result<(), KernelError> {
        let _timing = crate::timing::phase("port.master");
        let msg = LinkUnspec::new_with_index(index).controller(master).build();
        self.set_link(msg, index, |l| format!("enslaving link {l} to #{master}"))
            .await
    }

    pub async fn set_promisc(&self, index: u32, on: bool) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(index).promiscuous(on).build();
        self.set_link(msg, index, |l| format!("setting promisc {on} on link {l}"))
            .await
    }

    /// Bridge port hairpin mode (`IFLA_BRPORT_MODE`) on an enslaved port.
    pub async fn set_hairpin(&self, port_index: u32, on: bool) -> Result<(), KernelError> {
        // IFLA_INFO_SLAVE_DATA carries IFLA_BRPORT_MODE, as `ip link set type bridge_slave`.
        let msg = LinkBridgePort::new(port_index).hairpin(on).build();
        match self.handle.link().set_port(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let l = self.label(port_index).await;
                Err(nl_err(
                    format!("setting hairpin {on} on bridge port {l}"),
                    e,
                ))
            }
        }
    }

    /// Bridge port VLAN: `vid` as PVID and untagged on the port (bridge `vlan` option).
    pub async fn set_port_vlan(&self, port_index: u32, vid: u16) -> Result<(), KernelError> {
        if vid == 0 || vid >= 4095 {
            return Err(KernelError::invalid(
                format!("invalid VLAN id {vid}"),
                "want 1..=4094",
            ));
        }
        // AF_BRIDGE RTM_SETLINK with IFLA_AF_SPEC/IFLA_BRIDGE_VLAN_INFO, as `bridge vlan add`.
        let msg = LinkBridgeVlan::new(port_index)
            .vlan(
                vid,
                BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged,
            )
            .build();
        self.set_link(msg, port_index, |l| {
            format!("setting VLAN {vid} (pvid untagged) on bridge port {l}")
        })
        .await
    }
}
