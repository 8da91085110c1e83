//! `cni-bench`'s peak RSS column is the plugin invocation's own, as `/usr/bin/time`
//! reports it, not the bench's: programs run through the bench's spawner
//! (`cni-bench measure`, the same code path as every benchmarked invocation) while the
//! bench holds a 64 MiB ballast must give the `ru_maxrss` that `/usr/bin/time -f %M`
//! gives for the same program, within 0.1 MB (medians), or, for a program whose own peak
//! is below it, the spawner's floor (the forked child's own peak just before `execve`,
//! which the exec carries into the program's `ru_maxrss`; the bench reports it per run:
//! ~260 KiB in the `dist` build, ~0.9–1.2 MB in the unoptimised builds the tests run).
//! A spawner that let the bench's RSS into the child (`posix_spawn`/`vfork` from the
//! bench, or a fork of the grown bench) reads 64 MiB or more here.
//!
//! Needs GNU time (`/usr/bin/time`, Debian package `time`) and `dd` (coreutils).

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_cni-bench");
const BALLAST_MIB: u64 = 64;
const RUNS: usize = 9;
/// 0.1 MB.
const TOLERANCE_KIB: i64 = 100;

fn median(mut v: Vec<i64>) -> i64 {
    v.sort();
    v[v.len() / 2]
}

/// Peak RSS and the spawner's floor (KiB) of `cmd` per run through `cni-bench measure`
/// with the ballast, after checking that the bench really held it.
fn through_bench(cmd: &[&str]) -> Vec<(i64, i64)> {
    let out = Command::new(BENCH)
        .args(["measure", "--runs", &RUNS.to_string()])
        .args(["--ballast-mb", &BALLAST_MIB.to_string(), "--"])
        .args(cmd)
        .output()
        .expect("run cni-bench");
    assert!(
        out.status.success(),
        "cni-bench measure {cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), RUNS);
    lines
        .iter()
        .map(|v| {
            assert_eq!(v["status"], 0, "{cmd:?} failed: {v}");
            let hwm = v["bench_hwm_kib"].as_u64().expect("bench_hwm_kib");
            assert!(
                hwm >= BALLAST_MIB << 10,
                "the bench's own peak is {hwm} KiB, below its ballast: the test proves nothing"
            );
            let floor = v["floor_kib"].as_i64().expect("floor_kib");
            assert!(
                floor < 4096,
                "the spawner's floor is {floor} KiB: the bench's memory reached the child"
            );
            (v["maxrss_kib"].as_i64().expect("maxrss_kib"), floor)
        })
        .collect()
}

/// Peak RSS (KiB) of `cmd` per run through `/usr/bin/time -f %M`.
fn through_time(cmd: &[&str]) -> Vec<i64> {
    (0..RUNS)
        .map(|_| {
            let out = Command::new("/usr/bin/time")
                .args(["-f", "%M"])
                .args(cmd)
                .output()
                .expect("run /usr/bin/time (apt-get install time)");
            assert!(out.status.success(), "/usr/bin/time {cmd:?}: {out:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            err.lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or_else(|| panic!("no %M in {err:?}"))
        })
        .collect()
}

/// Both medians, after asserting that the bench's agrees within [`TOLERANCE_KIB`] with
/// `/usr/bin/time`'s or, where that is lower, with the spawner's floor.
fn compare(cmd: &[&str]) -> (i64, i64) {
    let runs = through_bench(cmd);
    let ours: Vec<i64> = runs.iter().map(|r| r.0).collect();
    let floor = median(runs.iter().map(|r| r.1).collect());
    let time = through_time(cmd);
    let (o, t) = (median(ours.clone()), median(time.clone()));
    let expected = t.max(floor);
    assert!(
        (o - expected).abs() <= TOLERANCE_KIB,
        "{cmd:?}: peak RSS through the bench's spawner {o} KiB {ours:?}, \
         /usr/bin/time {t} KiB {time:?}, spawner floor {floor} KiB"
    );
    (o, t)
}

#[test]
fn bench_peak_rss_of_bin_true_is_its_own() {
    let (ours, _) = compare(&["/bin/true"]);
    // /bin/true's own peak is about 1 MB; the bench with its ballast is over 64 MiB.
    assert!(ours < 2048, "/bin/true peaked at {ours} KiB");
}

#[test]
fn bench_peak_rss_of_a_20_mib_program_is_its_own() {
    // dd allocates its 20 MiB block and fills it from /dev/zero: every page touched.
    let (ours, _) = compare(&[
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=20M",
        "count=1",
        "status=none",
    ]);
    assert!(
        (20 << 10..(20 << 10) + 4096).contains(&ours),
        "dd bs=20M peaked at {ours} KiB, not 20 MiB plus the program"
    );
}
