//! `Ipip::ensure` against a real kernel, in a network namespace of its own (never the
//! host's `tunl0`). Where the kernel has IPIP (e.g. under User-Mode Linux), every new
//! namespace has its own `tunl0`: ensure sets its MTU, its tunnel address (replacing a
//! stale one) and brings it up, and a second ensure sends nothing. Where it has none
//! (this project's CI kernel), ensure fails saying to load the module.

use cni_core::netlink::{block_on, Netlink, Underlay};
use cni_core::netns::NetNs;
use cni_core::node::{NodeSide, Peer};
use cni_ipip::node::{Ipip, TUNNEL};

fn me(block: &str) -> Peer {
    Peer {
        name: "me".into(),
        underlay: Some("192.0.2.2".parse().unwrap()),
        blocks: vec![block.parse().unwrap()],
        ..Default::default()
    }
}

#[test]
fn ensure_configures_tunl0_or_says_to_load_ipip() {
    if !nix_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let kit = testkit::Netns::named(&format!("ipipt{}", std::process::id()));
    let ns = NetNs::open(&kit.path()).unwrap();
    let underlay = Underlay {
        index: 1,
        name: "lo".into(),
        addr: "192.0.2.2".parse().unwrap(),
        networks: vec!["192.0.2.2/24".parse().unwrap()],
        mtu: 1500,
    };
    let mut ipip = Ipip::new(underlay, Some(1400), false);
    let has_ipip = std::path::Path::new("/sys/module/ipip").exists();
    block_on(async {
        let nl = Netlink::connect_in(&ns).unwrap();
        match ipip.ensure(&nl, &me("10.9.0.64/26")).await {
            Err(e) => {
                assert!(!has_ipip, "ipip is loaded but ensure failed: {e}");
                assert!(e.to_string().contains("ipip"), "{e}");
                assert!(e.to_string().contains(TUNNEL), "{e}");
            }
            Ok(recreated) => {
                assert!(!recreated);
                let l = nl.link_by_name(TUNNEL).await.unwrap().unwrap();
                assert!(l.up);
                assert_eq!(l.mtu, 1400);
                assert_eq!(
                    nl.addresses(l.index).await.unwrap(),
                    vec!["10.9.0.64/32".parse().unwrap()]
                );
                // A new block: the stale /32 is replaced; a foreign prefix is kept.
                nl.add_address(l.index, "172.31.0.1/24".parse().unwrap())
                    .await
                    .unwrap();
                assert!(!ipip.ensure(&nl, &me("10.9.1.0/26")).await.unwrap());
                let mut have = nl.addresses(l.index).await.unwrap();
                have.sort();
                assert_eq!(
                    have,
                    vec![
                        "10.9.1.0/32".parse().unwrap(),
                        "172.31.0.1/24".parse().unwrap()
                    ]
                );
                assert_eq!(ipip.tunnel, Some(l.index));
                println!("RESULT tunl0 configured");
            }
        }
    })
    .unwrap();
    if !has_ipip {
        println!("RESULT no ipip: refused as expected");
    }
    // The namespace's tunl0 (if any) is shown for the log.
    print!("{}", kit.ip(&["addr"]));
}

fn nix_root() -> bool {
    nix::unistd::geteuid().is_root()
}
