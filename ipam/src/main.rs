//! `cni-ipam`: a host-local compatible CNI IPAM plugin.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// The entry is a C `main` (cni_core::plugin_main!): std's runtime start is skipped.
#![cfg_attr(not(test), no_main)]

cni_core::plugin_main! {
    cni_core::logging::init(None, None);
    cni_core::skel::main(
        &ipam::IpamPlugin,
        concat!(
            "cni-ipam ",
            env!("CARGO_PKG_VERSION"),
            ": host-local compatible IPAM with a crash-safe, O(1) allocation store"
        ),
    )
}
