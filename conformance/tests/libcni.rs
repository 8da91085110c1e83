//! Our plugins under the real libcni: a cnitool-equivalent on libcni 1.1.2 and containerd's
//! go-cni 1.1.7 (Debian's `golang-github-appc-cni-dev` / `golang-github-containerd-go-cni-dev`
//! sources, built here with Debian's Go in GOPATH mode, nothing downloaded; drivers in
//! `conformance/go/`). For every pod-side plugin (`cni-bridge`, `cni-routed`, `cni-vxlan`,
//! `cni-ipip`: its routed veth pod side needs no `tunl0`, so it runs on this kernel) at
//! cniVersion 0.4.0 and 1.0.0 (libcni 1.1 reads nothing newer), chained with the reference
//! `tuning` (MAC), `portmap` (hostPort DNAT), `bandwidth` (ingress and egress: tbf on the
//! host veth and on an ifb) and `firewall` (iptables): ADD gives the pod the result's
//! address, the MAC, the DNAT, the shaping and the forward rules; CHECK passes (up to the
//! reference portmap 1.1.1's own CHECK bug, see below); DEL removes
//! the pod's interface, the host veth and ifb, the reservation, the DNAT and forward rules;
//! a second DEL (no cached result any more) succeeds too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use conformance::bins::{self, CniPath};
use conformance::fixture::{Pod, TestNet};
use conformance::{inspect, names, result, sh};
use serde_json::{json, Value};

const TUNED_MAC: &str = "c2:5a:10:00:00:01";

/// Which libcni-based runtime drives the plugins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runtime {
    /// libcni's own API, as cnitool and podman 4 use it (results in the conflist's version).
    Libcni,
    /// go-cni, containerd's CRI layer (results converted to 1.0.0, interface `eth0`).
    GoCni,
}

// ---- the Go drivers -------------------------------------------------------------------

/// Builds both drivers once per test process into `<target>/go-drivers` (Go's build
/// cache under `<target>/go-cache`, so a rebuild takes about a second).
fn drivers() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = bins::workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let out = target.join("go-drivers");
        std::fs::create_dir_all(&out).expect("create go-drivers dir");
        let gopath = format!(
            "{}:/usr/share/gocode",
            root.join("conformance/go").display()
        );
        for (pkg, bin) in [
            ("cniconformance/libcni-driver", "libcni-driver"),
            ("cniconformance/gocni-driver", "gocni-driver"),
        ] {
            // Build under a private name and rename: another test process may be running
            // the previous binary.
            let tmp = out.join(format!("{bin}.{}", std::process::id()));
            let st = Command::new("go")
                .args(["build", "-o"])
                .arg(&tmp)
                .arg(pkg)
                .env("GO111MODULE", "off")
                .env("GOPATH", &gopath)
                .env("GOCACHE", target.join("go-cache"))
                .env("GOFLAGS", "")
                .stdin(Stdio::null())
                .output()
                .expect("run `go` (apt-get install golang-go)");
            assert!(
                st.status.success(),
                "go build {pkg} failed (needs golang-go golang-github-appc-cni-dev \
                 golang-github-containerd-go-cni-dev): {}",
                String::from_utf8_lossy(&st.stderr)
            );
            std::fs::rename(&tmp, out.join(bin)).expect("rename driver");
        }
        out
    })
}

// ---- one attachment -------------------------------------------------------------------

/// One conflist attached to one pod through one runtime; DELs on drop so a failing test
/// leaves no DNAT, forward rule, ifb or reservation behind.
struct Attachment<'a> {
    net: &'a TestNet,
    pod: &'a Pod,
    runtime: Runtime,
    dir: tempfile::TempDir,
    caps: Value,
}

