//! Errors of the allocator and the store, and how they map to CNI error codes.

use cni_core::spec::error::{CniError, ErrorCode};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// CNI code of a store file that cannot be parsed (corrupt or truncated).
pub(crate) const CODE_STORE_CORRUPT: u32 = 101;
/// CNI code of an exhausted range set.
pub(crate) const CODE_RANGE_FULL: u32 = 102;
/// CNI code of a requested address that cannot be given (taken, reserved, out of range).
pub(crate) const CODE_IP_UNAVAILABLE: u32 = 103;
/// CNI code 11, "try again later": the cluster store is down, or a lease about to
/// expire will free space.
pub(crate) const CODE_TRY_AGAIN: u32 = 11;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Invalid configuration; the message names the field.
    #[error("{0}")]
    Config(String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A store file that does not parse. Never reset or overwritten automatically.
    #[error("store file {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("no free address in range set {set}: the range is full")]
    Exhausted { set: String },
    #[error("requested IP {ip} {reason}")]
    Unavailable { ip: IpAddr, reason: String },
    /// CHECK: nothing is reserved for the attachment, or it differs from the expectation.
    #[error("{0}")]
    NotFound(String),
    /// The cluster store cannot be reached (or answered with an error): try again later
    /// (CNI code 11).
    #[error("cluster store unavailable: {0}")]
    StoreUnavailable(String),
    /// No block can be claimed now, but space is about to be freed (a node's lease is
    /// running out): try again later (CNI code 11).
    #[error("{0}")]
    TryAgain(String),
    /// The cluster pool has no free block, or the node holds `maxBlocksPerNode` blocks
    /// (code 102, as a full range set).
    #[error("{0}")]
    PoolExhausted(String),
    /// `cni-ipam` was orphaned: the plugin that delegated to it has exited, so it
    /// changes nothing (code 999: nobody is left to read the answer).
    #[error("{0}")]
    Orphaned(String),
    /// A cluster store record (etcd key or file store entry) that does not parse.
    #[error("cluster store record {what} is corrupt: {reason}")]
    CorruptRecord { what: String, reason: String },
}

impl IpamError {
    pub fn config(msg: impl Into<String>) -> Self {
        IpamError::Config(msg.into())
    }

    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        IpamError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        IpamError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// The CNI code this error is reported with.
    pub fn code(&self) -> u32 {
        match self {
            IpamError::Config(_) => ErrorCode::InvalidConfig as u32,
            IpamError::Io { .. } => ErrorCode::Io as u32,
            IpamError::Corrupt { .. } => CODE_STORE_CORRUPT,
            IpamError::Exhausted { .. } => CODE_RANGE_FULL,
            IpamError::Unavailable { .. } => CODE_IP_UNAVAILABLE,
            IpamError::NotFound(_) => ErrorCode::UnknownContainer as u32,
            IpamError::StoreUnavailable(_) | IpamError::TryAgain(_) => CODE_TRY_AGAIN,
            IpamError::PoolExhausted(_) => CODE_RANGE_FULL,
            IpamError::CorruptRecord { .. } => CODE_STORE_CORRUPT,
            IpamError::Orphaned(_) => ErrorCode::Internal as u32,
        }
    }
}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> CniError {
        let code = e.code();
        CniError {
            code,
            msg: e.to_string(),
            details: String::new(),
        }
    }
}
