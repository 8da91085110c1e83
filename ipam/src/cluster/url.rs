//! The `store` setting: `file:///var/lib/cni/cluster.json` or
//! `etcd://127.0.0.1:2379[,host:port...][/prefix]`.

use std::path::PathBuf;

use crate::error::IpamError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    File(PathBuf),
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
}

const FORMS: &str =
    "expected file:///absolute/path.json or etcd://host:port[,host:port...][/prefix]";

impl StoreUrl {
    /// Default etcd key prefix.
    pub const ETCD_PREFIX: &'static str = "/cni-suite";

    /// Errors are `IpamError::Config` naming `store` and the accepted forms.
    pub fn parse(s: &str) -> Result<StoreUrl, IpamError> {
        let bad = |why: &str| IpamError::config(format!("ipam.store: {s:?} {why}; {FORMS}"));
        let s_trim = s.trim();
        if let Some(path) = s_trim.strip_prefix("file://") {
            if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') {
                return Err(bad("is not an absolute file path"));
            }
            return Ok(StoreUrl::File(PathBuf::from(path)));
        }
        if let Some(rest) = s_trim.strip_prefix("etcd://") {
            let (hosts, prefix) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, Self::ETCD_PREFIX),
            };
            let prefix = prefix.trim_end_matches('/');
            if prefix.is_empty() {
                return Err(bad("has an empty key prefix"));
            }
            let mut endpoints = Vec::new();
            for h in hosts.split(',') {
                let h = h.trim();
                let Some((host, port)) = h.rsplit_once(':') else {
                    return Err(bad(&format!("endpoint {h:?} has no port")));
                };
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(bad(&format!("endpoint {h:?} is not host:port")));
                }
                endpoints.push(format!("http://{h}"));
            }
            return Ok(StoreUrl::Etcd {
                endpoints,
                prefix: prefix.to_string(),
            });
        }
        Err(bad("has an unknown scheme"))
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::File(p) => write!(f, "file://{}", p.display()),
            StoreUrl::Etcd { endpoints, prefix } => {
                let hosts: Vec<&str> = endpoints
                    .iter()
                    .map(|e| e.trim_start_matches("http://"))
                    .collect();
                write!(f, "etcd://{}{prefix}", hosts.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!(
            StoreUrl::parse("file:///var/lib/cni/cluster.json").unwrap(),
            StoreUrl::File("/var/lib/cni/cluster.json".into())
        );
        assert_eq!(
            StoreUrl::parse("etcd://127.0.0.1:2379").unwrap(),
            StoreUrl::Etcd {
                endpoints: vec!["http://127.0.0.1:2379".into()],
                prefix: "/cni-suite".into()
            }
        );
        assert_eq!(
            StoreUrl::parse("etcd://a:1,b:2/x/y").unwrap(),
            StoreUrl::Etcd {
                endpoints: vec!["http://a:1".into(), "http://b:2".into()],
                prefix: "/x/y".into()
            }
        );
        for bad in ["file://rel", "etcd://h", "etcd://h:x", "http://x", ""] {
            let e = StoreUrl::parse(bad).unwrap_err();
            assert!(e.to_string().contains("ipam.store"), "{e}");
            assert_eq!(e.code(), 7);
        }
    }
}
