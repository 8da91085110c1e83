//! Our plugins under containerd 1.6's CRI (Debian's `containerd`), driven the way the
//! kubelet drives it: a containerd of the test's own (socket, root, state, config, CRI
//! `bin_dir`/`conf_dir` in a temp dir; `native` snapshotter, cgroupfs,
//! `restrict_oom_score_adj` because this VM refuses the sandbox's -998), a sandbox image
//! made here from busybox-static (`conformance/cri/pause_image.py`, imported with `ctr`),
//! and a CRI client written here (`conformance/cri/cri_client.py`: Python grpc over
//! `conformance/cri/cri.proto`, the runtime.v1 subset with the upstream field numbers).
//!
//! For `cni-bridge` and `cni-routed`, each with `cni-ipam`, `ipMasq` and the reference
//! `portmap` (cniVersion 1.0.0, the highest containerd 1.6's libcni reads, with
//! `cniVersions` as in the READMEs): Status reports the network ready; two sandboxes run;
//! the IP CRI reports is the one in the sandbox's netns and the one reserved in the
//! store; the pods ping each other; a hostPort of one sandbox answers on 127.0.0.1
//! (busybox httpd in its netns); StopPodSandbox + RemovePodSandbox leave no netns, host
//! veth, reservation, masquerade or portmap rule.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conformance::bins;
use conformance::fixture::TestNet;
use conformance::{inspect, names, sh, try_sh};
use serde_json::{json, Value};

/// Debian's Python (the one with python3-grpcio), not whatever `python3` is first on PATH.
const PYTHON: &str = "/usr/bin/python3";
const PAUSE_IMAGE: &str = "localhost/cni-conformance-pause:1";

fn cri_dir() -> PathBuf {
    bins::workspace_root().join("conformance/cri")
}

/// A containerd of this test's own. Dropping it stops and removes the sandboxes still
/// listed, stops containerd and ends any shim it left.
struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    sandboxes: Vec<String>,
}

impl Containerd {
    fn sock(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// Starts containerd with `conflist` as its only network and `plugins` (paths) in its
    /// CNI bin dir, waits until its CRI answers Status, imports the pause image.
    fn start(conflist: &Value, plugins: &[PathBuf]) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("ctd-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        for sub in ["root", "state", "opt", "cni-bin", "cni-conf"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        for p in plugins {
            let name = p.file_name().expect("plugin name");
            std::os::unix::fs::symlink(p, d.join("cni-bin").join(name)).expect("symlink plugin");
        }
        std::fs::write(
            d.join("cni-conf/10-test.conflist"),
            serde_json::to_string_pretty(conflist).expect("json"),
        )
        .expect("write conflist");
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/cni-conf"
    max_conf_num = 1
"#,
            d = d.display()
        );
        std::fs::write(d.join("config.toml"), config).expect("write config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd (apt-get install containerd)");
        let ctd = Containerd {
            dir,
            child,
            sandboxes: Vec::new(),
        };
        // Ready when its CRI answers (the socket appears before the CRI plugin is up).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match ctd.try_cri("Status", json!({})) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    panic!("containerd's CRI did not answer: {e}\n{}", ctd.log())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        let image = ctd.dir.path().join("pause.tar");
        sh(
            PYTHON,
            &[
                &cri_dir().join("pause_image.py").display().to_string(),
                &image.display().to_string(),
                PAUSE_IMAGE,
            ],
        );
        let sock = ctd.sock().display().to_string();
        sh(
            "ctr",
            &[
                "-a",
                &sock,
                "-n",
                "k8s.io",
                "images",
                "import",
                "--snapshotter",
                "native",
                &image.display().to_string(),
            ],
        );
        ctd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// One CRI call (runtime.v1.RuntimeService/`method`), request and response as
    /// protobuf JSON.
    fn try_cri(&self, method: &str, req: Value) -> Result<Value, String> {
        let mut child = Command::new(PYTHON)
            .arg(cri_dir().join("cri_client.py"))
            .arg(self.sock())
            .arg(method)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("run cri_client.py: {e}"))?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(req.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: cri_client output"))
    }

    fn cri(&self, method: &str, req: Value) -> Value {
        self.try_cri(method, req)
            .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", self.log()))
    }

