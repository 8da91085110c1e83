//! The cases. Each returns `Ok(())` (pass), `Err(reason)` (fail) or
//! `Err("SKIP: reason")`. Cases never panic on a plugin's behaviour (the CLI is built
//! with `panic = "abort"`); the fixtures' guards clean up whatever happens.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{json, Value};

use super::{Case, Ctx, Scope, EXTRA_ROUTE};
use crate::fixture::{with_prev, Pod};
use crate::result::{self, ParsedResult};
use crate::snapshot;
use crate::{inspect, try_sh};
use cni_runtime::{Invocation, Outcome};

pub const VERSION_RULE: &str = "§Version: VERSION prints cniVersion + supportedVersions";

pub static CASES: &[Case] = &[
    Case {
        name: "version",
        rule: VERSION_RULE,
        scope: Scope::Once,
        run: version,
    },
    Case {
        name: "add-result",
        rule: "§ADD, §Result types: result of the requested version; interfaces with sandbox, ips[].interface, routes, dns",
        scope: Scope::PerVersion { min: "0.1.0" },
        run: add_result,
    },
    Case {
        name: "add-prevresult",
        rule: "§ADD: a plugin given prevResult MUST pass it through or modify it appropriately",
        scope: Scope::PerVersion { min: "0.3.0" },
        run: add_prevresult,
    },
    Case {
        name: "check-after-add",
        rule: "§CHECK: passes on an intact attachment",
        scope: Scope::PerVersion { min: "0.4.0" },
        run: check_after_add,
    },
    Case {
        name: "check-route-implicit-gw",
        rule: "§CHECK: passes on an intact attachment whose route has no gw (IPAM's gateway implied)",
        scope: Scope::PerVersion { min: "0.4.0" },
        run: check_route_implicit_gw,
    },
    Case {
        name: "check-removed-address",
        rule: "§CHECK: an error when an address of prevResult is missing",
        scope: Scope::PerVersion { min: "0.4.0" },
        run: check_removed_address,
    },
    Case {
        name: "check-removed-route",
        rule: "§CHECK: an error when a route of prevResult is missing",
        scope: Scope::PerVersion { min: "0.4.0" },
        run: check_removed_route,
    },
    Case {
        name: "check-removed-interface",
        rule: "§CHECK: an error when the interface is missing",
        scope: Scope::PerVersion { min: "0.4.0" },
        run: check_removed_interface,
    },
    Case {
        name: "del-twice",
        rule: "§DEL: removes the attachment; a second DEL succeeds",
        scope: Scope::PerVersion { min: "0.1.0" },
        run: del_twice,
    },
    Case {
        name: "del-no-prevresult",
        rule: "§DEL: succeeds and releases without prevResult",
        scope: Scope::PerVersion { min: "0.1.0" },
        run: del_no_prevresult,
    },
    Case {
        name: "del-netns-gone",
        rule: "§DEL: succeeds when the netns is gone (stale CNI_NETNS, then none), twice",
        scope: Scope::PerVersion { min: "0.1.0" },
        run: del_netns_gone,
    },
    Case {
        name: "del-cleanup",
        rule: "§DEL: every resource ADD created is released (links, addrs, routes, neigh, fdb, nft, store)",
        scope: Scope::PerVersion { min: "0.1.0" },
        run: del_cleanup,
    },
    Case {
        name: "del-cleanup-netns-gone",
        rule: "§DEL: every resource is released also when the netns is gone (ipMasq on)",
        scope: Scope::PerVersion { min: "0.1.0" },
        run: del_cleanup_netns_gone,
    },
    Case {
        name: "env-missing",
        rule: "§Parameters, §Error codes: missing CNI_COMMAND/CONTAINERID/NETNS/IFNAME -> 4",
        scope: Scope::Once,
        run: env_missing,
    },
    Case {
        name: "env-malformed",
        rule: "§Parameters, §Error codes: unknown CNI_COMMAND, bad container id/ifname -> 4",
        scope: Scope::Once,
        run: env_malformed,
    },
    Case {
        name: "bad-json",
        rule: "§Error codes: config that cannot be decoded -> 6",
        scope: Scope::Once,
        run: bad_json,
    },
    Case {
        name: "unsupported-version",
        rule: "§Error codes: incompatible cniVersion -> 1",
        scope: Scope::Once,
        run: unsupported_version,
    },
    Case {
        name: "gc",
        rule: "§GC: keeps cni.dev/valid-attachments, releases the rest",
        scope: Scope::PerVersion { min: "1.1.0" },
        run: gc,
    },
    Case {
        name: "status",
        rule: "§STATUS: exit 0 when ready",
        scope: Scope::PerVersion { min: "1.1.0" },
        run: status,
    },
    Case {
        name: "parallel-add",
        rule: "§ADD, §Container runtime: concurrent ADDs on distinct containers get distinct addresses",
        scope: Scope::Once,
        run: parallel_add,
    },
    Case {
        name: "long-container-id",
        rule: "§Parameters: CNI_CONTAINERID of 200 chars with . _ - works for ADD/CHECK/DEL",
        scope: Scope::PerVersion { min: "0.1.0" },
        run: long_container_id,
    },
    Case {
        name: "other-ifname",
        rule: "§Parameters: CNI_IFNAME other than eth0 is honoured",
        scope: Scope::PerVersion { min: "0.1.0" },
        run: other_ifname,
    },
];

