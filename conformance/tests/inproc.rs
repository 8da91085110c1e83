//! `cni-ipam` run in-process by `cni-bridge` (the default, `cni_core::inproc`) against the
//! same binary exec'd (`CNI_INPROC=0`): the same result, the same errors, the allocation
//! on disk before the result, a failed ADD's address released; a plugin that does not
//! link `cni-ipam` (the reference `bridge`) still delegates to it by exec.

use std::io::Write;
use std::process::Stdio;

use conformance::bins::{self, CniPath};
use conformance::fixture::{Pod, TestNet};
use serde_json::{json, Value};

/// Runs `conf`'s plugin for `command` on `pod`, with IPAM in-process or not; returns
/// (exit success, stdout as JSON).
fn run(net: &TestNet, command: &str, pod: &Pod, conf: &Value, inproc: bool) -> (bool, Value) {
    let inv = net.invocation(command, pod, conf);
    let mut cmd = inv.command();
    if !inproc {
        cmd.env("CNI_INPROC", "0");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let _ = child.stdin.take().expect("stdin").write_all(&inv.stdin);
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout {text:?}: {e}"))
    };
    (out.status.success(), v)
}

/// What the store in `net`'s data dir says about `container_id` (file names and contents).
fn store_mentions(net: &TestNet, container_id: &str) -> bool {
    fn walk(dir: &std::path::Path, id: &str) -> bool {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return false;
        };
        rd.flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                return walk(&p, id);
            }
            let in_target = std::fs::read_link(&p)
                .map(|t| t.to_string_lossy().contains(id))
                .unwrap_or(false);
            in_target
                || e.file_name().to_string_lossy().contains(id)
                || std::fs::read_to_string(&p)
                    .map(|t| t.contains(id))
                    .unwrap_or(false)
        })
    }
    walk(net.data_dir(), container_id)
}

/// The result with what differs between two pods blanked (addresses, MACs, names, netns).
fn shape(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(ifs) = v["interfaces"].as_array_mut() {
        for i in ifs {
            i["mac"] = json!("-");
            if i.get("sandbox").is_some() {
                i["sandbox"] = json!("-");
            }
            if i["name"].as_str().is_some_and(|n| n.starts_with("veth")) {
                i["name"] = json!("veth-");
            }
        }
    }
    if let Some(ips) = v["ips"].as_array_mut() {
        for i in ips {
            i["address"] = json!("-");
        }
    }
    v
}

#[test]
fn in_process_ipam_gives_the_exec_result_and_errors() {
    bins::our_bin("cni-bridge");
    bins::our_bin("cni-ipam");
    let net = TestNet::new("inproc");
    let conf = net.ours("1.0.0").to_json();
    let a = net.pod();
    let b = net.pod();

    let (ok_a, ra) = run(&net, "ADD", &a, &conf, true);
    assert!(ok_a, "in-process ADD: {ra}");
    // Durable before the answer: the allocation is on disk when the result is out.
    assert!(
        store_mentions(&net, &a.container_id),
        "store lacks {}",
        a.container_id
    );
    let (ok_b, rb) = run(&net, "ADD", &b, &conf, false);
    assert!(ok_b, "exec ADD: {rb}");
    assert_eq!(shape(&ra), shape(&rb), "results differ: {ra} vs {rb}");
    assert_ne!(ra["ips"][0]["address"], rb["ips"][0]["address"]);
    assert_eq!(
        a.addrs().iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        vec![ra["ips"][0]["address"].as_str().unwrap().to_string()]
    );

    // DEL through either path releases the allocation.
    for (pod, res, inproc) in [(&a, &ra, true), (&b, &rb, false)] {
        let (ok, out) = run(
            &net,
            "DEL",
            pod,
            &conformance::fixture::with_prev(&conf, Some(res)),
            inproc,
        );
        assert!(ok, "DEL: {out}");
        assert!(
            !store_mentions(&net, &pod.container_id),
            "{} kept",
            pod.container_id
        );
    }

    // The same IPAM error, byte for byte, from both paths.
    let mut bad = conf.clone();
    bad["ipam"]["ranges"] = json!([[{ "subnet": "10.0.0.0/33" }]]);
    let c = net.pod();
    let (ok1, e1) = run(&net, "ADD", &c, &bad, true);
    let (ok2, e2) = run(&net, "ADD", &c, &bad, false);
    assert!(!ok1 && !ok2);
    assert_eq!(e1, e2);
    assert_eq!(e1["code"], 7, "{e1}");
    assert!(!store_mentions(&net, &c.container_id));

    // A failed ADD after the allocation (a pod route through an off-link gateway) is
    // undone: no address kept, no interface left in the pod; the same error both ways.
    let mut unreachable = conf.clone();
    unreachable["ipam"]["routes"] = json!([{ "dst": "192.0.2.0/24", "gw": "198.51.100.1" }]);
    let mut errs = Vec::new();
    for inproc in [true, false] {
        let e = net.pod();
        let (ok, err) = run(&net, "ADD", &e, &unreachable, inproc);
        assert!(!ok, "ADD with an off-link gateway succeeded: {err}");
        assert!(
            !store_mentions(&net, &e.container_id),
            "undo kept the address"
        );
        assert!(
            !conformance::inspect::link_exists_in(&e.netns, &e.ifname),
            "undo left an interface in the pod"
        );
        errs.push((err["code"].clone(), err["msg"].clone()));
    }
    assert_eq!(errs[0], errs[1]);

    // An exhausted pool (one address, taken): the same error from both paths.
    let mut one = conf.clone();
    let sub = net.subnet.cidr();
    let base = sub.trim_end_matches("/24").trim_end_matches(".0");
    one["ipam"]["ranges"] = json!([[{ "subnet": sub, "rangeStart": format!("{base}.10"), "rangeEnd": format!("{base}.10") }]]);
    let d = net.pod();
    let (ok, rd) = run(&net, "ADD", &d, &one, true);
    assert!(ok, "{rd}");
    let (ok1, e1) = run(&net, "ADD", &c, &one, true);
    let (ok2, e2) = run(&net, "ADD", &c, &one, false);
    assert!(!ok1 && !ok2);
    assert_eq!(e1, e2, "exhausted pool: errors differ");
    let (ok, out) = run(
        &net,
        "DEL",
        &d,
        &conformance::fixture::with_prev(&one, Some(&rd)),
        true,
    );
    assert!(ok, "{out}");
}

