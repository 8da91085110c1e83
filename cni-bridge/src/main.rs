//! `cni-bridge`: the CNI binary.

fn main() -> std::process::ExitCode {
    cni_core::skel::run(
        &cni_bridge::BridgePlugin,
        concat!(
            "cni-bridge ",
            env!("CARGO_PKG_VERSION"),
            ": pods on a Linux bridge through veth pairs"
        ),
    )
}