// ---- helpers -------------------------------------------------------------------------

/// A change to an otherwise valid invocation.
type Tamper = fn(&mut Invocation);

fn skip(why: impl std::fmt::Display) -> String {
    format!("SKIP: {why}")
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

fn run(inv: &Invocation) -> Result<Outcome, String> {
    inv.try_run()
}

fn inv(ctx: &Ctx, command: &str, pod: &Pod, conf: &Value) -> Invocation {
    let mut i = Invocation::new(ctx.plugin_path(), command, ctx.net.cni_path.dir())
        .container_id(&pod.container_id)
        .ifname(&pod.ifname)
        .config(conf);
    if !pod.netns.is_deleted() {
        i = i.netns(pod.netns.path());
    }
    i
}

fn ok_json(o: &Outcome) -> Result<Value, String> {
    if !o.success() {
        return Err(format!("expected success: {}", short(o)));
    }
    if o.stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&o.stdout).map_err(|e| format!("stdout is not JSON ({e}): {}", short(o)))
}

fn short(o: &Outcome) -> String {
    let t = |s: &str| s.trim().chars().take(300).collect::<String>();
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        o.exit_code,
        t(&o.stdout),
        t(&o.stderr)
    )
}

/// A proper CNI error with `code` (non-zero exit, error object with msg).
fn expect_code(o: &Outcome, code: u32, what: &str) -> Result<(), String> {
    let e = expect_error(o, what)?;
    ensure(e == code, || {
        format!("{what}: code {e}, want {code}: {}", short(o))
    })
}

/// A proper CNI error: returns its code.
fn expect_error(o: &Outcome, what: &str) -> Result<u32, String> {
    if !matches!(o.exit_code, Some(c) if c != 0) {
        return Err(format!("{what}: expected a CNI error: {}", short(o)));
    }
    let e: cni_runtime::ErrorObject = serde_json::from_str(&o.stdout).map_err(|err| {
        format!(
            "{what}: stdout is not a CNI error object ({err}): {}",
            short(o)
        )
    })?;
    ensure(!e.msg.is_empty(), || {
        format!("{what}: error without msg: {}", short(o))
    })?;
    Ok(e.code)
}

fn add(ctx: &Ctx, pod: &Pod, conf: &Value) -> Result<(Value, ParsedResult), String> {
    let raw = ok_json(&run(&inv(ctx, "ADD", pod, conf))?).map_err(|e| format!("ADD: {e}"))?;
    let parsed = result::parse(&raw, &ctx.version).map_err(|e| format!("ADD result: {e}"))?;
    Ok((raw, parsed))
}

fn del(ctx: &Ctx, pod: &Pod, conf: &Value, prev: Option<&Value>) -> Result<(), String> {
    ok_json(&run(&inv(ctx, "DEL", pod, &with_prev(conf, prev)))?)
        .map(|_| ())
        .map_err(|e| format!("DEL: {e}"))
}

fn check(ctx: &Ctx, pod: &Pod, conf: &Value, prev: &Value) -> Result<Outcome, String> {
    run(&inv(ctx, "CHECK", pod, &with_prev(conf, Some(prev))))
}

