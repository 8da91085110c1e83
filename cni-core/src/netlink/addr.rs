//! Addresses.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::{AddressAttribute, AddressScope};
use netlink_packet_route::AddressFamily;
use rtnetlink::AddressMessageBuilder;

use super::{errno, nl_err, Netlink};
use crate::kernel_error::KernelError;

impl Netlink {
    /// Adds `addr` to link `index`; already present is not an error.
    pub async fn add_address(&self, index: u32, addr: IpNetwork) -> Result<(), KernelError> {
        let _timing = crate::timing::phase("addr.add");
        match self
            .handle
            .address()
            .add(index, addr.ip(), addr.prefix())
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(nl_err(
                format!("adding address {addr} to link {}", self.label(index).await),
                e,
            )),
        }
    }

    /// Removes `addr` from link `index`; already absent is not an error.
    pub async fn del_address(&self, index: u32, addr: IpNetwork) -> Result<(), KernelError> {
        let msg = match addr.ip() {
            IpAddr::V4(ip) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
                .index(index)
                .address(ip, addr.prefix())
                .build(),
            IpAddr::V6(ip) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
                .index(index)
                .address(ip, addr.prefix())
                .build(),
        };
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            // Gone address, or gone link (which took its addresses with it).
            Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL) | Some(libc::ENODEV)) => Ok(()),
            Err(e) => Err(nl_err(
                format!(
                    "removing address {addr} from link {}",
                    self.label(index).await
                ),
                e,
            )),
        }
    }

    /// Addresses on link `index` (global and link scope, both families).
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNetwork>, KernelError> {
        self.addresses_in(index, AddressFamily::Unspec).await
    }

    /// Addresses of one family (`v6`) on link `index`. The kernel dumps only that
    /// family's addresses (it filters by link only on sockets with strict checking, which
    /// ours do not set): on a node with pods, the IPv4 dump holds the node's few IPv4
    /// addresses whatever the number of pods, where a dump of both families also holds a
    /// link-local IPv6 address per host veth.
    pub async fn addresses_of_family(
        &self,
        index: u32,
        v6: bool,
    ) -> Result<Vec<IpNetwork>, KernelError> {
        let family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        self.addresses_in(index, family).await
    }

    async fn addresses_in(
        &self,
        index: u32,
        family: AddressFamily,
    ) -> Result<Vec<IpNetwork>, KernelError> {
        let _timing = crate::timing::phase("addr.dump");
        let mut req = self.handle.address().get().set_link_index_filter(index);
        req.message_mut().header.family = family;
        let msgs: Vec<_> = req
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(format!("listing addresses of link #{index}"), e))?;
        let mut out = Vec::new();
        for m in msgs {
            // The dump filter is applied in user space by rtnetlink; check it anyway.
            if m.header.index != index
                || !matches!(m.header.scope, AddressScope::Universe | AddressScope::Link)
            {
                continue;
            }
            // For IPv4, IFA_LOCAL is the interface's address (IFA_ADDRESS is the peer on
            // point-to-point links); IPv6 only has IFA_ADDRESS.
            let mut local = None;
            let mut address = None;
            for a in &m.attributes {
                match a {
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Address(ip) => address = Some(*ip),
                    _ => {}
                }
            }
            let ip = match m.header.family {
                AddressFamily::Inet => local.or(address),
                _ => address.or(local),
            };
            if let Some(ip) = ip {
                let net = IpNetwork::new(ip, m.header.prefix_len).map_err(|e| {
                    KernelError::other(
                        format!("address {ip}/{} on link #{index}", m.header.prefix_len),
                        e.to_string(),
                    )
                })?;
                out.push(net);
            }
        }
        Ok(out)
    }
}
