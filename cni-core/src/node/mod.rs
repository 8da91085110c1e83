//! The node side of a datapath: what one node programs toward every other node
//! (routes, VXLAN neighbour and FDB entries), and the one reconciler that puts it in the
//! kernel. The datapath crates (`cni-vxlan`, `cni-ipip`, `cni-routed`) implement
//! [`NodeSide`]; `ipamd` drives it from the cluster store.
//!
//! - [`object`]: [`Object`], one kernel entry owned by the daemon.
//! - [`peer`]: [`Peer`] (a remote node as a datapath sees it), [`NodeSide`], and the
//!   derivations both ends must agree on (VTEP MAC, gateway and tunnel addresses).
//! - [`reconcile`]: [`Reconciler`]: incremental per-peer updates, full resync against a
//!   kernel dump, batched (pipelined) netlink requests, targeted repair after kernel
//!   notifications.
//! - `watch`: [`KernelWatch`], the kernel's notifications about what the daemon owns
//!   (its routes, its devices' neighbour/FDB entries, links and addresses, the
//!   underlay), debounced into [`KernelChanges`]: repair at once, not at the next resync.

pub(crate) mod object;
pub(crate) mod peer;
pub(crate) mod reconcile;
pub(crate) mod watch;

pub(crate) use object::{Object, ObjectKey};
pub(crate) use watch::Seen;

/// The route protocol number (`RTPROT_*`) of every route `ipamd` installs: the kernel
/// keeps it, so a dump tells our routes from everyone else's (`ip route show proto 97`).
pub const RTPROT_IPAMD: u8 = 97;
