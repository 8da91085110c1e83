//! What a human or a runtime sees at the plugin's edge, outside ADD/DEL proper:
//! `--version` (every plugin: name, version, spec versions, exit 0, as the reference's
//! `--version`; `ipamd`, `cni-bench`, `cni-conformance`: name and version), and `CNI_ARGS` keys (CONVENTIONS.md: unknown keys refused unless
//! `IgnoreUnknown=1`; the keys kubelet/containerd/podman pass always accepted).

use std::process::Command;

use conformance::bins;
use conformance::fixture::TestNet;

/// The plugin binaries (the skeleton's edge is the same in each).
const PLUGINS: [&str; 5] = [
    "cni-bridge",
    "cni-vxlan",
    "cni-routed",
    "cni-ipip",
    "cni-ipam",
];

#[test]
fn version_flag_prints_name_version_and_spec_versions() {
    for name in PLUGINS {
        let o = Command::new(bins::our_bin(name))
            .arg("--version")
            .env_clear()
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{name} --version: {o:?}");
        assert!(
            out.starts_with(&format!("{name} {}: ", env!("CARGO_PKG_VERSION"))),
            "{name}: no version: {out}"
        );
        assert!(
            out.contains(
                "CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
            ),
            "{name}: {out}"
        );
    }
    // The other binaries (clap): name and version, nothing else, exit 0.
    for (name, bin) in [
        ("ipamd", bins::our_bin("ipamd")),
        ("cni-bench", env!("CARGO_BIN_EXE_cni-bench").into()),
        (
            "cni-conformance",
            env!("CARGO_BIN_EXE_cni-conformance").into(),
        ),
    ] {
        let o = Command::new(bin)
            .arg("--version")
            .env_clear()
            .output()
            .unwrap();
        assert!(o.status.success(), "{name} --version: {o:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("{name} {}\n", env!("CARGO_PKG_VERSION")),
            "{name}"
        );
    }
    // Without CNI_COMMAND (and without --version) a runtime still gets error 4.
    let o = Command::new(bins::our_bin("cni-bridge"))
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"code\":4"));
}

#[test]
fn unknown_cni_args_refused_unless_ignore_unknown() {
    let net = TestNet::new("cliargs");
    let conf = net.ours("1.0.0").to_json();
    let pod = net.pod();

    // An unknown key: refused before anything is made, naming the key.
    let e = net
        .invocation("ADD", &pod, &conf)
        .args("K8S_POD_NAME=web;FOO=bar")
        .run()
        .expect_err();
    assert_eq!(e.code, 4, "{e:?}");
    assert!(
        e.msg.contains("FOO") && e.msg.contains("IgnoreUnknown"),
        "{e:?}"
    );
    assert!(
        !e.msg.contains("K8S_POD_NAME\""),
        "known key named as unknown: {e:?}"
    );
    assert!(pod.addrs().is_empty(), "refused ADD configured the pod");

    // What containerd's CRI passes (no IgnoreUnknown): accepted.
    let cri = format!(
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=1234",
        pod.container_id
    );
    let ok = net
        .invocation("ADD", &pod, &conf)
        .args(&cri)
        .run()
        .expect_ok();
    assert!(ok["ips"][0]["address"].is_string(), "{ok}");
    net.invocation("DEL", &pod, &conf)
        .args(&cri)
        .run()
        .expect_ok();

    // IgnoreUnknown=1 (podman, CRI-O): unknown keys pass.
    let args = "IgnoreUnknown=1;K8S_POD_NAME=web;FOO=bar";
    net.invocation("ADD", &pod, &conf)
        .args(args)
        .run()
        .expect_ok();
    net.invocation("DEL", &pod, &conf)
        .args(args)
        .run()
        .expect_ok();
    // DEL refuses unknown keys too (as the reference does), with the same code.
    let e = net
        .invocation("DEL", &pod, &conf)
        .args("FOO=bar")
        .run()
        .expect_err();
    assert_eq!(e.code, 4, "{e:?}");
}

/// A plugin whose stdout is a pipe nobody reads any more ends with an error status, not
/// killed by SIGPIPE: the plugins start through a C `main` (cni_core::plugin_main!), not
/// std's runtime, so the skeleton ignores SIGPIPE itself (the child starts with the
/// default disposition: std's `Command` resets it).
#[test]
fn closed_stdout_is_an_error_exit_not_sigpipe() {
    use std::os::unix::process::ExitStatusExt;
    for name in PLUGINS {
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let status = Command::new(bins::our_bin(name))
            .env_clear()
            .env("CNI_COMMAND", "VERSION")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(write))
            .status()
            .unwrap();
        assert_eq!(status.signal(), None, "{name} was killed: {status:?}");
        assert_eq!(status.code(), Some(1), "{name}: {status:?}");
    }
}
