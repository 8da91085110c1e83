//! nf_tables messages on a `NETLINK_NETFILTER` socket: encoding (netlink header,
//! `nfgenmsg`, attributes, nests), the batch transaction with its per-message ACKs, and
//! the rule dump. Only what [`super`] needs; numbers from `linux/netfilter/nf_tables.h`,
//! `linux/netfilter/nfnetlink.h` and `linux/netlink.h` (the `libc` crate has the message
//! types but not the attributes).
//!
//! Every kernel answer that is an error comes back as an `io::Error` carrying the
//! kernel's errno, so that the caller's `KernelError` keeps it.

use std::io;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::ListedRule;

// linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
/// "Do not delete recursively": the kernel refuses (`EBUSY`) to delete a chain that
/// still holds rules or a table that still holds chains.
pub(super) const NLM_F_NONREC: u16 = 0x100;
pub(super) const NLM_F_EXCL: u16 = 0x200;
pub(super) const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
/// The attribute type without the NESTED / NET_BYTEORDER flags.
const NLA_TYPE_MASK: u16 = 0x3fff;

// linux/netfilter/nfnetlink.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFGENMSG_LEN: usize = 4;

// linux/netfilter/nf_tables.h: messages.
pub(super) const NFT_MSG_NEWTABLE: u8 = 0;
pub(super) const NFT_MSG_DELTABLE: u8 = 2;
pub(super) const NFT_MSG_NEWCHAIN: u8 = 3;
pub(super) const NFT_MSG_DELCHAIN: u8 = 5;
pub(super) const NFT_MSG_NEWRULE: u8 = 6;
const NFT_MSG_GETRULE: u8 = 7;
pub(super) const NFT_MSG_DELRULE: u8 = 8;

// Attributes (enum nft_*_attributes).
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(super) const NFTA_HOOK_PRIORITY: u16 = 2;
pub(super) const NFTA_TABLE_NAME: u16 = 1;
pub(super) const NFTA_TABLE_FLAGS: u16 = 2;
pub(super) const NFTA_CHAIN_TABLE: u16 = 1;
pub(super) const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_CHAIN_HOOK: u16 = 4;
pub(super) const NFTA_CHAIN_POLICY: u16 = 5;
pub(super) const NFTA_CHAIN_TYPE: u16 = 7;
pub(super) const NFTA_RULE_TABLE: u16 = 1;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
pub(super) const NFTA_RULE_HANDLE: u16 = 3;
pub(super) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(super) const NFTA_RULE_USERDATA: u16 = 7;
pub(super) const NFTA_EXPR_NAME: u16 = 1;
pub(super) const NFTA_EXPR_DATA: u16 = 2;
pub(super) const NFTA_DATA_VALUE: u16 = 1;
pub(super) const NFTA_DATA_VERDICT: u16 = 2;
pub(super) const NFTA_VERDICT_CODE: u16 = 1;
pub(super) const NFTA_IMMEDIATE_DREG: u16 = 1;
pub(super) const NFTA_IMMEDIATE_DATA: u16 = 2;
pub(super) const NFTA_BITWISE_SREG: u16 = 1;
pub(super) const NFTA_BITWISE_DREG: u16 = 2;
pub(super) const NFTA_BITWISE_LEN: u16 = 3;
pub(super) const NFTA_BITWISE_MASK: u16 = 4;
pub(super) const NFTA_BITWISE_XOR: u16 = 5;
pub(super) const NFTA_CMP_SREG: u16 = 1;
pub(super) const NFTA_CMP_OP: u16 = 2;
pub(super) const NFTA_CMP_DATA: u16 = 3;
pub(super) const NFTA_PAYLOAD_DREG: u16 = 1;
pub(super) const NFTA_PAYLOAD_BASE: u16 = 2;
pub(super) const NFTA_PAYLOAD_OFFSET: u16 = 3;
pub(super) const NFTA_PAYLOAD_LEN: u16 = 4;
pub(super) const NFTA_META_DREG: u16 = 1;
pub(super) const NFTA_META_KEY: u16 = 2;

/// Registers: the verdict register and the first 16-byte data register.
pub(super) const NFT_REG_VERDICT: u32 = 0;
pub(super) const NFT_REG_1: u32 = 1;

/// `NFTNL_UDATA_RULE_COMMENT`: the rule user data TLV nft(8) shows as `comment "…"`.
pub(super) const UDATA_RULE_COMMENT: u8 = 0;

/// Receive buffer: a dump's messages come in datagrams of at most 32 KiB (the kernel caps
/// its dump allocations there), ACKs are far smaller.
const RECV_BUF: usize = 64 * 1024;

/// Appends attributes to a message under construction.
pub(super) struct Attrs<'a>(&'a mut Vec<u8>);