/// The pod's address from the result is on its interface.
fn attached(pod: &Pod, res: &ParsedResult) -> Result<IpAddr, String> {
    let v4 = res.ipv4();
    // The address that points at the pod's interface (a chained result may carry
    // earlier plugins' addresses first); 0.1/0.2 results have no interface indexes.
    let on_pod = v4.iter().find(|i| {
        i.interface
            .and_then(|n| res.interfaces.get(n))
            .is_some_and(|itf| itf.name == pod.ifname)
    });
    let ip = on_pod
        .or(v4.first())
        .ok_or_else(|| format!("no IPv4 address in the result {res:?}"))?
        .address;
    let seen = pod.addrs();
    ensure(seen.contains(&ip), || {
        format!("{ip} of the result is not on {} (has {seen:?})", pod.ifname)
    })?;
    Ok(ip.ip())
}

/// The store (any file of the data dir) mentions `cid`.
fn store_mentions(ctx: &Ctx, cid: &str) -> Vec<String> {
    let scope = snapshot::Scope {
        container_ids: vec![cid.into()],
        data_dir: ctx.net.data_dir().to_path_buf(),
        prefix: "\u{0}".into(),
        ..Default::default()
    };
    scope
        .take()
        .into_iter()
        .filter(|l| l.ends_with(&format!("mentions {cid}")))
        .collect()
}

fn host_ifaces(res: &ParsedResult) -> Vec<String> {
    res.interfaces
        .iter()
        .filter(|i| i.sandbox.is_none())
        .map(|i| i.name.clone())
        .collect()
}

fn mac_in(pod: &Pod) -> Option<String> {
    let out = try_sh(
        "ip",
        &[
            "-n",
            pod.netns.name(),
            "-j",
            "link",
            "show",
            "dev",
            &pod.ifname,
        ],
    )
    .ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    v[0]["address"].as_str().map(String::from)
}

/// Shape and honesty of an ADD result beyond [`result::parse`].
fn judge_result(ctx: &Ctx, pod: &Pod, raw: &Value, res: &ParsedResult) -> Result<IpAddr, String> {
    let ip = attached(pod, res)?;
    if !matches!(ctx.version.as_str(), "0.1.0" | "0.2.0") {
        let sandbox = pod.netns.path().display().to_string();
        let idx = res
            .interfaces
            .iter()
            .position(|i| i.name == pod.ifname)
            .ok_or_else(|| format!("no interface {} in {raw}", pod.ifname))?;
        let iface = &res.interfaces[idx];
        ensure(iface.sandbox.as_deref() == Some(sandbox.as_str()), || {
            format!(
                "interface {} has sandbox {:?}, want {sandbox:?}",
                pod.ifname, iface.sandbox
            )
        })?;
        if let Some(mac) = &iface.mac {
            let real = mac_in(pod).unwrap_or_default();
            ensure(mac.eq_ignore_ascii_case(&real), || {
                format!("result mac {mac} but {} has {real}", pod.ifname)
            })?;
        }
        for x in res.ips.iter().filter(|x| x.address.ip() == ip) {
            ensure(x.interface == Some(idx), || {
                format!(
                    "ips[] {} points at interface {:?}, want {idx} ({})",
                    x.address, x.interface, pod.ifname
                )
            })?;
        }
    }
    if ctx.target.template.is_none() || raw.to_string().contains(EXTRA_ROUTE) {
        let want: ipnetwork::IpNetwork = EXTRA_ROUTE.parse().expect("route");
        ensure(res.routes.iter().any(|r| r.dst == want), || {
            format!("configured route {EXTRA_ROUTE} not in the result {raw}")
        })?;
        let routes = inspect::routes(&pod.netns);
        ensure(routes.iter().any(|r| r.0 == EXTRA_ROUTE), || {
            format!("route {EXTRA_ROUTE} of the result is not in the pod: {routes:?}")
        })?;
    }
    if let Some(dns) = raw.get("dns") {
        ensure(dns.is_object(), || format!("dns is not an object: {dns}"))?;
        if let Some(ns) = dns.get("nameservers") {
            let ok = ns.as_array().is_some_and(|a| {
                a.iter()
                    .all(|x| x.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok()))
            });
            ensure(ok, || {
                format!("dns.nameservers is not a list of addresses: {ns}")
            })?;
        }
    }
    Ok(ip)
}

