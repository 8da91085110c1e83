//! `cni-ipam`: a host-local compatible CNI IPAM plugin.

fn main() -> std::process::ExitCode {
    cni_core::timing::mark("main");
    cni_core::logging::init(None, None);
    cni_core::skel::run(
        &ipam::IpamPlugin,
        "cni-ipam: host-local compatible IPAM with a crash-safe, O(1) allocation store",
    )
}
