//! DEL is idempotent and releases the address even when the pod's netns is gone.
//! The range holds a single address, so "released" is observable: a new ADD gets it.

use conformance::fixture::{assert_attached, TestNet};

fn del_after_netns_gone(version: &str) {
    let net = TestNet::new(&format!("delgone{version}"));
    let mut conf = net.conf(version);
    let only = net.subnet.host(10);
    conf.ipam.range_start = Some(only.to_string());
    conf.ipam.range_end = Some(only.to_string());
    let conf = conf.to_json();

    let mut a = net.pod();
    let b = net.pod();
    let (raw_a, res_a) = net.add(&a, &conf);
    assert_eq!(assert_attached(&a, &res_a, &net.subnet).ip(), only);

    // The range is exhausted: b cannot be attached while a holds the address.
    net.run("ADD", &b, &conf).expect_err();
    assert!(b.addrs().is_empty(), "failed ADD left an address in b");
    // As a runtime does after a failed ADD; it must not release a's address.
    net.del(&b, &conf, None);
    net.run("ADD", &b, &conf).expect_err();
    net.del(&b, &conf, None);

    a.netns.delete();
    net.del(&a, &conf, Some(&raw_a));
    net.del(&a, &conf, None);

    let (raw_b, res_b) = net.add(&b, &conf);
    assert_eq!(
        assert_attached(&b, &res_b, &net.subnet).ip(),
        only,
        "address not released"
    );
    net.del(&b, &conf, Some(&raw_b));
}

#[test]
fn del_after_netns_gone_0_3_1() {
    del_after_netns_gone("0.3.1");
}

#[test]
fn del_after_netns_gone_1_0_0() {
    del_after_netns_gone("1.0.0");
}

#[test]
fn del_after_netns_gone_1_1_0() {
    del_after_netns_gone("1.1.0");
}

/// DEL of a container that was never added succeeds (and does not touch the others).
#[test]
fn del_unknown_container_succeeds() {
    let net = TestNet::new("delunknown");
    let conf = net.conf("1.0.0").to_json();
    let a = net.pod();
    let ghost = net.pod();
    let (raw_a, _) = net.add(&a, &conf);
    net.del(&ghost, &conf, None);
    net.check(&a, &conf, &raw_a).expect_ok();
    net.del(&a, &conf, Some(&raw_a));
}
