//! The multi-node end-to-end test of `cni-ipip` (see `conformance::multinode::cluster`
//! for the scenario, the same as VXLAN's and host-gw's). It runs directly when this
//! kernel can make IPIP tunnels; otherwise (this machine: no `ipip`) the very same test
//! re-runs itself inside User-Mode Linux and asserts the guest's verdict. Without
//! `linux.uml` it fails, naming the package to install.
//!
//! Needs root and the built binaries (`cni-ipip`, `cni-ipam`, `ipamd`).

use std::time::Duration;

use conformance::multinode::uml::{self, Uml};
use conformance::multinode::{cluster, in_uml, Datapath};

#[test]
fn ipip_three_nodes() {
    if uml::kernel_has_ipip() {
        cluster::three_node_scenario("mn-ipip", Datapath::Ipip, 1500);
        return;
    }
    assert!(
        !in_uml(),
        "inside the UML guest but its kernel cannot make IPIP tunnels"
    );
    let o = uml::run_test_in_uml("ipip_three_nodes", &[], Duration::from_secs(240));
    eprintln!("{}", o.output);
    assert!(
        o.success() && o.output.contains("test result: ok. 1 passed"),
        "the IPIP scenario failed inside UML:\n{}",
        o.describe()
    );
}

/// The UML runner itself: the guest boots, has `tunl0` in a new netns once `ipip` is
/// loaded, and the verdict carries the command's exit status (also a failing one).
#[test]
fn uml_runner_reports_verdicts() {
    if in_uml() {
        return;
    }
    let sh = |script: &str| -> Vec<String> { vec!["/bin/sh".into(), "-c".into(), script.into()] };
    let ok = Uml::default()
        .run(&sh(
            "ip netns add probe && ip -n probe link show tunl0 && echo IPIP-OK",
        ))
        .expect("boot");
    assert!(
        ok.success() && ok.output.contains("IPIP-OK"),
        "{}",
        ok.describe()
    );
    let bad = Uml {
        modules: vec![],
        ..Uml::default()
    }
    .run(&sh("exit 3"))
    .expect("boot");
    assert_eq!(bad.exit, Some(3), "{}", bad.describe());
}
