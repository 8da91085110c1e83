//! The runtime side of the CNI spec ("Section 4: Plugin Delegation" is the plugin side;
//! this is what SPEC.md §"Execution of Network Configurations" asks of a runtime), the
//! way libcni does it:
//!
//! - [`conf`]: `.conflist` / `.conf` loading;
//! - version negotiation: the highest version that the file allows (`cniVersion`, or
//!   `cniVersions`), this runtime speaks and every plugin of the chain reports (VERSION);
//! - ADD through the chain in order, each plugin getting the previous one's result as
//!   `prevResult`; the final result is cached ([`cache`]);
//! - DEL in reverse order with the cached result as `prevResult` (0.4.0+), then the
//!   cache entry is removed; CHECK (0.4.0+, unless `disableCheck`); GC with
//!   `cni.dev/valid-attachments` (1.1.0+, unless `disableGC`); STATUS (1.1.0+);
//! - capability args into `runtimeConfig` for the plugins whose `capabilities` enable
//!   them (`portMappings`, `bandwidth`, `mac`, `ips`, `ipRanges`, `dns`, ...).
//!
//! Plugins run through [`crate::Invocation`]; versions and results are this crate's own
//! ([`crate::Version`], [`crate::AddResult`]), not the plugins'.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::{AddResult, CachedAttachment, ErrorObject, Invocation, NetworkConfigList, Outcome};
use crate::{ResultCache, Version, VERSIONS};

/// What went wrong, runtime side or plugin side.
#[derive(Debug, Clone, PartialEq)]
pub enum RtError {
    /// The network config is unusable.
    Config(String),
    /// No such network / plugin.
    NotFound(String),
    /// No version that the file, the runtime and every plugin share.
    Version(String),
    /// A plugin failed: its type and error object (or what it printed).
    Plugin {
        plugin: String,
        error: ErrorObject,
    },
    /// A plugin could not be run, or printed something that is not a result.
    Exec(String),
    Cache(String),
}

impl std::fmt::Display for RtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RtError::Config(s) => write!(f, "config: {s}"),
            RtError::NotFound(s) => write!(f, "not found: {s}"),
            RtError::Version(s) => write!(f, "version: {s}"),
            RtError::Plugin { plugin, error } => write!(
                f,
                "plugin {plugin} failed: code {}: {}{}",
                error.code,
                error.msg,
                if error.details.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", error.details)
                }
            ),
            RtError::Exec(s) => write!(f, "exec: {s}"),
            RtError::Cache(s) => write!(f, "cache: {s}"),
        }
    }
}

impl std::error::Error for RtError {}

impl RtError {
    /// The CNI error code of a plugin failure.
    pub fn code(&self) -> Option<u32> {
        match self {
            RtError::Plugin { error, .. } => Some(error.code),
            _ => None,
        }
    }
}

