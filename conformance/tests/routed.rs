//! `cni-routed` and `cni-ipip` (the same routed veth pod side; `cni-ipip` with 20 bytes
//! less MTU) on this machine, with the reference `host-local` IPAM: the pod has its
//! address as /32 and routes via 169.254.1.1, the host a /32 route on the host veth;
//! pods on one host ping each other (IPv4, and IPv6 for `cni-routed`); MTU; DEL is
//! idempotent and leaves nothing; a failed ADD leaves nothing; CHECK notices a missing
//! host route; and the conformance suite passes. `tunl0` is not needed for any of it.

use std::net::IpAddr;
use std::path::Path;

use conformance::bins::{self, CniPath};
use conformance::fixture::{with_prev, Pod, TestNet};
use conformance::result::{self, ParsedResult};
use conformance::suite::{self, Target};
use conformance::{inspect, sh, try_sh};
use serde_json::{json, Value};

const ROUTED: &str = "cni-routed";
const IPIP: &str = "cni-ipip";
const VERSION: &str = "1.0.0";
/// TEST-NET-2: routed in the pod, never reached.
const EXTRA_ROUTE: &str = "198.51.100.0/24";

// ---- helpers -------------------------------------------------------------------------

/// Encapsulation overhead of each plugin (what its default MTU subtracts).
fn overhead(plugin: &str) -> u32 {
    if plugin == IPIP {
        20
    } else {
        0
    }
}

/// A test network whose `CNI_PATH` holds our binaries and the reference plugins.
fn net(tag: &str, plugin: &str) -> TestNet {
    bins::our_bin(plugin);
    TestNet::with_path(
        tag,
        CniPath::from_dirs(&[bins::our_bin_dir(), bins::ref_bin_dir()]),
    )
}

/// `plugin` with `host-local` on the net's subnet (hosts `.10`..), [`EXTRA_ROUTE`].
fn conf(net: &TestNet, plugin: &str) -> Value {
    json!({
        "cniVersion": VERSION,
        "name": net.name,
        "type": plugin,
        "ipam": {
            "type": "host-local",
            "ranges": [[{
                "subnet": net.subnet.cidr(),
                "rangeStart": net.subnet.host(10).to_string(),
            }]],
            "routes": [{"dst": EXTRA_ROUTE}],
            "dataDir": net.data_dir().display().to_string(),
        },
    })
}

fn add(net: &TestNet, pod: &Pod, conf: &Value) -> (Value, ParsedResult) {
    let raw = net.run("ADD", pod, conf).expect_ok();
    let parsed = result::parse(&raw, VERSION).unwrap_or_else(|e| panic!("bad result: {e}"));
    (raw, parsed)
}

/// The host veth named by the result (the interface without a sandbox).
fn host_veth(res: &ParsedResult) -> String {
    let host: Vec<_> = res
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_none())
        .collect();
    assert_eq!(host.len(), 1, "one host interface in {res:?}");
    host[0].name.clone()
}

/// The host veth name the plugins derive from (network, container id, ifname), as
/// documented in `cni-routed`: `rt` + the low 48 bits of 64-bit FNV-1a over the three
/// joined by a 0xff byte. Computed here from the FNV definition, not by the plugins' code.
fn veth_name(net: &TestNet, pod: &Pod) -> String {
    veth_name_of(&net.name, &pod.container_id, &pod.ifname)
}

fn veth_name_of(network: &str, container_id: &str, ifname: &str) -> String {
    let joined = [
        network.as_bytes(),
        container_id.as_bytes(),
        ifname.as_bytes(),
    ]
    .join(&0xff);
    let h = joined.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("rt{:012x}", h & 0xffff_ffff_ffff)
}

#[test]
fn veth_names_known_values() {
    // FNV-1a 64 of "net\xffcid\xffeth0" is 0x616e9ad5ebe57ab1.
    assert_eq!(veth_name_of("net", "cid", "eth0"), "rt9ad5ebe57ab1");
}

