//! `cni-conformance`: a CNI runtime on the command line (like `cnitool`: attach a
//! namespace to a network by hand) and the conformance suite runner.
//!
//! ```text
//! cni-conformance add NETWORK NETNS [--ifname eth0] [--cid ID] [--args 'K=V;K2=V2'] [--cap-args JSON]
//! cni-conformance del|check NETWORK NETNS [...]
//! cni-conformance gc NETWORK [--valid CID/IFNAME ...]
//! cni-conformance status NETWORK
//! cni-conformance run --plugin cni-bridge [--ipam cni-ipam] [--conf FILE] [--bin-dir DIR] [--versions 1.0.0,1.1.0]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use cni_runtime::{CniConfig, NetworkConfigList, RuntimeConf};
use conformance::suite::{self, Target};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "cni-conformance",
    version,
    about = "CNI runtime (cnitool-like) and conformance suite"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct RtOpts {
    /// Where network configs are (*.conf, *.conflist, *.json).
    #[arg(long, env = "NETCONFPATH", default_value = "/etc/cni/net.d")]
    conf_dir: PathBuf,
    /// Where plugins are (colon-separated; default $CNI_PATH, else /opt/cni/bin).
    #[arg(long, env = "CNI_PATH", default_value = "/opt/cni/bin")]
    bin_dir: String,
    /// Result cache directory (results/<net>-<cid>-<ifname>).
    #[arg(long, default_value = "/var/lib/cni")]
    cache_dir: PathBuf,
}

#[derive(Args, Clone)]
struct Attach {
    network: String,
    /// Netns path, or a name under /run/netns.
    netns: String,
    #[arg(long, default_value = "eth0")]
    ifname: String,
    /// Container id (default: derived from the netns path, as cnitool does).
    #[arg(long)]
    cid: Option<String>,
    /// CNI_ARGS, `K=V;K2=V2`.
    #[arg(long, env = "CNI_ARGS", default_value = "")]
    args: String,
    /// Capability args as a JSON object (`{"portMappings": [...]}`).
    #[arg(long, env = "CAP_ARGS")]
    cap_args: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// ADD the netns to the network (prints the result).
    Add {
        #[command(flatten)]
        rt: RtOpts,
        #[command(flatten)]
        a: Attach,
    },
    /// DEL the netns from the network.
    Del {
        #[command(flatten)]
        rt: RtOpts,
        #[command(flatten)]
        a: Attach,
    },
    /// CHECK the attachment against the cached result.
    Check {
        #[command(flatten)]
        rt: RtOpts,
        #[command(flatten)]
        a: Attach,
    },
    /// GC the network: valid attachments are the ones given, else the cached ones.
    Gc {
        #[command(flatten)]
        rt: RtOpts,
        network: String,
        /// A valid attachment, `CID/IFNAME` (repeatable).
        #[arg(long)]
        valid: Vec<String>,
    },
    /// STATUS of every plugin of the network.
    Status {
        #[command(flatten)]
        rt: RtOpts,
        network: String,
    },
    /// Run the conformance suite against a plugin and print the table.
    Run {
        /// Plugin type (binary name) under test.
        #[arg(long)]
        plugin: String,
        /// IPAM plugin it delegates to (default: cni-ipam for cni-*, else host-local).
        #[arg(long)]
        ipam: Option<String>,
        /// A config template for the plugin (default: a bridge-type config).
        #[arg(long)]
        conf: Option<PathBuf>,
        /// Plugin directories, first wins (repeatable; default: our build dir and
        /// /usr/lib/cni).
        #[arg(long)]
        bin_dir: Vec<PathBuf>,
        /// Only these versions (comma-separated; default: all the plugin reports).
        #[arg(long, value_delimiter = ',')]
        versions: Vec<String>,
        /// Only the cases whose name contains one of these (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Also write the table (Markdown) to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn config(rt: &RtOpts) -> CniConfig {
    CniConfig::new(
        rt.bin_dir
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect(),
        &rt.cache_dir,
    )
}

fn attachment(a: &Attach) -> Result<RuntimeConf, String> {
    let netns = if a.netns.contains('/') {
        a.netns.clone()
    } else {
        format!("/run/netns/{}", a.netns)
    };
    let cid = a.cid.clone().unwrap_or_else(|| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        netns.hash(&mut h);
        format!("cni-conformance-{:016x}", h.finish())
    });
    let mut rt = RuntimeConf::new(&cid, &netns, &a.ifname);
    rt.args = cni_runtime::parse_args(&a.args).map_err(|e| e.to_string())?;
    if let Some(c) = &a.cap_args {
        let v: Value = serde_json::from_str(c).map_err(|e| format!("--cap-args: {e}"))?;
        rt.capability_args = v
            .as_object()
            .cloned()
            .ok_or("--cap-args is not a JSON object")?;
    }
    Ok(rt)
}

