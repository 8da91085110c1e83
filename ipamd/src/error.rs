//! The daemon's and the CLI's errors.

use ipam::IpamError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// A bad flag; the message names it.
    #[error("{0}")]
    Usage(String),
    /// The kernel side of the datapath (netlink, underlay, devices): the operation and
    /// the kernel's errno.
    #[error("datapath: {0}")]
    Kernel(#[from] cni_core::KernelError),
    /// A datapath refused its options (e.g. an underlay too small for VXLAN). The
    /// datapath crates describe it as a CNI error object: only its message is kept.
    #[error("datapath: {}", .0.msg)]
    Datapath(cni_core::CniError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<cni_core::CniError> for Error {
    fn from(e: cni_core::CniError) -> Error {
        Error::Datapath(e)
    }
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
