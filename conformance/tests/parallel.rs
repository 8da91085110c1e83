//! 64 ADDs at once on distinct containers of one /24 (the bridge does not exist yet, so
//! they also race to create it): 64 distinct addresses, each on its pod; then 64 DELs at
//! once, all successful.

use std::collections::HashSet;

use conformance::fixture::{assert_attached, assert_detached, TestNet};

const N: usize = 64;

#[test]
fn parallel_adds_get_distinct_addresses() {
    let net = TestNet::new("parallel64");
    let conf = net.conf("1.0.0").to_json();
    let pods: Vec<_> = (0..N).map(|_| net.pod()).collect();

    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .map(|p| s.spawn(|| net.run("ADD", p, &conf)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    });
    let mut ips = HashSet::new();
    let mut raws = Vec::new();
    for (p, out) in pods.iter().zip(&results) {
        let raw = out.expect_ok();
        let res = conformance::result::parse(&raw, "1.0.0").expect("result shape");
        let ip = assert_attached(p, &res, &net.subnet);
        assert!(ips.insert(ip.ip()), "{ip} handed out twice");
        raws.push(raw);
    }
    assert_eq!(ips.len(), N);
    assert!(
        !ips.contains(&std::net::IpAddr::V4(net.subnet.gateway())),
        "gateway handed out"
    );

    let dels: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .zip(&raws)
            .map(|(p, raw)| {
                let conf = conformance::fixture::with_prev(&conf, Some(raw));
                let net = &net;
                s.spawn(move || net.run("DEL", p, &conf))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("DEL thread"))
            .collect()
    });
    for (p, out) in pods.iter().zip(&dels) {
        out.expect_ok();
        assert_detached(p);
    }
}