impl Attachment<'_> {
    fn conflist(&self) -> PathBuf {
        self.dir.path().join("net.conflist")
    }

    fn run(&self, cmd: &str) -> Result<String, String> {
        self.run_with(&self.conflist(), cmd)
    }

    fn run_with(&self, conflist: &Path, cmd: &str) -> Result<String, String> {
        let d = drivers();
        let mut c = match self.runtime {
            Runtime::Libcni => {
                let mut c = Command::new(d.join("libcni-driver"));
                c.arg(cmd)
                    .arg(conflist)
                    .arg(&self.pod.container_id)
                    .arg(self.pod.netns.path())
                    .arg(&self.pod.ifname);
                c
            }
            Runtime::GoCni => {
                let mut c = Command::new(d.join("gocni-driver"));
                c.arg(cmd)
                    .arg(conflist)
                    .arg(&self.pod.container_id)
                    .arg(self.pod.netns.path());
                c
            }
        };
        let out = c
            .env("CNI_PATH", self.net.cni_path.dir())
            .env("CNI_CACHE_DIR", self.dir.path().join("cache"))
            .env("CAP_ARGS", self.caps.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run driver");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{:?} {cmd} failed ({}): {}",
                self.runtime,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for Attachment<'_> {
    fn drop(&mut self) {
        let _ = self.run("DEL");
    }
}

/// The pod-side config of `plugin` on `net` with `cni-ipam` (a range with a gateway).
fn plugin_conf(net: &TestNet, plugin: &str) -> Value {
    let ipam = json!({"type": "cni-ipam", "ranges": [[{"subnet": net.subnet.cidr()}]],
                      "dataDir": net.data_dir().display().to_string()});
    match plugin {
        "cni-bridge" => {
            json!({"type": plugin, "bridge": net.bridge, "isGateway": true, "ipam": ipam})
        }
        // Pod side only: the bridge with the gateway; the VTEP is ipamd's business. `mtu`
        // so the result does not depend on this machine's default route.
        "cni-vxlan" => json!({"type": plugin, "bridge": net.bridge, "mtu": 1450, "ipam": ipam}),
        _ => json!({"type": plugin, "mtu": 1400, "ipam": ipam}),
    }
}

/// (address, host-side interface names) of the pod's attachment, read from the runtime's
/// own result: libcni's in the conflist's version, go-cni's `Result` (converted to 1.0.0).
fn read_result(runtime: Runtime, raw: &str, version: &str, pod: &Pod) -> (String, Vec<String>) {
    let v: Value = serde_json::from_str(raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
    match runtime {
        Runtime::Libcni => {
            let parsed = result::parse(&v, version).unwrap_or_else(|e| panic!("{e}: {raw}"));
            let host = parsed
                .interfaces
                .iter()
                .filter(|i| i.sandbox.is_none())
                .map(|i| i.name.clone())
                .collect();
            (parsed.the_ipv4().address.ip().to_string(), host)
        }
        Runtime::GoCni => {
            let ifaces = v["Interfaces"]
                .as_object()
                .unwrap_or_else(|| panic!("no Interfaces in {raw}"));
            let pod_if = &ifaces[&pod.ifname];
            assert_eq!(
                pod_if["Sandbox"].as_str(),
                Some(pod.netns.path().display().to_string().as_str()),
                "{raw}"
            );
            let ip = pod_if["IPConfigs"][0]["IP"]
                .as_str()
                .unwrap_or_else(|| panic!("no IP for {} in {raw}", pod.ifname));
            let host = ifaces
                .iter()
                .filter(|(_, c)| c["Sandbox"].as_str().unwrap_or("").is_empty())
                .map(|(n, _)| n.clone())
                .collect();
            (ip.to_string(), host)
        }
    }
}

fn iptables_save(table: &str) -> String {
    sh("iptables-save", &["-t", table])
}

fn mac_of(pod: &Pod) -> String {
    let v: Value = serde_json::from_str(&sh(
        "ip",
        &[
            "-n",
            pod.netns.name(),
            "-j",
            "link",
            "show",
            "dev",
            &pod.ifname,
        ],
    ))
    .expect("ip -j link");
    v[0]["address"].as_str().unwrap_or("").to_string()
}

fn has_tbf(dev: &str) -> bool {
    sh("tc", &["qdisc", "show", "dev", dev]).contains("tbf")
}

/// ADD / CHECK / DEL / DEL of `plugin` + tuning + portmap + bandwidth + firewall.
fn chain(runtime: Runtime, plugin: &str, version: &str) {
    bins::our_bin(plugin);
    bins::ref_bin("firewall");
    let tag = format!("libcni-{plugin}-{version}");
    let net = TestNet::with_path(
        &tag,
        CniPath::from_dirs(&[bins::our_bin_dir(), bins::ref_bin_dir()]),
    );
    let pod = net.pod();
    let host_port = 20000 + (names::unique_hash(&tag) % 20000) as u16;
    let att = Attachment {
        net: &net,
        pod: &pod,
        runtime,
        dir: tempfile::tempdir().expect("tempdir"),
        caps: json!({
            "portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 80_000,
                          "egressRate": 8_000_000, "egressBurst": 80_000},
        }),
    };
    let list = json!({
        "cniVersion": version,
        "name": net.name,
        "plugins": [
            plugin_conf(&net, plugin),
            {"type": "tuning", "mac": TUNED_MAC},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}},
            {"type": "firewall", "backend": "iptables"},
        ]
    });
    std::fs::write(att.conflist(), list.to_string()).expect("write conflist");

    // ADD
    let raw = att.run("ADD").unwrap_or_else(|e| panic!("{e}"));
    let (ip, host_ifs) = read_result(runtime, &raw, version, &pod);
    let in_ns: Vec<String> = pod
        .addrs()
        .iter()
        .filter(|a| a.is_ipv4())
        .map(|a| a.ip().to_string())
        .collect();
    assert_eq!(
        in_ns,
        vec![ip.clone()],
        "address in the netns vs result {raw}"
    );
    let store = net.data_dir().join(&net.name).join(format!("ip-{ip}"));
    assert!(
        std::fs::symlink_metadata(&store).is_ok(),
        "{} not reserved",
        store.display()
    );
    assert_eq!(mac_of(&pod), TUNED_MAC, "tuning's MAC");
    assert!(
        iptables_save("nat").contains(&pod.container_id),
        "no portmap DNAT for {}",
        pod.container_id
    );
    let fw = format!("{ip}/32");
    assert!(
        iptables_save("filter").contains(&fw),
        "no firewall rule for {fw}"
    );
    // The host veth (tbf for ingress) and bandwidth's ifb (tbf for egress); the bridge
    // of the bridge plugins stays, everything else is this pod's.
    let pod_host_ifs: Vec<&String> = host_ifs.iter().filter(|n| **n != net.bridge).collect();
    assert_eq!(pod_host_ifs.len(), 2, "host veth and ifb in {raw}");
    for dev in &pod_host_ifs {
        assert!(has_tbf(dev), "no tbf qdisc on {dev}");
    }

    // CHECK runs the chain in order and stops at the first failure. The reference portmap
    // 1.1.1 then fails on its own whenever ip6tables works: it looks for its DNAT chain in
    // ip6tables too although it made only the IPv4 one (fixed in plugins v1.3.0). That
    // error means our plugin and tuning before it passed; the chain without portmap must
    // pass all of CHECK (our plugin, tuning, bandwidth, firewall).
    match att.run("CHECK") {
        Ok(_) => {}
        Err(e) if e.contains("could not check ipv6 dnat: chain CNI-DN-") => {
            eprintln!("reference portmap 1.1.1 CHECK bug: {e}");
        }
        Err(e) => panic!("{e}"),
    }
    let mut no_portmap = list.clone();
    no_portmap["plugins"]
        .as_array_mut()
        .expect("plugins")
        .retain(|p| p["type"] != "portmap");
    let no_portmap_path = att.dir.path().join("no-portmap.conflist");
    std::fs::write(&no_portmap_path, no_portmap.to_string()).expect("write conflist");
    att.run_with(&no_portmap_path, "CHECK")
        .unwrap_or_else(|e| panic!("CHECK without portmap: {e}"));

    // DEL, and once more with nothing left (no cached result either)
    att.run("DEL").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !inspect::link_exists_in(&pod.netns, &pod.ifname),
        "{} still in the pod",
        pod.ifname
    );
    for dev in &pod_host_ifs {
        assert!(!inspect::host_link_exists(dev), "{dev} left after DEL");
    }
    assert!(
        std::fs::symlink_metadata(&store).is_err(),
        "{} left after DEL",
        store.display()
    );
    assert!(
        !iptables_save("nat").contains(&pod.container_id),
        "portmap DNAT left after DEL"
    );
    assert!(
        !iptables_save("filter").contains(&fw),
        "firewall rule for {fw} left after DEL"
    );
    att.run("DEL").unwrap_or_else(|e| panic!("second DEL: {e}"));
}

