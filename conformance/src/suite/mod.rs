//! The conformance suite: named cases, each enforcing one rule of the CNI spec
//! (SPEC.md of containernetworking/cni), run against any plugin binary for every version
//! it reports. A case runs in its own [`TestNet`] (netns, bridge name, subnet, data dir,
//! cleanup guards) and returns a [`Verdict`]; the report is a table.
//!
//! The plugin under test is an interface plugin configured like the reference `bridge`
//! (`bridge`, `isGateway`, `ipMasq`, `ipam` in host-local's format), or any plugin with
//! a config template (`--conf`): the suite sets `cniVersion`, `name`, and, when the
//! template has them, `bridge`, `ipam.ranges`, `ipam.routes` and `ipam.dataDir`.

mod cases;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bins::CniPath;
use crate::fixture::TestNet;
use crate::VERSIONS;

pub use cases::CASES;

/// The outcome of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Skip(String),
}

impl Verdict {
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail(_) => "fail",
            Verdict::Skip(_) => "skip",
        }
    }
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Pass => "",
            Verdict::Fail(r) | Verdict::Skip(r) => r,
        }
    }
}

/// When a case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Once per reported version (from `min` on).
    PerVersion { min: &'static str },
    /// Once, at the highest reported version.
    Once,
}

/// A named case and the spec rule it enforces.
pub struct Case {
    pub name: &'static str,
    pub rule: &'static str,
    pub scope: Scope,
    pub run: fn(&Ctx) -> Result<(), String>,
}

/// The plugin under test.
#[derive(Clone, Debug)]
pub struct Target {
    /// Plugin type (binary name), e.g. `cni-bridge`.
    pub plugin: String,
    /// IPAM type it delegates to (`cni-ipam`, `host-local`).
    pub ipam: String,
    /// Where plugins are found (first wins); also the plugins' `CNI_PATH`.
    pub bin_dirs: Vec<PathBuf>,
    /// A config template (see the module doc); `None`: a bridge-type config.
    pub template: Option<Value>,
    /// Restrict to these versions (default: every version the plugin reports).
    pub versions: Option<Vec<String>>,
    /// Run only the cases whose name contains one of these.
    pub only: Vec<String>,
}

impl Target {
    /// A bridge-type plugin with its IPAM, found in `bin_dirs`.
    pub fn new(plugin: &str, ipam: &str, bin_dirs: Vec<PathBuf>) -> Target {
        Target {
            plugin: plugin.into(),
            ipam: ipam.into(),
            bin_dirs,
            template: None,
            versions: None,
            only: vec![],
        }
    }
}

/// One case's environment.
pub struct Ctx<'a> {
    pub target: &'a Target,
    pub version: String,
    pub net: TestNet,
    /// Configure the extra route without `gw` (the IPAM's gateway is implied).
    pub implicit_gw: bool,
}

/// A route every config asks for (TEST-NET-2, never reached): the result must carry it
/// and CHECK must notice when it is removed.
pub const EXTRA_ROUTE: &str = "198.51.100.0/24";

