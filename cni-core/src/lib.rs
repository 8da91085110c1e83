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

pub mod attach;
pub mod check;
pub mod delegate;
pub mod hash;
pub mod inproc;
mod kernel_error;
pub mod logging;
pub mod macspoof;
pub mod masq;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod node;
pub mod skel;
pub mod spec;
pub mod sysctl;
pub mod timing;
pub mod veth;

pub use kernel_error::{KernelError, Kind as KernelErrorKind};
pub use spec::error::{CniError, ErrorCode};
pub use spec::result::CniResult;
pub use spec::version::Version;
