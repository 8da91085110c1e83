//! Interoperability with the real BIRD 2: BIRD runs in its own network namespace, our
//! speaker in another, joined by a veth pair. BIRD plays the top-of-rack router
//! (eBGP, AS 65000; we are AS 64512).

mod common;

use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bgp::{PeerConfig, RouteEventKind, Speaker, SpeakerConfig, State};
use common::*;
use ipnetwork::IpNetwork;
use testkit::Netns;

const SEC: Duration = Duration::from_secs(1);

/// BIRD, killed on drop.
struct Bird {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bird {
    fn start(ns: &Netns, config: &str) -> Bird {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("bird.conf");
        let socket = dir.path().join("bird.ctl");
        std::fs::write(&conf, config).unwrap();
        let log = File::create(dir.path().join("bird.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("bird (Debian package bird2) must be installed");
        let bird = Bird {
            child,
            socket,
            _dir: dir,
        };
        let end = Instant::now() + 10 * SEC;
        while !bird.birdc(&["show", "status"]).contains("Daemon is up") {
            assert!(Instant::now() < end, "BIRD did not start: {}", bird.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        bird
    }

    fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("bird.log")).unwrap_or_default()
    }

    /// Polls `show route` until `pred` holds for its output.
    fn wait_routes(&self, table: &str, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + within;
        loop {
            let out = self.birdc(&["show", "route", "table", table, "protocol", "ours"]);
            if pred(&out) {
                return out;
            }
            assert!(
                Instant::now() < end,
                "BIRD's {table} not as expected: {out}\n{}",
                self.birdc(&["show", "protocols", "all", "ours"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Our namespace and BIRD's, joined by a veth pair: 10.0.0.1 / 2001:db8:ff::1 (ours),
/// 10.0.0.2 / 2001:db8:ff::2 (BIRD's).
struct Lab {
    ours: Netns,
    bird_ns: Netns,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Lab {
    fn new() -> Lab {
        let id = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let ours = Netns::named(&format!("bgpt-o-{id}"));
        let bird_ns = Netns::named(&format!("bgpt-b-{id}"));
        ours.ip(&[
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth1",
            "netns",
            bird_ns.name(),
        ]);
        for (ns, dev, v4, v6) in [
            (&ours, "veth0", "10.0.0.1/24", "2001:db8:ff::1/64"),
            (&bird_ns, "veth1", "10.0.0.2/24", "2001:db8:ff::2/64"),
        ] {
            ns.ip(&["addr", "add", v4, "dev", dev]);
            ns.ip(&["addr", "add", v6, "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        Lab { ours, bird_ns }
    }

    /// Runs `f` on a runtime whose sockets live in our namespace.
    fn run<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        let path = self.ours.path();
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f);
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    }
}

fn bird_config(statics_v4: &[String]) -> String {
    bird_config_as(statics_v4, 65000, "")
}

/// `bgp_extra` goes into the BGP protocol (e.g. "rr client;").
fn bird_config_as(statics_v4: &[String], asn: u32, bgp_extra: &str) -> String {
    let mut c = String::from(
        "router id 10.0.0.2;\n\
         protocol device { scan time 1; }\n\
         protocol direct { ipv4; ipv6; interface \"veth1\"; }\n",
    );
    c.push_str("protocol static st4 { ipv4;\n");
    for r in statics_v4 {
        let _ = writeln!(c, "  route {r} blackhole;");
    }
    c.push_str("}\n");
    c.push_str(
        "protocol static st6 { ipv6; route 2001:db8:100::/64 blackhole; }\n\
         protocol bgp ours {\n\
           local 10.0.0.2 as ASN;\n\
           neighbor 10.0.0.1 as 64512;\n\
           hold time 9; connect retry time 1; error wait time 1, 3;\n\
           ipv4 { import all; export where source = RTS_STATIC; };\n\
           ipv6 { import all; export where source = RTS_STATIC; next hop address 2001:db8:ff::2; };\n\
           EXTRA\n\
         }\n"
        .replace("ASN", &asn.to_string())
        .replace("EXTRA", bgp_extra)
        .as_str(),
    );
    c
}

fn our_speaker_config() -> SpeakerConfig {
    let mut cfg = SpeakerConfig::new("10.0.0.1".parse().unwrap());
    cfg.listen = SocketAddr::new("::".parse().unwrap(), 179);
    cfg.timers = bgp::Timers {
        connect_retry: SEC,
        max_backoff: 3 * SEC,
        ..bgp::Timers::default()
    };
    cfg.peers = vec![PeerConfig::new("10.0.0.2".parse().unwrap(), 65000)];
    cfg
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

#[test]
fn bird_and_our_speaker_exchange_routes() {
    init_tracing();
    let lab = Lab::new();
    let bird = std::sync::Arc::new(Bird::start(
        &lab.bird_ns,
        &bird_config(&["10.100.0.0/24".into(), "10.100.1.0/24".into()]),
    ));
    let b = bird.clone();
    lab.run(async move {
        let bird = b;
        let (s, mut rx) = Speaker::start(our_speaker_config()).await.unwrap();
        s.announce(net("10.1.0.0/26"), ip("10.0.0.1")).unwrap();
        s.announce(net("10.1.0.64/26"), ip("10.0.0.1")).unwrap();
        s.announce(net("2001:db8:1::/122"), ip("2001:db8:ff::1"))
            .unwrap();

        // We learn BIRD's static routes, with BIRD as next hop (eBGP: next hop self).
        let mut want: Vec<(IpNetwork, IpAddr)> = vec![
            (net("10.100.0.0/24"), ip("10.0.0.2")),
            (net("10.100.1.0/24"), ip("10.0.0.2")),
            (net("2001:db8:100::/64"), ip("2001:db8:ff::2")),
        ];
        while !want.is_empty() {
            let e = wait_event(&mut rx, 20 * SEC, |_| true).await;
            if let RouteEventKind::Learned { prefix, next_hop } = e.kind {
                assert_eq!(e.peer, ip("10.0.0.2"));
                let before = want.len();
                want.retain(|w| *w != (prefix, next_hop));
                assert!(
                    want.len() < before,
                    "unexpected route {prefix} via {next_hop}"
                );
            }
        }
        // Its End-of-RIB for both families, after the routes: the table is complete.
        wait_event(&mut rx, 10 * SEC, |e| e.kind == RouteEventKind::EndOfRib).await;
        // BIRD learns ours, with our next hop.
        let b = bird.clone();
        tokio::task::spawn_blocking(move || {
            let out = b.wait_routes("master4", 10 * SEC, |o| {
                o.contains("10.1.0.0/26") && o.contains("10.1.0.64/26")
            });
            assert!(out.contains("via 10.0.0.1"), "{out}");
            assert!(out.contains("AS64512i"), "{out}");
            b.wait_routes("master6", 10 * SEC, |o| o.contains("2001:db8:1::/122"));
        })
        .await
        .unwrap();
        let st = &s.peers()[0];
        assert_eq!(st.state, State::Established);
        assert_eq!((st.prefixes_sent, st.prefixes_received), (3, 3));

        // A withdraw disappears from BIRD; the other route stays.
        assert!(s.withdraw(net("10.1.0.0/26")));
        let b = bird.clone();
        tokio::task::spawn_blocking(move || {
            b.wait_routes("master4", 10 * SEC, |o| {
                !o.contains("10.1.0.0/26") && o.contains("10.1.0.64/26")
            });
        })
        .await
        .unwrap();

        // Route refresh from BIRD: answered with our table, nothing breaks.
        let b = bird.clone();
        tokio::task::spawn_blocking(move || b.birdc(&["reload", "out", "ours"]))
            .await
            .unwrap();
        // BIRD shuts the session down: PeerDown at once (BIRD does not keep forwarding
        // state, so there is no graceful-restart window).
        let b = bird.clone();
        tokio::task::spawn_blocking(move || b.birdc(&["disable", "ours"]))
            .await
            .unwrap();
        wait_event(&mut rx, 10 * SEC, |e| e.kind == RouteEventKind::PeerDown).await;
        let st = &s.peers()[0];
        assert_ne!(st.state, State::Established);
        assert_eq!((st.flaps, st.prefixes_received), (1, 0));
        s.shutdown().await;
    });
}

/// BIRD as an iBGP route reflector (same AS, we are its client): it takes our routes
/// (empty AS_PATH, LOCAL_PREF) and reflects its own to us.
#[test]
fn bird_as_ibgp_route_reflector() {
    init_tracing();
    let lab = Lab::new();
    let bird = std::sync::Arc::new(Bird::start(
        &lab.bird_ns,
        &bird_config_as(&["10.100.0.0/24".into()], 64512, "rr client;"),
    ));
    let b = bird.clone();
    lab.run(async move {
        let mut cfg = our_speaker_config();
        cfg.peers = vec![PeerConfig::new("10.0.0.2".parse().unwrap(), 64512)];
        let (s, mut rx) = Speaker::start(cfg).await.unwrap();
        s.announce(net("10.1.0.0/26"), ip("10.0.0.1")).unwrap();
        wait_event(&mut rx, 20 * SEC, |e| {
            e.kind
                == RouteEventKind::Learned {
                    prefix: net("10.100.0.0/24"),
                    next_hop: ip("10.0.0.2"),
                }
        })
        .await;
        tokio::task::spawn_blocking(move || {
            b.wait_routes("master4", 10 * SEC, |o| o.contains("10.1.0.0/26"));
            // BIRD's view: internal, our LOCAL_PREF, our next hop, an empty AS path.
            let all = b.birdc(&["show", "route", "all", "10.1.0.0/26"]);
            assert!(all.contains("BGP.local_pref: 100"), "{all}");
            assert!(all.contains("BGP.next_hop: 10.0.0.1"), "{all}");
            assert!(
                all.contains("BGP.as_path: \n") || all.contains("BGP.as_path:\n"),
                "{all}"
            );
        })
        .await
        .unwrap();
        let st = &s.peers()[0];
        assert_eq!((st.state, st.prefixes_sent), (State::Established, 1));
        s.shutdown().await;
    });
}

/// Bench: how long our speaker takes to learn 10,000 prefixes from BIRD.
#[test]
#[ignore = "benchmark: cargo test -p bgp --test bird -- --ignored --nocapture"]
fn bench_learn_10k_prefixes_from_bird() {
    init_tracing();
    const N: usize = 10_000;
    let statics: Vec<String> = (0..N)
        .map(|i| format!("10.{}.{}.0/24", 100 + i / 256, i % 256))
        .collect();
    let lab = Lab::new();
    let pcap = std::env::var("BENCH_PCAP").ok().map(|path| {
        let c = Command::new("ip")
            .args([
                "netns",
                "exec",
                lab.bird_ns.name(),
                "tcpdump",
                "-U",
                "-i",
                "veth1",
                "-w",
                &path,
                "tcp",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(SEC);
        c
    });
    let bird = Bird::start(&lab.bird_ns, &bird_config(&statics));
    // Measure us, not BIRD's start-up: wait until its table holds every static route.
    let end = Instant::now() + 20 * SEC;
    while !bird
        .birdc(&["show", "route", "protocol", "st4", "count"])
        .contains(&format!("{N} of {N} routes"))
    {
        assert!(Instant::now() < end, "BIRD did not load its routes");
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.run(async move {
        let start = Instant::now();
        let (s, mut rx) = Speaker::start(our_speaker_config()).await.unwrap();
        let mut first = None;
        let mut seen = std::collections::HashSet::new();
        while seen.len() < N {
            let e = tokio::time::timeout(60 * SEC, rx.recv())
                .await
                .expect("prefixes stopped coming")
                .expect("events ended");
            if let RouteEventKind::Learned { prefix, .. } = e.kind {
                if prefix.is_ipv4() {
                    first.get_or_insert_with(|| start.elapsed());
                    seen.insert(prefix);
                    if seen.len() % 2000 == 0 && std::env::var_os("BENCH_TRACE").is_some() {
                        println!("{} prefixes at {:?}", seen.len(), start.elapsed());
                    }
                }
            }
        }
        let total = start.elapsed();
        let first = first.unwrap_or_default();
        println!(
            "learned {N} prefixes from BIRD: {:.1} ms from start (connect + OPEN: {:.1} ms; \
             first to last prefix: {:.1} ms)",
            total.as_secs_f64() * 1e3,
            first.as_secs_f64() * 1e3,
            (total - first).as_secs_f64() * 1e3
        );
        assert_eq!(s.peers()[0].prefixes_received, N + 1);
    });
    if let Some(mut c) = pcap {
        std::thread::sleep(Duration::from_millis(300));
        let _ = c.kill();
        let _ = c.wait();
    }
}
