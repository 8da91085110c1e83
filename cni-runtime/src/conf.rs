//! Network configuration files, as libcni reads them: a `.conflist` (`name`,
//! `cniVersion` and/or `cniVersions`, `disableCheck`, `disableGC`, `plugins`) or a single
//! plugin `.conf` (turned into a list of one).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::RtError;

/// A network: a list of plugin configurations run in order.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    /// `cniVersion` of the file (may be empty when only `cniVersions` is given).
    pub cni_version: String,
    /// `cniVersions` (1.1.0): the versions the file is valid for.
    pub cni_versions: Vec<String>,
    pub disable_check: bool,
    pub disable_gc: bool,
    /// Each plugin's own config (with at least `type`).
    pub plugins: Vec<Map<String, Value>>,
    /// Where it was read from, if from a file.
    pub path: Option<PathBuf>,
}

fn bad(msg: impl Into<String>) -> RtError {
    RtError::Config(msg.into())
}

impl NetworkConfigList {
    /// Parses a conflist (an object with `plugins`) or a single plugin config.
    pub fn from_json(v: &Value) -> Result<NetworkConfigList, RtError> {
        let o = v
            .as_object()
            .ok_or_else(|| bad("network config is not a JSON object"))?;
        let name = o
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("network config has no \"name\""))?
            .to_string();
        let cni_version = o
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let cni_versions: Vec<String> = match o.get("cniVersions") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .ok_or_else(|| bad("cniVersions holds a non-string"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("cniVersions is not a list")),
        };
        let flag = |k: &str| -> Result<bool, RtError> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                // libcni also accepts the strings "true"/"false".
                Some(Value::String(s)) => s
                    .parse::<bool>()
                    .map_err(|_| bad(format!("{k} is not a boolean: {s:?}"))),
                Some(x) => Err(bad(format!("{k} is not a boolean: {x}"))),
            }
        };
        let (disable_check, disable_gc) = (flag("disableCheck")?, flag("disableGC")?);
        let plugins = match o.get("plugins") {
            Some(Value::Array(a)) => {
                if a.is_empty() {
                    return Err(bad(format!("network {name}: \"plugins\" is empty")));
                }
                a.iter()
                    .map(|p| {
                        p.as_object()
                            .cloned()
                            .ok_or_else(|| bad("a plugin config is not an object"))
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            Some(_) => return Err(bad("\"plugins\" is not a list")),
            // A single plugin config.
            None => vec![o.clone()],
        };
        for p in &plugins {
            if p.get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                return Err(bad(format!("network {name}: a plugin has no \"type\"")));
            }
        }
        if cni_version.is_empty() && cni_versions.is_empty() {
            // libcni: an absent cniVersion means 0.1.0... but a conflist needs one.
            return Err(bad(format!("network {name}: no cniVersion")));
        }
        Ok(NetworkConfigList {
            name,
            cni_version,
            cni_versions,
            disable_check,
            disable_gc,
            plugins,
            path: None,
        })
    }

    /// Reads a `.conflist` / `.conf` / `.json` file.
    pub fn from_file(path: &Path) -> Result<NetworkConfigList, RtError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| bad(format!("{}: not JSON: {e}", path.display())))?;
        let mut l = NetworkConfigList::from_json(&v)?;
        l.path = Some(path.to_path_buf());
        Ok(l)
    }

    /// The plugin types, in chain order.
    pub fn types(&self) -> Vec<String> {
        self.plugins
            .iter()
            .map(|p| p["type"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// The config files of `dir` (`*.conf`, `*.conflist`, `*.json`), sorted by name, as
/// libcni's `ConfFiles` lists them.
pub fn conf_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conf" | "conflist" | "json")
                )
        })
        .collect();
    v.sort();
    v
}

/// The network called `name` in `dir` (the first file, in name order, that declares it;
/// unreadable files are skipped, as libcni does).
pub fn load_network(dir: &Path, name: &str) -> Result<NetworkConfigList, RtError> {
    for f in conf_files(dir) {
        if let Ok(l) = NetworkConfigList::from_file(&f) {
            if l.name == name {
                return Ok(l);
            }
        }
    }
    Err(RtError::NotFound(format!(
        "no network {name:?} in {}",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_conf_is_a_list_of_one() {
        let l = NetworkConfigList::from_json(
            &json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "bridge": "b0"}),
        )
        .unwrap();
        assert_eq!(l.types(), vec!["bridge"]);
        assert_eq!(l.plugins[0]["bridge"], "b0");
    }

    #[test]
    fn conflist_fields() {
        let l = NetworkConfigList::from_json(&json!({
            "cniVersion": "1.0.0", "cniVersions": ["0.4.0", "1.0.0"], "name": "n",
            "disableCheck": true, "disableGC": "true",
            "plugins": [{"type": "a"}, {"type": "b"}]
        }))
        .unwrap();
        assert_eq!(l.types(), vec!["a", "b"]);
        assert!(l.disable_check && l.disable_gc);
        assert_eq!(l.cni_versions, vec!["0.4.0", "1.0.0"]);
        for bad in [
            json!({"cniVersion": "1.0.0", "plugins": [{"type": "a"}]}),
            json!({"cniVersion": "1.0.0", "name": "n", "plugins": []}),
            json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"x": 1}]}),
            json!({"name": "n", "plugins": [{"type": "a"}]}),
        ] {
            assert!(NetworkConfigList::from_json(&bad).is_err(), "{bad}");
        }
    }
}