// ---- cases ---------------------------------------------------------------------------

fn version(ctx: &Ctx) -> Result<(), String> {
    let reported = super::reported_versions(ctx.target)?;
    ensure(!reported.is_empty(), || {
        "VERSION reports no known version".into()
    })?;
    for v in crate::VERSIONS {
        let o = run(
            &Invocation::new(ctx.plugin_path(), "VERSION", ctx.net.cni_path.dir())
                .raw_stdin(json!({"cniVersion": v}).to_string()),
        )?;
        let out = ok_json(&o).map_err(|e| format!("VERSION (stdin cniVersion {v}): {e}"))?;
        let cv = out["cniVersion"].as_str().unwrap_or("");
        ensure(!cv.is_empty(), || {
            format!("VERSION output without cniVersion: {out}")
        })?;
        let list = out["supportedVersions"]
            .as_array()
            .ok_or_else(|| format!("VERSION output without supportedVersions list: {out}"))?;
        ensure(
            list.iter().all(|x| {
                x.as_str().is_some_and(|s| {
                    cni_runtime::Version::parse(s).is_some() || s.split('.').count() == 3
                })
            }),
            || format!("supportedVersions holds a malformed version: {out}"),
        )?;
    }
    // Honest: the reported list does not change with the stdin version, and an ADD
    // with each reported version is accepted (the per-version cases do the ADDs).
    Ok(())
}

fn add_result(ctx: &Ctx) -> Result<(), String> {
    let conf = ctx.conf(false);
    let pod = ctx.net.pod();
    let (raw, res) = add(ctx, &pod, &conf)?;
    let r = judge_result(ctx, &pod, &raw, &res);
    del(ctx, &pod, &conf, Some(&raw))?;
    r.map(|_| ())
}

fn add_prevresult(ctx: &Ctx) -> Result<(), String> {
    let conf = ctx.conf(false);
    let pod = ctx.net.pod();
    let legacy_ips = !ctx.version.starts_with("1.");
    let mut ip = json!({"address": "192.0.2.10/24", "interface": 0});
    if legacy_ips {
        ip["version"] = json!("4");
    }
    let prev = json!({
        "cniVersion": ctx.version,
        "interfaces": [{"name": "pre0", "mac": "02:00:00:00:00:01", "sandbox": pod.netns.path().display().to_string()}],
        "ips": [ip],
        "routes": [{"dst": "203.0.113.0/24"}],
        "dns": {"nameservers": ["192.0.2.53"]},
    });
    let out = run(&inv(ctx, "ADD", &pod, &with_prev(&conf, Some(&prev))))?;
    let raw = ok_json(&out).map_err(|e| format!("ADD with prevResult: {e}"))?;
    let verdict = (|| {
        let res = result::parse(&raw, &ctx.version)?;
        judge_result(ctx, &pod, &raw, &res)?;
        let pre = res
            .interfaces
            .iter()
            .position(|i| i.name == "pre0")
            .ok_or_else(|| format!("interface pre0 of prevResult dropped: {raw}"))?;
        let kept = res
            .ips
            .iter()
            .find(|x| x.address.to_string() == "192.0.2.10/24")
            .ok_or_else(|| format!("address 192.0.2.10/24 of prevResult dropped: {raw}"))?;
        ensure(kept.interface == Some(pre), || {
            format!(
                "prevResult's address now points at interface {:?}, want {pre}: {raw}",
                kept.interface
            )
        })?;
        ensure(
            res.routes
                .iter()
                .any(|r| r.dst.to_string() == "203.0.113.0/24"),
            || format!("route 203.0.113.0/24 of prevResult dropped: {raw}"),
        )?;
        ensure(raw.to_string().contains("192.0.2.53"), || {
            format!("dns of prevResult dropped: {raw}")
        })?;
        Ok::<(), String>(())
    })();
    del(ctx, &pod, &conf, Some(&raw))?;
    verdict
}