impl Ctx<'_> {
    /// The config of this case's network.
    pub fn conf(&self, ip_masq: bool) -> Value {
        self.conf_range(ip_masq, None)
    }

    /// The config with the IPAM range restricted to hosts `from..=to` of the subnet.
    pub fn conf_range(&self, ip_masq: bool, range: Option<(u8, u8)>) -> Value {
        let net = &self.net;
        let mut range_obj = json!({"subnet": net.subnet.cidr()});
        if let Some((a, b)) = range {
            range_obj["rangeStart"] = json!(net.subnet.host(a).to_string());
            range_obj["rangeEnd"] = json!(net.subnet.host(b).to_string());
        }
        match &self.target.template {
            None => {
                let mut c = net.conf_with(&self.version, &self.target.plugin, &self.target.ipam);
                c.ip_masq = ip_masq;
                c.ipam.routes = vec![EXTRA_ROUTE.into()];
                if let Some((a, b)) = range {
                    c.ipam.range_start = Some(net.subnet.host(a).to_string());
                    c.ipam.range_end = Some(net.subnet.host(b).to_string());
                }
                let mut v = c.to_json();
                v["ipam"]["routes"] = self.routes();
                v
            }
            Some(t) => {
                let mut c = t.clone();
                c["cniVersion"] = json!(self.version);
                c["name"] = json!(net.name);
                c["type"] = json!(self.target.plugin);
                if c.get("bridge").is_some() {
                    c["bridge"] = json!(net.bridge);
                }
                if c.get("ipMasq").is_some() {
                    c["ipMasq"] = json!(ip_masq);
                }
                if c.get("ipam").is_some_and(Value::is_object) {
                    c["ipam"]["ranges"] = json!([[range_obj]]);
                    c["ipam"]["routes"] = self.routes();
                    c["ipam"]["dataDir"] = json!(net.data_dir().display().to_string());
                }
                c
            }
        }
    }

    /// The IPAM routes: [`EXTRA_ROUTE`] via the gateway, or without `gw` when
    /// `implicit_gw` is set on the context.
    pub fn routes(&self) -> Value {
        if self.implicit_gw {
            json!([{"dst": EXTRA_ROUTE}])
        } else {
            json!([{"dst": EXTRA_ROUTE, "gw": self.net.subnet.gateway().to_string()}])
        }
    }

    pub fn plugin_path(&self) -> PathBuf {
        self.net.cni_path.dir().join(&self.target.plugin)
    }
}

/// One row of the report.
#[derive(Clone, Debug)]
pub struct Row {
    pub case: &'static str,
    pub rule: &'static str,
    /// The version it ran at (`-` when it did not get that far).
    pub version: String,
    pub verdict: Verdict,
    pub elapsed: Duration,
}

/// The whole report.
#[derive(Clone, Debug)]
pub struct Report {
    pub plugin: String,
    pub ipam: String,
    pub versions: Vec<String>,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn failures(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Fail(_)))
            .collect()
    }

    /// `(case, version) -> verdict word`, for comparisons.
    pub fn verdicts(&self) -> Vec<(String, String, String)> {
        self.rows
            .iter()
            .map(|r| {
                (
                    r.case.to_string(),
                    r.version.clone(),
                    r.verdict.word().to_string(),
                )
            })
            .collect()
    }

    /// A Markdown table: case, version, spec rule, verdict, reason.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| case | version | spec rule | verdict | reason |\n|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let reason: String = r
                .verdict
                .reason()
                .replace('|', "\\|")
                .replace('\n', " ")
                .chars()
                .take(300)
                .collect();
            s += &format!(
                "| {} | {} | {} | {} | {} |\n",
                r.case,
                r.version,
                r.rule,
                r.verdict.word(),
                reason
            );
        }
        let (p, f, k) = self.counts();
        s += &format!("\n{p} passed, {f} failed, {k} skipped\n");
        s
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        let c = |w: &str| self.rows.iter().filter(|r| r.verdict.word() == w).count();
        (c("pass"), c("fail"), c("skip"))
    }
}

/// The versions the plugin reports (VERSION), in our order.
pub fn reported_versions(target: &Target) -> Result<Vec<String>, String> {
    let path = CniPath::from_dirs(&target.bin_dirs);
    let bin = path.dir().join(&target.plugin);
    if !bin.exists() {
        return Err(format!(
            "plugin {} not found in {:?}",
            target.plugin, target.bin_dirs
        ));
    }
    let out = cni_runtime::Invocation::new(&bin, "VERSION", path.dir())
        .raw_stdin(json!({"cniVersion": "0.1.0"}).to_string())
        .try_run()?;
    let v: Value = serde_json::from_str(&out.stdout)
        .map_err(|e| format!("VERSION output is not JSON ({e}): {}", out.describe()))?;
    let list: Vec<String> = v["supportedVersions"]
        .as_array()
        .ok_or_else(|| format!("VERSION without supportedVersions: {v}"))?
        .iter()
        .filter_map(|x| x.as_str().map(String::from))
        .collect();
    Ok(VERSIONS
        .iter()
        .filter(|v| list.iter().any(|l| l == *v))
        .map(|v| v.to_string())
        .collect())
}

