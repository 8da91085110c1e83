//! End-to-end tests of the `cni-ipam` binary: CNI env + JSON on stdin, result on stdout.

mod store_util;

use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use store_util::entry_owner;

const BIN: &str = env!("CARGO_BIN_EXE_cni-ipam");

struct Out {
    code: i32,
    json: Value,
    stderr: String,
}

fn spawn(
    bin: &str,
    cmd: &str,
    conf: &Value,
    cid: &str,
    ifname: &str,
    args: Option<&str>,
) -> std::process::Child {
    let mut c = Command::new(bin);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", cmd)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !cid.is_empty() {
        c.env("CNI_CONTAINERID", cid)
            .env("CNI_IFNAME", ifname)
            .env("CNI_NETNS", "/proc/self/ns/net");
    }
    if let Some(a) = args {
        c.env("CNI_ARGS", a);
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

fn finish(child: std::process::Child) -> Out {
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    Out {
        code: o.status.code().unwrap_or(-1),
        json: if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or(Value::String(stdout))
        },
        stderr: String::from_utf8_lossy(&o.stderr).to_string(),
    }
}

fn run(cmd: &str, conf: &Value, cid: &str, ifname: &str) -> Out {
    finish(spawn(BIN, cmd, conf, cid, ifname, None))
}

fn ok(o: Out) -> Value {
    assert_eq!(o.code, 0, "stdout {} stderr {}", o.json, o.stderr);
    o.json
}

fn conf(version: &str, name: &str, dir: &Path, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("cni-ipam");
    ipam["dataDir"] = json!(dir);
    json!({"cniVersion": version, "name": name, "type": "cni-bridge", "ipam": ipam})
}

