//! The daemon's and the CLI's errors. The kernel's failures come as they are
//! ([`cni_core::KernelError`]: operation and errno); no CNI error code lives here (codes
//! are for runtimes, `ipamd` is none).

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
    /// A datapath refused its options (an underlay too small for VXLAN, an empty node
    /// name): what to change. The datapath crates word it as a CNI error object; only
    /// its message is kept ([`Error::datapath`]).
    #[error("datapath: {0}")]
    Datapath(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A datapath's refusal of its options, without the CNI code it came with.
    pub fn datapath(e: cni_core::CniError) -> Error {
        Error::Datapath(e.msg)
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_core::KernelError;
    use nix::errno::Errno;

    /// What the daemon logs of a kernel failure: the operation and the errno's text,
    /// never a CNI code.
    #[test]
    fn kernel_failures_show_op_and_errno_not_a_code() {
        let k = KernelError::from_errno(
            "replacing FDB entry 02:00:00:00:00:01 on link #7",
            Errno::ENODEV,
        )
        .context("node resync");
        let e = Error::from(k);
        let shown = e.to_string();
        assert_eq!(
            shown,
            "datapath: node resync: replacing FDB entry 02:00:00:00:00:01 on link #7: \
             No such device (os error 19)"
        );
        assert!(!shown.contains("code"), "{shown}");
        let Error::Kernel(k) = e else {
            panic!("not a kernel error")
        };
        assert!(k.is_not_found());
        let e = Error::datapath(cni_core::CniError::invalid_config("underlay too small"));
        assert_eq!(e.to_string(), "datapath: underlay too small");
    }
}