/// The host's IPv4 or IPv6 routes to exactly `ip` (as a host prefix): their devices.
fn host_route_devs(ip: IpAddr) -> Vec<String> {
    let fam = if ip.is_ipv4() { "-4" } else { "-6" };
    let out = sh("ip", &[fam, "-j", "route", "show", "table", "main"]);
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let (a, b) = (
        ip.to_string(),
        format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }),
    );
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["dst"].as_str().is_some_and(|d| d == a || d == b))
        .map(|r| r["dev"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The MTU of `ifname` in `pod`.
fn pod_mtu(pod: &Pod) -> u64 {
    let out = sh(
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
    );
    let v: Value = serde_json::from_str(&out).expect("ip -j link");
    v[0]["mtu"].as_u64().expect("mtu")
}

fn host_mtu(dev: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu"))
        .expect("mtu of host link")
        .trim()
        .parse()
        .expect("mtu")
}

/// The interface of the host's IPv4 default route, if any.
fn default_route_dev() -> Option<String> {
    let out = try_sh("ip", &["-4", "-j", "route", "show", "default"]).ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    v[0]["dev"].as_str().map(String::from)
}

/// Files under `dir` whose content mentions `cid` (the IPAM store of the test).
fn store_mentions(dir: &Path, cid: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(store_mentions(&p, cid));
        } else if std::fs::read_to_string(&p).is_ok_and(|t| t.contains(cid)) {
            out.push(p.display().to_string());
        }
    }
    out
}

/// Asserts the attachment of `res` is in place: /32 on the pod, routes via
/// 169.254.1.1, a host /32 route on the host veth. Returns the pod's IPv4 address.
fn assert_routed(net: &TestNet, pod: &Pod, res: &ParsedResult) -> IpAddr {
    let ip = res.the_ipv4();
    assert_eq!(ip.address.prefix(), 32, "pod address {ip:?}");
    assert_eq!(ip.gateway, Some("169.254.1.1".parse().unwrap()));
    let addr = ip.address.ip();
    let seen: Vec<_> = pod.addrs().into_iter().filter(|a| a.is_ipv4()).collect();
    assert_eq!(seen, vec![ip.address], "addresses of the pod");
    let routes = inspect::routes(&pod.netns);
    let has = |dst: &str, gw: Option<&str>| {
        routes
            .iter()
            .any(|r| r.0 == dst && r.1.as_deref() == gw && r.2 == pod.ifname)
    };
    assert!(has("169.254.1.1", None), "gateway link route: {routes:?}");
    assert!(has("default", Some("169.254.1.1")), "default: {routes:?}");
    assert!(
        has(EXTRA_ROUTE, Some("169.254.1.1")),
        "IPAM route: {routes:?}"
    );
    let veth = host_veth(res);
    assert_eq!(veth, veth_name(net, pod), "host veth name");
    // The host end as the one create request made it (MAC, up) and the settings after
    // it, as the kernel holds them.
    let link = sh("ip", &["-o", "link", "show", "dev", &veth]);
    assert!(
        link.contains("ee:ee:ee:ee:ee:ee") && link.contains(",UP"),
        "host end: {link}"
    );
    let sysctl = |path: String| {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .to_string()
    };
    assert_eq!(
        sysctl(format!("/proc/sys/net/ipv4/conf/{veth}/proxy_arp")),
        "1"
    );
    assert_eq!(
        sysctl(format!("/proc/sys/net/ipv4/neigh/{veth}/proxy_delay")),
        "0"
    );
    let dad = format!("/proc/sys/net/ipv6/conf/{veth}/accept_dad");
    if std::path::Path::new(&dad).exists() {
        assert_eq!(sysctl(dad), "0");
    }
    assert_eq!(host_route_devs(addr), vec![veth], "host route to {addr}");
    addr
}

/// Asserts DEL left nothing of the attachment: pod interface, host veth, host route,
/// IPAM reservation.
fn assert_gone(net: &TestNet, pod: &Pod, veth: &str, ip: IpAddr) {
    if !pod.netns.is_deleted() {
        assert!(!inspect::link_exists_in(&pod.netns, &pod.ifname), "pod if");
    }
    assert!(!inspect::host_link_exists(veth), "{veth} left after DEL");
    assert!(host_route_devs(ip).is_empty(), "host route to {ip} left");
    let left = store_mentions(net.data_dir(), &pod.container_id);
    assert!(left.is_empty(), "IPAM reservation left: {left:?}");
}

