//! `cni-ipip`: the CNI binary.

fn main() -> std::process::ExitCode {
    cni_core::skel::run(
        &cni_ipip::plugin(),
        concat!(
            "cni-ipip ",
            env!("CARGO_PKG_VERSION"),
            ": routed veth pods, IPIP (tunl0) between nodes"
        ),
    )
}
