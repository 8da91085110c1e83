//! `cni-bridge`: the CNI binary.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// The entry is a C `main` (cni_core::plugin_main!): std's runtime start is skipped.
#![cfg_attr(not(test), no_main)]

cni_core::plugin_main! {
    // `cni-ipam` is linked in: an IPAM of that type runs in-process (cni_core::inproc).
    cni_core::inproc::register("cni-ipam", &ipam::IpamPlugin);
    cni_core::skel::main(
        &cni_bridge::BridgePlugin,
        concat!(
            "cni-bridge ",
            env!("CARGO_PKG_VERSION"),
            ": pods on a Linux bridge through veth pairs"
        ),
    )
}
