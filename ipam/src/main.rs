//! `cni-ipam`: a host-local compatible CNI IPAM plugin.

// Product code never panics on bad input (see README): tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

fn main() -> std::process::ExitCode {
    cni_core::timing::mark("main");
    cni_core::logging::init(None, None);
    cni_core::skel::run(
        &ipam::IpamPlugin,
        concat!(
            "cni-ipam ",
            env!("CARGO_PKG_VERSION"),
            ": host-local compatible IPAM with a crash-safe, O(1) allocation store"
        ),
    )
}
