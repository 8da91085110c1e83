//! Who closes the nftables socket. Closing a `NETLINK_NETFILTER` socket after a
//! committed deletion waits for an RCU grace period (~10 ms here), so after one `masq`/
//! `macspoof` hand the socket's last reference to a detached process
//! (`netlink::detached::release_detached`) and return without that wait; after only
//! additions or listings (nothing to wait for) they close it themselves. Checked as
//! structure, not time: this test binary is a child subreaper (its own binary: the
//! setting is per process), so the releasing process, orphaned as soon as it is made,
//! becomes our child and can be looked at and reaped. One test per operation would
//! race on "the new children": one test does them all in turn.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::AsRawFd;

use cni_core::spec::names::NetworkName;
use cni_core::{macspoof, masq};
use common::{att, net, TestNs};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The children of every thread of this process.
fn children() -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for task in fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path().join("children");
        // A thread that ended since the listing has no file.
        if let Ok(list) = fs::read_to_string(path) {
            out.extend(list.split_whitespace().map(|p| p.parse::<i32>().unwrap()));
        }
    }
    out
}

/// What each descriptor of `pid` is (`socket:[inode]`, `pipe:[inode]`, a path): empty
/// once the process has exited.
fn fd_targets(pid: &str) -> Vec<(String, String)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let target = fs::read_link(e.path()).ok()?;
        Some((
            e.file_name().to_string_lossy().into_owned(),
            target.to_string_lossy().into_owned(),
        ))
    })
    .collect()
}

/// The inodes of the `NETLINK_NETFILTER` sockets of the calling thread's namespace.
fn netfilter_sockets() -> BTreeSet<String> {
    let table = fs::read_to_string("/proc/thread-self/net/netlink").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode; Eth 12: NETFILTER.
            let inode = cols.last()?;
            (cols.get(1) == Some(&"12")).then(|| format!("socket:[{inode}]"))
        })
        .collect()
}

/// Runs `op` in `ns`, then checks that our process holds no netfilter socket and that
/// `op` left as many new children as `detached` says (0 or 1). The one is the
/// releasing process: holding at most the socket and the pipe that reports our exit
/// (none of our other descriptors, no stdio), named `cni-fd-release`; it exits 0 (it
/// closes the socket when we exit or after its linger time). `what` names the
/// operation in failures.
fn released<T>(ns: &TestNs, what: &str, detached: bool, op: impl FnOnce() -> T) -> T {
    // Descriptors of ours that a releasing process must not inherit.
    let file = fs::File::open("/proc/self/status").unwrap();
    let (pipe_r, pipe_w) = nix::unistd::pipe().unwrap();
    // Those and stdio (the pipe that reports our exit is ours too, but shared on purpose).
    let mine = [
        0,
        1,
        2,
        file.as_raw_fd(),
        pipe_r.as_raw_fd(),
        pipe_w.as_raw_fd(),
    ];
    let ours: BTreeSet<String> = fd_targets("self")
        .into_iter()
        .filter(|(n, _)| mine.iter().any(|m| m.to_string() == *n))
        .map(|(_, t)| t)
        .collect();
    assert!(ours.len() >= 4, "{ours:?}");

    let before = children();
    let (out, held) = ns
        .ns
        .run(|| {
            let out = op();
            let nf = netfilter_sockets();
            let held: Vec<String> = fd_targets("self")
                .into_iter()
                .map(|(_, t)| t)
                .filter(|t| nf.contains(t))
                .collect();
            (out, held)
        })
        .unwrap();
    assert!(held.is_empty(), "{what}: our process holds {held:?}");

    let new: Vec<i32> = children().difference(&before).copied().collect();
    assert_eq!(
        new.len(),
        usize::from(detached),
        "{what}: new children {new:?}"
    );
    if !detached {
        return out;
    }
    let pid = new[0].to_string();
    // What it holds (if it still runs): it was made holding only that.
    let fds = fd_targets(&pid);
    // Exited (not reaped yet: the zombie keeps its name), then reaped.
    waitid(
        Id::Pid(Pid::from_raw(new[0])),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    )
    .unwrap();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    let status = waitpid(Pid::from_raw(new[0]), None).unwrap();

    assert_eq!(comm.trim_end(), "cni-fd-release", "{what}");
    // Made with the socket and the pipe only; it closes the pipe, then the socket.
    assert!(
        fds.len() <= 2,
        "{what}: the releasing process holds {fds:?}"
    );
    let sockets = fds.iter().filter(|(_, t)| t.starts_with("socket:")).count();
    let pipes = fds.iter().filter(|(_, t)| t.starts_with("pipe:")).count();
    assert!(
        sockets <= 1 && pipes <= 1 && sockets + pipes == fds.len(),
        "{what}: the releasing process holds {fds:?}"
    );
    for (n, t) in &fds {
        assert!(!ours.contains(t), "{what}: it inherited our fd {n} -> {t}");
    }
    assert_eq!(
        status,
        WaitStatus::Exited(Pid::from_raw(new[0]), 0),
        "{what}"
    );
    drop((file, pipe_r, pipe_w));
    out
}

#[test]
fn nft_socket_is_closed_by_a_detached_process() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let ns = TestNs::new("nftrel");
    let n = NetworkName::parse("relnet").unwrap();
    let a = att("ctr-rel");
    let mac = "02:00:00:00:00:0a".parse().unwrap();

    // Additions and listings leave the kernel nothing to wait for: closed here.
    released(&ns, "masq::add", false, || {
        masq::add(&n, &a, net("10.73.0.5/24"), &[]).unwrap()
    });
    released(&ns, "macspoof::add", false, || {
        macspoof::add(&n, &a, "vethrel", mac).unwrap()
    });
    // Committed before the ADD returned: the rules are there.
    let listed = released(&ns, "masq::list", false, || masq::list(&n, &a).unwrap());
    assert_eq!(listed, vec![net("10.73.0.5/24")]);
    // A re-ADD on another veth replaces the rule: a deletion.
    released(&ns, "macspoof::add replacing", true, || {
        macspoof::add(&n, &a, "vethrel2", mac).unwrap()
    });
    let listed = released(&ns, "macspoof::list", false, || {
        macspoof::list(&n, &a).unwrap()
    });
    assert_eq!(listed, vec![("vethrel2".to_string(), mac)]);

    // A kernel refusal (a base chain of another type in the way) keeps its errno.
    ns.exec(&["nft", "add", "table", "ip6", "cni_masq"]);
    ns.exec(&[
        "nft",
        "add",
        "chain",
        "ip6",
        "cni_masq",
        "postrouting",
        "{ type filter hook postrouting priority 0; policy accept; }",
    ]);
    let e = released(&ns, "masq::add refused", false, || {
        masq::add(&n, &a, net("fd73::5/64"), &[]).unwrap_err()
    });
    assert_eq!(e.errno(), Some(nix::errno::Errno::EOPNOTSUPP), "{e}");
    ns.exec(&["nft", "delete", "table", "ip6", "cni_masq"]);

    released(&ns, "masq::del", true, || masq::del(&n, &a).unwrap());
    released(&ns, "macspoof::del", true, || {
        macspoof::del(&n, &a).unwrap()
    });
    // The DEL made progress: rules and tables gone.
    let tables = ns.exec(&["nft", "list", "tables"]);
    assert!(tables.trim().is_empty(), "{tables}");
    // Nothing to delete: nothing to wait for.
    released(&ns, "masq::del again", false, || masq::del(&n, &a).unwrap());
}
