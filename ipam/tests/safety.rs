//! Issue 14: `cni-ipam` in hostile and broken environments, through the binary.
//!
//! - file safety: modes under `umask 000`, a dataDir symlinked elsewhere or relative;
//! - STATUS refuses what ADD refuses;
//! - DEL and GC make progress past corrupt entries; a lost address entry is never
//!   handed out twice;
//! - a delegated `cni-ipam` orphaned by a killed plugin reserves nothing (the plugin is
//!   this test binary itself, re-executed as [`delegating_plugin_helper`], which
//!   delegates through `cni_core::delegate` as our plugins do).

mod store_util;

use serde_json::{json, Value};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use store_util::entry_owner;

const BIN: &str = env!("CARGO_BIN_EXE_cni-ipam");

struct Out {
    code: i32,
    json: Value,
    stderr: String,
}

fn conf(name: &str, data_dir: &Value, subnet: &str) -> Value {
    json!({"cniVersion": "1.1.0", "name": name, "type": "cni-bridge",
           "ipam": {"type": "cni-ipam", "subnet": subnet, "dataDir": data_dir}})
}

/// `cni-ipam` through `sh -c 'umask U; exec …'` in `cwd`, with `extra` env vars.
fn spawn_in(
    cmd: &str,
    conf: &Value,
    cid: &str,
    umask: &str,
    cwd: &Path,
    extra: &[(&str, String)],
) -> Child {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\""))
        .arg(BIN)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", cmd)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !cid.is_empty() {
        c.env("CNI_CONTAINERID", cid)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", "/proc/self/ns/net");
    }
    for (k, v) in extra {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    child
}

fn finish(child: Child) -> Out {
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    Out {
        code: o.status.code().unwrap_or(-1),
        json: serde_json::from_str(&stdout).unwrap_or(Value::String(stdout)),
        stderr: String::from_utf8_lossy(&o.stderr).to_string(),
    }
}

fn run(cmd: &str, conf: &Value, cid: &str) -> Out {
    finish(spawn_in(cmd, conf, cid, "022", Path::new("/"), &[]))
}

fn ok(o: Out) -> Value {
    assert_eq!(o.code, 0, "stdout {} stderr {}", o.json, o.stderr);
    o.json
}

fn address(r: &Value) -> String {
    r["ips"][0]["address"].as_str().unwrap().to_string()
}

/// Every path under `root` (itself included), symlinks not followed.
fn walk(root: &Path, out: &mut Vec<PathBuf>) {
    out.push(root.to_path_buf());
    if fs::symlink_metadata(root).unwrap().is_dir() {
        for e in fs::read_dir(root).unwrap() {
            walk(&e.unwrap().path(), out);
        }
    }
}

fn entries(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Item 5: under `umask 000` every directory the plugin creates is 0755 or tighter and
/// every file 0644 or tighter (node-local store, quarantine, cluster file store, its
/// lock, the block cache, the claim lock). Symlinks are skipped: Linux ignores their
/// mode.
#[test]
fn umask_000_creates_nothing_group_or_world_writable() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data/nested");
    let c = conf("perm", &json!(data), "10.61.0.0/24");
    ok(finish(spawn_in("ADD", &c, "p1", "000", d.path(), &[])));
    // A corrupt key entry quarantined by DEL: the quarantine directory too.
    ok(finish(spawn_in("ADD", &c, "p2", "000", d.path(), &[])));
    let kp = data.join("perm/key-p2+eth0");
    fs::remove_file(&kp).unwrap();
    std::os::unix::fs::symlink("{broken", &kp).unwrap();
    ok(finish(spawn_in("DEL", &c, "p2", "000", d.path(), &[])));
    // Cluster mode with the file store.
    let cc = json!({"cniVersion": "1.1.0", "name": "permc", "type": "cni-bridge",
        "ipam": {"type": "cni-ipam", "pool": "10.62.0.0/16", "blockSize": 28, "nodeName": "n1",
                 "store": format!("file://{}", d.path().join("cluster/store/cluster.json").display()),
                 "dataDir": data}});
    ok(finish(spawn_in("ADD", &cc, "c1", "000", d.path(), &[])));

    let mut all = Vec::new();
    walk(d.path(), &mut all);
    let mut seen = Vec::new();
    for p in all.iter().filter(|p| *p != d.path()) {
        let md = fs::symlink_metadata(p).unwrap();
        let mode = md.permissions().mode() & 0o7777;
        if md.file_type().is_symlink() {
            continue;
        }
        let limit = if md.is_dir() { 0o755 } else { 0o644 };
        assert_eq!(mode & !limit, 0, "{} has mode {mode:o}", p.display());
        seen.push(p.strip_prefix(d.path()).unwrap().display().to_string());
    }
    for want in [
        "data",
        "data/nested/perm",
        "data/nested/perm/lock",
        "data/nested/perm/cursor-10.61.0.0-10.61.0.1",
        "data/nested/perm/quarantine",
        "data/nested/permc/blocks.json",
        "data/nested/permc/claim.lock",
        "cluster/store/cluster.json",
        "cluster/store/cluster.json.lock",
    ] {
        assert!(
            seen.iter().any(|s| s == want),
            "{want} not checked: {seen:?}"
        );
    }
}

