//! Malformed invocations get the spec's error codes (a JSON error object on stdout and a
//! non-zero exit), from both binaries, and change nothing.

use conformance::fixture::{Pod, TestNet};
use conformance::runner::Invocation;
use serde_json::{json, Value};

const PLUGINS: [&str; 2] = ["cni-bridge", "cni-ipam"];

fn inv(net: &TestNet, plugin: &str, pod: &Pod, conf: &Value) -> Invocation {
    let mut conf = conf.clone();
    conf["type"] = json!(plugin);
    net.invocation("ADD", pod, &conf)
}

/// Nothing was created: no bridge, no address in the pod.
fn assert_untouched(net: &TestNet, pod: &Pod) {
    assert!(
        !conformance::inspect::host_link_exists(&net.bridge),
        "bridge created by a failed call"
    );
    assert!(
        !conformance::inspect::link_exists_in(&pod.netns, "eth0"),
        "eth0 created by a failed call"
    );
}

#[test]
fn bad_environment_is_code_4() {
    let net = TestNet::new("badenv");
    let pod = net.pod();
    let conf = net.ours("1.0.0").to_json();
    for plugin in PLUGINS {
        let base = inv(&net, plugin, &pod, &conf);
        let mut cases: Vec<(&str, Invocation)> = Vec::new();
        let mut i = base.clone();
        i.command = None;
        cases.push(("missing CNI_COMMAND", i));
        let mut i = base.clone();
        i.command = Some(String::new());
        cases.push(("empty CNI_COMMAND", i));
        let mut i = base.clone();
        i.command = Some("FROB".into());
        cases.push(("unknown CNI_COMMAND", i));
        let mut i = base.clone();
        i.netns = None;
        cases.push(("ADD without CNI_NETNS", i));
        let mut i = base.clone();
        i.container_id = None;
        cases.push(("ADD without CNI_CONTAINERID", i));
        let mut i = base.clone();
        i.ifname = None;
        cases.push(("ADD without CNI_IFNAME", i));
        for bad_id in [
            "-leading-dash",
            "has/slash",
            "sp ace",
            "semi;colon",
            "ünïcode",
        ] {
            cases.push(("invalid container id", base.clone().container_id(bad_id)));
        }
        for bad_if in ["0123456789abcdef", "eth/0", "eth 0", ".", "..", "a:b"] {
            cases.push(("invalid ifname", base.clone().ifname(bad_if)));
        }
        for (what, i) in cases {
            let e = i.run().expect_err();
            assert_eq!(e.code, 4, "{plugin}: {what}: {e:?}");
        }
    }
    assert_untouched(&net, &pod);
}

#[test]
fn bad_json_is_code_6() {
    let net = TestNet::new("badjson");
    let pod = net.pod();
    let conf = net.ours("1.0.0").to_json();
    for plugin in PLUGINS {
        for stdin in [
            "{not json",
            "",
            "[1,2",
            "{\"cniVersion\": \"1.0.0\", \"name\": ",
        ] {
            let e = inv(&net, plugin, &pod, &conf)
                .raw_stdin(stdin)
                .run()
                .expect_err();
            assert_eq!(e.code, 6, "{plugin}: stdin {stdin:?}: {e:?}");
        }
    }
    assert_untouched(&net, &pod);
}

#[test]
fn missing_name_or_type_is_code_7() {
    let net = TestNet::new("badconf");
    let pod = net.pod();
    for plugin in PLUGINS {
        for key in ["name", "type"] {
            let mut conf = net.ours("1.0.0").to_json();
            conf["type"] = json!(plugin);
            conf.as_object_mut().unwrap().remove(key);
            let ty = plugin;
            let e = Invocation::new(net.cni_path.plugin(ty), "ADD", net.cni_path.dir())
                .container_id(&pod.container_id)
                .ifname(&pod.ifname)
                .netns(pod.netns.path())
                .config(&conf)
                .run()
                .expect_err();
            assert_eq!(e.code, 7, "{plugin}: missing {key}: {e:?}");
        }
    }
    assert_untouched(&net, &pod);
}

#[test]
fn unsupported_version_is_code_1() {
    let net = TestNet::new("badver");
    let pod = net.pod();
    let conf = net.ours("9.9.9").to_json();
    for plugin in PLUGINS {
        for cmd in ["ADD", "DEL", "CHECK"] {
            let mut i = inv(&net, plugin, &pod, &conf);
            i.command = Some(cmd.into());
            let e = i.run().expect_err();
            assert_eq!(e.code, 1, "{plugin} {cmd}: {e:?}");
        }
    }
    assert_untouched(&net, &pod);
}

#[test]
fn version_command_lists_every_version() {
    let net = TestNet::new("version");
    for plugin in PLUGINS {
        let out = Invocation::new(net.cni_path.plugin(plugin), "VERSION", net.cni_path.dir())
            .raw_stdin(r#"{"cniVersion":"1.1.0"}"#)
            .run()
            .expect_ok();
        let supported: Vec<&str> = out["supportedVersions"]
            .as_array()
            .unwrap_or_else(|| panic!("{plugin}: no supportedVersions in {out}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for v in conformance::VERSIONS {
            assert!(supported.contains(&v), "{plugin}: {v} missing from {out}");
        }
        assert!(out["cniVersion"].is_string(), "{plugin}: {out}");
    }
}

#[test]
fn status_is_ready() {
    let net = TestNet::new("status");
    let conf = net.ours("1.1.0").to_json();
    for plugin in PLUGINS {
        let mut conf = conf.clone();
        conf["type"] = json!(plugin);
        let out = Invocation::new(net.cni_path.plugin(plugin), "STATUS", net.cni_path.dir())
            .config(&conf)
            .run();
        out.expect_ok();
    }
}