fn check_after_add(ctx: &Ctx) -> Result<(), String> {
    let conf = ctx.conf(false);
    let pod = ctx.net.pod();
    let (raw, _) = add(ctx, &pod, &conf)?;
    let o = check(ctx, &pod, &conf, &raw)?;
    del(ctx, &pod, &conf, Some(&raw))?;
    ok_json(&o).map(|_| ()).map_err(|e| format!("CHECK: {e}"))
}

fn check_route_implicit_gw(ctx: &Ctx) -> Result<(), String> {
    let ctx = Ctx {
        target: ctx.target,
        version: ctx.version.clone(),
        net: crate::fixture::TestNet::with_path(
            &format!("igw-{}", ctx.version),
            crate::bins::CniPath::from_dirs(&ctx.target.bin_dirs),
        ),
        implicit_gw: true,
    };
    check_after_add(&ctx)
}

fn check_fails_after(
    ctx: &Ctx,
    what: &str,
    damage: &dyn Fn(&Pod, &ParsedResult) -> Result<(), String>,
) -> Result<(), String> {
    let conf = ctx.conf(false);
    let pod = ctx.net.pod();
    let (raw, res) = add(ctx, &pod, &conf)?;
    let before = check(ctx, &pod, &conf, &raw)?;
    let r = (|| {
        ok_json(&before).map_err(|e| format!("CHECK before damage: {e}"))?;
        damage(&pod, &res)?;
        let o = check(ctx, &pod, &conf, &raw)?;
        expect_error(&o, &format!("CHECK after {what}")).map(|_| ())
    })();
    del(ctx, &pod, &conf, Some(&raw))?;
    r
}

fn check_removed_address(ctx: &Ctx) -> Result<(), String> {
    check_fails_after(ctx, "removing the address", &|pod, res| {
        let ip = res.ipv4().first().map(|x| x.address).ok_or("no address")?;
        try_sh(
            "ip",
            &[
                "-n",
                pod.netns.name(),
                "addr",
                "del",
                &ip.to_string(),
                "dev",
                &pod.ifname,
            ],
        )
        .map(|_| ())
    })
}

fn check_removed_route(ctx: &Ctx) -> Result<(), String> {
    check_fails_after(ctx, "removing a route", &|pod, res| {
        let r = res
            .routes
            .iter()
            .find(|r| r.dst.to_string() == EXTRA_ROUTE)
            .or(res.routes.first())
            .ok_or_else(|| skip("the result has no route"))?;
        try_sh(
            "ip",
            &["-n", pod.netns.name(), "route", "del", &r.dst.to_string()],
        )
        .map(|_| ())
    })
}

fn check_removed_interface(ctx: &Ctx) -> Result<(), String> {
    check_fails_after(ctx, "removing the interface", &|pod, _| {
        try_sh("ip", &["-n", pod.netns.name(), "link", "del", &pod.ifname]).map(|_| ())
    })
}

fn del_twice(ctx: &Ctx) -> Result<(), String> {
    let conf = ctx.conf(false);
    let pod = ctx.net.pod();
    let (raw, _) = add(ctx, &pod, &conf)?;
    del(ctx, &pod, &conf, Some(&raw))?;
    ensure(!inspect::link_exists_in(&pod.netns, &pod.ifname), || {
        format!("{} still in the netns after DEL", pod.ifname)
    })?;
    del(ctx, &pod, &conf, Some(&raw)).map_err(|e| format!("second {e}"))
}

fn del_no_prevresult(ctx: &Ctx) -> Result<(), String> {
    let conf = ctx.conf(false);
    let pod = ctx.net.pod();
    let (_raw, _) = add(ctx, &pod, &conf)?;
    del(ctx, &pod, &conf, None)?;
    ensure(!inspect::link_exists_in(&pod.netns, &pod.ifname), || {
        format!("{} still in the netns after DEL", pod.ifname)
    })?;
    let left = store_mentions(ctx, &pod.container_id);
    ensure(left.is_empty(), || {
        format!("store still holds the container: {left:?}")
    })
}