/// Item 5: a dataDir that is a symlink to another directory (a temp dir standing in
/// for /etc) is refused with code 7 and nothing is created there, for every command;
/// so is a dataDir under such a symlink, a network directory that is one, and a file
/// store path through one; a relative dataDir is refused and nothing is created in the
/// working directory.
#[test]
fn symlinked_or_relative_data_dir_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let fake_etc = d.path().join("etc");
    fs::create_dir(&fake_etc).unwrap();
    fs::write(fake_etc.join("passwd"), "root:x:0:0").unwrap();
    let link = d.path().join("var-lib-cni");
    std::os::unix::fs::symlink(&fake_etc, &link).unwrap();
    let real = d.path().join("real");
    fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&fake_etc, real.join("netlink")).unwrap();
    let cases = [
        (json!(link), "sym"),
        (json!(link.join("sub")), "sym"),
        (json!(real), "netlink"),
    ];
    for (dir, name) in cases {
        let c = conf(name, &dir, "10.63.0.0/24");
        for cmd in ["ADD", "DEL", "GC", "STATUS"] {
            let cid = if cmd == "GC" || cmd == "STATUS" {
                ""
            } else {
                "s1"
            };
            let o = run(cmd, &c, cid);
            assert_eq!(o.json["code"], 7, "{cmd} {dir}: {}", o.json);
            assert!(
                o.json["msg"].as_str().unwrap().contains("ipam.dataDir"),
                "{}",
                o.json
            );
            assert!(
                o.json["msg"].as_str().unwrap().contains("symlink"),
                "{}",
                o.json
            );
        }
    }
    assert_eq!(entries(&fake_etc, ""), vec!["passwd"]);
    // The file store through a symlink.
    let cc = json!({"cniVersion": "1.1.0", "name": "symc", "type": "cni-bridge",
        "ipam": {"type": "cni-ipam", "pool": "10.64.0.0/16", "nodeName": "n1",
                 "store": format!("file://{}", link.join("cluster.json").display()),
                 "dataDir": real}});
    let o = run("ADD", &cc, "s2");
    assert_eq!(o.json["code"], 7, "{}", o.json);
    assert!(
        o.json["msg"].as_str().unwrap().contains("ipam.store"),
        "{}",
        o.json
    );
    assert_eq!(entries(&fake_etc, ""), vec!["passwd"]);
    // Relative: refused, nothing in the working directory.
    let cwd = tempfile::tempdir().unwrap();
    let c = conf("rel", &json!("state/cni"), "10.63.0.0/24");
    for cmd in ["ADD", "DEL", "STATUS"] {
        let cid = if cmd == "STATUS" { "" } else { "r1" };
        let o = finish(spawn_in(cmd, &c, cid, "022", cwd.path(), &[]));
        assert_eq!(o.json["code"], 7, "{cmd}: {}", o.json);
        assert!(
            o.json["msg"].as_str().unwrap().contains("relative"),
            "{}",
            o.json
        );
    }
    assert!(entries(cwd.path(), "").is_empty());
}

/// Item 7: STATUS validates the configuration with ADD's own function and answers
/// with ADD's error.
#[test]
fn status_refuses_what_add_refuses() {
    let d = tempfile::tempdir().unwrap();
    let bad = [
        json!({"type": "cni-ipam", "subnet": "10.65.0.0/33", "dataDir": d.path()}),
        json!({"type": "cni-ipam", "dataDir": d.path()}),
        json!({"type": "cni-ipam", "subnet": "10.65.0.0/24", "rangeStart": "10.66.0.1", "dataDir": d.path()}),
        json!({"type": "cni-ipam", "pool": "10.65.0.0/16", "blockSize": 40, "dataDir": d.path()}),
        json!({"type": "cni-ipam", "subnet": "10.65.0.0/24", "resolvConf": d.path().join("missing"), "dataDir": d.path()}),
    ];
    for ipam in bad {
        let c = json!({"cniVersion": "1.1.0", "name": "st", "type": "cni-bridge", "ipam": ipam});
        let add = run("ADD", &c, "x1");
        let status = run("STATUS", &c, "");
        assert_ne!(add.code, 0, "{}", add.json);
        assert_eq!(
            status.json["code"], add.json["code"],
            "{ipam}: {} vs {}",
            status.json, add.json
        );
        assert_eq!(status.json["msg"], add.json["msg"], "{ipam}");
    }
    ok(run(
        "STATUS",
        &conf("st", &json!(d.path()), "10.65.0.0/24"),
        "",
    ));
}