impl Attrs<'_> {
    /// An attribute with `data` as its payload, padded to 4 bytes.
    pub(super) fn bytes(&mut self, kind: u16, data: &[u8]) {
        let start = self.begin(kind);
        self.0.extend_from_slice(data);
        self.end(start);
    }

    /// A NUL-terminated string (`mnl_attr_put_strz`).
    pub(super) fn strz(&mut self, kind: u16, s: &str) {
        let start = self.begin(kind);
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self.end(start);
    }

    /// A 32-bit value in network byte order, as nf_tables wants every number.
    pub(super) fn be32(&mut self, kind: u16, v: u32) {
        self.bytes(kind, &v.to_be_bytes());
    }

    pub(super) fn be64(&mut self, kind: u16, v: u64) {
        self.bytes(kind, &v.to_be_bytes());
    }

    /// A nest (`NLA_F_NESTED`) holding what `inner` appends.
    pub(super) fn nested(&mut self, kind: u16, inner: impl FnOnce(&mut Attrs<'_>)) {
        let start = self.begin(kind | NLA_F_NESTED);
        inner(&mut Attrs(self.0));
        self.end(start);
    }

    fn begin(&mut self, kind: u16) -> usize {
        let start = self.0.len();
        self.0.extend_from_slice(&[0, 0]);
        self.0.extend_from_slice(&kind.to_ne_bytes());
        start
    }

    /// Writes the length (header and payload, without the padding) and pads.
    fn end(&mut self, start: usize) {
        let len = u16::try_from(self.0.len() - start).unwrap_or(u16::MAX);
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.0.resize(align4(self.0.len()), 0);
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one message: netlink header, `nfgenmsg` (`family`, version 0, `res_id`), and
/// the attributes `body` writes.
fn put_msg(
    buf: &mut Vec<u8>,
    msg_type: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: impl FnOnce(&mut Attrs<'_>),
) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]); // length, below
    buf.extend_from_slice(&msg_type.to_ne_bytes());
    buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    buf.extend_from_slice(&[family, 0]);
    buf.extend_from_slice(&res_id.to_be_bytes());
    body(&mut Attrs(buf));
    let len = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn nft_type(msg: u8) -> u16 {
    NFTSUBSYS | u16::from(msg)
}

const NFTSUBSYS: u16 = NFNL_SUBSYS_NFTABLES << 8;

/// One `NETLINK_NETFILTER` socket, for every request of one operation (see
/// `super::Nft` for why one), with its own sequence numbers so that each request's
/// replies are told apart.
pub(super) struct Conn {
    socket: Socket,
    next_seq: u32,
    buf: Vec<u8>,
}

impl Conn {
    pub(super) fn open() -> io::Result<Conn> {
        Ok(Conn {
            socket: Socket::new(NETLINK_NETFILTER)?,
            next_seq: 1,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// The socket, for its release (`super::Nft` hands it to a detached process).
    pub(super) fn into_socket(self) -> Socket {
        self.socket
    }

    fn seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        s
    }

    /// Sends `batch` as one transaction and waits for the ACK of every message. The
    /// first error the kernel reports (the batch is then aborted as a whole) is returned
    /// with its errno. Replies of the batch may still be queued then: they carry this
    /// batch's sequence numbers, which later requests skip.
    pub(super) fn commit(&mut self, batch: Batch) -> io::Result<()> {
        let first = self.next_seq;
        let mut buf = Vec::with_capacity(batch.buf.len() + 2 * (NLMSG_HDRLEN + NFGENMSG_LEN));
        let begin = self.seq();
        // The begin/end markers ask for no ACK: kernels before 6.10 ignore the flag on
        // them, and the ACKs of the messages in between say everything.
        let marker = |buf: &mut Vec<u8>, kind: u16, seq: u32| {
            put_msg(buf, kind, 0, seq, 0, NFNL_SUBSYS_NFTABLES, |_| {});
        };
        marker(&mut buf, NFNL_MSG_BATCH_BEGIN, begin);
        let mut pending = Vec::with_capacity(batch.msgs.len());
        for m in &batch.msgs {
            let seq = self.seq();
            pending.push(seq);
            let mut msg = batch.buf[m.clone()].to_vec();
            msg[8..12].copy_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&msg);
        }
        let end = self.seq();
        marker(&mut buf, NFNL_MSG_BATCH_END, end);
        send(&self.socket, &buf)?;
        let ours = |seq: u32| seq >= first && seq <= end;
        while !pending.is_empty() {
            for msg in recv(&self.socket, &mut self.buf)? {
                let msg = msg?;
                if msg.kind == NLMSG_ERROR && ours(msg.seq) {
                    // An error for any message of ours (also for the begin marker: no
                    // permission, no memory) ends the transaction; 0 is an ACK.
                    error_code(msg.payload)?;
                    pending.retain(|s| *s != msg.seq);
                }
            }
        }
        Ok(())
    }

    /// Dumps the rules of chain `chain` of table `table` (`NFT_MSG_GETRULE`,
    /// `NLM_F_DUMP`): each rule's handle and comment. A dump the kernel flags as
    /// interrupted by a concurrent change (`NLM_F_DUMP_INTR`) is `EINTR`.
    pub(super) fn dump_rules(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
    ) -> io::Result<Vec<ListedRule>> {
        let seq = self.seq();
        let mut req = Vec::with_capacity(64);
        put_msg(
            &mut req,
            nft_type(NFT_MSG_GETRULE),
            NLM_F_DUMP,
            seq,
            family,
            0,
            |a| {
                a.strz(NFTA_RULE_TABLE, table);
                a.strz(NFTA_RULE_CHAIN, chain);
            },
        );
        send(&self.socket, &req)?;
        let mut rules = Vec::new();
        let mut interrupted = false;
        loop {
            for msg in recv(&self.socket, &mut self.buf)? {
                let msg = msg?;
                if msg.seq != seq {
                    continue;
                }
                interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                match msg.kind {
                    NLMSG_DONE => {
                        // The DONE of a failed dump carries the error.
                        if msg.payload.len() >= 4 {
                            error_code(msg.payload)?;
                        }
                        if interrupted {
                            return Err(io::Error::from_raw_os_error(libc::EINTR));
                        }
                        return Ok(rules);
                    }
                    NLMSG_ERROR => error_code(msg.payload)?,
                    k if k == nft_type(NFT_MSG_NEWRULE) => {
                        rules.push(parse_rule(msg.payload.get(NFGENMSG_LEN..).unwrap_or(&[])));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// nf_tables messages to commit as one transaction (`NFNL_MSG_BATCH_BEGIN` .. `END`, all
/// or nothing) through [`Conn::commit`]. Every message asks for an ACK.
pub(super) struct Batch {
    buf: Vec<u8>,
    /// Where each message is in `buf` (its sequence number is set at commit).
    msgs: Vec<std::ops::Range<usize>>,
}

impl Batch {
    pub(super) fn new() -> Batch {
        Batch {
            buf: Vec::with_capacity(1024),
            msgs: Vec::new(),
        }
    }

    /// Adds the nf_tables message `msg` (`NFT_MSG_*`) for `family`, flagged `flags` and
    /// `NLM_F_ACK`.
    pub(super) fn add(
        &mut self,
        msg: u8,
        family: u8,
        flags: u16,
        body: impl FnOnce(&mut Attrs<'_>),
    ) {
        let start = self.buf.len();
        put_msg(
            &mut self.buf,
            nft_type(msg),
            flags | NLM_F_ACK,
            0,
            family,
            0,
            body,
        );
        self.msgs.push(start..self.buf.len());
    }
}

/// Sends `buf` to the kernel (port 0) in one datagram.
fn send(socket: &Socket, buf: &[u8]) -> io::Result<()> {
    let sent = socket.send_to(buf, &SocketAddr::new(0, 0), 0)?;
    if sent != buf.len() {
        return Err(io::Error::other(format!(
            "netlink sent {sent} of {} bytes",
            buf.len()
        )));
    }
    Ok(())
}

/// Receives one datagram into `buf` and returns its messages.
fn recv<'b>(socket: &Socket, buf: &'b mut Vec<u8>) -> io::Result<Messages<'b>> {
    buf.clear();
    let n = socket.recv(buf, libc::MSG_TRUNC)?;
    if n > buf.len() {
        return Err(io::Error::other(format!(
            "netlink message of {n} bytes truncated to {}",
            buf.len()
        )));
    }
    Ok(Messages { rest: &buf[..] })
}

/// One netlink message of a received datagram.
struct NlMsg<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    /// What follows the netlink header.
    payload: &'a [u8],
}

struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = io::Result<NlMsg<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(hdr) = self.rest.get(..NLMSG_HDRLEN) else {
            self.rest = &[];
            return Some(Err(malformed("netlink header")));
        };
        let len = u32_at(hdr, 0) as usize;
        let Some(msg) = self.rest.get(..len).filter(|_| len >= NLMSG_HDRLEN) else {
            self.rest = &[];
            return Some(Err(malformed("netlink message length")));
        };
        self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(NlMsg {
            kind: u16_at(hdr, 4),
            flags: u16_at(hdr, 6),
            seq: u32_at(hdr, 8),
            payload: &msg[NLMSG_HDRLEN..],
        }))
    }
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed {what} from the kernel"),
    )
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The `int error` at the start of an `NLMSG_ERROR` (or `NLMSG_DONE`) payload: 0 is
/// fine, a negative errno is the kernel's refusal.
fn error_code(payload: &[u8]) -> io::Result<()> {
    let code = payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| malformed("netlink error message"))?;
    if code < 0 {
        Err(io::Error::from_raw_os_error(-code))
    } else {
        Ok(())
    }
}

/// The attributes of a payload: (type without flags, value).
fn attrs(mut rest: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let hdr = rest.get(..4)?;
        let len = usize::from(u16_at(hdr, 0));
        let value = rest.get(4..len)?;
        let kind = u16_at(hdr, 2) & NLA_TYPE_MASK;
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

/// Handle and comment of a dumped rule.
fn parse_rule(attributes: &[u8]) -> ListedRule {
    let mut rule = ListedRule {
        handle: 0,
        comment: None,
    };
    for (kind, value) in attrs(attributes) {
        match kind {
            NFTA_RULE_HANDLE => {
                if let Ok(b) = <[u8; 8]>::try_from(value) {
                    rule.handle = u64::from_be_bytes(b);
                }
            }
            NFTA_RULE_USERDATA => rule.comment = comment_of(value),
            _ => {}
        }
    }
    rule
}

/// The rule user data nft(8) writes for `comment "<text>"`: one TLV (type
/// [`UDATA_RULE_COMMENT`], u8 length, the text with its NUL).
pub(super) fn comment_udata(comment: &str) -> Vec<u8> {
    let mut ud = Vec::with_capacity(comment.len() + 3);
    ud.push(UDATA_RULE_COMMENT);
    ud.push(u8::try_from(comment.len() + 1).unwrap_or(u8::MAX));
    ud.extend_from_slice(comment.as_bytes());
    ud.push(0);
    ud
}

/// Extracts the comment from rule user data: TLVs of (type: u8, len: u8, value), the
/// comment a NUL-terminated string; other TLVs are skipped.
pub(super) fn comment_of(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], usize::from(rest[1]));
        let value = rest.get(2..2 + len)?;
        if kind == UDATA_RULE_COMMENT {
            let s = value.split(|b| *b == 0).next().unwrap_or(value);
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_tlv() {
        // Type 1 (NFTNL_UDATA_RULE_EBTABLES_POLICY) first: skipped.
        let mut ud = vec![1u8, 3, b'x', b'y', b'z'];
        ud.extend_from_slice(&comment_udata("hi!"));
        assert_eq!(&ud[5..], &[0, 4, b'h', b'i', b'!', 0]);
        assert_eq!(comment_of(&ud).as_deref(), Some("hi!"));
        assert_eq!(comment_of(&[0, 9, 1]), None);
    }

    #[test]
    fn message_layout() {
        let mut b = Vec::new();
        put_msg(&mut b, nft_type(NFT_MSG_DELRULE), NLM_F_ACK, 7, 2, 0, |a| {
            a.strz(NFTA_RULE_TABLE, "t1");
            a.be64(NFTA_RULE_HANDLE, 5);
            a.nested(NFTA_RULE_EXPRESSIONS, |a| a.bytes(NFTA_LIST_ELEM, &[9]));
        });
        let mut want = Vec::new();
        want.extend_from_slice(&52u32.to_ne_bytes());
        want.extend_from_slice(&(0x0a08u16).to_ne_bytes());
        want.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[2, 0, 0, 0]);
        // "t1\0" (len 7, padded to 8)
        want.extend_from_slice(&7u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(b"t1\0\0");
        want.extend_from_slice(&12u16.to_ne_bytes());
        want.extend_from_slice(&3u16.to_ne_bytes());
        want.extend_from_slice(&5u64.to_be_bytes());
        // nest of one 1-byte attribute: 4 + 8
        want.extend_from_slice(&12u16.to_ne_bytes());
        want.extend_from_slice(&(4u16 | NLA_F_NESTED).to_ne_bytes());
        want.extend_from_slice(&5u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&[9, 0, 0, 0]);
        assert_eq!(b, want);
        let m: Vec<_> = Messages { rest: &b }.collect::<Result<_, _>>().unwrap();
        assert_eq!((m[0].kind, m[0].seq, m.len()), (0x0a08, 7, 1));
        let a: Vec<_> = attrs(&m[0].payload[NFGENMSG_LEN..]).collect();
        assert_eq!(a[0], (NFTA_RULE_TABLE, &b"t1\0"[..]));
        assert_eq!(a[2].0, NFTA_RULE_EXPRESSIONS);
        assert_eq!(parse_rule(&m[0].payload[NFGENMSG_LEN..]).handle, 5);
    }
}