fn del_netns_gone(ctx: &Ctx) -> Result<(), String> {
    let conf = ctx.conf(false);
    let mut pod = ctx.net.pod();
    let (raw, _) = add(ctx, &pod, &conf)?;
    let path = pod.netns.path();
    pod.netns.delete();
    // As runtimes do: the stale path first, then nothing.
    let i = inv(ctx, "DEL", &pod, &with_prev(&conf, Some(&raw))).netns(&path);
    ok_json(&run(&i)?).map_err(|e| format!("DEL with a stale CNI_NETNS: {e}"))?;
    del(ctx, &pod, &conf, Some(&raw)).map_err(|e| format!("DEL without CNI_NETNS: {e}"))?;
    del(ctx, &pod, &conf, Some(&raw)).map_err(|e| format!("second DEL without CNI_NETNS: {e}"))?;
    let left = store_mentions(ctx, &pod.container_id);
    ensure(left.is_empty(), || {
        format!("store still holds the container: {left:?}")
    })
}

fn cleanup(ctx: &Ctx, netns_gone: bool) -> Result<(), String> {
    let conf = ctx.conf(true);
    // A first pod, kept: the shared resources (bridge, gateway address, masquerade
    // table) exist before the snapshot.
    let warm = ctx.net.pod();
    let (raw_w, _) = add(ctx, &warm, &conf)?;
    bridge_link_local_settled(&ctx.net.bridge);
    let mut pod = ctx.net.pod();
    let mut scope = snapshot::Scope {
        bridge: ctx.net.bridge.clone(),
        host_ifaces: vec![],
        prefix: ctx.net.subnet.prefix(),
        container_ids: vec![pod.container_id.clone()],
        data_dir: ctx.net.data_dir().to_path_buf(),
    };
    let r = (|| {
        let before = scope.take();
        let (raw, res) = add(ctx, &pod, &conf)?;
        scope.host_ifaces = host_ifaces(&res);
        let after_add = scope.take();
        let new = snapshot::added(&before, &after_add);
        ensure(!new.is_empty(), || {
            "ADD created nothing visible on the host (scope too narrow?)".into()
        })?;
        if netns_gone {
            pod.netns.delete();
        }
        del(ctx, &pod, &conf, Some(&raw))?;
        // The kernel destroys a deleted netns (and the veth peer with it) asynchronously:
        // give what the kernel owns a few seconds to go before calling it a leak.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let after_del = scope.take();
            let leaked = snapshot::leaked(&before, &after_add, &after_del);
            if leaked.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("left after DEL: {}", leaked.join("; ")));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    })();
    del(ctx, &warm, &conf, Some(&raw_w))?;
    r
}

