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
//! Every module is private (`<name>_impl`, and `nft`, the nftables primitives under
//! [`masq`] and [`macspoof`], and the kernel error's module); the namespaces above are
//! facades that re-export exactly what the datapath crates, `ipam`, `ipamd`,
//! `conformance` and the tests use, so the compiler reports what nobody uses.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// Private modules: what is not re-exported by a facade says so (`pub(crate)`). Rule:
// module `x` is `x_impl`, and `pub mod x { pub use … }` below is what other crates
// import (`cni_core::x::…`, the paths they used before). Where the crate itself names
// `crate::x::…`, the facade also has `pub(crate) use crate::x_impl::*`.
#![warn(unreachable_pub)]

#[path = "attach.rs"]
mod attach_impl;
#[path = "check.rs"]
mod check_impl;
#[allow(unsafe_code)] // pre_exec: see its SAFETY note
#[path = "delegate.rs"]
mod delegate_impl;
#[path = "hash.rs"]
mod hash_impl;
#[path = "inproc.rs"]
mod inproc_impl;
mod kernel_error;
#[path = "logging.rs"]
mod logging_impl;
#[path = "macspoof.rs"]
mod macspoof_impl;
#[path = "masq.rs"]
mod masq_impl;
#[allow(unsafe_code)] // the detached delete (fork, close_range): see the SAFETY notes
#[path = "netlink/mod.rs"]
mod netlink_impl;
#[allow(unsafe_code)] // the NS_GET_NSTYPE ioctl: see its SAFETY note
#[path = "netns.rs"]
mod netns_impl;
mod nft;
#[path = "node/mod.rs"]
mod node_impl;
#[allow(unsafe_code)] // _exit once the answer is out: see its SAFETY note
#[path = "skel.rs"]
mod skel_impl;
#[path = "spec/mod.rs"]
mod spec_impl;
#[path = "sysctl.rs"]
mod sysctl_impl;
#[allow(unsafe_code)] // clock_gettime of a chosen clock: see its SAFETY note
#[path = "timing.rs"]
mod timing_impl;
#[path = "veth.rs"]
mod veth_impl;

/// The veth plugins' transaction (see `attach.rs`).
pub mod attach {
    pub use crate::attach_impl::{Ctx, Links, Made, Shared, VethDatapath, VethPlugin};
}

/// The pieces of a pod's CHECK the datapaths share (see `check.rs`).
pub mod check {
    pub(crate) use crate::check_impl::*;
    pub use crate::check_impl::{addresses_present, failed, pod_link, routes_present};
}

/// Running another plugin (IPAM) found in `CNI_PATH` (see `delegate.rs`).
pub mod delegate {
    pub(crate) use crate::delegate_impl::*;
    pub use crate::delegate_impl::{exec, expected_parent, PARENT_PID_ENV};
}

/// The one stable hash (see `hash.rs`).
pub mod hash {
    pub use crate::hash_impl::{stable_hash, stable_hash_128};
}

/// A linked-in IPAM run in-process (see `inproc.rs`).
pub mod inproc {
    pub use crate::inproc_impl::register;
    pub(crate) use crate::inproc_impl::*;
}

/// Logging setup (see `logging.rs`).
pub mod logging {
    pub use crate::logging_impl::init;
}

/// Per-pod MAC spoof-check rules (see `macspoof.rs`).
pub mod macspoof {
    pub use crate::macspoof_impl::{add, del, gc, list};
}

/// IP masquerade rules (see `masq.rs`).
pub mod masq {
    pub use crate::masq_impl::{add, del, gc, list, pod_networks};
}

/// Links, addresses, routes, neighbours through rtnetlink (see `netlink/mod.rs`).
pub mod netlink {
    pub use crate::netlink_impl::link::{BridgeSpec, HostEnd, Ipv4Conf, Link, VethPair};
    pub use crate::netlink_impl::mac::MacAddr;
    pub use crate::netlink_impl::route::RouteSpec;
    pub use crate::netlink_impl::underlay::{Underlay, UnderlaySelect};
    pub use crate::netlink_impl::vxlan::VxlanSpec;
    pub(crate) use crate::netlink_impl::*;
    pub use crate::netlink_impl::{block_on, Netlink};

