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

impl StoreUrl {
    /// Default etcd key prefix.
    pub const ETCD_PREFIX: &'static str = "/cni-suite";

    /// Errors are `IpamError::Config` naming `store` and the accepted forms.
    pub fn parse(s: &str) -> Result<StoreUrl, IpamError> {
        let _ = s;
        todo!()
    }
}
