//! Calibration of the suite: the reference `bridge` + `host-local` (Debian's
//! containernetworking-plugins) run through it must give exactly the verdicts recorded in
//! `conformance/REFERENCE.md` (written by `scripts/conformance.sh --reference`): it
//! passes the basic cases and fails the ones where it is known to deviate.

use std::collections::BTreeSet;

use conformance::bins;
use conformance::suite::{self, Target};

/// `(case, version, verdict)` rows of the Markdown table of REFERENCE.md.
fn recorded() -> BTreeSet<(String, String, String)> {
    let path = bins::workspace_root().join("conformance/REFERENCE.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/conformance.sh --reference)",
            path.display()
        )
    });
    text.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| case "))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split(" | ").map(|c| c.trim_matches(['|', ' '])).collect();
            (cells.len() >= 4).then(|| {
                (
                    cells[0].to_string(),
                    cells[1].to_string(),
                    cells[3].to_string(),
                )
            })
        })
        .collect()
}

#[test]
fn reference_plugins_give_the_recorded_verdicts() {
    bins::ref_bin("bridge");
    bins::ref_bin("host-local");
    let want = recorded();
    assert!(want.len() > 20, "REFERENCE.md has no table");
    let t = Target::new("bridge", "host-local", vec![bins::ref_bin_dir()]);
    let report = suite::run(&t);
    println!("{}", report.table());
    let got: BTreeSet<(String, String, String)> = report.verdicts().into_iter().collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "verdicts differ from REFERENCE.md\n recorded, not seen now: {missing:?}\n seen now, not recorded: {extra:?}"
    );
    // Whatever the record says, the basics must pass and the known leaks must fail, or
    // the suite is not judging real behaviour.
    let verdict = |case: &str, v: &str| {
        report
            .rows
            .iter()
            .find(|r| r.case == case && r.version == v)
            .map(|r| r.verdict.word())
    };
    for c in [
        "add-result",
        "del-twice",
        "del-netns-gone",
        "del-cleanup",
        "other-ifname",
    ] {
        assert_eq!(verdict(c, "1.0.0"), Some("pass"), "reference {c}");
    }
    assert_eq!(verdict("check-removed-address", "1.0.0"), Some("pass"));
    assert_eq!(
        verdict("del-cleanup-netns-gone", "1.0.0"),
        Some("fail"),
        "the reference leaks its masquerade rule"
    );
    assert_eq!(
        verdict("gc", "-"),
        Some("skip"),
        "the reference has no 1.1.0"
    );
}