macro_rules! cases {
    ($($name:ident: $rt:ident, $plugin:literal, $version:literal;)*) => {
        $(
            #[test]
            fn $name() {
                chain(Runtime::$rt, $plugin, $version);
            }
        )*
    };
}

cases! {
    libcni_bridge_040: Libcni, "cni-bridge", "0.4.0";
    libcni_bridge_100: Libcni, "cni-bridge", "1.0.0";
    libcni_routed_040: Libcni, "cni-routed", "0.4.0";
    libcni_routed_100: Libcni, "cni-routed", "1.0.0";
    libcni_vxlan_040: Libcni, "cni-vxlan", "0.4.0";
    libcni_vxlan_100: Libcni, "cni-vxlan", "1.0.0";
    libcni_ipip_040: Libcni, "cni-ipip", "0.4.0";
    libcni_ipip_100: Libcni, "cni-ipip", "1.0.0";
    gocni_bridge_040: GoCni, "cni-bridge", "0.4.0";
    gocni_bridge_100: GoCni, "cni-bridge", "1.0.0";
    gocni_routed_040: GoCni, "cni-routed", "0.4.0";
    gocni_routed_100: GoCni, "cni-routed", "1.0.0";
    gocni_vxlan_040: GoCni, "cni-vxlan", "0.4.0";
    gocni_vxlan_100: GoCni, "cni-vxlan", "1.0.0";
    gocni_ipip_040: GoCni, "cni-ipip", "0.4.0";
    gocni_ipip_100: GoCni, "cni-ipip", "1.0.0";
}