/// Deletes a host route on drop (for tests that block an address).
struct RouteGuard(String);

impl Drop for RouteGuard {
    fn drop(&mut self) {
        let _ = try_sh("ip", &["route", "del", &self.0]);
    }
}

// ---- scenarios -----------------------------------------------------------------------

fn two_pods_ping(plugin: &str) {
    let net = net(&format!("{plugin}-ping"), plugin);
    let conf = conf(&net, plugin);
    let a = net.pod();
    let b = net.pod();
    let (raw_a, res_a) = add(&net, &a, &conf);
    let (raw_b, res_b) = add(&net, &b, &conf);
    let ip_a = assert_routed(&net, &a, &res_a);
    let ip_b = assert_routed(&net, &b, &res_b);
    assert_ne!(ip_a, ip_b);
    assert!(a.ping(ip_b), "{ip_a} cannot ping {ip_b}");
    assert!(b.ping(ip_a), "{ip_b} cannot ping {ip_a}");

    // MTU: the underlay's (the default route's interface) minus the overhead.
    if let Some(dev) = default_route_dev() {
        let want = host_mtu(&dev) - u64::from(overhead(plugin));
        assert_eq!(
            pod_mtu(&a),
            want,
            "pod MTU ({dev} minus {})",
            overhead(plugin)
        );
        assert_eq!(host_mtu(&host_veth(&res_a)), want, "host veth MTU");
    }

    net.check(&a, &conf, &raw_a).expect_ok();
    let veth_a = host_veth(&res_a);
    net.del(&a, &conf, Some(&raw_a));
    assert_gone(&net, &a, &veth_a, ip_a);
    net.del(&a, &conf, Some(&raw_a));
    net.del(&a, &conf, None);
    // The other pod is untouched.
    assert_routed(&net, &b, &res_b);
    net.check(&b, &conf, &raw_b).expect_ok();
    let veth_b = host_veth(&res_b);
    net.del(&b, &conf, Some(&raw_b));
    assert_gone(&net, &b, &veth_b, ip_b);
}

fn configured_mtu(plugin: &str) {
    let net = net(&format!("{plugin}-mtu"), plugin);
    let mut conf = conf(&net, plugin);
    conf["mtu"] = json!(1300);
    let pod = net.pod();
    let (raw, res) = add(&net, &pod, &conf);
    assert_eq!(pod_mtu(&pod), 1300);
    assert_eq!(host_mtu(&host_veth(&res)), 1300);
    net.del(&pod, &conf, Some(&raw));

    // The underlay named by underlayInterface.
    if let Some(dev) = default_route_dev() {
        let mut conf = self::conf(&net, plugin);
        conf["underlayInterface"] = json!(dev);
        let pod = net.pod();
        let (raw, _) = add(&net, &pod, &conf);
        assert_eq!(pod_mtu(&pod), host_mtu(&dev) - u64::from(overhead(plugin)));
        net.del(&pod, &conf, Some(&raw));
    }
}

