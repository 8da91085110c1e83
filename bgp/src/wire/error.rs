//! Decoding errors, each mapped to the NOTIFICATION RFC 4271 §6 prescribes.

use super::Notification;

/// Message Header Error (code 1) subcodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    NotSynchronized,
    BadLength(u16),
    BadType(u8),
}

/// OPEN Message Error (code 2) subcodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    UnsupportedVersion(u8),
    BadPeerAs,
    BadBgpIdentifier,
    UnsupportedOptionalParameter,
    UnacceptableHoldTime,
    /// A capability we require (e.g. the address family we peer for) was not offered.
    UnsupportedCapability,
    /// Lengths inside the OPEN do not add up: RFC 4271 has no finer subcode than 0.
    Malformed,
}

/// UPDATE Message Error (code 3) subcodes; attribute errors carry the attribute
/// (type, length and value) as the data RFC 4271 asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    MalformedAttributeList,
    UnrecognizedWellKnown(Vec<u8>),
    MissingWellKnown(u8),
    AttributeFlags(Vec<u8>),
    AttributeLength(Vec<u8>),
    InvalidOrigin(Vec<u8>),
    InvalidNextHop(Vec<u8>),
    OptionalAttribute(Vec<u8>),
    InvalidNetworkField,
    MalformedAsPath,
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message header error: {0:?}")]
    Header(HeaderError),
    #[error("OPEN message error: {0:?}")]
    Open(OpenError),
    #[error("UPDATE message error: {0:?}")]
    Update(UpdateError),
    /// RFC 7313 §5: ROUTE-REFRESH Message Error, Invalid Message Length.
    #[error("ROUTE-REFRESH of bad length {0}")]
    RouteRefreshLength(u16),
}

impl From<HeaderError> for DecodeError {
    fn from(e: HeaderError) -> Self {
        DecodeError::Header(e)
    }
}
impl From<OpenError> for DecodeError {
    fn from(e: OpenError) -> Self {
        DecodeError::Open(e)
    }
}
impl From<UpdateError> for DecodeError {
    fn from(e: UpdateError) -> Self {
        DecodeError::Update(e)
    }
}

impl DecodeError {
    /// The NOTIFICATION that tells the peer what was wrong.
    pub fn notification(&self) -> Notification {
        let (code, subcode, data) = match self {
            DecodeError::Header(h) => match h {
                HeaderError::NotSynchronized => (1, 1, vec![]),
                HeaderError::BadLength(len) => (1, 2, len.to_be_bytes().to_vec()),
                HeaderError::BadType(t) => (1, 3, vec![*t]),
            },
            DecodeError::Open(o) => match o {
                // Data: the largest version we support.
                OpenError::UnsupportedVersion(_) => (2, 1, vec![0, 4]),
                OpenError::BadPeerAs => (2, 2, vec![]),
                OpenError::BadBgpIdentifier => (2, 3, vec![]),
                OpenError::UnsupportedOptionalParameter => (2, 4, vec![]),
                OpenError::UnacceptableHoldTime => (2, 6, vec![]),
                OpenError::UnsupportedCapability => (2, 7, vec![]),
                OpenError::Malformed => (2, 0, vec![]),
            },
            DecodeError::Update(u) => match u {
                UpdateError::MalformedAttributeList => (3, 1, vec![]),
                UpdateError::UnrecognizedWellKnown(a) => (3, 2, a.clone()),
                UpdateError::MissingWellKnown(t) => (3, 3, vec![*t]),
                UpdateError::AttributeFlags(a) => (3, 4, a.clone()),
                UpdateError::AttributeLength(a) => (3, 5, a.clone()),
                UpdateError::InvalidOrigin(a) => (3, 6, a.clone()),
                UpdateError::InvalidNextHop(a) => (3, 8, a.clone()),
                UpdateError::OptionalAttribute(a) => (3, 9, a.clone()),
                UpdateError::InvalidNetworkField => (3, 10, vec![]),
                UpdateError::MalformedAsPath => (3, 11, vec![]),
            },
            DecodeError::RouteRefreshLength(len) => (7, 1, len.to_be_bytes().to_vec()),
        };
        Notification {
            code,
            subcode,
            data,
        }
    }
}
