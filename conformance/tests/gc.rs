//! GC (1.1.0) with `cni.dev/valid-attachments` releases exactly the attachments that are
//! not listed — their addresses and their masquerade rules — and nothing else.
//! The range holds 3 addresses so releases and keeps are both observable by ADDs.

use std::collections::HashSet;
use std::net::IpAddr;

use conformance::fixture::{assert_attached, TestNet};
use conformance::inspect::masq_rules_for;

#[test]
fn gc_releases_exactly_the_invalid_attachments() {
    let net = TestNet::new("gc");
    let mut conf = net.conf("1.1.0");
    conf.ip_masq = true;
    conf.ipam.range_start = Some(net.subnet.host(10).to_string());
    conf.ipam.range_end = Some(net.subnet.host(12).to_string());
    let conf = conf.to_json();

    let keep = net.pod();
    let mut lost1 = net.pod();
    let mut lost2 = net.pod();
    let mut ips = Vec::new();
    let mut raws = Vec::new();
    for p in [&keep, &lost1, &lost2] {
        let (raw, res) = net.add(p, &conf);
        let ip = assert_attached(p, &res, &net.subnet).ip();
        assert_eq!(
            masq_rules_for(ip).len(),
            1,
            "masquerade rule for {ip} after ADD"
        );
        ips.push(ip);
        raws.push(raw);
    }
    // The range is full.
    let extra = net.pod();
    net.run("ADD", &extra, &conf).expect_err();

    // The runtime lost two containers; it garbage-collects with only `keep` valid.
    lost1.netns.delete();
    lost2.netns.delete();
    net.gc(&conf, &[&keep]).expect_ok();

    assert_eq!(
        masq_rules_for(ips[0]).len(),
        1,
        "GC removed the rule of a valid attachment"
    );
    assert!(
        masq_rules_for(ips[1]).is_empty(),
        "GC left the rule of {}",
        ips[1]
    );
    assert!(
        masq_rules_for(ips[2]).is_empty(),
        "GC left the rule of {}",
        ips[2]
    );
    net.check(&keep, &conf, &raws[0]).expect_ok();

    // The two released addresses can be handed out again; the kept one cannot.
    let n1 = net.pod();
    let n2 = net.pod();
    let (raw1, r1) = net.add(&n1, &conf);
    let (raw2, r2) = net.add(&n2, &conf);
    let got: HashSet<IpAddr> = [
        assert_attached(&n1, &r1, &net.subnet).ip(),
        assert_attached(&n2, &r2, &net.subnet).ip(),
    ]
    .into();
    assert_eq!(
        got,
        HashSet::from([ips[1], ips[2]]),
        "GC released the wrong addresses"
    );
    net.run("ADD", &extra, &conf).expect_err();
    assert!(
        keep.ping(net.subnet.gateway()),
        "kept pod lost connectivity"
    );

    // GC with everything valid changes nothing.
    net.gc(&conf, &[&keep, &n1, &n2]).expect_ok();
    for (p, raw) in [(&keep, &raws[0]), (&n1, &raw1), (&n2, &raw2)] {
        net.check(p, &conf, raw).expect_ok();
    }

    for (p, raw) in [(&keep, &raws[0]), (&n1, &raw1), (&n2, &raw2)] {
        net.del(p, &conf, Some(raw));
    }
    for ip in &ips {
        assert!(
            masq_rules_for(*ip).is_empty(),
            "rule of {ip} left after DEL"
        );
    }
}