    /// RunPodSandbox, then PodSandboxStatus: the sandbox's id, CRI's IP and its netns name.
    fn run_pod(&mut self, name: &str, port_mappings: Value) -> Sandbox {
        let uid = names::container_id(name);
        let resp = self.cri(
            "RunPodSandbox",
            json!({"config": {
                "metadata": {"name": name, "uid": uid, "namespace": "conformance"},
                "hostname": name,
                "portMappings": port_mappings,
                "linux": {},
            }}),
        );
        let id = resp["podSandboxId"]
            .as_str()
            .unwrap_or_else(|| panic!("no podSandboxId in {resp}"))
            .to_string();
        self.sandboxes.push(id.clone());
        let st = self.cri(
            "PodSandboxStatus",
            json!({"podSandboxId": id, "verbose": true}),
        );
        assert_eq!(st["status"]["state"], "SANDBOX_READY", "{st}");
        let ip = st["status"]["network"]["ip"]
            .as_str()
            .unwrap_or_else(|| panic!("no IP in {st}"))
            .to_string();
        let info: Value = serde_json::from_str(st["info"]["info"].as_str().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("verbose info: {e}: {st}"));
        let netns_path = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
            .unwrap_or_else(|| panic!("no network namespace in {info}"));
        let netns = Path::new(netns_path)
            .file_name()
            .expect("netns name")
            .to_string_lossy()
            .into_owned();
        Sandbox { id, ip, netns }
    }

    /// StopPodSandbox + RemovePodSandbox.
    fn stop_remove(&mut self, id: &str) {
        self.cri("StopPodSandbox", json!({"podSandboxId": id}));
        self.cri("RemovePodSandbox", json!({"podSandboxId": id}));
        self.sandboxes.retain(|s| s != id);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.sandboxes) {
            let _ = self.try_cri("StopPodSandbox", json!({"podSandboxId": id}));
            let _ = self.try_cri("RemovePodSandbox", json!({"podSandboxId": id}));
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        // Shims of sandboxes that could not be removed outlive containerd: they carry our
        // socket's path on their command line.
        let sock = self.sock().display().to_string();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&sock) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

struct Sandbox {
    id: String,
    ip: String,
    /// Name under /run/netns (containerd's `cni-<uuid>`).
    netns: String,
}

impl Sandbox {
    /// The IPv4 addresses of eth0 in the sandbox, and the host ifindex of its veth peer.
    fn eth0(&self) -> (Vec<String>, u64) {
        let v: Value = serde_json::from_str(&sh(
            "ip",
            &["-n", &self.netns, "-j", "addr", "show", "dev", "eth0"],
        ))
        .expect("ip -j addr");
        let addrs = v[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["family"] == "inet")
            .filter_map(|a| a["local"].as_str().map(String::from))
            .collect();
        (addrs, v[0]["link_index"].as_u64().expect("veth peer index"))
    }

    fn ping(&self, ip: &str) -> bool {
        try_sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.netns,
                "ping",
                "-n",
                "-q",
                "-c",
                "3",
                "-i",
                "0.2",
                "-w",
                "5",
                ip,
            ],
        )
        .is_ok()
    }
}

/// The name of the host link with ifindex `idx`.
fn host_link_name(idx: u64) -> String {
    let v: Value = serde_json::from_str(&sh("ip", &["-j", "link", "show"])).expect("ip -j link");
    v.as_array()
        .into_iter()
        .flatten()
        .find(|l| l["ifindex"].as_u64() == Some(idx))
        .and_then(|l| l["ifname"].as_str())
        .unwrap_or_else(|| panic!("no host link with ifindex {idx}"))
        .to_string()
}

/// busybox httpd serving `token` on port 80 inside a netns; killed on drop.
struct Httpd {
    child: Child,
    _root: tempfile::TempDir,
}