/// Waits (at most 5 s) until the kernel has given `bridge` and every port on it (the
/// warm pod's host veth) an IPv6 link-local address and finished DAD on it. The kernel
/// does that (adding the address's local routes and the solicited-node multicast FDB
/// entry) once a link has carrier, which linkwatch may report up to a second after the
/// link is up: without the wait, a snapshot taken right after the first ADD may miss
/// them, and a later one counts them as the next ADD's leftovers.
fn bridge_link_local_settled(bridge: &str) {
    let settled = |link: &str| {
        let disabled =
            std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6"))
                .map(|v| v.trim() != "0")
                .unwrap_or(true);
        disabled
            || try_sh(
                "ip",
                &["-6", "-o", "addr", "show", "dev", link, "scope", "link"],
            )
            .is_ok_and(|t| t.contains("fe80::") && !t.contains("tentative"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let ports = try_sh("ip", &["-o", "link", "show", "master", bridge]).unwrap_or_default();
        // "12: vethabcd@if3: <...>": the name is the second field, before any '@'.
        let mut links: Vec<&str> = ports
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or(""))
            .filter(|n| !n.is_empty())
            .collect();
        links.push(bridge);
        if links.iter().all(|l| settled(l)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn del_cleanup(ctx: &Ctx) -> Result<(), String> {
    cleanup(ctx, false)
}

fn del_cleanup_netns_gone(ctx: &Ctx) -> Result<(), String> {
    cleanup(ctx, true)
}

fn env_missing(ctx: &Ctx) -> Result<(), String> {
    let conf = ctx.conf(false);
    let pod = ctx.net.pod();
    let base = inv(ctx, "ADD", &pod, &conf);
    let mut fails = Vec::new();
    let cases: [(&str, Tamper); 4] = [
        ("no CNI_COMMAND", |i| i.command = None),
        ("no CNI_CONTAINERID", |i| i.container_id = None),
        ("no CNI_NETNS", |i| i.netns = None),
        ("no CNI_IFNAME", |i| i.ifname = None),
    ];
    for (what, f) in cases {
        let mut i = base.clone();
        f(&mut i);
        if let Err(e) = expect_code(&run(&i)?, 4, what) {
            fails.push(e);
        }
    }
    // A failed ADD may have left something (a runtime would DEL): clean up.
    let _ = run(&inv(ctx, "DEL", &pod, &conf));
    ensure(fails.is_empty(), || fails.join("; "))
}

fn env_malformed(ctx: &Ctx) -> Result<(), String> {
    let conf = ctx.conf(false);
    let pod = ctx.net.pod();
    let base = inv(ctx, "ADD", &pod, &conf);
    let mut fails = Vec::new();
    let cases: [(&str, Tamper); 4] = [
        ("CNI_COMMAND=FROB", |i| i.command = Some("FROB".into())),
        ("CNI_CONTAINERID with '/'", |i| {
            i.container_id = Some("bad/id".into())
        }),
        ("CNI_IFNAME of 16 chars", |i| {
            i.ifname = Some("abcdefghijklmnop".into())
        }),
        ("CNI_IFNAME with '/'", |i| i.ifname = Some("et/h0".into())),
    ];
    for (what, f) in cases {
        let mut i = base.clone();
        f(&mut i);
        let o = run(&i)?;
        if let Err(e) = expect_code(&o, 4, what) {
            fails.push(e);
            // Clean up what a wrongly successful ADD made.
            if o.success() {
                let mut d = i.clone();
                d.command = Some("DEL".into());
                let _ = run(&d);
            }
        }
    }
    ensure(fails.is_empty(), || fails.join("; "))
}

fn bad_json(ctx: &Ctx) -> Result<(), String> {
    let pod = ctx.net.pod();
    let mut fails = Vec::new();
    for cmd in ["ADD", "DEL"] {
        let i =
            inv(ctx, cmd, &pod, &Value::Null).raw_stdin("{\"cniVersion\": \"1.0.0\", \"name\": ");
        if let Err(e) = expect_code(&run(&i)?, 6, &format!("{cmd} with truncated JSON")) {
            fails.push(e);
        }
    }
    ensure(fails.is_empty(), || fails.join("; "))
}

fn unsupported_version(ctx: &Ctx) -> Result<(), String> {
    let mut conf = ctx.conf(false);
    conf["cniVersion"] = json!("9.9.9");
    let pod = ctx.net.pod();
    let o = run(&inv(ctx, "ADD", &pod, &conf))?;
    let r = expect_code(&o, 1, "ADD with cniVersion 9.9.9");
    if o.success() {
        let _ = run(&inv(ctx, "DEL", &pod, &conf));
    }
    r
}

fn gc(ctx: &Ctx) -> Result<(), String> {
    let conf = ctx.conf_range(true, Some((20, 21)));
    let keep = ctx.net.pod();
    let mut lost = ctx.net.pod();
    let (raw_k, res_k) = add(ctx, &keep, &conf)?;
    let (raw_l, res_l) = add(ctx, &lost, &conf)?;
    let ip_k = attached(&keep, &res_k)?;
    let ip_l = attached(&lost, &res_l)?;
    let masq = !inspect::masq_rules_for(ip_l).is_empty();
    lost.netns.delete();
    let n = ctx.net.pod();
    let r = (|| {
        let mut g = conf.clone();
        g["cni.dev/valid-attachments"] =
            crate::config::valid_attachments([(keep.container_id.as_str(), keep.ifname.as_str())]);
        let o = run(&Invocation::new(ctx.plugin_path(), "GC", ctx.net.cni_path.dir()).config(&g))?;
        ok_json(&o).map_err(|e| format!("GC: {e}"))?;
        ok_json(&check(ctx, &keep, &conf, &raw_k)?)
            .map_err(|e| format!("CHECK of the kept attachment after GC: {e}"))?;
        if masq {
            ensure(inspect::masq_rules_for(ip_l).is_empty(), || {
                format!("GC left the masquerade rule of {ip_l}")
            })?;
            ensure(!inspect::masq_rules_for(ip_k).is_empty(), || {
                format!("GC removed the masquerade rule of the kept {ip_k}")
            })?;
        }
        let left = store_mentions(ctx, &lost.container_id);
        ensure(left.is_empty(), || {
            format!("GC left the store entry of the lost container: {left:?}")
        })?;
        let (raw_n, res_n) = add(ctx, &n, &conf)
            .map_err(|e| format!("after GC the freed address is not handed out: {e}"))?;
        let ip_n = attached(&n, &res_n)?;
        let _ = del(ctx, &n, &conf, Some(&raw_n));
        ensure(ip_n == ip_l, || {
            format!("new pod got {ip_n}, want the freed {ip_l}")
        })
    })();
    let _ = del(ctx, &lost, &conf, Some(&raw_l));
    del(ctx, &keep, &conf, Some(&raw_k))?;
    r
}

fn status(ctx: &Ctx) -> Result<(), String> {
    let conf = ctx.conf(false);
    let o =
        run(&Invocation::new(ctx.plugin_path(), "STATUS", ctx.net.cni_path.dir()).config(&conf))?;
    ok_json(&o).map(|_| ()).map_err(|e| format!("STATUS: {e}"))
}

fn parallel_add(ctx: &Ctx) -> Result<(), String> {
    const N: usize = 16;
    let conf = ctx.conf(false);
    let pods: Vec<Pod> = (0..N).map(|_| ctx.net.pod()).collect();
    let results: Vec<Result<(Value, ParsedResult), String>> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .map(|p| s.spawn(|| add(ctx, p, &conf)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
            .collect()
    });
    let mut errs = Vec::new();
    let mut ips = HashSet::new();
    for (p, r) in pods.iter().zip(&results) {
        match r {
            Ok((_, res)) => match attached(p, res) {
                Ok(ip) => {
                    if !ips.insert(ip) {
                        errs.push(format!("{ip} handed out twice"));
                    }
                }
                Err(e) => errs.push(e),
            },
            Err(e) => errs.push(e.clone()),
        }
    }
    let dels: Vec<Result<(), String>> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .zip(&results)
            .map(|(p, r)| {
                let prev = r.as_ref().ok().map(|x| x.0.clone());
                let conf = &conf;
                s.spawn(move || del(ctx, p, conf, prev.as_ref()))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
            .collect()
    });
    errs.extend(dels.into_iter().filter_map(Result::err));
    ensure(errs.is_empty(), || {
        format!("{} of {N}: {}", errs.len(), errs.join("; "))
    })
}

fn long_container_id(ctx: &Ctx) -> Result<(), String> {
    let conf = ctx.conf(false);
    let mut pod = ctx.net.pod();
    let mut id = format!("{}.a_b-c", pod.container_id);
    while id.len() < 200 {
        id.push_str(".x_y-z");
    }
    id.truncate(200);
    pod.container_id = id;
    let (raw, res) = add(ctx, &pod, &conf)?;
    let r = (|| {
        attached(&pod, &res)?;
        ensure(!store_mentions(ctx, &pod.container_id).is_empty(), || {
            "the IPAM store does not record the full container id".into()
        })?;
        if crate::has_check(&ctx.version) {
            ok_json(&check(ctx, &pod, &conf, &raw)?).map_err(|e| format!("CHECK: {e}"))?;
        }
        Ok::<(), String>(())
    })();
    del(ctx, &pod, &conf, Some(&raw))?;
    r?;
    let left = store_mentions(ctx, &pod.container_id);
    ensure(left.is_empty(), || {
        format!("store still holds the container after DEL: {left:?}")
    })
}

fn other_ifname(ctx: &Ctx) -> Result<(), String> {
    let conf = ctx.conf(false);
    let mut pod = ctx.net.pod();
    pod.ifname = "net1-x".into();
    let (raw, res) = add(ctx, &pod, &conf)?;
    let r = judge_result(ctx, &pod, &raw, &res).map(|_| ());
    let eth0 = inspect::link_exists_in(&pod.netns, "eth0");
    del(ctx, &pod, &conf, Some(&raw))?;
    r?;
    ensure(!eth0, || {
        "an eth0 was created although CNI_IFNAME=net1-x".into()
    })?;
    ensure(!inspect::link_exists_in(&pod.netns, &pod.ifname), || {
        format!("{} still in the netns after DEL", pod.ifname)
    })
}
