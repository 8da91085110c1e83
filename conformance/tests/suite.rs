//! The conformance suite (`conformance::suite`, what `cni-conformance run` prints) against
//! our plugins: every case at every version must pass, but for the deviations listed in
//! [`KNOWN_OURS`] (each one a bug of the plugin, filed, not of the suite).

use conformance::bins;
use conformance::suite::{self, Target, Verdict};

/// Cases `cni-bridge` is known to fail. Empty this list when the plugin is fixed (the
/// test fails when a listed case starts passing, so the list cannot go stale).
const KNOWN_OURS: &[&str] = &[];

#[test]
fn cni_bridge_passes_the_suite() {
    bins::our_bin("cni-bridge");
    bins::our_bin("cni-ipam");
    let t = Target::new(
        "cni-bridge",
        "cni-ipam",
        vec![bins::our_bin_dir(), bins::ref_bin_dir()],
    );
    let report = suite::run(&t);
    println!("{}", report.table());
    assert_eq!(
        report.versions,
        conformance::VERSIONS.to_vec(),
        "cni-bridge reports every version"
    );
    let unexpected: Vec<String> = report
        .failures()
        .iter()
        .filter(|r| !KNOWN_OURS.contains(&r.case))
        .map(|r| format!("{} {}: {}", r.case, r.version, r.verdict.reason()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "failures:\n{}",
        unexpected.join("\n")
    );
    for k in KNOWN_OURS {
        let rows: Vec<_> = report.rows.iter().filter(|r| r.case == *k).collect();
        assert!(
            rows.iter().any(|r| matches!(r.verdict, Verdict::Fail(_))),
            "{k} now passes: remove it from KNOWN_OURS"
        );
        eprintln!("KNOWN FAILURE of cni-bridge: {k}");
    }
    assert!(
        report
            .rows
            .iter()
            .all(|r| r.verdict != Verdict::Skip(String::new())),
        "no case may be skipped without a reason"
    );
    let (_, _, skipped) = report.counts();
    assert_eq!(skipped, 0, "cni-bridge reports 1.1.0: nothing is skipped");
}
