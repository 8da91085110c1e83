//! The BGP-4 wire format: the messages a speaker exchanges (RFC 4271 §4), with the
//! capabilities and attributes this speaker uses. Decoding never panics: any malformed
//! input becomes a [`DecodeError`], which knows the NOTIFICATION to answer with (§6).

mod error;
mod open;
mod update;

pub use error::{DecodeError, HeaderError, OpenError, UpdateError};
pub use open::{Capability, ExtendedNextHop, Family, GracefulRestart, Open, AS_TRANS};
pub use update::{AsSegment, MpReach, MpUnreach, Origin, PathAttributes, RawAttribute, Update};

/// Length of the fixed header: marker (16), length (2), type (1).
pub const HEADER_LEN: usize = 19;
/// Largest message RFC 4271 allows (no RFC 8654 extended messages).
pub const MAX_MESSAGE_LEN: usize = 4096;
const MARKER: [u8; 16] = [0xff; 16];

/// What a session negotiated that changes how UPDATEs are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// Both sides announced 4-octet AS numbers (RFC 6793): AS_PATH carries 4-byte ASNs.
    pub four_octet_as: bool,
    /// Both sides announced the extended next hop capability for IPv4 unicast with IPv6
    /// next hops (RFC 8950): an IPv4 MP_REACH_NLRI may carry a 16- or 32-octet next hop.
    /// Without it such a next hop is an error (UPDATE Message Error, Optional Attribute
    /// Error).
    pub extended_next_hop: bool,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            four_octet_as: true,
            extended_next_hop: false,
        }
    }
}

/// One BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(Family),
}

/// A NOTIFICATION (RFC 4271 §4.5): error code, subcode and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM_ERROR: u8 = 5;
    pub const CEASE: u8 = 6;
    /// Cease subcodes (RFC 4486).
    pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    pub const CEASE_COLLISION: u8 = 7;
    /// RFC 8538 §3: ends graceful-restart treatment even when the N bit was negotiated.
    pub const CEASE_HARD_RESET: u8 = 9;

    pub fn new(code: u8, subcode: u8) -> Self {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    /// Cease / Hard Reset carrying `inner` (its code, subcode and data: RFC 8538 §3).
    pub fn hard_reset(inner: &Notification) -> Self {
        let mut data = vec![inner.code, inner.subcode];
        data.extend_from_slice(&inner.data);
        Notification {
            code: Self::CEASE,
            subcode: Self::CEASE_HARD_RESET,
            data,
        }
    }

    pub fn is_hard_reset(&self) -> bool {
        self.code == Self::CEASE && self.subcode == Self::CEASE_HARD_RESET
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.code {
            1 => "message header error",
            2 => "OPEN message error",
            3 => "UPDATE message error",
            4 => "hold timer expired",
            5 => "finite state machine error",
            6 => "cease",
            7 => "ROUTE-REFRESH message error",
            _ => "unknown error",
        };
        write!(f, "{what} ({}/{})", self.code, self.subcode)?;
        if self.is_hard_reset() {
            if let [code, subcode, ..] = self.data[..] {
                write!(f, " of ({code}/{subcode})")?;
            }
        }
        Ok(())
    }
}

/// The header of a message whose body has not been read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    /// Total message length, header included; already checked against the type's bounds.
    pub len: usize,
}

impl Header {
    /// Checks the marker, the length and the type (§6.1).
    pub fn decode(buf: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
        if buf[..16] != MARKER {
            return Err(HeaderError::NotSynchronized.into());
        }
        let len = u16::from_be_bytes([buf[16], buf[17]]);
        let kind = buf[18];
        let min = match kind {
            1 => 29,
            2 => 23,
            3 => 21,
            4 => 19,
            5 => 23,
            other => return Err(HeaderError::BadType(other).into()),
        };
        let n = usize::from(len);
        // KEEPALIVE has exactly the header; ROUTE-REFRESH exactly 4 more octets.
        let ok = n >= min && n <= MAX_MESSAGE_LEN && (kind != 4 || n == 19);
        if !ok {
            return Err(HeaderError::BadLength(len).into());
        }
        Ok(Header { kind, len: n })
    }
}

impl Message {
    /// Decodes one whole message (header included), as it came off the wire.
    pub fn decode(buf: &[u8], codec: Codec) -> Result<Message, DecodeError> {
        let head: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(HeaderError::BadLength(0))?;
        let header = Header::decode(head)?;
        if header.len != buf.len() {
            return Err(HeaderError::BadLength(header.len as u16).into());
        }
        Message::decode_body(header, &buf[HEADER_LEN..], codec)
    }

    /// Decodes the body of a message whose header was checked by [`Header::decode`].
    pub fn decode_body(header: Header, body: &[u8], codec: Codec) -> Result<Message, DecodeError> {
        Ok(match header.kind {
            1 => Message::Open(Open::decode(body)?),
            2 => Message::Update(Update::decode(body, codec)?),
            3 => {
                let (code, subcode) = match body {
                    [c, s, ..] => (*c, *s),
                    _ => return Err(HeaderError::BadLength(header.len as u16).into()),
                };
                Message::Notification(Notification {
                    code,
                    subcode,
                    data: body[2..].to_vec(),
                })
            }
            4 => Message::Keepalive,
            5 => match body {
                [a0, a1, _reserved, safi] => {
                    Message::RouteRefresh(Family::new(u16::from_be_bytes([*a0, *a1]), *safi))
                }
                _ => return Err(DecodeError::RouteRefreshLength(header.len as u16)),
            },
            other => return Err(HeaderError::BadType(other).into()),
        })
    }

    /// Encodes the message with its header. UPDATEs must have been sized to fit
    /// [`MAX_MESSAGE_LEN`] by the caller (see [`Update::encoded_len`]).
    pub fn encode(&self, codec: Codec) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MARKER);
        // Length and type are filled in once the body is there.
        out.extend_from_slice(&[0, 0, 0]);
        let kind = match self {
            Message::Open(open) => {
                open.encode(&mut out);
                1
            }
            Message::Update(update) => {
                update.encode(&mut out, codec);
                2
            }
            Message::Notification(n) => {
                out.push(n.code);
                out.push(n.subcode);
                out.extend_from_slice(&n.data);
                3
            }
            Message::Keepalive => 4,
            Message::RouteRefresh(family) => {
                out.extend_from_slice(&family.afi.to_be_bytes());
                out.push(0);
                out.push(family.safi);
                5
            }
        };
        out[18] = kind;
        let len = out.len() as u16;
        out[16..18].copy_from_slice(&len.to_be_bytes());
        out
    }
}

/// A cursor over a byte slice whose reads fail instead of panicking.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}