/// The in-process IPAM thread starts before the pod's interface name is checked, but may
/// allocate only after: an ADD refused for a taken name (another container, same pod
/// netns and ifname) reserves nothing and leaves the first container's address held.
/// And an ADD opens the pod's netns and its own once each (`CNI_TRACE` counts every
/// namespace file opened: was five).
#[test]
fn refused_add_allocates_nothing_and_namespaces_are_opened_once() {
    bins::our_bin("cni-bridge");
    bins::our_bin("cni-ipam");
    let net = TestNet::new("inprocgate");
    let conf = net.ours("1.0.0").to_json();
    let mut a = net.pod();
    let trace = tempfile::NamedTempFile::new().expect("trace file");
    let inv = net.invocation("ADD", &a, &conf);
    let mut cmd = inv.command();
    cmd.env("CNI_TRACE", trace.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let _ = child.stdin.take().expect("stdin").write_all(&inv.stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let ra: Value = serde_json::from_slice(&out.stdout).expect("result");
    let opens = std::fs::read_to_string(trace.path())
        .expect("trace")
        .lines()
        .filter(|l| l.contains("\"phase\":\"netns.open\""))
        .count();
    assert_eq!(opens, 2, "namespace files opened by one ADD");

    let first = a.container_id.clone();
    a.container_id = format!("{first}-again");
    for inproc in [true, false] {
        let (ok, err) = run(&net, "ADD", &a, &conf, inproc);
        assert!(!ok, "ADD over a taken ifname succeeded: {err}");
        assert!(
            !store_mentions(&net, &a.container_id),
            "refused ADD reserved an address (inproc {inproc})"
        );
    }
    a.container_id = first;
    assert!(
        store_mentions(&net, &a.container_id),
        "first ADD's address released"
    );
    let (ok, out) = run(
        &net,
        "DEL",
        &a,
        &conformance::fixture::with_prev(&conf, Some(&ra)),
        true,
    );
    assert!(ok, "DEL: {out}");
}

#[test]
fn missing_cni_ipam_is_the_same_error_and_reference_bridge_still_execs_it() {
    bins::our_bin("cni-bridge");
    // A CNI_PATH with cni-bridge but no cni-ipam: in-process must not hide that.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        bins::our_bin_dir().join("cni-bridge"),
        dir.path().join("cni-bridge"),
    )
    .unwrap();
    let net = TestNet::with_path("inproc-miss", CniPath::from_dirs(&[dir.path().into()]));
    let conf = net.ours("1.0.0").to_json();
    let p = net.pod();
    let (ok1, e1) = run(&net, "ADD", &p, &conf, true);
    let (ok2, e2) = run(&net, "ADD", &p, &conf, false);
    assert!(!ok1 && !ok2);
    assert_eq!(e1, e2);
    assert!(
        e1["msg"].as_str().unwrap_or("").contains("cni-ipam"),
        "{e1}"
    );

    // The reference bridge plugin delegating to cni-ipam (exec, the CNI contract).
    let net = TestNet::new("inproc-ref");
    let conf = net.conf_with("1.0.0", "bridge", "cni-ipam").to_json();
    let pod = net.pod();
    let (ok, r) = run(&net, "ADD", &pod, &conf, true);
    assert!(ok, "reference bridge + cni-ipam: {r}");
    assert!(store_mentions(&net, &pod.container_id));
    let (ok, out) = run(
        &net,
        "DEL",
        &pod,
        &conformance::fixture::with_prev(&conf, Some(&r)),
        true,
    );
    assert!(ok, "{out}");
    assert!(!store_mentions(&net, &pod.container_id));
}
