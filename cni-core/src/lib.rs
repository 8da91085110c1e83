//! The CNI spec and the plumbing every plugin of the suite shares.
//!
//! - [`spec`]: versions, network configuration, results (every version 0.1.0 ..= 1.1.0)
//!   and their conversion, error objects.
//! - [`skel`]: the plugin skeleton: `CNI_*` environment + stdin -> [`skel::Plugin`] -> stdout.
//! - [`delegate`]: running another plugin (IPAM) found in `CNI_PATH`.
//! - [`netns`], [`netlink`], [`sysctl`], [`masq`]: the kernel side, whose primitives return
//!   a [`KernelError`] (converted to a [`CniError`] once, at the plugin boundary).
//! - [`attach`]: the veth plugins' transaction (ADD with its undo, best-effort DEL and
//!   GC, CHECK, STATUS); a datapath supplies only its particular steps.
//! - [`veth`], [`check`]: the pieces of a pod's veth pair and of its CHECK the
//!   datapaths' steps share.
//! - [`node`]: the node side of the multi-node datapaths (objects toward remote nodes,
//!   the reconciler, the [`node::NodeSide`] trait).
//! - [`hash`]: the one stable hash (names of rules, veths, VTEP MACs, store entries).
//!
//! `nft` (the nftables primitives under [`masq`] and [`macspoof`]) and the kernel
//! error's module are private; the other modules are the namespaces the datapath
//! crates, `ipam`, `ipamd` and the tests import from.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod attach;
pub mod check;
#[allow(unsafe_code)] // pre_exec: see its SAFETY note
pub mod delegate;
pub mod hash;
pub mod inproc;
mod kernel_error;
pub mod logging;
pub mod macspoof;
pub mod masq;
#[allow(unsafe_code)] // the detached delete (fork, close_range): see the SAFETY notes
pub mod netlink;
#[allow(unsafe_code)] // the NS_GET_NSTYPE ioctl: see its SAFETY note
pub mod netns;
#[allow(unsafe_code)] // libnftnl FFI: see the SAFETY notes
mod nft;
pub mod node;
pub mod skel;
pub mod spec;
pub mod sysctl;
#[allow(unsafe_code)] // clock_gettime of a chosen clock: see its SAFETY note
pub mod timing;
pub mod veth;

pub use kernel_error::{KernelError, Kind as KernelErrorKind};
pub use spec::error::{CniError, ErrorCode};
pub use spec::result::CniResult;
pub use spec::version::Version;
