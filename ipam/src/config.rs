//! The `ipam` section of a network configuration, host-local compatible, parsed once
//! into typed, validated structs. Every error is `InvalidConfig` (7) naming the field.

use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::cluster::{Pool, StoreUrl};
use crate::durable::check_state_path;
use crate::error::IpamError;
use crate::range::{Range, RangeSet, RangeSets};

/// Seconds of lease `cni-ipam` gives a node it registers itself (see
/// [`ClusterIpamConfig::node_ttl`]).
pub(crate) const DEFAULT_NODE_TTL: u64 = 3600;

/// The cluster store used when `ipam.store` is not set.
pub const DEFAULT_CLUSTER_STORE: &str = "file:///var/lib/cni/cluster.json";

/// Where stores live unless `ipam.dataDir` says otherwise (distinct from host-local's
/// `/var/lib/cni/networks`, so both can serve the same network name side by side).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/ipam";

/// A route returned with every allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConf {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
}

/// The validated `ipam` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    /// `runtimeConfig.ipRanges` (prepended, as host-local does), then
    /// `subnet`/`rangeStart`/... as one set, then `ranges`.
    pub ranges: RangeSets,
    pub routes: Vec<RouteConf>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    subnet: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    gateway: Option<String>,
    ranges: Option<Vec<Vec<RawRange>>>,
    routes: Option<Vec<RawRoute>>,
    data_dir: Option<PathBuf>,
    resolv_conf: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    subnet: String,
    range_start: Option<String>,
    range_end: Option<String>,
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    gw: Option<String>,
}

fn parse_ip(field: &str, s: &str) -> Result<IpAddr, IpamError> {
    s.trim()
        .parse()
        .map_err(|_| IpamError::config(format!("{field}: {s:?} is not an IP address")))
}

fn parse_cidr(field: &str, s: &str) -> Result<IpNetwork, IpamError> {
    if !s.contains('/') {
        return Err(IpamError::config(format!(
            "{field}: {s:?} is not a CIDR (address/prefix)"
        )));
    }
    s.trim()
        .parse()
        .map_err(|e| IpamError::config(format!("{field}: {s:?} is not a CIDR: {e}")))
}

fn opt_ip(field: &str, s: &Option<String>) -> Result<Option<IpAddr>, IpamError> {
    s.as_deref().map(|s| parse_ip(field, s)).transpose()
}

fn build_range(field: &str, r: &RawRange) -> Result<Range, IpamError> {
    let subnet = parse_cidr(&format!("{field}.subnet"), &r.subnet)?;
    Range::new(
        field,
        subnet,
        opt_ip(&format!("{field}.rangeStart"), &r.range_start)?,
        opt_ip(&format!("{field}.rangeEnd"), &r.range_end)?,
        opt_ip(&format!("{field}.gateway"), &r.gateway)?,
    )
}

fn build_sets(
    field: &str,
    raw: &[Vec<RawRange>],
    out: &mut Vec<RangeSet>,
) -> Result<(), IpamError> {
    for (i, set) in raw.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let ranges = set
            .iter()
            .enumerate()
            .map(|(j, r)| build_range(&format!("{f}[{j}]"), r))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(RangeSet::new(&f, ranges)?);
    }
    Ok(())
}

impl IpamConfig {
    /// Parses the whole network configuration as received on stdin (`ipam` and
    /// `runtimeConfig.ipRanges`).
    pub fn from_json(conf: &Value) -> Result<IpamConfig, IpamError> {
        let ipam = conf
            .get("ipam")
            .ok_or_else(|| IpamError::config("ipam: missing section"))?;
        let raw: RawIpam = serde_json::from_value(ipam.clone())
            .map_err(|e| IpamError::config(format!("ipam: {e}")))?;

        // As host-local: runtime ranges come first, then the legacy single range, then
        // `ranges`; all of them are allocated from (one address per set).
        let mut sets = Vec::new();
        let runtime = conf.get("runtimeConfig").and_then(|r| r.get("ipRanges"));
        if let Some(v) = runtime.filter(|v| v.as_array().is_some_and(|a| !a.is_empty())) {
            let field = "runtimeConfig.ipRanges";
            let rr: Vec<Vec<RawRange>> = serde_json::from_value(v.clone())
                .map_err(|e| IpamError::config(format!("{field}: {e}")))?;
            build_sets(field, &rr, &mut sets)?;
        }
        let field = "ipam.ranges";
        if let Some(subnet) = &raw.subnet {
            let r = RawRange {
                subnet: subnet.clone(),
                range_start: raw.range_start.clone(),
                range_end: raw.range_end.clone(),
                gateway: raw.gateway.clone(),
            };
            sets.push(RangeSet::new("ipam", vec![build_range("ipam", &r)?])?);
        } else if raw.range_start.is_some() || raw.range_end.is_some() || raw.gateway.is_some() {
            return Err(IpamError::config(
                "ipam.subnet: required when ipam.rangeStart, rangeEnd or gateway is set",
            ));
        }
        build_sets(field, raw.ranges.as_deref().unwrap_or_default(), &mut sets)?;
        let ranges = RangeSets::new(field, sets)?;

        let routes = parse_routes(raw.routes.as_deref().unwrap_or_default())?;
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        check_state_path("ipam.dataDir", &data_dir)?;

        Ok(IpamConfig {
            ranges,
            routes,
            data_dir,
            resolv_conf: raw.resolv_conf,
        })
    }

