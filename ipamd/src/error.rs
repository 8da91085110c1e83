//! The daemon's and the CLI's errors.

use ipam::IpamError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// A bad flag; the message names it.
    #[error("{0}")]
    Usage(String),
    /// The datapath (netlink, underlay, devices).
    #[error("datapath: {0}")]
    Datapath(#[from] cni_core::CniError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