impl Httpd {
    fn start(netns: &str, token: &str) -> Httpd {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("index.html"), token).expect("index.html");
        let child = Command::new("ip")
            .args([
                "netns", "exec", netns, "busybox", "httpd", "-f", "-p", "80", "-h",
            ])
            .arg(root.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("busybox httpd");
        Httpd { child, _root: root }
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET / from 127.0.0.1:`port`, retried until `deadline` (httpd may not listen yet).
fn http_get(port: u16, deadline: Instant) -> Result<String, String> {
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(2),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        match attempt {
            Ok(b) if b.starts_with("HTTP/1") => return Ok(b),
            Ok(b) if Instant::now() > deadline => return Err(format!("answer: {b:?}")),
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn nat_rules() -> String {
    sh("iptables-save", &["-t", "nat"])
}

/// Two sandboxes on `plugin` + `cni-ipam` + `portmap` under containerd's CRI.
fn two_sandboxes(plugin: &str) {
    let tag = format!("ctd-{plugin}");
    let net = TestNet::new(&tag);
    let ipam = json!({"type": "cni-ipam", "ranges": [[{"subnet": net.subnet.cidr()}]],
                      "dataDir": net.data_dir().display().to_string()});
    let main = match plugin {
        "cni-bridge" => json!({"type": plugin, "bridge": net.bridge, "isGateway": true,
                               "ipMasq": true, "ipam": ipam}),
        _ => json!({"type": plugin, "ipMasq": true, "ipam": ipam}),
    };
    let conflist = json!({
        // The form of every example in the READMEs: 1.0.0 for libcni < 1.2 (containerd
        // 1.6 reads nothing newer), the list for libcni >= 1.2, which picks the highest.
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": net.name,
        "plugins": [main, {"type": "portmap", "capabilities": {"portMappings": true}}],
    });
    let plugins = [
        bins::our_bin(plugin),
        bins::our_bin("cni-ipam"),
        bins::ref_bin("portmap"),
        bins::ref_bin("loopback"), // containerd attaches lo through the loopback plugin
    ];
    let mut ctd = Containerd::start(&conflist, &plugins);

    let status = ctd.cri("Status", json!({}));
    for cond in ["RuntimeReady", "NetworkReady"] {
        let c = status["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == cond)
            .unwrap_or_else(|| panic!("no {cond} in {status}"));
        assert_eq!(c["status"], true, "{cond}: {status}");
    }

    let host_port = 20000 + (names::unique_hash(&tag) % 20000) as u16;
    let a = ctd.run_pod(
        "pod-a",
        json!([{"protocol": "TCP", "containerPort": 80, "hostPort": host_port}]),
    );
    let b = ctd.run_pod("pod-b", json!([]));
    let store = net.data_dir().join(&net.name);
    let mut veths = Vec::new();
    for s in [&a, &b] {
        let (addrs, peer) = s.eth0();
        assert_eq!(
            addrs,
            vec![s.ip.clone()],
            "CRI's IP vs the netns {}",
            s.netns
        );
        assert!(
            std::fs::symlink_metadata(store.join(format!("ip-{}", s.ip))).is_ok(),
            "{} not reserved in {}",
            s.ip,
            store.display()
        );
        let ip: std::net::IpAddr = s.ip.parse().expect("ip");
        assert!(
            !inspect::masq_rules_for(ip).is_empty(),
            "no masquerade rule for {ip}"
        );
        veths.push(host_link_name(peer));
    }
    assert_ne!(a.ip, b.ip);
    assert!(a.ping(&b.ip), "{} cannot ping {}", a.ip, b.ip);
    assert!(b.ping(&a.ip), "{} cannot ping {}", b.ip, a.ip);

    assert!(
        nat_rules().contains(&a.id),
        "no portmap rule for sandbox {}",
        a.id
    );
    let token = format!("hello from {}", a.id);
    {
        let _httpd = Httpd::start(&a.netns, &token);
        let answer = http_get(host_port, Instant::now() + Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("hostPort {host_port} did not answer: {e}"));
        assert!(answer.ends_with(&token), "hostPort answer: {answer}");
    }

    for s in [&a, &b] {
        ctd.stop_remove(&s.id);
    }
    let nat = nat_rules();
    for (s, veth) in [&a, &b].iter().zip(&veths) {
        assert!(
            !Path::new("/run/netns").join(&s.netns).exists(),
            "netns {} left",
            s.netns
        );
        assert!(!inspect::host_link_exists(veth), "host veth {veth} left");
        assert!(
            std::fs::symlink_metadata(store.join(format!("ip-{}", s.ip))).is_err(),
            "reservation of {} left",
            s.ip
        );
        let ip: std::net::IpAddr = s.ip.parse().expect("ip");
        assert!(
            inspect::masq_rules_for(ip).is_empty(),
            "masquerade rule for {ip} left"
        );
        assert!(!nat.contains(&s.id), "portmap rule of {} left", s.id);
    }
    drop(ctd);
}

#[test]
fn containerd_cri_cni_bridge() {
    two_sandboxes("cni-bridge");
}

#[test]
fn containerd_cri_cni_routed() {
    two_sandboxes("cni-routed");
}