fn run_case(target: &Target, case: &Case, version: &str) -> Row {
    let start = Instant::now();
    let tag = format!("{}-{}", case.name, version);
    let verdict = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ctx = Ctx {
            target,
            version: version.to_string(),
            net: TestNet::with_path(&tag, CniPath::from_dirs(&target.bin_dirs)),
            implicit_gw: false,
        };
        (case.run)(&ctx)
    })) {
        Ok(Ok(())) => Verdict::Pass,
        Ok(Err(e)) if e.starts_with("SKIP: ") => Verdict::Skip(e[6..].to_string()),
        Ok(Err(e)) => Verdict::Fail(e),
        Err(p) => Verdict::Fail(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    };
    Row {
        case: case.name,
        rule: case.rule,
        version: version.to_string(),
        verdict,
        elapsed: start.elapsed(),
    }
}

fn version_at_least(v: &str, min: &str) -> bool {
    let i = |x: &str| VERSIONS.iter().position(|y| *y == x).unwrap_or(usize::MAX);
    i(v) >= i(min) && i(v) != usize::MAX
}

/// Runs every case (the versions in parallel, the cases of one version in order).
pub fn run(target: &Target) -> Report {
    let mut rows = Vec::new();
    let reported = match reported_versions(target) {
        Ok(v) => v,
        Err(e) => {
            rows.push(Row {
                case: "version",
                rule: cases::VERSION_RULE,
                version: "-".into(),
                verdict: Verdict::Fail(e),
                elapsed: Duration::ZERO,
            });
            return Report {
                plugin: target.plugin.clone(),
                ipam: target.ipam.clone(),
                versions: vec![],
                rows,
            };
        }
    };
    let versions: Vec<String> = reported
        .iter()
        .filter(|v| target.versions.as_ref().is_none_or(|w| w.contains(v)))
        .cloned()
        .collect();
    let selected = |c: &Case| {
        target.only.is_empty() || target.only.iter().any(|o| c.name.contains(o.as_str()))
    };
    let Some(highest) = versions.last().cloned() else {
        rows.push(Row {
            case: "version",
            rule: cases::VERSION_RULE,
            version: "-".into(),
            verdict: Verdict::Fail(format!(
                "no version to test (reported {reported:?}, asked {:?})",
                target.versions
            )),
            elapsed: Duration::ZERO,
        });
        return Report {
            plugin: target.plugin.clone(),
            ipam: target.ipam.clone(),
            versions,
            rows,
        };
    };
    // Work items: (case index, version); skipped ones are rows right away.
    let mut jobs: Vec<Vec<(usize, String)>> = vec![Vec::new(); versions.len()];
    let mut skipped = Vec::new();
    for (ci, c) in CASES.iter().enumerate().filter(|(_, c)| selected(c)) {
        match c.scope {
            Scope::Once => jobs[versions.len() - 1].push((ci, highest.clone())),
            Scope::PerVersion { min } => {
                for (vi, v) in versions.iter().enumerate() {
                    if version_at_least(v, min) {
                        jobs[vi].push((ci, v.clone()));
                    } else {
                        skipped.push((ci, v.clone(), format!("the rule starts at {min}")));
                    }
                }
                if !versions.iter().any(|v| version_at_least(v, min)) {
                    skipped.retain(|(i, _, _)| *i != ci);
                    skipped.push((
                        ci,
                        "-".into(),
                        format!("the plugin reports no version from {min} on"),
                    ));
                }
            }
        }
    }
    let mut done: Vec<(usize, Row)> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|js| {
                s.spawn(move || {
                    js.into_iter()
                        .map(|(ci, v)| (ci, run_case(target, &CASES[ci], &v)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (ci, v, why) in skipped {
        // Only list per-version skips below the rule's start compactly: one row.
        if v == "-" {
            done.push((
                ci,
                Row {
                    case: CASES[ci].name,
                    rule: CASES[ci].rule,
                    version: v,
                    verdict: Verdict::Skip(why),
                    elapsed: Duration::ZERO,
                },
            ));
        }
    }
    let vpos = |v: &str| VERSIONS.iter().position(|x| *x == v).unwrap_or(99);
    done.sort_by_key(|(ci, r)| (*ci, vpos(&r.version)));
    rows.extend(done.into_iter().map(|(_, r)| r));
    Report {
        plugin: target.plugin.clone(),
        ipam: target.ipam.clone(),
        versions,
        rows,
    }
}
