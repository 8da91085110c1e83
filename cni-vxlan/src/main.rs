//! `cni-vxlan`: the CNI binary.

fn main() -> std::process::ExitCode {
    cni_core::skel::run(
        &cni_vxlan::VxlanPlugin,
        concat!(
            "cni-vxlan ",
            env!("CARGO_PKG_VERSION"),
            ": pods on a bridge, other nodes through a VXLAN device"
        ),
    )
}
