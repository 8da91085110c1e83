//! Interoperability with Debian's reference plugins (containernetworking-plugins 1.1.1,
//! cniVersion up to 1.0.0): `cni-bridge` delegating to the reference `host-local`, and
//! the reference `bridge` delegating to `cni-ipam`. Both give working pods, and DEL
//! releases the address in the other's store.

use conformance::fixture::{assert_attached, assert_detached, TestNet};

fn two_pods(plugin: &str, ipam: &str, tag: &str) {
    conformance::bins::ref_bin("bridge");
    let net = TestNet::new(tag);
    let mut conf = net.conf_with("1.0.0", plugin, ipam);
    // Two addresses: after DEL the third pod only gets one if DEL released it.
    conf.ipam.range_start = Some(net.subnet.host(20).to_string());
    conf.ipam.range_end = Some(net.subnet.host(21).to_string());
    let conf = conf.to_json();

    let a = net.pod();
    let b = net.pod();
    let (raw_a, res_a) = net.add(&a, &conf);
    let (raw_b, res_b) = net.add(&b, &conf);
    let ip_a = assert_attached(&a, &res_a, &net.subnet);
    let ip_b = assert_attached(&b, &res_b, &net.subnet);
    assert_ne!(ip_a.ip(), ip_b.ip());
    if ipam == "host-local" {
        let f = net.data_dir().join(&net.name).join(ip_a.ip().to_string());
        assert!(f.exists(), "host-local reservation {} missing", f.display());
    }
    assert!(a.ping(net.subnet.gateway()), "a cannot ping the gateway");
    assert!(a.ping(ip_b.ip()), "a cannot ping b");
    assert!(b.ping(ip_a.ip()), "b cannot ping a");
    net.check(&a, &conf, &raw_a).expect_ok();

    let c = net.pod();
    net.run("ADD", &c, &conf).expect_err();
    // As a runtime does after a failed ADD (the reference bridge leaves its veth behind).
    net.del(&c, &conf, None);

    net.del(&a, &conf, Some(&raw_a));
    net.del(&a, &conf, Some(&raw_a));
    assert_detached(&a);
    if ipam == "host-local" {
        let f = net.data_dir().join(&net.name).join(ip_a.ip().to_string());
        assert!(
            !f.exists(),
            "host-local reservation {} left after DEL",
            f.display()
        );
    }
    let (raw_c, res_c) = net.add(&c, &conf);
    assert_eq!(assert_attached(&c, &res_c, &net.subnet).ip(), ip_a.ip());
    assert!(c.ping(ip_b.ip()), "c cannot ping b");

    net.del(&b, &conf, Some(&raw_b));
    net.del(&c, &conf, Some(&raw_c));
    assert_detached(&b);
    assert_detached(&c);
}

#[test]
fn cni_bridge_with_reference_host_local() {
    two_pods("cni-bridge", "host-local", "ours+hostlocal");
}

#[test]
fn reference_bridge_with_cni_ipam() {
    two_pods("bridge", "cni-ipam", "ref+cniipam");
}

/// Calibration: the reference pair through the same harness must pass, or the harness
/// is wrong.
#[test]
fn reference_bridge_with_reference_host_local() {
    two_pods("bridge", "host-local", "ref+hostlocal");
}