fn failed_add_leaves_nothing(plugin: &str) {
    let net = net(&format!("{plugin}-fail"), plugin);

    // An IPAM plugin that does not exist.
    let mut bad = conf(&net, plugin);
    bad["ipam"]["type"] = json!("no-such-ipam");
    let pod = net.pod();
    net.run("ADD", &pod, &bad).expect_err();
    assert!(!inspect::link_exists_in(&pod.netns, &pod.ifname));
    assert!(!inspect::host_link_exists(&veth_name(&net, &pod)));

    // An underlay interface that does not exist: code 7, before IPAM.
    let mut bad = conf(&net, plugin);
    bad["underlayInterface"] = json!("nosuchif0");
    let e = net.run("ADD", &pod, &bad).expect_code(7);
    assert!(e.msg.contains("underlayInterface"), "{e:?}");
    assert!(!inspect::link_exists_in(&pod.netns, &pod.ifname));
    assert!(store_mentions(net.data_dir(), &pod.container_id).is_empty());

    // A failure after IPAM allocated: the only address of the range is already routed
    // elsewhere on the host (a blackhole), so the host route cannot be added.
    let only = net.subnet.host(50);
    let mut one = conf(&net, plugin);
    one["ipam"]["ranges"] = json!([[{
        "subnet": net.subnet.cidr(),
        "rangeStart": only.to_string(),
        "rangeEnd": only.to_string(),
    }]]);
    let blocker = format!("{only}/32");
    sh("ip", &["route", "add", "blackhole", &blocker]);
    let guard = RouteGuard(blocker);
    let e = net.run("ADD", &pod, &one).expect_err();
    assert!(e.msg.contains(&only.to_string()), "{e:?}");
    assert!(
        !inspect::link_exists_in(&pod.netns, &pod.ifname),
        "pod if left"
    );
    let left = store_mentions(net.data_dir(), &pod.container_id);
    assert!(left.is_empty(), "allocation not released: {left:?}");
    assert!(
        !inspect::host_link_exists(&veth_name(&net, &pod)),
        "host veth left"
    );
    drop(guard);
    let (raw, res) = add(&net, &pod, &one);
    assert_eq!(res.the_ipv4().address.ip(), IpAddr::V4(only));
    assert_routed(&net, &pod, &res);
    net.del(&pod, &one, Some(&raw));
}

fn check_notices_missing_host_route(plugin: &str) {
    let net = net(&format!("{plugin}-check"), plugin);
    let conf = conf(&net, plugin);
    let pod = net.pod();
    let (raw, res) = add(&net, &pod, &conf);
    let ip = assert_routed(&net, &pod, &res);
    net.check(&pod, &conf, &raw).expect_ok();
    let veth = host_veth(&res);
    sh("ip", &["route", "del", &format!("{ip}/32"), "dev", &veth]);
    let e = net.check(&pod, &conf, &raw).expect_err();
    assert!(e.msg.contains(&ip.to_string()), "{e:?}");
    net.del(&pod, &conf, Some(&raw));
    assert_gone(&net, &pod, &veth, ip);
}

fn repeated_add_is_refused(plugin: &str) {
    let net = net(&format!("{plugin}-again"), plugin);
    let conf = conf(&net, plugin);
    let pod = net.pod();
    let (raw, res) = add(&net, &pod, &conf);
    net.run("ADD", &pod, &conf).expect_code(7);
    // The first attachment is intact, its address still reserved.
    assert_routed(&net, &pod, &res);
    assert!(!store_mentions(net.data_dir(), &pod.container_id).is_empty());
    net.check(&pod, &conf, &raw).expect_ok();
    net.del(&pod, &conf, Some(&raw));
}

fn del_after_netns_gone(plugin: &str) {
    let net = net(&format!("{plugin}-gone"), plugin);
    let conf = conf(&net, plugin);
    let mut pod = net.pod();
    let (raw, res) = add(&net, &pod, &conf);
    let ip = assert_routed(&net, &pod, &res);
    let veth = host_veth(&res);
    let path = pod.netns.path();
    pod.netns.delete();
    let inv = net
        .invocation("DEL", &pod, &with_prev(&conf, Some(&raw)))
        .netns(&path);
    inv.run().expect_ok();
    net.del(&pod, &conf, Some(&raw));
    // The kernel destroys a deleted netns asynchronously.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while inspect::host_link_exists(&veth) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_gone(&net, &pod, &veth, ip);
}