    /// `ipam.dataDir` alone, leniently: DEL and GC must work even when the rest of the
    /// configuration no longer validates. A relative or symlinked one is still refused
    /// (code 7): no command ever writes through it.
    pub fn data_dir_from_json(conf: &Value) -> Result<PathBuf, IpamError> {
        let dir = conf
            .get("ipam")
            .and_then(|i| i.get("dataDir"))
            .and_then(Value::as_str)
            .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from);
        check_state_path("ipam.dataDir", &dir)?;
        Ok(dir)
    }

    /// The store directory of network `name` under `data_dir`.
    pub fn store_dir(data_dir: &Path, name: &str) -> PathBuf {
        data_dir.join(name)
    }
}

fn parse_routes(raw: &[RawRoute]) -> Result<Vec<RouteConf>, IpamError> {
    raw.iter()
        .enumerate()
        .map(|(i, r)| {
            let f = format!("ipam.routes[{i}]");
            Ok(RouteConf {
                dst: parse_cidr(&format!("{f}.dst"), &r.dst)?,
                gw: opt_ip(&format!("{f}.gw"), &r.gw)?,
            })
        })
        .collect()
}

/// The validated `ipam` section of cluster mode (selected by the presence of `pool`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterIpamConfig {
    pub pool: Pool,
    /// `nodeName`, default: the hostname.
    pub node_name: String,
    /// `store`, default [`DEFAULT_CLUSTER_STORE`].
    pub store: StoreUrl,
    /// `maxBlocksPerNode` (per address family).
    pub max_blocks: Option<usize>,
    /// `nodeTtl` (seconds, default [`DEFAULT_NODE_TTL`]): the lease the plugin gives the
    /// node when it must register it itself (no `ipamd` has).
    pub node_ttl: std::time::Duration,
    /// `reserveGateway` (default false): the first host address of every block
    /// (network + 1) is never handed to a pod and is returned as the `gateway` of every
    /// address of that block. What a datapath with the node's gateway on a bridge or a
    /// VXLAN device needs (`cni-vxlan`).
    pub reserve_gateway: bool,
    pub routes: Vec<RouteConf>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCluster {
    pool: OneOrMany,
    block_size: Option<u8>,
    block_size6: Option<u8>,
    node_name: Option<String>,
    store: Option<String>,
    max_blocks_per_node: Option<usize>,
    node_ttl: Option<u64>,
    // Checked by hand so a wrong type names the field (serde's message does not).
    reserve_gateway: Option<Value>,
    routes: Option<Vec<RawRoute>>,
    data_dir: Option<PathBuf>,
    resolv_conf: Option<PathBuf>,
    subnet: Option<Value>,
    ranges: Option<Value>,
}

impl ClusterIpamConfig {
    /// Whether the network configuration selects cluster mode (`ipam.pool` is set).
    pub fn is_cluster(conf: &Value) -> bool {
        conf.get("ipam").and_then(|i| i.get("pool")).is_some()
    }