fn network(rt: &RtOpts, name: &str) -> Result<NetworkConfigList, String> {
    cni_runtime::load_network(&rt.conf_dir, name).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match real_main() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cni-conformance: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<ExitCode, String> {
    match Cli::parse().cmd {
        Cmd::Add { rt, a } => {
            let res = config(&rt)
                .add_network_list(&network(&rt, &a.network)?, &attachment(&a)?)
                .map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string_pretty(&res).unwrap_or_default());
        }
        Cmd::Del { rt, a } => config(&rt)
            .del_network_list(&network(&rt, &a.network)?, &attachment(&a)?)
            .map_err(|e| e.to_string())?,
        Cmd::Check { rt, a } => config(&rt)
            .check_network_list(&network(&rt, &a.network)?, &attachment(&a)?)
            .map_err(|e| e.to_string())?,
        Cmd::Gc {
            rt,
            network: n,
            valid,
        } => {
            let list = network(&rt, &n)?;
            let cfg = config(&rt);
            let valid: Vec<(String, String)> = if valid.is_empty() {
                cfg.cache
                    .list(&list.name)
                    .into_iter()
                    .map(|c| (c.container_id, c.ifname))
                    .collect()
            } else {
                valid
                    .iter()
                    .map(|v| {
                        v.rsplit_once('/')
                            .map(|(c, i)| (c.to_string(), i.to_string()))
                            .ok_or_else(|| format!("--valid {v:?}: want CID/IFNAME"))
                    })
                    .collect::<Result<_, _>>()?
            };
            cfg.gc_network_list(&list, &valid)
                .map_err(|e| e.to_string())?;
        }
        Cmd::Status { rt, network: n } => config(&rt)
            .status_network_list(&network(&rt, &n)?)
            .map_err(|e| e.to_string())?,
        Cmd::Run {
            plugin,
            ipam,
            conf,
            bin_dir,
            versions,
            only,
            out,
        } => {
            let bin_dirs = if bin_dir.is_empty() {
                vec![
                    conformance::bins::our_bin_dir(),
                    conformance::bins::ref_bin_dir(),
                ]
            } else {
                bin_dir
            };
            let ipam = ipam.unwrap_or_else(|| {
                if plugin.starts_with("cni-") {
                    "cni-ipam".into()
                } else {
                    "host-local".into()
                }
            });
            let mut t = Target::new(&plugin, &ipam, bin_dirs);
            if let Some(c) = conf {
                let text =
                    std::fs::read_to_string(&c).map_err(|e| format!("{}: {e}", c.display()))?;
                t.template =
                    Some(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", c.display()))?);
            }
            if !versions.is_empty() {
                t.versions = Some(versions);
            }
            t.only = only;
            let report = suite::run(&t);
            let table = report.table();
            println!(
                "conformance of {} (IPAM {}), versions {}\n",
                report.plugin,
                report.ipam,
                report.versions.join(", ")
            );
            println!("{table}");
            if let Some(o) = out {
                std::fs::write(&o, &table).map_err(|e| format!("{}: {e}", o.display()))?;
            }
            if !report.failures().is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
