//! `cni-routed`: the CNI binary.

fn main() -> std::process::ExitCode {
    cni_core::skel::run(
        &cni_routed::RoutedPlugin::new(cni_routed::ROUTED),
        concat!(
            "cni-routed ",
            env!("CARGO_PKG_VERSION"),
            ": routed veth pods (no bridge), host-gw between nodes"
        ),
    )
}