    pub fn from_json(conf: &Value) -> Result<ClusterIpamConfig, IpamError> {
        let ipam = conf
            .get("ipam")
            .ok_or_else(|| IpamError::config("ipam: missing section"))?;
        let raw: RawCluster = serde_json::from_value(ipam.clone())
            .map_err(|e| IpamError::config(format!("ipam (cluster mode, with pool): {e}")))?;
        if raw.subnet.is_some() || raw.ranges.is_some() {
            return Err(IpamError::config(
                "ipam.pool: cluster mode (pool) cannot be combined with subnet or ranges",
            ));
        }
        let cidrs = match &raw.pool {
            OneOrMany::One(s) => vec![parse_cidr("ipam.pool", s)?],
            OneOrMany::Many(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| parse_cidr(&format!("ipam.pool[{i}]"), s))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let pool = Pool::new(cidrs, raw.block_size, raw.block_size6)?;
        let node_name = match raw.node_name {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            Some(_) => return Err(IpamError::config("ipam.nodeName: empty")),
            None => nix::unistd::gethostname()
                .map_err(|e| {
                    IpamError::config(format!(
                        "ipam.nodeName: not set and the hostname is unknown: {e}"
                    ))
                })?
                .to_string_lossy()
                .into_owned(),
        };
        if node_name.contains('/') {
            return Err(IpamError::config(format!(
                "ipam.nodeName: {node_name:?} must not contain '/'"
            )));
        }
        let store = StoreUrl::parse(raw.store.as_deref().unwrap_or(DEFAULT_CLUSTER_STORE))?;
        if let StoreUrl::File(p) = &store {
            check_state_path("ipam.store", p)?;
        }
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        check_state_path("ipam.dataDir", &data_dir)?;
        if raw.max_blocks_per_node == Some(0) {
            return Err(IpamError::config(
                "ipam.maxBlocksPerNode: must be at least 1",
            ));
        }
        Ok(ClusterIpamConfig {
            pool,
            node_name,
            store,
            max_blocks: raw.max_blocks_per_node,
            node_ttl: std::time::Duration::from_secs(match raw.node_ttl {
                Some(0) => {
                    return Err(IpamError::config("ipam.nodeTtl: must be at least 1 second"))
                }
                Some(t) => t,
                None => DEFAULT_NODE_TTL,
            }),
            reserve_gateway: match raw.reserve_gateway {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => b,
                Some(v) => {
                    return Err(IpamError::config(format!(
                        "ipam.reserveGateway: {v} is not a boolean (true or false)"
                    )))
                }
            },
            routes: parse_routes(raw.routes.as_deref().unwrap_or_default())?,
            data_dir,
            resolv_conf: raw.resolv_conf,
        })
    }
}

/// Parses `CNI_ARGS` `IP=a,b` (host-local's form).
pub(crate) fn parse_cni_args_ips(value: &str) -> Result<Vec<IpAddr>, IpamError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let addr = s.split('/').next().unwrap_or(s);
            parse_ip("CNI_ARGS IP", addr)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        IpamConfig::from_json(&v).unwrap_err().to_string()
    }

    #[test]
    fn legacy_and_ranges_dual_stack() {
        let c = IpamConfig::from_json(&json!({
            "name": "n", "ipam": {"type": "cni-ipam", "subnet": "10.1.0.0/16",
            "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20", "gateway": "10.1.0.254",
            "ranges": [[{"subnet": "fd00::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}],
            "dataDir": "/tmp/x", "resolvConf": "/etc/resolv.conf"}
        }))
        .unwrap();
        assert_eq!(c.ranges.sets().len(), 2);
        let r = &c.ranges.sets()[0].ranges()[0];
        assert_eq!(r.start, "10.1.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(r.gateway, Some("10.1.0.254".parse().unwrap()));
        assert!(!c.ranges.sets()[1].is_ipv4());
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn defaults() {
        let c = IpamConfig::from_json(&json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}]]}}))
            .unwrap();
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.routes.is_empty());
        assert!(c.resolv_conf.is_none());
    }

    #[test]
    fn runtime_ip_ranges_are_prepended() {
        let c = IpamConfig::from_json(&json!({
            "ipam": {"ranges": [[{"subnet": "fd00::/64"}]]},
            "runtimeConfig": {"ipRanges": [[{"subnet": "10.9.0.0/24"}]]}
        }))
        .unwrap();
        assert_eq!(c.ranges.sets().len(), 2);
        assert_eq!(
            c.ranges.sets()[0].ranges()[0].subnet,
            "10.9.0.0/24".parse::<IpNetwork>().unwrap()
        );
        // A runtime range overlapping the configured one is refused, as in host-local.
        assert!(IpamConfig::from_json(&json!({
            "ipam": {"subnet": "10.9.0.0/24"},
            "runtimeConfig": {"ipRanges": [[{"subnet": "10.9.0.0/24"}]]}
        }))
        .is_err());
    }

    #[test]
    fn errors_name_fields() {
        assert!(err(json!({})).contains("ipam"));
        assert!(err(json!({"ipam": {}})).contains("no address range"));
        assert!(err(json!({"ipam": {"subnet": "10.0.0.0"}})).contains("ipam.subnet"));
        assert!(
            err(json!({"ipam": {"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.1"}}))
                .contains("ipam.rangeStart")
        );
        assert!(
            err(json!({"ipam": {"subnet": "10.0.0.0/24", "rangeStart": "x"}}))
                .contains("ipam.rangeStart")
        );
        assert!(
            err(json!({"ipam": {"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}}))
                .contains("ipam.gateway")
        );
        assert!(err(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24",
            "rangeStart": "10.0.0.50", "rangeEnd": "10.0.0.40"}]]}}))
        .contains("ipam.ranges[0][0].rangeStart"));
        let e = err(
            json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]]}}),
        );
        assert!(
            e.contains("ipam.ranges[1]") && e.contains("overlaps"),
            "{e}"
        );
        let e = err(
            json!({"ipam": {"subnet": "10.0.0.0/24", "ranges": [[{"subnet": "10.0.0.128/25"}]]}}),
        );
        assert!(e.contains("overlaps"), "{e}");
        assert!(
            err(json!({"ipam": {"subnet": "10.0.0.0/24", "routes": [{"dst": "10.1.0.0"}]}}))
                .contains("ipam.routes[0].dst")
        );
        assert!(err(json!({"ipam": {"ranges": "nope"}})).contains("ipam"));
        let e = IpamConfig::from_json(&json!({"ipam": {}})).unwrap_err();
        assert_eq!(e.code(), 7);
    }

    #[test]
    fn cluster_mode() {
        let v = json!({"name": "n", "ipam": {"type": "cni-ipam",
            "pool": ["10.244.0.0/16", "fd00:244::/56"], "blockSize": 24, "nodeName": "a",
            "store": "etcd://127.0.0.1:2379", "maxBlocksPerNode": 3,
            "routes": [{"dst": "0.0.0.0/0"}]}});
        assert!(ClusterIpamConfig::is_cluster(&v));
        let c = ClusterIpamConfig::from_json(&v).unwrap();
        assert_eq!(c.pool.block_prefix(false), 24);
        assert_eq!(c.pool.block_prefix(true), 122);
        assert_eq!(c.node_name, "a");
        assert_eq!(c.max_blocks, Some(3));
        assert!(!c.reserve_gateway, "reserveGateway is off by default");
        let one = json!({"ipam": {"pool": "10.244.0.0/16"}});
        let c = ClusterIpamConfig::from_json(&one).unwrap();
        assert_eq!(c.store, StoreUrl::parse(DEFAULT_CLUSTER_STORE).unwrap());
        assert!(!c.node_name.is_empty());
        let e = ClusterIpamConfig::from_json(
            &json!({"ipam": {"pool": "10.244.0.0/16", "blockSize": 8}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("ipam.blockSize"), "{e}");
        let e = ClusterIpamConfig::from_json(
            &json!({"ipam": {"pool": "10.244.0.0/16", "subnet": "10.0.0.0/24"}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("ipam.pool"), "{e}");
        let e = ClusterIpamConfig::from_json(&json!({"ipam": {"pool": ["x"]}})).unwrap_err();
        assert!(e.to_string().contains("ipam.pool[0]"), "{e}");
        let e = ClusterIpamConfig::from_json(
            &json!({"ipam": {"pool": "10.0.0.0/16", "store": "nope"}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("ipam.store"), "{e}");
    }

    #[test]
    fn cluster_reserve_gateway() {
        let v = json!({"ipam": {"pool": "10.244.0.0/16", "reserveGateway": true}});
        assert!(ClusterIpamConfig::from_json(&v).unwrap().reserve_gateway);
        let v = json!({"ipam": {"pool": "10.244.0.0/16", "reserveGateway": false}});
        assert!(!ClusterIpamConfig::from_json(&v).unwrap().reserve_gateway);
        let e = ClusterIpamConfig::from_json(
            &json!({"ipam": {"pool": "10.244.0.0/16", "reserveGateway": "yes"}}),
        )
        .unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("reserveGateway"), "{e}");
    }

    #[test]
    fn cni_args_ips() {
        assert_eq!(
            parse_cni_args_ips("10.0.0.5, fd00::5/64").unwrap(),
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert!(parse_cni_args_ips("nope").is_err());
    }
}
