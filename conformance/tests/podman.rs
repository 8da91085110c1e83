//! A real runtime: podman (libcni) with its CNI backend runs a container on a
//! `cni-bridge` network: the container gets an address of our `cni-ipam` range and
//! reaches its gateway; once the container is removed the address is free again (the
//! range holds a single address, which a second container gets).
//!
//! Everything is private to the test: containers.conf (pointed to by CONTAINERS_CONF),
//! the plugin dir, the network config dir, podman's storage (`--root`/`--runroot`) and a
//! busybox-static root file system (`--rootfs`, no image is pulled). When podman is not
//! installed, or cannot run a container at all here (checked with `--network none`), the
//! test says so loudly and returns: that is an environment problem, not the plugin's.

use std::path::Path;
use std::process::Command;

use conformance::bins;
use conformance::fixture::TestNet;
use serde_json::json;

fn which(p: &str) -> Option<std::path::PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(p))
        .find(|p| p.is_file())
}

fn busybox_root(dir: &Path) {
    let bb = which("busybox").expect("busybox-static is needed (apt-get install busybox-static)");
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "run"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(&bb, dir.join("bin/busybox")).unwrap();
    for l in ["sh", "ip", "ping", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(l)).unwrap();
    }
}

struct Podman {
    conf: std::path::PathBuf,
    root: std::path::PathBuf,
    runroot: std::path::PathBuf,
}

impl Podman {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .args(["--root"])
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(["--runtime", "/usr/sbin/runc", "--cgroup-manager=cgroupfs"])
            .args(args)
            .output()
            .expect("run podman")
    }
}

#[test]
fn podman_runs_a_container_on_cni_bridge() {
    if which("podman").is_none() || !Path::new("/usr/sbin/runc").is_file() {
        eprintln!("\n!!!!! SKIPPED podman_runs_a_container_on_cni_bridge: podman or /usr/sbin/runc not installed !!!!!\n");
        return;
    }
    let net = TestNet::new("podman");
    let tmp = tempfile::Builder::new()
        .prefix("cni-podman-")
        .tempdir()
        .unwrap();
    let t = tmp.path();
    let (plugins, netconf, rootfs) = (t.join("plugins"), t.join("net.d"), t.join("rootfs"));
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&netconf).unwrap();
    for b in bins::OURS {
        std::os::unix::fs::symlink(bins::our_bin(b), plugins.join(b)).unwrap();
    }
    busybox_root(&rootfs);
    let conf = t.join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"{}\"]\nnetwork_config_dir = \"{}\"\n",
            plugins.display(),
            bins::ref_bin_dir().display(),
            netconf.display()
        ),
    )
    .unwrap();
    let ipam_dir = net.data_dir();
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": net.name,
        "plugins": [{
            "type": "cni-bridge", "bridge": net.bridge, "isGateway": true,
            // One address: the second container only gets it if removing the first freed it.
            "ipam": {"type": "cni-ipam", "ranges": [[{"subnet": net.subnet.cidr(),
                        "rangeStart": net.subnet.host(20).to_string(),
                        "rangeEnd": net.subnet.host(20).to_string()}]],
                     "dataDir": ipam_dir.display().to_string()}
        }]
    });
    std::fs::write(
        netconf.join(format!("{}.conflist", net.name)),
        serde_json::to_vec_pretty(&conflist).unwrap(),
    )
    .unwrap();
    let pm = Podman {
        conf,
        root: t.join("root"),
        runroot: t.join("runroot"),
    };
    let rootfs_s = rootfs.display().to_string();
    let common = [
        "run",
        "--rm",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];

    // Can podman run a container at all here (no network involved)?
    let mut a: Vec<&str> = common.to_vec();
    a.extend([
        "--network",
        "none",
        "--rootfs",
        &rootfs_s,
        "sh",
        "-c",
        "echo ok",
    ]);
    let o = pm.run(&a);
    if !o.status.success() {
        eprintln!(
            "\n!!!!! SKIPPED podman_runs_a_container_on_cni_bridge: podman cannot run a container \
             here even without a network ({}):\n{}{}\n!!!!!\n",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        return;
    }

    let gw = net.subnet.gateway().to_string();
    let script = format!("ip -4 addr show eth0; ping -c1 -W2 {gw}");
    let mut a: Vec<&str> = common.to_vec();
    a.extend([
        "--network",
        &net.name,
        "--rootfs",
        &rootfs_s,
        "sh",
        "-c",
        &script,
    ]);
    let o = pm.run(&a);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "podman run on {} failed ({}):\n{out}\n{err}",
        net.name,
        o.status
    );
    let addr = out
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("inet ")
                .and_then(|r| r.split('/').next())
        })
        .unwrap_or_else(|| panic!("no IPv4 address in the container:\n{out}"));
    let ip: std::net::Ipv4Addr = addr.parse().unwrap();
    assert!(
        net.subnet.contains(ip),
        "{ip} is not in {}:\n{out}",
        net.subnet.cidr()
    );
    assert!(
        out.contains("1 packets received"),
        "the container did not reach {gw}:\n{out}"
    );

    // --rm removed the container, so podman ran DEL: nothing of it is left in the store.
    let mut leftovers = Vec::new();
    let mut stack = vec![ipam_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            // The allocation cursor remembers the last address handed out: not a reservation.
            if name.starts_with("cursor") || name.starts_with("last_reserved") || name == "lock" {
                continue;
            }
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            // Store entries are symlinks (`ip-<addr>` -> owner, `key-...` -> allocation JSON);
            // host-local-style stores hold plain files named by the address.
            let mentions = std::fs::read_link(&p)
                .map(|t| t.to_string_lossy().into_owned())
                .or_else(|_| std::fs::read_to_string(&p))
                .is_ok_and(|s| s.contains(addr));
            if is_dir {
                stack.push(p);
            } else if mentions || name == addr || name == format!("ip-{addr}") {
                leftovers.push(p.display().to_string());
            }
        }
    }
    let reserved: Vec<_> = std::fs::read_dir(ipam_dir.join(&net.name))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ip-"))
        .map(|e| e.path())
        .collect();
    assert!(
        leftovers.is_empty() && reserved.is_empty(),
        "{addr} still reserved after the container was removed: {leftovers:?} {reserved:?}"
    );
    // And the address is handed out again: a second container gets the same one.
    let mut a: Vec<&str> = common.to_vec();
    a.extend([
        "--network",
        &net.name,
        "--rootfs",
        &rootfs_s,
        "sh",
        "-c",
        "ip -4 addr show eth0",
    ]);
    let o = pm.run(&a);
    let out2 = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "second podman run failed:\n{out2}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out2.contains(&format!("inet {addr}/")),
        "the freed {addr} was not handed out again:\n{out2}"
    );
}
