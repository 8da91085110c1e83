//! ipMasq: after ADD the nftables ruleset holds a masquerade rule for the pod's address;
//! after DEL it does not — also when the netns was already gone (the reference plugin
//! leaks its rules in that case).

use conformance::fixture::{assert_attached, TestNet};
use conformance::inspect::masq_rules_for;

#[test]
fn masquerade_rule_follows_the_pod() {
    let net = TestNet::new("masq");
    let mut conf = net.conf("1.0.0");
    conf.ip_masq = true;
    let conf = conf.to_json();

    let a = net.pod();
    let mut b = net.pod();
    let (raw_a, res_a) = net.add(&a, &conf);
    let (raw_b, res_b) = net.add(&b, &conf);
    let ip_a = assert_attached(&a, &res_a, &net.subnet).ip();
    let ip_b = assert_attached(&b, &res_b, &net.subnet).ip();
    assert_eq!(
        masq_rules_for(ip_a).len(),
        1,
        "one masquerade rule for {ip_a}"
    );
    assert_eq!(
        masq_rules_for(ip_b).len(),
        1,
        "one masquerade rule for {ip_b}"
    );
    net.check(&a, &conf, &raw_a).expect_ok();

    net.del(&a, &conf, Some(&raw_a));
    assert!(
        masq_rules_for(ip_a).is_empty(),
        "rule of {ip_a} left after DEL"
    );
    assert_eq!(masq_rules_for(ip_b).len(), 1, "DEL of a removed b's rule");

    b.netns.delete();
    net.del(&b, &conf, Some(&raw_b));
    assert!(
        masq_rules_for(ip_b).is_empty(),
        "rule of {ip_b} left after DEL without netns"
    );
    net.del(&b, &conf, None);
}

#[test]
fn no_masquerade_without_ipmasq() {
    let net = TestNet::new("nomasq");
    let conf = net.conf("1.0.0").to_json();
    let a = net.pod();
    let (raw, res) = net.add(&a, &conf);
    let ip = assert_attached(&a, &res, &net.subnet).ip();
    assert!(
        masq_rules_for(ip).is_empty(),
        "masquerade rule for {ip} without ipMasq"
    );
    net.del(&a, &conf, Some(&raw));
}
