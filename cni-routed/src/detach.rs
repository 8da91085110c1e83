//! DEL's part particular to the routed veth (the rest is `cni_core::attach::del`): the
//! host end, when it outlived its pod end (a DEL without the netns while the namespace
//! is still held elsewhere); its routes go with it.

use cni_core::netlink::{block_on, Netlink};
use cni_core::skel::{Call, Target};
use cni_core::CniError;
use tracing::debug;

use crate::pod;

pub(crate) fn host_side(call: &Call, target: &Target) -> Result<(), CniError> {
    let veth = pod::host_veth_name(
        &call.conf.name,
        target.container_id.as_str(),
        target.ifname.as_str(),
    );
    block_on(async {
        let host = Netlink::connect()?;
        if let Some(l) = host.link_by_name(&veth).await? {
            debug!(veth, "host end still there; deleting it");
            host.delete_link(l.index).await?;
        }
        Ok(())
    })
    .and_then(|r| r)
}