fn passes_the_suite(plugin: &str) {
    bins::our_bin(plugin);
    bins::our_bin("cni-ipam");
    let mut t = Target::new(
        plugin,
        "cni-ipam",
        vec![bins::our_bin_dir(), bins::ref_bin_dir()],
    );
    t.template = Some(json!({"type": plugin, "ipMasq": false, "ipam": {"type": "cni-ipam"}}));
    let report = suite::run(&t);
    println!("{}", report.table());
    assert_eq!(report.versions, conformance::VERSIONS.to_vec());
    let failures: Vec<String> = report
        .failures()
        .iter()
        .map(|r| format!("{} {}: {}", r.case, r.version, r.verdict.reason()))
        .collect();
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    let (_, _, skipped) = report.counts();
    assert_eq!(skipped, 0, "{plugin} reports 1.1.0: nothing is skipped");
}

// ---- tests ---------------------------------------------------------------------------

#[test]
fn routed_pods_get_host_routes_and_ping_each_other() {
    two_pods_ping(ROUTED);
}

#[test]
fn ipip_pods_get_host_routes_and_ping_each_other() {
    two_pods_ping(IPIP);
}

#[test]
fn routed_configured_mtu() {
    configured_mtu(ROUTED);
}

#[test]
fn ipip_configured_mtu() {
    configured_mtu(IPIP);
}

#[test]
fn routed_failed_add_leaves_nothing() {
    failed_add_leaves_nothing(ROUTED);
}

#[test]
fn ipip_failed_add_leaves_nothing() {
    failed_add_leaves_nothing(IPIP);
}

#[test]
fn routed_check_notices_missing_host_route() {
    check_notices_missing_host_route(ROUTED);
}

#[test]
fn ipip_check_notices_missing_host_route() {
    check_notices_missing_host_route(IPIP);
}

#[test]
fn routed_repeated_add_is_refused() {
    repeated_add_is_refused(ROUTED);
}

#[test]
fn ipip_repeated_add_is_refused() {
    repeated_add_is_refused(IPIP);
}

#[test]
fn routed_del_after_netns_gone() {
    del_after_netns_gone(ROUTED);
}

#[test]
fn ipip_del_after_netns_gone() {
    del_after_netns_gone(IPIP);
}

/// Dual stack: each pod has a /128 too, routes via the host end's link-local address,
/// and the pods ping each other over IPv6.
#[test]
fn routed_dual_stack_pods_ping_over_ipv6() {
    let net = net("routed-v6", ROUTED);
    let v6 = format!("fdaa:{}:{}::/120", net.subnet.b, net.subnet.c);
    let mut conf = conf(&net, ROUTED);
    conf["ipam"]["ranges"] = json!([[{"subnet": net.subnet.cidr()}], [{"subnet": v6}]]);
    let a = net.pod();
    let b = net.pod();
    let (raw_a, res_a) = add(&net, &a, &conf);
    let (raw_b, res_b) = add(&net, &b, &conf);
    let six = |r: &ParsedResult| {
        let ip = r
            .ips
            .iter()
            .find(|i| i.address.is_ipv6())
            .unwrap_or_else(|| panic!("no IPv6 address in {r:?}"));
        assert_eq!(ip.address.prefix(), 128);
        assert_eq!(
            ip.gateway,
            Some("fe80::ecee:eeff:feee:eeee".parse().unwrap())
        );
        ip.address.ip()
    };
    let (ip_a, ip_b) = (six(&res_a), six(&res_b));
    assert!(a
        .addrs()
        .contains(&ipnetwork::IpNetwork::new(ip_a, 128).unwrap()));
    assert_eq!(host_route_devs(ip_a), vec![host_veth(&res_a)]);
    assert!(a.ping(ip_b), "{ip_a} cannot ping {ip_b}");
    assert!(b.ping(ip_a), "{ip_b} cannot ping {ip_a}");
    net.check(&a, &conf, &raw_a).expect_ok();
    let veth_a = host_veth(&res_a);
    net.del(&a, &conf, Some(&raw_a));
    assert!(host_route_devs(ip_a).is_empty());
    assert!(!inspect::host_link_exists(&veth_a));
    net.del(&b, &conf, Some(&raw_b));
}

#[test]
fn routed_passes_the_suite() {
    passes_the_suite(ROUTED);
}

#[test]
fn ipip_passes_the_suite() {
    passes_the_suite(IPIP);
}