fn v4(version: &str, dir: &Path) -> Value {
    conf(
        version,
        "net1",
        dir,
        json!({"subnet": "10.55.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]}),
    )
}

fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["address"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn add_add_check_del_del() {
    let d = tempfile::tempdir().unwrap();
    let resolv = d.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.55.0.53\nsearch svc.local\noptions ndots:5\n",
    )
    .unwrap();
    let mut c = v4("1.1.0", d.path());
    c["ipam"]["resolvConf"] = json!(resolv);
    let r1 = ok(run("ADD", &c, "ctr-a", "eth0"));
    assert_eq!(r1["cniVersion"], "1.1.0");
    assert_eq!(addresses(&r1), vec!["10.55.0.2/24"]);
    assert_eq!(r1["ips"][0]["gateway"], "10.55.0.1");
    assert_eq!(r1["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(r1["dns"]["nameservers"][0], "10.55.0.53");
    assert_eq!(r1["dns"]["search"][0], "svc.local");
    let r2 = ok(run("ADD", &c, "ctr-a", "eth0"));
    assert_eq!(addresses(&r2), addresses(&r1));
    let r3 = ok(run("ADD", &c, "ctr-b", "eth0"));
    assert_eq!(addresses(&r3), vec!["10.55.0.3/24"]);

    let mut chk = c.clone();
    chk["prevResult"] = r1.clone();
    ok(run("CHECK", &chk, "ctr-a", "eth0"));
    let mut wrong = c.clone();
    wrong["prevResult"] = r3.clone();
    assert_ne!(run("CHECK", &wrong, "ctr-a", "eth0").code, 0);
    let o = run("CHECK", &chk, "ctr-zzz", "eth0");
    assert_ne!(o.code, 0);
    assert!(
        o.json["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("ctr-zzz"),
        "{}",
        o.json
    );

    ok(run("DEL", &c, "ctr-a", "eth0"));
    ok(run("DEL", &c, "ctr-a", "eth0"));
    ok(run("DEL", &c, "never-added", "eth0"));
    assert_ne!(run("CHECK", &chk, "ctr-a", "eth0").code, 0);
}

#[test]
fn del_on_a_fresh_data_dir_and_gc() {
    let d = tempfile::tempdir().unwrap();
    let c = v4("1.1.0", &d.path().join("nothing-yet"));
    ok(run("DEL", &c, "ctr-a", "eth0"));
    let c = v4("1.1.0", d.path());
    for n in 0..4 {
        ok(run("ADD", &c, &format!("ctr-{n}"), "eth0"));
    }
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-1", "ifname": "eth0"}, {"containerID": "ctr-3", "ifname": "eth0"}]);
    ok(run("GC", &gc, "", ""));
    let keys: HashSet<String> = std::fs::read_dir(d.path().join("net1"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            name.strip_prefix("key-").map(str::to_string)
        })
        .collect();
    assert_eq!(
        keys,
        HashSet::from(["ctr-1+eth0".to_string(), "ctr-3+eth0".to_string()])
    );
    // The freed addresses are free again; the kept ones are not re-issued.
    let r = ok(run("ADD", &c, "ctr-new", "eth0"));
    assert_eq!(addresses(&r), vec!["10.55.0.6/24"]);
}

#[test]
fn version_flag_and_version_command() {
    // `--version`: name and crate version first, then the spec versions, exit 0.
    let o = Command::new(BIN)
        .arg("--version")
        .env_clear()
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        out.starts_with(&format!("cni-ipam {}: ", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    // CNI's VERSION command (what a runtime sends: no argument) answers as before.
    let d = tempfile::tempdir().unwrap();
    let v = ok(run("VERSION", &v4("1.0.0", d.path()), "", ""));
    // Like the reference skel: the latest version it speaks, whatever the config says.
    assert_eq!(v["cniVersion"], "1.1.0", "{v}");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]),
        "{v}"
    );
}

#[test]
fn status() {
    let d = tempfile::tempdir().unwrap();
    ok(run("STATUS", &v4("1.1.0", d.path()), "", ""));
    let file = d.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = run("STATUS", &v4("1.1.0", &file.join("sub")), "", "");
    assert_ne!(o.code, 0);
    assert_eq!(o.json["code"], 50, "{}", o.json);
}

#[test]
fn result_shape_of_every_version() {
    for v in [
        "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
    ] {
        let d = tempfile::tempdir().unwrap();
        let c = conf(
            v,
            "netv",
            d.path(),
            json!({"ranges": [[{"subnet": "10.56.0.0/24"}], [{"subnet": "fd56::/64"}]],
                   "routes": [{"dst": "0.0.0.0/0", "gw": "10.56.0.1"}]}),
        );
        let r = ok(run("ADD", &c, "ctr-v", "eth0"));
        assert_eq!(r["cniVersion"], v, "{r}");
        if v < "0.3.0" {
            assert_eq!(r["ip4"]["ip"], "10.56.0.2/24", "{v}: {r}");
            assert_eq!(r["ip6"]["ip"], "fd56::2/64", "{v}: {r}");
            assert_eq!(r["ip4"]["gateway"], "10.56.0.1", "{v}: {r}");
            assert!(r.get("ips").is_none(), "{v}: {r}");
        } else {
            assert_eq!(
                addresses(&r),
                vec!["10.56.0.2/24", "fd56::2/64"],
                "{v}: {r}"
            );
            if v < "1.0.0" {
                assert_eq!(r["ips"][0]["version"], "4", "{v}: {r}");
                assert_eq!(r["ips"][1]["version"], "6", "{v}: {r}");
            } else {
                assert!(r["ips"][0].get("version").is_none(), "{v}: {r}");
            }
            assert_eq!(r["routes"][0]["gw"], "10.56.0.1", "{v}: {r}");
        }
        ok(run("DEL", &c, "ctr-v", "eth0"));
    }
}

#[test]
fn requested_ips_every_way() {
    let d = tempfile::tempdir().unwrap();
    let c = v4("1.1.0", d.path());
    let r = ok(finish(spawn(
        BIN,
        "ADD",
        &c,
        "ctr-args",
        "eth0",
        Some("IgnoreUnknown=1;IP=10.55.0.40"),
    )));
    assert_eq!(addresses(&r), vec!["10.55.0.40/24"]);
    let mut rc = c.clone();
    rc["runtimeConfig"] = json!({"ips": ["10.55.0.41/24"]});
    assert_eq!(
        addresses(&ok(run("ADD", &rc, "ctr-rc", "eth0"))),
        vec!["10.55.0.41/24"]
    );
    let mut ac = c.clone();
    ac["args"] = json!({"cni": {"ips": ["10.55.0.42"]}});
    assert_eq!(
        addresses(&ok(run("ADD", &ac, "ctr-ac", "eth0"))),
        vec!["10.55.0.42/24"]
    );
    // Taken by another attachment.
    let o = run("ADD", &ac, "ctr-other", "eth0");
    assert_ne!(o.code, 0);
    assert!(
        o.json["msg"].as_str().unwrap().contains("10.55.0.42"),
        "{}",
        o.json
    );
    // Outside every range.
    let o = finish(spawn(
        BIN,
        "ADD",
        &c,
        "ctr-out",
        "eth0",
        Some("IP=10.99.0.1"),
    ));
    assert_ne!(o.code, 0);
    assert!(
        o.json["msg"].as_str().unwrap().contains("10.99.0.1"),
        "{}",
        o.json
    );
    // runtimeConfig.ipRanges is put in front of the configured ranges (host-local).
    let mut ir = c.clone();
    ir["runtimeConfig"] =
        json!({"ipRanges": [[{"subnet": "10.57.0.0/24", "rangeStart": "10.57.0.100"}]]});
    let got = addresses(&ok(run("ADD", &ir, "ctr-ir", "eth0")));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], "10.57.0.100/24");
}

#[test]
fn invalid_config_and_exhaustion_codes() {
    let d = tempfile::tempdir().unwrap();
    let bad = conf(
        "1.1.0",
        "netbad",
        d.path(),
        json!({"subnet": "10.58.0.0/24", "rangeStart": "10.59.0.1"}),
    );
    let o = run("ADD", &bad, "ctr-x", "eth0");
    assert_eq!(o.json["code"], 7, "{}", o.json);
    assert!(
        o.json["msg"].as_str().unwrap().contains("ipam.rangeStart"),
        "{}",
        o.json
    );
    let small = conf(
        "1.1.0",
        "netsmall",
        d.path(),
        json!({"subnet": "10.58.0.0/24", "rangeStart": "10.58.0.10", "rangeEnd": "10.58.0.11"}),
    );
    ok(run("ADD", &small, "ctr-1", "eth0"));
    ok(run("ADD", &small, "ctr-2", "eth0"));
    let o = run("ADD", &small, "ctr-3", "eth0");
    assert_eq!(o.json["code"], 102, "{}", o.json);
    assert!(
        o.json["msg"].as_str().unwrap().contains("full"),
        "{}",
        o.json
    );
}

#[test]
fn corrupt_key_file_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let c = v4("1.1.0", d.path());
    ok(run("ADD", &c, "ctr-c", "eth0"));
    let kp = d.path().join("net1").join("key-ctr-c+eth0");
    std::fs::remove_file(&kp).unwrap();
    std::os::unix::fs::symlink("{\"containerID\": \"ctr", &kp).unwrap();
    let o = run("ADD", &c, "ctr-c", "eth0");
    assert_eq!(o.json["code"], 101, "{}", o.json);
    assert!(
        o.json["msg"]
            .as_str()
            .unwrap()
            .contains(&kp.display().to_string()),
        "{}",
        o.json
    );
}

#[test]
fn parallel_processes_get_distinct_addresses() {
    let d = tempfile::tempdir().unwrap();
    let c = conf(
        "1.0.0",
        "netpar",
        d.path(),
        json!({"ranges": [[{"subnet": "10.60.0.0/24"}], [{"subnet": "fd60::/64"}]]}),
    );
    let children: Vec<_> = (0..64)
        .map(|n| spawn(BIN, "ADD", &c, &format!("par-{n}"), "eth0", None))
        .collect();
    let mut all = HashSet::new();
    for child in children {
        for a in addresses(&ok(finish(child))) {
            assert!(all.insert(a.clone()), "{a} handed out twice");
        }
    }
    assert_eq!(all.len(), 128);
}

#[test]
fn side_by_side_with_host_local() {
    let host_local = "/usr/lib/cni/host-local";
    if !Path::new(host_local).exists() {
        eprintln!("skipped: {host_local} not installed");
        return;
    }
    let ipam = json!({"ranges": [[{"subnet": "10.61.0.0/24", "rangeStart": "10.61.0.20",
        "rangeEnd": "10.61.0.30", "gateway": "10.61.0.1"}], [{"subnet": "fd61::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.62.0.0/16", "gw": "10.61.0.254"}]});
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let ours = conf("1.0.0", "netsbs", d1.path(), ipam.clone());
    let mut theirs = conf("1.0.0", "netsbs", d2.path(), ipam);
    theirs["ipam"]["type"] = json!("host-local");
    for n in 0..3 {
        let cid = format!("sbs-{n}");
        let a = ok(run("ADD", &ours, &cid, "eth0"));
        let b = ok(finish(spawn(
            host_local, "ADD", &theirs, &cid, "eth0", None,
        )));
        assert_eq!(a["ips"], b["ips"], "ours {a} host-local {b}");
        assert_eq!(a["routes"], b["routes"], "ours {a} host-local {b}");
    }
    for n in 0..3 {
        let cid = format!("sbs-{n}");
        ok(run("DEL", &ours, &cid, "eth0"));
        ok(finish(spawn(
            host_local, "DEL", &theirs, &cid, "eth0", None,
        )));
    }
}

#[test]
fn crash_leftover_waits_for_gc() {
    let d = tempfile::tempdir().unwrap();
    let c = v4("1.1.0", d.path());
    ok(run("STATUS", &c, "", ""));
    // An address entry whose ADD crashed before creating the key entry.
    let store = d.path().join("net1");
    std::os::unix::fs::symlink("key-ghost+eth0", store.join("ip-10.55.0.2")).unwrap();
    assert_eq!(
        addresses(&ok(run("ADD", &c, "ctr-1", "eth0"))),
        vec!["10.55.0.3/24"]
    );
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-1", "ifname": "eth0"}]);
    ok(run("GC", &gc, "", ""));
    assert!(store.join("ip-10.55.0.2").symlink_metadata().is_err());
    assert_eq!(entry_owner(&store.join("ip-10.55.0.3")), "key-ctr-1+eth0");
}

/// ADDs and DELs killed (SIGKILL) at random points, many at once: whatever survives is
/// consistent. Every key entry's addresses are reserved for it, no address is answered
/// twice, and GC leaves exactly the addresses of the surviving attachments.
#[test]
fn kill_9_storm_never_hands_an_address_out_twice() {
    let d = tempfile::tempdir().unwrap();
    let c = conf(
        "1.1.0",
        "netkill",
        d.path(),
        json!({"ranges": [[{"subnet": "10.66.0.0/24"}], [{"subnet": "fd66::/64"}]]}),
    );
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..6 {
        let mut children: Vec<_> = (0..12)
            .map(|n| {
                let cmd = if n % 3 == 2 { "DEL" } else { "ADD" };
                spawn(
                    BIN,
                    cmd,
                    &c,
                    &format!("k-{}", (round * 7 + n) % 20),
                    "eth0",
                    None,
                )
            })
            .collect();
        for ch in children.iter_mut().step_by(2) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(std::time::Duration::from_micros(seed % 3000));
            let _ = ch.kill();
        }
        for ch in children {
            let _ = finish(ch);
        }
    }
    // Answered ADDs of the survivors: distinct addresses, each reserved for its owner.
    let mut seen = HashSet::new();
    for n in 0..20 {
        let cid = format!("k-{n}");
        let r = ok(run("ADD", &c, &cid, "eth0"));
        for a in addresses(&r) {
            assert!(seen.insert(a.clone()), "{a} handed out twice");
            let ip = a.split('/').next().unwrap();
            let owner = entry_owner(&d.path().join("netkill").join(format!("ip-{ip}")));
            assert_eq!(owner, format!("key-{cid}+eth0"), "{a} of {cid}");
        }
    }
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!((0..20)
        .map(|n| json!({"containerID": format!("k-{n}"), "ifname": "eth0"}))
        .collect::<Vec<_>>());
    ok(run("GC", &gc, "", ""));
    let left: Vec<String> = std::fs::read_dir(d.path().join("netkill"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("ip-") || n.starts_with("tmp-"))
        .collect();
    assert_eq!(left.len(), 40, "{left:?}");
}

#[test]
fn older_store_layout_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let c = v4("1.1.0", d.path());
    let ips = d.path().join("net1").join("ips");
    std::fs::create_dir_all(&ips).unwrap();
    std::fs::write(
        ips.join("10.55.0.2"),
        r#"{"containerID":"old","ifname":"eth0"}"#,
    )
    .unwrap();
    for cmd in ["ADD", "DEL"] {
        let o = run(cmd, &c, "ctr-1", "eth0");
        assert_eq!(o.json["code"], 101, "{}", o.json);
        let msg = o.json["msg"].as_str().unwrap();
        assert!(msg.contains(&ips.display().to_string()), "{msg}");
    }
    assert!(ips.join("10.55.0.2").exists());
}