/// One attachment: what the runtime passes in the `CNI_*` environment, plus capability
/// args.
#[derive(Clone, Debug, Default)]
pub struct RuntimeConf {
    pub container_id: String,
    /// The netns path (`CNI_NETNS`); empty for a netns that is gone (DEL).
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` as pairs.
    pub args: Vec<(String, String)>,
    /// Capability args (`portMappings`, `bandwidth`, ...), put in `runtimeConfig` of
    /// the plugins that declare them in `capabilities`.
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    pub fn new(container_id: &str, netns: &str, ifname: &str) -> RuntimeConf {
        RuntimeConf {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: ifname.into(),
            ..Default::default()
        }
    }

    /// `CNI_ARGS` text: `K=V;K2=V2`.
    pub fn args_string(&self) -> String {
        self.args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Parses `K=V;K2=V2` (cnitool's `CNI_ARGS` format).
pub fn parse_args(s: &str) -> Result<Vec<(String, String)>, RtError> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| RtError::Config(format!("CNI_ARGS pair without '=': {p:?}")))
        })
        .collect()
}

/// `cni.dev/valid-attachments` of a GC config: `[{"containerID": .., "ifname": ..}]`.
pub fn valid_attachments<'a>(atts: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    atts.into_iter()
        .map(|(id, ifname)| json!({ "containerID": id, "ifname": ifname }))
        .collect()
}

/// The runtime: where plugins are and where results are cached.
#[derive(Clone, Debug)]
pub struct CniConfig {
    /// Searched in order for a plugin binary; also the plugins' `CNI_PATH`.
    pub bin_dirs: Vec<PathBuf>,
    pub cache: ResultCache,
}

/// The outcome of GC: which cached attachments were dropped.
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    pub valid: Vec<(String, String)>,
}

impl CniConfig {
    pub fn new(bin_dirs: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> CniConfig {
        CniConfig {
            bin_dirs,
            cache: ResultCache::new(cache_dir),
        }
    }

    fn cni_path(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The binary of plugin `ty` (first bin dir that has it).
    pub fn find_plugin(&self, ty: &str) -> Result<PathBuf, RtError> {
        if ty.contains('/') || ty.is_empty() {
            return Err(RtError::Config(format!("invalid plugin type {ty:?}")));
        }
        self.bin_dirs
            .iter()
            .map(|d| d.join(ty))
            .find(|p| p.is_file())
            .ok_or_else(|| RtError::NotFound(format!("plugin {ty:?} in [{}]", self.cni_path())))
    }

    fn invocation(&self, ty: &str, command: &str) -> Result<Invocation, RtError> {
        let bin = self.find_plugin(ty)?;
        Ok(Invocation::new(bin, command, Path::new(&self.cni_path())))
    }

    fn exec(&self, ty: &str, inv: &Invocation) -> Result<Outcome, RtError> {
        let out = inv.try_run().map_err(RtError::Exec)?;
        if out.success() {
            return Ok(out);
        }
        let error = serde_json::from_str::<ErrorObject>(&out.stdout).unwrap_or(ErrorObject {
            code: 999,
            msg: format!("exit {:?} without an error object", out.exit_code),
            details: format!(
                "stdout: {} stderr: {}",
                out.stdout.trim(),
                out.stderr.trim()
            ),
            cni_version: None,
        });
        Err(RtError::Plugin {
            plugin: ty.into(),
            error,
        })
    }

    /// The versions plugin `ty` reports (VERSION).
    pub fn plugin_versions(&self, ty: &str) -> Result<Vec<String>, RtError> {
        let inv = self
            .invocation(ty, "VERSION")?
            .raw_stdin(json!({"cniVersion": Version::latest().as_str()}).to_string());
        let out = self.exec(ty, &inv)?;
        let v: Value = serde_json::from_str(&out.stdout)
            .map_err(|e| RtError::Exec(format!("{ty} VERSION: not JSON: {e}")))?;
        let list = v["supportedVersions"]
            .as_array()
            .ok_or_else(|| RtError::Exec(format!("{ty} VERSION without supportedVersions: {v}")))?;
        Ok(list
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect())
    }

    /// The version to run `list` with: the highest version that the file allows (each
    /// of `cniVersions`, else `cniVersion`), that this runtime speaks, and that every
    /// plugin of the chain reports.
    pub fn negotiate(&self, list: &NetworkConfigList) -> Result<Version, RtError> {
        let wanted: Vec<&String> = if list.cni_versions.is_empty() {
            vec![&list.cni_version]
        } else {
            list.cni_versions.iter().collect()
        };
        let mut candidates: Vec<Version> =
            wanted.iter().filter_map(|s| Version::parse(s)).collect();
        if candidates.is_empty() {
            return Err(RtError::Version(format!(
                "network {}: none of {:?} is a version this runtime speaks ({})",
                list.name,
                wanted,
                VERSIONS.join(", ")
            )));
        }
        let mut seen = Vec::new();
        for ty in list.types() {
            if seen.contains(&ty) {
                continue;
            }
            let theirs = self.plugin_versions(&ty)?;
            candidates.retain(|v| theirs.iter().any(|t| t == v.as_str()));
            seen.push(ty);
        }
        candidates.into_iter().max().ok_or_else(|| {
            RtError::Version(format!(
                "network {}: no version of {:?} is supported by every plugin",
                list.name, wanted
            ))
        })
    }

    /// The config a plugin of the chain gets on stdin (libcni's `buildOneConfig`):
    /// the plugin's section plus `name`, `cniVersion`, `prevResult` and `runtimeConfig`
    /// with the capability args it declares.
    pub fn plugin_config(
        list: &NetworkConfigList,
        plugin: &Map<String, Value>,
        version: Version,
        prev: Option<&Value>,
        rt: &RuntimeConf,
    ) -> Value {
        let mut c = plugin.clone();
        c.insert("name".into(), json!(list.name));
        c.insert("cniVersion".into(), json!(version.as_str()));
        c.remove("cniVersions");
        match prev {
            Some(p) if !p.is_null() => {
                c.insert("prevResult".into(), p.clone());
            }
            _ => {
                c.remove("prevResult");
            }
        }
        let caps = plugin.get("capabilities").and_then(Value::as_object);
        let mut runtime = Map::new();
        for (k, v) in &rt.capability_args {
            if caps.and_then(|c| c.get(k)).and_then(Value::as_bool) == Some(true) {
                runtime.insert(k.clone(), v.clone());
            }
        }
        if !runtime.is_empty() {
            c.insert("runtimeConfig".into(), Value::Object(runtime));
        } else {
            c.remove("runtimeConfig");
        }
        Value::Object(c)
    }

    fn attach_inv(
        &self,
        ty: &str,
        command: &str,
        rt: &RuntimeConf,
        conf: &Value,
    ) -> Result<Invocation, RtError> {
        let mut inv = self
            .invocation(ty, command)?
            .container_id(&rt.container_id)
            .ifname(&rt.ifname)
            .config(conf);
        if !rt.netns.is_empty() {
            inv = inv.netns(&rt.netns);
        }
        if !rt.args.is_empty() {
            inv = inv.args(rt.args_string());
        }
        Ok(inv)
    }

    /// ADD through the chain; caches and returns the final result.
    pub fn add_network_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<Value, RtError> {
        let version = self.negotiate(list)?;
        let mut prev: Option<Value> = None;
        for p in &list.plugins {
            let ty = p["type"].as_str().unwrap_or("");
            let conf = Self::plugin_config(list, p, version, prev.as_ref(), rt);
            let out = self.exec(ty, &self.attach_inv(ty, "ADD", rt, &conf)?)?;
            let res: Value = serde_json::from_str(&out.stdout)
                .map_err(|e| RtError::Exec(format!("{ty} ADD result is not JSON: {e}")))?;
            prev = Some(res);
        }
        let result = prev.unwrap_or(Value::Null);
        self.cache.put(&CachedAttachment {
            kind: "cniCacheV1".into(),
            container_id: rt.container_id.clone(),
            ifname: rt.ifname.clone(),
            network: list.name.clone(),
            netns: rt.netns.clone(),
            cni_args: rt.args.clone(),
            capability_args: rt.capability_args.clone(),
            result: result.clone(),
        })?;
        Ok(result)
    }

    /// The cached result of the attachment, in `version`'s shape (converted when it was
    /// cached in another version).
    pub fn cached_result(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
        version: Version,
    ) -> Option<Value> {
        let c = self.cache.get(&list.name, &rt.container_id, &rt.ifname)?;
        let cached_v = c.result["cniVersion"].as_str().unwrap_or("");
        if cached_v == version.as_str() {
            return Some(c.result);
        }
        let r = AddResult::from_json(&c.result).ok()?;
        Some(r.convert(version))
    }

    /// DEL in reverse chain order, with the cached result as `prevResult` (0.4.0+);
    /// the cache entry is removed when every plugin succeeded.
    pub fn del_network_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<(), RtError> {
        let version = self.negotiate(list)?;
        let prev = if version.has_check() {
            self.cached_result(list, rt, version)
        } else {
            None
        };
        let mut rt = rt.clone();
        if let Some(c) = self.cache.get(&list.name, &rt.container_id, &rt.ifname) {
            if rt.capability_args.is_empty() {
                rt.capability_args = c.capability_args;
            }
        }
        for p in list.plugins.iter().rev() {
            let ty = p["type"].as_str().unwrap_or("");
            let conf = Self::plugin_config(list, p, version, prev.as_ref(), &rt);
            self.exec(ty, &self.attach_inv(ty, "DEL", &rt, &conf)?)?;
        }
        self.cache.remove(&list.name, &rt.container_id, &rt.ifname);
        Ok(())
    }

    /// CHECK through the chain with the cached result (0.4.0+; a no-op with
    /// `disableCheck`).
    pub fn check_network_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<(), RtError> {
        let version = self.negotiate(list)?;
        if list.disable_check {
            return Ok(());
        }
        if !version.has_check() {
            return Err(RtError::Version(format!(
                "CHECK needs cniVersion 0.4.0 or later, network {} runs {version}",
                list.name
            )));
        }
        let prev = self.cached_result(list, rt, version).ok_or_else(|| {
            RtError::Cache(format!(
                "no cached result for {}/{}/{}",
                list.name, rt.container_id, rt.ifname
            ))
        })?;
        let mut rt = rt.clone();
        if let Some(c) = self.cache.get(&list.name, &rt.container_id, &rt.ifname) {
            if rt.capability_args.is_empty() {
                rt.capability_args = c.capability_args;
            }
        }
        for p in &list.plugins {
            let ty = p["type"].as_str().unwrap_or("");
            let conf = Self::plugin_config(list, p, version, Some(&prev), &rt);
            self.exec(ty, &self.attach_inv(ty, "CHECK", &rt, &conf)?)?;
        }
        Ok(())
    }

    /// GC (1.1.0+, a no-op with `disableGC` or an older negotiated version): every
    /// plugin gets `cni.dev/valid-attachments` = `valid`; then the cache entries of the
    /// network that are not valid are dropped.
    pub fn gc_network_list(
        &self,
        list: &NetworkConfigList,
        valid: &[(String, String)],
    ) -> Result<GcReport, RtError> {
        let version = self.negotiate(list)?;
        if !list.disable_gc && version.has_gc_status() {
            let atts = valid_attachments(valid.iter().map(|(c, i)| (c.as_str(), i.as_str())));
            for p in &list.plugins {
                let ty = p["type"].as_str().unwrap_or("");
                let mut conf = Self::plugin_config(list, p, version, None, &RuntimeConf::default());
                conf["cni.dev/valid-attachments"] = atts.clone();
                let inv = self.invocation(ty, "GC")?.config(&conf);
                self.exec(ty, &inv)?;
            }
        }
        for c in self.cache.list(&list.name) {
            if !valid
                .iter()
                .any(|(id, ifn)| *id == c.container_id && *ifn == c.ifname)
            {
                self.cache.remove(&list.name, &c.container_id, &c.ifname);
            }
        }
        Ok(GcReport {
            valid: valid.to_vec(),
        })
    }

    /// STATUS of every plugin (1.1.0+; older versions have no STATUS: ready).
    pub fn status_network_list(&self, list: &NetworkConfigList) -> Result<(), RtError> {
        let version = self.negotiate(list)?;
        if !version.has_gc_status() {
            return Ok(());
        }
        for p in &list.plugins {
            let ty = p["type"].as_str().unwrap_or("");
            let conf = Self::plugin_config(list, p, version, None, &RuntimeConf::default());
            let inv = self.invocation(ty, "STATUS")?.config(&conf);
            self.exec(ty, &inv)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_args_only_for_declared_capabilities() {
        let list = NetworkConfigList::from_json(&json!({
            "cniVersion": "1.0.0", "name": "n",
            "plugins": [
                {"type": "a"},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "bw", "capabilities": {"bandwidth": true, "portMappings": false}},
            ]
        }))
        .unwrap();
        let mut rt = RuntimeConf::new("c", "/run/netns/x", "eth0");
        rt.capability_args
            .insert("portMappings".into(), json!([{"hostPort": 8080}]));
        rt.capability_args
            .insert("bandwidth".into(), json!({"ingressRate": 1}));
        let prev = json!({"cniVersion": "1.0.0"});
        let c: Vec<Value> = list
            .plugins
            .iter()
            .map(|p| {
                CniConfig::plugin_config(
                    &list,
                    p,
                    Version::parse("1.0.0").unwrap(),
                    Some(&prev),
                    &rt,
                )
            })
            .collect();
        assert!(c[0].get("runtimeConfig").is_none());
        assert_eq!(
            c[1]["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080}]})
        );
        assert_eq!(
            c[2]["runtimeConfig"],
            json!({"bandwidth": {"ingressRate": 1}})
        );
        for x in &c {
            assert_eq!(x["name"], "n");
            assert_eq!(x["cniVersion"], "1.0.0");
            assert_eq!(x["prevResult"], prev);
        }
    }

    #[test]
    fn args_parse() {
        assert_eq!(
            parse_args("A=1;B=x=y").unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert!(parse_args("A").is_err());
    }

    #[test]
    fn cache_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let c = ResultCache::new(d.path());
        let a = CachedAttachment {
            kind: "cniCacheV1".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            network: "net".into(),
            netns: "/run/netns/x".into(),
            cni_args: vec![],
            capability_args: Map::new(),
            result: json!({"cniVersion": "1.0.0"}),
        };
        c.put(&a).unwrap();
        assert!(d.path().join("results/net-c1-eth0").is_file());
        assert_eq!(c.get("net", "c1", "eth0"), Some(a.clone()));
        assert_eq!(c.list("net"), vec![a]);
        assert!(c.list("other").is_empty());
        c.remove("net", "c1", "eth0");
        assert!(c.get("net", "c1", "eth0").is_none());
    }
}
