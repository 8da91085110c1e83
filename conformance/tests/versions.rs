//! For every spec version: ADD gives the pod its address (in the version's result
//! shape), the pod pings its gateway and a second pod on the same bridge; CHECK passes
//! and then fails once the address is removed by hand (0.4.0+; refused before); DEL twice
//! succeeds and removes the pod's interface.

use conformance::fixture::{assert_attached, assert_detached, TestNet};
use conformance::inspect;

fn lifecycle(version: &str) {
    let net = TestNet::new(&format!("ver{version}"));
    let a = net.pod();
    let b = net.pod();
    let conf = net.conf(version).to_json();

    let (raw_a, res_a) = net.add(&a, &conf);
    let (raw_b, res_b) = net.add(&b, &conf);
    let ip_a = assert_attached(&a, &res_a, &net.subnet);
    let ip_b = assert_attached(&b, &res_b, &net.subnet);
    assert_ne!(ip_a.ip(), ip_b.ip(), "two pods got the same address");

    // The gateway is on the bridge (isGateway) and is the subnet's first host.
    let gw = net.subnet.gateway();
    if let Some(g) = res_a.the_ipv4().gateway {
        assert_eq!(g, std::net::IpAddr::V4(gw), "gateway in {raw_a}");
    }
    let bridge_addrs = conformance::sh("ip", &["-j", "addr", "show", "dev", &net.bridge]);
    assert!(
        bridge_addrs.contains(&format!("\"{gw}\"")),
        "{gw} not on {}: {bridge_addrs}",
        net.bridge
    );
    if !res_a.interfaces.is_empty() {
        assert!(
            res_a.interfaces.iter().any(|i| i.name == net.bridge),
            "bridge not in {raw_a}"
        );
        let idx = res_a.the_ipv4().interface.expect("ips[].interface");
        assert_eq!(
            res_a.interfaces[idx].name, a.ifname,
            "ips[].interface points at {raw_a}"
        );
    }

    assert!(a.ping(gw), "pod a cannot ping its gateway {gw}");
    assert!(a.ping(ip_b.ip()), "pod a cannot ping pod b {ip_b}");
    assert!(b.ping(ip_a.ip()), "pod b cannot ping pod a {ip_a}");

    if conformance::has_check(version) {
        net.check(&a, &conf, &raw_a).expect_ok();
        inspect::del_addr(&a.netns, &a.ifname, &ip_a);
        net.check(&a, &conf, &raw_a).expect_err();
        // b is untouched.
        net.check(&b, &conf, &raw_b).expect_ok();
    } else {
        // CHECK does not exist before 0.4.0: it must be refused, not faked.
        net.check(&a, &conf, &raw_a).expect_err();
    }

    net.del(&a, &conf, Some(&raw_a));
    net.del(&a, &conf, Some(&raw_a));
    assert_detached(&a);
    net.del(&b, &conf, Some(&raw_b));
    net.del(&b, &conf, None);
    assert_detached(&b);
}

#[test]
fn v0_1_0() {
    lifecycle("0.1.0");
}
#[test]
fn v0_2_0() {
    lifecycle("0.2.0");
}
#[test]
fn v0_3_0() {
    lifecycle("0.3.0");
}
#[test]
fn v0_3_1() {
    lifecycle("0.3.1");
}
#[test]
fn v0_4_0() {
    lifecycle("0.4.0");
}
#[test]
fn v1_0_0() {
    lifecycle("1.0.0");
}
#[test]
fn v1_1_0() {
    lifecycle("1.1.0");
}
