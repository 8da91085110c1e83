//! VXLAN devices.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo};
use rtnetlink::LinkVxlan;

use super::{errno, nl_err, Link, MacAddr, Netlink};
use crate::kernel_error::KernelError;

/// A VXLAN device as the node side wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    /// UDP destination port (flannel's default 8472; IANA 4789).
    pub port: u16,
    /// Local underlay address (source of the encapsulated packets).
    pub local: IpAddr,
    /// Underlay interface index the encapsulated packets leave by.
    pub underlay: u32,
    pub mtu: u32,
    pub mac: MacAddr,
    // Learning is always off: every remote VTEP is programmed.
}

/// What the kernel says about an existing link of the wanted name: its kind, and for a
/// VXLAN device the parameters that can only be set at creation.
#[derive(Debug, Default, PartialEq, Eq)]
struct VxlanParams {
    is_vxlan: bool,
    vni: Option<u32>,
    port: Option<u16>,
    local: Option<IpAddr>,
    underlay: Option<u32>,
    learning: Option<bool>,
}

impl VxlanParams {
    fn from_message(msg: &netlink_packet_route::link::LinkMessage) -> VxlanParams {
        let mut p = VxlanParams::default();
        for attr in &msg.attributes {
            let LinkAttribute::LinkInfo(infos) = attr else {
                continue;
            };
            for info in infos {
                match info {
                    LinkInfo::Kind(InfoKind::Vxlan) => p.is_vxlan = true,
                    LinkInfo::Data(InfoData::Vxlan(vx)) => {
                        for v in vx {
                            match v {
                                InfoVxlan::Id(id) => p.vni = Some(*id),
                                InfoVxlan::Port(port) => p.port = Some(*port),
                                InfoVxlan::Local(ip) => p.local = Some(IpAddr::V4(*ip)),
                                InfoVxlan::Local6(ip) => p.local = Some(IpAddr::V6(*ip)),
                                InfoVxlan::Link(i) => p.underlay = Some(*i),
                                InfoVxlan::Learning(l) => p.learning = Some(*l),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        p
    }

    /// Whether the local address is all that differs (it can be changed in place).
    fn only_local_differs(&self, spec: &VxlanSpec) -> bool {
        let same_family = self
            .local
            .is_some_and(|l| l.is_ipv4() == spec.local.is_ipv4());
        let other = VxlanParams {
            local: Some(spec.local),
            ..*self
        };
        same_family && self.local != Some(spec.local) && other.mismatch(spec).is_none()
    }

    /// Why the device must be created again, or `None` when it can be adopted.
    fn mismatch(&self, spec: &VxlanSpec) -> Option<String> {
        if !self.is_vxlan {
            return Some("it is not a VXLAN device".into());
        }
        let show = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        if self.vni != Some(spec.vni) {
            return Some(format!(
                "VNI {} instead of {}",
                show(self.vni.map(|v| v.to_string())),
                spec.vni
            ));
        }
        if self.port != Some(spec.port) {
            return Some(format!(
                "port {} instead of {}",
                show(self.port.map(|v| v.to_string())),
                spec.port
            ));
        }
        if self.local != Some(spec.local) {
            return Some(format!(
                "local address {} instead of {}",
                show(self.local.map(|v| v.to_string())),
                spec.local
            ));
        }
        if self.underlay != Some(spec.underlay) {
            return Some(format!(
                "underlay link #{} instead of #{}",
                show(self.underlay.map(|v| v.to_string())),
                spec.underlay
            ));
        }
        // Learning on would let the device learn remotes behind our back.
        if self.learning != Some(false) {
            return Some("learning is on".into());
        }
        None
    }
}

impl Netlink {
    /// The parameters of link `name`, `None` when there is none.
    async fn vxlan_params(&self, name: &str) -> Result<Option<VxlanParams>, KernelError> {
        let req = self.handle.link().get().match_name(name.to_string());
        match req.execute().try_next().await {
            Ok(Some(msg)) => Ok(Some(VxlanParams::from_message(&msg))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl_err(format!("looking up link {name}"), e)),
        }
    }

    /// Changes the local (source) address of VXLAN device `index` in place: an
    /// RTM_NEWLINK on the existing device with only IFLA_VXLAN_LOCAL (the kernel's
    /// changelink keeps every other parameter, and the device keeps its FDB, neighbours
    /// and routes). The family must stay the same (the kernel refuses a change of it).
    pub async fn set_vxlan_local(&self, index: u32, local: IpAddr) -> Result<(), KernelError> {
        let mut msg = netlink_packet_route::link::LinkMessage::default();
        msg.header.index = index;
        let data = match local {
            IpAddr::V4(ip) => InfoVxlan::Local(ip),
            IpAddr::V6(ip) => InfoVxlan::Local6(ip),
        };
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![data])),
        ]));
        let req = netlink_packet_core::NetlinkMessage::from(
            netlink_packet_route::RouteNetlinkMessage::NewLink(msg),
        );
        super::request_ack(
            &self.handle,
            req,
            netlink_packet_core::NLM_F_REQUEST | netlink_packet_core::NLM_F_ACK,
        )
        .await
        .map_err(|e| {
            nl_err(
                format!("changing the local address of VXLAN link #{index} to {local}"),
                e,
            )
        })
    }

    async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<(), rtnetlink::Error> {
        let mut b = LinkVxlan::new(&spec.name, spec.vni)
            .dev(spec.underlay)
            .port(spec.port)
            .learning(false)
            .mtu(spec.mtu)
            .address(spec.mac.0.to_vec())
            .up();
        b = match spec.local {
            IpAddr::V4(ip) => b.local(ip),
            IpAddr::V6(ip) => b.local6(ip),
        };
        self.handle.link().add(b.build()).execute().await
    }

    /// Creates the device, or adopts an existing one: MTU, MAC and up-state are fixed in
    /// place; a device whose VNI, port, local address or underlay differ (or that is not
    /// VXLAN, or learns) is deleted and created again. Returns the link and whether it
    /// was (re)created. An adopted device that is right is only read, never written.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<(Link, bool), KernelError> {
        let name = spec.name.as_str();
        let mut created = false;
        // Twice at most: a concurrent creator may win between our lookup and our add,
        // and its device is then adopted (or replaced) like any existing one.
        for _ in 0..2 {
            if let Some(params) = self.vxlan_params(name).await? {
                if params.only_local_differs(spec) {
                    if let Some(old) = self.link_by_name(name).await? {
                        tracing::info!(link = name, old = ?params.local, new = %spec.local,
                            "changing the VXLAN device's local address in place");
                        self.set_vxlan_local(old.index, spec.local).await?;
                        break;
                    }
                }
                match params.mismatch(spec) {
                    None => break,
                    Some(why) => {
                        tracing::info!(link = name, reason = %why, "recreating VXLAN device");
                        let old = self.link_by_name(name).await?;
                        if let Some(old) = old {
                            self.delete_link(old.index).await?;
                        }
                    }
                }
            }
            match self.create_vxlan(spec).await {
                Ok(()) => {
                    created = true;
                    break;
                }
                Err(e) if errno(&e) == Some(libc::EEXIST) => continue,
                Err(e) => {
                    return Err(nl_err(
                        format!(
                        "creating VXLAN device {name} (VNI {}, port {}, local {}, underlay #{})",
                        spec.vni, spec.port, spec.local, spec.underlay
                    ),
                        e,
                    ))
                }
            }
        }
        let link = self.link_by_name(name).await?.ok_or_else(|| {
            KernelError::other(format!("ensuring VXLAN device {name}"), "it vanished")
        })?;
        if link.kind.as_deref() != Some("vxlan") {
            return Err(KernelError::other(
                format!("ensuring VXLAN device {name}"),
                format!(
                    "link {name} is a {} after ensuring it as VXLAN (a concurrent creator?)",
                    link.kind.as_deref().unwrap_or("device of unknown kind")
                ),
            ));
        }
        let mut changed = false;
        if link.mtu != spec.mtu {
            self.set_mtu(link.index, spec.mtu).await?;
            changed = true;
        }
        if link.mac != Some(spec.mac) {
            self.set_mac(link.index, spec.mac).await?;
            changed = true;
        }
        if !link.up {
            self.set_up(link.index).await?;
            changed = true;
        }
        if !changed {
            return Ok((link, created));
        }
        let link = self.link_by_index(link.index).await?.ok_or_else(|| {
            KernelError::other(
                format!("configuring VXLAN device {name}"),
                "it vanished while being configured",
            )
        })?;
        Ok((link, created))
    }
}
