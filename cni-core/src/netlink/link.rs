//! Links: lookup, bridge, veth, up/MTU/MAC/master/hairpin/promisc, delete.

use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_core::{DefaultNla, NLA_F_NESTED};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecUnspec, BridgeVlanInfoFlags, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
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

/// What the veth create request makes of the host end besides the pair itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostEnd {
    /// `IFLA_ADDRESS`; `None`: the kernel picks a random one.
    pub mac: Option<MacAddr>,
    /// `IFLA_MASTER`: the index of the bridge the host end joins.
    pub master: Option<u32>,
    /// `IFF_UP` (applied before the master is set, as `ip link add ... up master`).
    pub up: bool,
}

impl HostEnd {
    /// What the create asked for besides the pair, for error messages: the operator
    /// learns which part of the one request the kernel may have refused.
    fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(mac) = self.mac {
            s.push_str(&format!(", host end MAC {mac}"));
        }
        if let Some(master) = self.master {
            s.push_str(&format!(", host end on master #{master}"));
        }
        if self.up {
            s.push_str(", host end up");
        }
        s
    }
}

/// An IPv4 per-device setting (`net.ipv4.conf.<dev>.<leaf>`) that can be set over
/// netlink: `RTM_SETLINK` with `IFLA_AF_SPEC` / `AF_INET` / `IFLA_INET_CONF`, whose nested
/// attributes are typed by the `IPV4_DEVCONF_*` index (linux/ip.h). Unlike a write to
/// `/proc/sys` it needs no entry into the device's namespace: a netlink socket of that
/// namespace does. (IPv6 has no such setter: `accept_dad` stays a sysctl.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv4Conf {
    /// `proxy_arp` (`IPV4_DEVCONF_PROXY_ARP`).
    ProxyArp,
    /// `arp_notify` (`IPV4_DEVCONF_ARP_NOTIFY`): a gratuitous ARP when the device comes up.
    ArpNotify,
}

impl Ipv4Conf {
    /// The `IPV4_DEVCONF_*` index, the attribute type inside `IFLA_INET_CONF`.
    fn devconf_index(self) -> u16 {
        match self {
            Ipv4Conf::ProxyArp => 3,
            Ipv4Conf::ArpNotify => 22,
        }
    }

    /// The sysctl leaf, for messages.
    pub fn leaf(self) -> &'static str {
        match self {
            Ipv4Conf::ProxyArp => "proxy_arp",
            Ipv4Conf::ArpNotify => "arp_notify",
        }
    }
}

/// `IFLA_INET_CONF`, inside `IFLA_AF_SPEC` / `AF_INET`.
const IFLA_INET_CONF: u16 = 1;

/// The `IFLA_AF_SPEC` attribute that sets `values` on a device.
fn inet_conf_attribute(values: &[(Ipv4Conf, u32)]) -> LinkAttribute {
    // IFLA_INET_CONF holds one attribute per setting: a 4-byte header (length 8, type =
    // IPV4_DEVCONF_* index) and the u32 value, in host byte order.
    let mut nested = Vec::with_capacity(values.len() * 8);
    for (conf, value) in values {
        nested.extend_from_slice(&8u16.to_ne_bytes());
        nested.extend_from_slice(&conf.devconf_index().to_ne_bytes());
        nested.extend_from_slice(&value.to_ne_bytes());
    }
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![AfSpecInet::Other(
        DefaultNla::new(IFLA_INET_CONF | NLA_F_NESTED, nested),
    )])])
}

/// A veth pair to create ([`Netlink::create_veth_pair`]).
#[derive(Clone, Copy, Debug)]
pub struct VethPair<'a> {
    pub host_name: &'a str,
    /// The peer's name inside `peer_ns` (the pod's `CNI_IFNAME`).
    pub peer_name: &'a str,
    pub peer_ns: &'a NetNs,
    /// MTU of both ends; `None`: the kernel's default.
    pub mtu: Option<u32>,
    /// The peer's MAC; `None`: the kernel picks a random one.
    pub peer_mac: Option<MacAddr>,
    pub host: HostEnd,
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
        // Not asked with IFLA_EXT_MASK = RTEXT_FILTER_SKIP_STATS: measured (2026-12-01,
        // 200 lookups of a bridge each, alternated) 71/92/116 us with it against 73/92/115
        // without: the statistics are not what a lookup costs.
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
        self.create_veth_pair(&VethPair {
            host_name,
            peer_name,
            peer_ns,
            mtu,
            peer_mac,
            host: HostEnd::default(),
        })
        .await
    }

    /// Creates the veth pair `pair` describes in one request: the peer born inside its
    /// namespace, the host end with its MAC, on its master and up as asked (see
    /// [`HostEnd`]). Returns the host end as [`Netlink::create_veth`] does. The pod end is
    /// never brought up here: it goes up once its addresses are on it.
    pub async fn create_veth_pair(&self, pair: &VethPair<'_>) -> Result<Link, KernelError> {
        let _timing = crate::timing::phase("veth.create");
        let VethPair {
            host_name,
            peer_name,
            peer_ns,
            mtu,
            peer_mac,
            host: host_end,
        } = *pair;
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
        // The host end's own ifinfomsg and attributes: the kernel's create path
        // (rtnl_newlink_create) applies IFLA_ADDRESS when it makes the device, then
        // ifi_flags (rtnl_configure_link: IFF_UP), then IFLA_MASTER (do_set_master); a
        // failure of any of them unregisters the pair again, so the request makes all of
        // it or nothing, and saves the separate RTM_SETLINKs.
        if let Some(mac) = host_end.mac {
            host = host.address(mac.0.to_vec());
        }
        if host_end.up {
            host = host.up();
        }
        if let Some(master) = host_end.master {
            host = host.controller(master);
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
                        "creating veth {host_name} (peer {peer_name} in {}){}",
                        peer_ns.path().display(),
                        host_end.describe()
                    ),
                    e,
                )
            })?;
        let mut link = match echoed {
            Some(RouteNetlinkMessage::NewLink(m)) if m.header.index != 0 => Link::from_message(&m),
            _ => self.link_by_name(host_name).await?.ok_or_else(|| {
                KernelError::other(
                    format!("creating veth {host_name}"),
                    "it vanished right after creation",
                )
            })?,
        };
        // The echo is sent when the flags are applied, before the master is set; the
        // request succeeded, so the master is set.
        if host_end.master.is_some() {
            link.master = host_end.master;
        }
        Ok(link)
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

    /// Sets IPv4 per-device `values` on link `index` in one request (see [`Ipv4Conf`]).
    pub async fn set_ipv4_conf(
        &self,
        index: u32,
        values: &[(Ipv4Conf, u32)],
    ) -> Result<(), KernelError> {
        let _timing = crate::timing::phase("link.ipv4-conf");
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(inet_conf_attribute(values))
            .build();
        self.set_link(msg, index, |l| {
            let what: Vec<String> = values
                .iter()
                .map(|(c, v)| format!("{}={v}", c.leaf()))
                .collect();
            format!("setting IPv4 {} on link {l}", what.join(" "))
        })
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