/// Items 3 and 7 through the binary: DEL of an attachment whose key entry is corrupt
/// succeeds (the entry quarantined, its address freed), every time; GC gets past a
/// corrupt key and still releases the others; a lost address entry is not handed out.
#[test]
fn del_and_gc_progress_past_corrupt_entries_and_no_duplicate_after_a_lost_entry() {
    let d = tempfile::tempdir().unwrap();
    let c = conf("cor", &json!(d.path()), "10.67.0.0/24");
    let dir = d.path().join("cor");
    let a1 = address(&ok(run("ADD", &c, "k1")));
    ok(run("ADD", &c, "k2"));
    ok(run("ADD", &c, "k3"));
    let kp = dir.join("key-k1+eth0");
    fs::remove_file(&kp).unwrap();
    std::os::unix::fs::symlink("{\"containerID\":\"k1\",\"if", &kp).unwrap();
    let o = run("ADD", &c, "k1");
    assert_eq!(o.json["code"], 101, "{}", o.json);
    ok(run("DEL", &c, "k1"));
    ok(run("DEL", &c, "k1"));
    assert_eq!(entries(&dir.join("quarantine"), "key-k1+eth0.").len(), 1);
    // Its address is free again; the others are not.
    let ip1 = a1.split('/').next().unwrap();
    assert!(!entries(&dir, "ip-").contains(&format!("ip-{ip1}")));
    assert_eq!(entries(&dir, "ip-").len(), 2);
    let again = address(&ok(run("ADD", &c, "k1")));
    // GC with a corrupt key entry of a gone container: it still releases the others.
    let k2 = dir.join("key-k2+eth0");
    fs::remove_file(&k2).unwrap();
    fs::write(&k2, b"not a symlink").unwrap();
    let mut g = c.clone();
    g["cni.dev/valid-attachments"] = json!([{"containerID": "k1", "ifname": "eth0"}]);
    ok(run("GC", &g, ""));
    assert_eq!(entries(&dir, "key-"), vec!["key-k1+eth0"]);
    assert_eq!(entries(&dir, "ip-").len(), 1);
    // A lost address entry: later ADDs probing from the start never get that address,
    // and its entry is re-created for k1.
    let ip_again = again.split('/').next().unwrap().to_string();
    for e in entries(&dir, "ip-").iter().chain(&entries(&dir, "cursor-")) {
        fs::remove_file(dir.join(e)).unwrap();
    }
    for i in 4..10 {
        let next = address(&ok(run("ADD", &c, &format!("k{i}"))));
        assert_ne!(next, again, "k{i} got k1's address");
    }
    assert_eq!(
        entry_owner(&dir.join(format!("ip-{ip_again}"))),
        "key-k1+eth0"
    );
}

// ---- Item 4: an orphaned delegate reserves nothing ----

const HELPER_ENV: &str = "IPAM_SAFETY_DELEGATE_CONF";

/// Not a test of its own: the "plugin" of the orphan tests. When the test binary is
/// re-executed with [`HELPER_ENV`] set, this delegates an ADD to `cni-ipam` through
/// `cni_core::delegate` (as cni-bridge and cni-routed do) and waits for it; otherwise
/// it returns at once.
#[test]
fn delegating_plugin_helper() {
    let Ok(conf) = std::env::var(HELPER_ENV) else {
        return;
    };
    let env = cni_core::skel::Env::from_vars(&|k| std::env::var(k).ok()).unwrap();
    let r = cni_core::delegate::exec(
        Path::new(BIN),
        cni_core::skel::Command::Add,
        conf.as_bytes(),
        &env,
    );
    eprintln!("helper: delegate answered {r:?}");
}