    /// Neighbour and FDB entries (see `netlink/neigh.rs`).
    pub mod neigh {
        pub(crate) use crate::netlink_impl::neigh::*;
        pub use crate::netlink_impl::neigh::{FdbEntry, NeighEntry};
    }
}

/// Network namespaces (see `netns.rs`).
pub mod netns {
    pub use crate::netns_impl::NetNs;
}

/// The node side of the multi-node datapaths (see `node/mod.rs`).
pub mod node {
    pub use crate::node_impl::object::Object;
    pub use crate::node_impl::peer::{NodeSide, Peer, Refused};
    pub use crate::node_impl::reconcile::{Applied, Reconciler};
    pub use crate::node_impl::watch::{Interest, KernelChanges, KernelWatch};
    pub use crate::node_impl::RTPROT_IPAMD;

    /// What a node publishes and how a peer is reached (see `node/peer.rs`).
    pub mod peer {
        pub use crate::node_impl::peer::{
            underlay_backend, vtep_mac_for, UNDERLAY_V4_KEY, UNDERLAY_V6_KEY, VTEP_MAC_KEY,
        };
    }
}

/// The plugin skeleton (see `skel.rs`).
pub mod skel {
    pub(crate) use crate::skel_impl::*;
    pub use crate::skel_impl::{main, run, Call, Command, Env, Plugin, Target};
}

/// The CNI spec: configuration, results, errors, versions (see `spec/mod.rs`).
pub mod spec {
    pub(crate) use crate::spec_impl::*;

    /// Network configuration (see `spec/config.rs`).
    pub mod config {
        pub use crate::spec_impl::config::{Attachment, NetConf};
    }

    /// Error objects (see `spec/error.rs`).
    pub mod error {
        pub use crate::spec_impl::error::{CniError, ErrorCode};
    }

    /// Fields of the plugins' configurations (see `spec/fields.rs`); `MAX_MTU` because
    /// `Mtu`'s documentation names the range.
    pub mod fields {
        pub use crate::spec_impl::fields::{
            parse, validate_ipam_type, LinkName, Mtu, UnderlayFields, MAX_MTU, MIN_MTU,
        };
    }

    /// Container ids, interface names, network names (see `spec/names.rs`).
    pub mod names {
        pub use crate::spec_impl::names::{ContainerId, IfName, NetworkName};
    }

    /// Results and their conversion (see `spec/result.rs`).
    pub mod result {
        pub(crate) use crate::spec_impl::result::*;
        pub use crate::spec_impl::result::{CniResult, Dns, IpConfig, Route};
    }
}

/// The entry of a plugin binary: a C `main` that runs `$body` (which ends in
/// [`skel::main`], returning the exit status), for a crate that says
/// `#![cfg_attr(not(test), no_main)]` (see [`skel::main`] for why std's runtime start is
/// skipped). Under `cargo test` the crate keeps the test harness's `main`.
///
/// ```ignore
/// #![cfg_attr(not(test), no_main)]
/// cni_core::plugin_main! {
///     cni_core::skel::main(&my_plugin::Plugin, "my-plugin: what it is")
/// }
/// ```
#[macro_export]
macro_rules! plugin_main {
    ($($body:tt)*) => {
        #[cfg(not(test))]
        #[allow(unsafe_code)] // no_mangle: this is the process's C entry point, called once by libc
        #[no_mangle]
        extern "C" fn main(
            _argc: ::std::ffi::c_int,
            _argv: *const *const ::std::ffi::c_char,
        ) -> ::std::ffi::c_int {
            $crate::timing::mark("main");
            $($body)*
        }
    };
}

/// Sysctls (see `sysctl.rs`).
pub mod sysctl {
    pub use crate::sysctl_impl::{enable_forwarding, get, set};
}

/// Per-phase timing marks (see `timing.rs`).
pub mod timing {
    pub use crate::timing_impl::{mark, phase};
}

/// The pieces of a pod's veth pair the datapaths share (see `veth.rs`).
pub mod veth {
    pub(crate) use crate::veth_impl::*;
    pub use crate::veth_impl::{add_pod_routes, address_and_up, random_name};
}

pub use kernel_error::{KernelError, Kind as KernelErrorKind};
pub use spec::error::{CniError, ErrorCode};
pub use spec::result::CniResult;
pub use spec::version::Version;