/// Starts the helper plugin for an ADD of `cid` with `conf`.
fn start_plugin(conf: &Value, cid: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "delegating_plugin_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, conf.to_string())
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn stat_fields(pid: i32) -> Option<(char, i32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The `cni-ipam` child of `parent` once it has exec'd and is waiting on the store
/// lock (state S).
fn find_child(parent: u32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for e in fs::read_dir("/proc").unwrap() {
            let Ok(pid) = e.unwrap().file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Some((state, ppid)) = stat_fields(pid) else {
                continue;
            };
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if ppid == parent as i32 && comm.trim() == "cni-ipam" && state == 'S' {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no cni-ipam child of {parent}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `pid` has exited (gone or a zombie).
fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while matches!(stat_fields(pid), Some((s, _)) if s != 'Z') {
        assert!(Instant::now() < deadline, "{pid} still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Holds the network's store lock as another ADD would.
fn hold_lock(dir: &Path) -> nix::fcntl::Flock<fs::File> {
    fs::create_dir_all(dir).unwrap();
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).unwrap()
}

/// Item 4: the child is stopped while it waits for the store, the plugin is killed,
/// the runtime's DEL runs, the child is continued: no reservation is left.
#[test]
fn orphaned_child_stopped_then_continued_after_del_reserves_nothing() {
    use nix::sys::signal::Signal;
    let d = tempfile::tempdir().unwrap();
    let c = conf("orph", &json!(d.path()), "10.68.0.0/24");
    let dir = d.path().join("orph");
    let lock = hold_lock(&dir);
    let mut plugin = start_plugin(&c, "o1");
    let child = find_child(plugin.id());
    signal(child, Signal::SIGSTOP);
    plugin.kill().unwrap();
    plugin.wait().unwrap();
    drop(lock);
    // The runtime's DEL, bounded: should it hang on the stopped child, continue it.
    let mut del = spawn_in("DEL", &c, "o1", "022", Path::new("/"), &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while del.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            signal(child, Signal::SIGCONT);
            panic!("DEL did not finish while the orphan was stopped");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(finish(del));
    signal(child, Signal::SIGCONT);
    wait_gone(child);
    assert!(entries(&dir, "key-").is_empty(), "{:?}", entries(&dir, ""));
    assert!(entries(&dir, "ip-").is_empty(), "{:?}", entries(&dir, ""));
}

/// Item 4: the orphaned child waits on the store lock when its plugin is killed: it
/// dies with the plugin, while the lock is still held (before, it stayed queued on the
/// lock beside the runtime's DEL and reserved after it), and the DEL that follows
/// leaves nothing reserved. Five rounds.
#[test]
fn orphaned_child_waiting_on_the_lock_dies_with_its_plugin() {
    let d = tempfile::tempdir().unwrap();
    let c = conf("race", &json!(d.path()), "10.69.0.0/24");
    let dir = d.path().join("race");
    for i in 0..5 {
        let cid = format!("r{i}");
        let lock = hold_lock(&dir);
        let mut plugin = start_plugin(&c, &cid);
        let child = find_child(plugin.id());
        plugin.kill().unwrap();
        plugin.wait().unwrap();
        // Gone although the lock it waits for was never released.
        wait_gone(child);
        let del = spawn_in("DEL", &c, &cid, "022", Path::new("/"), &[]);
        std::thread::sleep(Duration::from_millis(50));
        drop(lock);
        ok(finish(del));
        wait_gone(child);
        assert!(
            entries(&dir, "key-").is_empty(),
            "round {i}: {:?}",
            entries(&dir, "")
        );
        assert!(
            entries(&dir, "ip-").is_empty(),
            "round {i}: {:?}",
            entries(&dir, "")
        );
    }
}

/// Item 4, the check after the lock alone (no death signal involved): a `cni-ipam`
/// whose parent is not the pid the delegating plugin recorded changes nothing.
#[test]
fn cni_ipam_whose_recorded_parent_is_gone_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let c = conf("ppid", &json!(d.path()), "10.70.0.0/24");
    // Its real parent is `sh`'s exec'd image's parent: this test process.
    let gone = [(cni_core::delegate::PARENT_PID_ENV, "1".to_string())];
    let o = finish(spawn_in("ADD", &c, "q1", "022", Path::new("/"), &gone));
    assert_ne!(o.code, 0, "{}", o.json);
    assert!(
        o.json["msg"].as_str().unwrap().contains("has exited"),
        "{}",
        o.json
    );
    assert!(entries(&d.path().join("ppid"), "key-").is_empty());
    assert!(entries(&d.path().join("ppid"), "ip-").is_empty());
    let mine = [(
        cni_core::delegate::PARENT_PID_ENV,
        std::process::id().to_string(),
    )];
    ok(finish(spawn_in(
        "ADD",
        &c,
        "q1",
        "022",
        Path::new("/"),
        &mine,
    )));
}
