//! Shared nftables plumbing over netlink (libnftnl/libmnl through `nftnl`/`mnl`), for
//! [`crate::masq`] and [`crate::macspoof`]: one base chain per feature, rules tagged in
//! their comment (rule user data), listed back from the kernel by dumping the chain.
//!
//! Tag format, in the rule comment: `<kind> net=<16 hex> att=<16 hex> <detail>`, where
//! `net` hashes the network name and `att` hashes (network, container id, ifname). A
//! hash rather than the names keeps the comment under libnftnl's 128-byte limit whatever
//! the length of the ids. The names come in as plain strings: this module knows nftables,
//! not the CNI types (its callers, [`crate::masq`] and [`crate::macspoof`], do).
//!
//! A feature's table goes when its last rule does ([`delete_table_if_empty`]), so a node
//! without pods keeps no empty `cni_masq` table around.

use std::ffi::{CStr, CString};
use std::io;
use std::os::raw::{c_char, c_void};

use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::{Batch, Chain, ChainType, Hook, MsgType, Policy, ProtoFamily, Rule, Table};

use crate::kernel_error::{KernelError, Kind};

/// Where a feature keeps its rules: one table with one base chain.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NftChain {
    pub family: ProtoFamily,
    pub table: &'static CStr,
    pub chain: &'static CStr,
    pub chain_type: ChainType,
    pub hook: Hook,
    pub priority: i32,
}

impl NftChain {
    fn describe(&self) -> String {
        format!(
            "nftables chain {} {} {}",
            family_name(self.family),
            self.table.to_string_lossy(),
            self.chain.to_string_lossy()
        )
    }
}

fn family_name(f: ProtoFamily) -> &'static str {
    match f {
        ProtoFamily::Ipv4 => "ip",
        ProtoFamily::Ipv6 => "ip6",
        ProtoFamily::Bridge => "bridge",
        ProtoFamily::Inet => "inet",
        ProtoFamily::NetDev => "netdev",
        ProtoFamily::Arp => "arp",
        _ => "unspec",
    }
}

/// The identity of a tagged rule: its network and its attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Tag {
    pub net: u64,
    pub att: u64,
}

impl Tag {
    /// The tag of the attachment (`container_id`, `ifname`) to `network`.
    pub(crate) fn new(network: &str, container_id: &str, ifname: &str) -> Tag {
        Tag {
            net: net_hash(network),
            att: att_hash(network, container_id, ifname),
        }
    }

    /// `<kind> net=.. att=.. <detail>`.
    pub(crate) fn comment(&self, kind: &str, detail: &str) -> String {
        format!(
            "{kind} net={:016x} att={:016x} {detail}",
            self.net, self.att
        )
    }

    /// Parses a comment written by [`Tag::comment`] with the same `kind`; returns the tag
    /// and the detail. Foreign rules (anything else) give `None`.
    pub(crate) fn parse<'a>(kind: &str, comment: &'a str) -> Option<(Tag, &'a str)> {
        let rest = comment.strip_prefix(kind)?.strip_prefix(" net=")?;
        let (net, rest) = rest.split_once(" att=")?;
        let (att, detail) = rest.split_once(' ').unwrap_or((rest, ""));
        let net = u64::from_str_radix(net, 16).ok()?;
        let att = u64::from_str_radix(att, 16).ok()?;
        Some((Tag { net, att }, detail))
    }
}

/// The `net=` hash of `network`.
pub(crate) fn net_hash(network: &str) -> u64 {
    crate::hash::stable_hash(&[network])
}

/// The `att=` hash of the attachment (`container_id`, `ifname`) to `network`.
pub(crate) fn att_hash(network: &str, container_id: &str, ifname: &str) -> u64 {
    crate::hash::stable_hash(&[network, container_id, ifname])
}

/// A rule as dumped from the kernel.
#[derive(Clone, Debug)]
pub(crate) struct ListedRule {
    pub handle: u64,
    /// The rule comment, if it has one.
    pub comment: Option<String>,
}

fn io_err(what: &str, e: io::Error) -> KernelError {
    KernelError::io(Kind::Kernel, what, e)
}

/// Netlink receive buffer; libmnl wants it aligned like `nlmsghdr`, hence `u64`s.
struct RecvBuf(Vec<u64>);

impl RecvBuf {
    fn new() -> RecvBuf {
        let len = (nftnl::nft_nlmsg_maxsize() as usize).max(1 << 16) / 8 + 1;
        RecvBuf(vec![0u64; len])
    }
    fn bytes(&mut self) -> &mut [u8] {
        let len = self.0.len() * 8;
        // SAFETY: a u64 slice reinterpreted as bytes: same memory, stricter alignment.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), len) }
    }
}

/// Sends a batch as one transaction and waits for every ACK; the first error aborts.
fn send_batch(batch: Batch) -> io::Result<()> {
    let batch = batch.finalize();
    let socket = mnl::Socket::new(mnl::Bus::Netfilter)?;
    let portid = socket.portid();
    socket.send_all(&batch)?;
    let mut buf = RecvBuf::new();
    let mut seqs = batch.sequence_numbers();
    while !seqs.is_empty() {
        for msg in socket.recv(buf.bytes())? {
            let msg = msg?;
            let Some(seq) = seqs.next() else { break };
            mnl::cb_run(msg, seq, portid)?;
        }
    }
    Ok(())
}

/// Dumps the rules of `chain`. A missing table or chain is an empty list.
pub(crate) fn list_rules(chain: &NftChain) -> Result<Vec<ListedRule>, KernelError> {
    let what = format!("listing {}", chain.describe());
    let mut tries = 0;
    loop {
        tries += 1;
        match dump_rules(chain) {
            Ok(rules) => return Ok(rules),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
            // The ruleset changed during the dump (another plugin added a rule: the kernel
            // flags the dump NLM_F_DUMP_INTR, which libmnl reports as EINTR): dump again,
            // as `nft` does.
            Err(e) if e.raw_os_error() == Some(libc::EINTR) && tries < DUMP_TRIES => continue,
            Err(e) => return Err(io_err(&what, e)),
        }
    }
}

/// How many times a dump interrupted by a concurrent ruleset change is started again.
const DUMP_TRIES: usize = 16;

fn dump_rules(chain: &NftChain) -> io::Result<Vec<ListedRule>> {
    let socket = mnl::Socket::new(mnl::Bus::Netfilter)?;
    let portid = socket.portid();
    let seq = 1u32;
    let mut req = RecvBuf::new();
    let len = {
        let bytes = req.bytes();
        // SAFETY: `bytes` is aligned and large enough for one request (nft_nlmsg_maxsize);
        // the rule object only serves to serialize the table/chain filter and is freed.
        unsafe {
            let hdr = sys::nftnl_nlmsg_build_hdr(
                bytes.as_mut_ptr().cast::<c_char>(),
                libc::NFT_MSG_GETRULE as u16,
                chain.family as u16,
                (libc::NLM_F_DUMP | libc::NLM_F_ACK) as u16,
                seq,
            );
            let rule = sys::nftnl_rule_alloc();
            if rule.is_null() {
                return Err(io::Error::from(io::ErrorKind::OutOfMemory));
            }
            sys::nftnl_rule_set_str(rule, sys::NFTNL_RULE_TABLE as u16, chain.table.as_ptr());
            sys::nftnl_rule_set_str(rule, sys::NFTNL_RULE_CHAIN as u16, chain.chain.as_ptr());
            sys::nftnl_rule_nlmsg_build_payload(hdr, rule);
            sys::nftnl_rule_free(rule);
            (*hdr).nlmsg_len as usize
        }
    };
    socket.send(&req.bytes()[..len])?;
    let mut rules = Vec::new();
    let mut buf = RecvBuf::new();
    loop {
        let n = socket.recv_raw(buf.bytes())?;
        if n == 0 {
            break;
        }
        match mnl::cb_run2(&buf.bytes()[..n], seq, portid, parse_rule_cb, &mut rules)? {
            mnl::CbResult::Stop => break,
            mnl::CbResult::Ok => {}
        }
    }
    Ok(rules)
}

fn parse_rule_cb(hdr: &libc::nlmsghdr, rules: &mut Vec<ListedRule>) -> libc::c_int {
    // SAFETY: `hdr` is a complete message validated by libmnl; the rule is freed below
    // and the user data copied out before that.
    unsafe {
        let rule = sys::nftnl_rule_alloc();
        if rule.is_null() {
            return mnl::mnl_sys::MNL_CB_ERROR;
        }
        if sys::nftnl_rule_nlmsg_parse(hdr, rule) < 0 {
            sys::nftnl_rule_free(rule);
            return mnl::mnl_sys::MNL_CB_ERROR;
        }
        let handle = sys::nftnl_rule_get_u64(rule, sys::NFTNL_RULE_HANDLE as u16);
        let mut len: u32 = 0;
        let data = sys::nftnl_rule_get_data(rule, sys::NFTNL_RULE_USERDATA as u16, &mut len);
        let comment = if data.is_null() {
            None
        } else {
            comment_of(std::slice::from_raw_parts(data.cast::<u8>(), len as usize))
        };
        sys::nftnl_rule_free(rule);
        rules.push(ListedRule { handle, comment });
    }
    mnl::mnl_sys::MNL_CB_OK
}

/// Extracts `NFTNL_UDATA_RULE_COMMENT` from rule user data: TLVs of
/// (type: u8, len: u8, value), the comment being a NUL-terminated string.
fn comment_of(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], usize::from(rest[1]));
        let value = rest.get(2..2 + len)?;
        if u32::from(kind) == sys::NFTNL_UDATA_RULE_COMMENT {
            let s = value.split(|b| *b == 0).next().unwrap_or(value);
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}

/// Creates the table and base chain if missing (both are idempotent adds) and appends a
/// rule built by `build`, commented `comment`, in one transaction.
pub(crate) fn add_rule(
    chain: &NftChain,
    comment: &str,
    build: impl FnOnce(&mut Rule<'_>),
) -> Result<(), KernelError> {
    let what = format!("adding rule {comment:?} to {}", chain.describe());
    let c_comment = CString::new(comment).map_err(|e| KernelError::other(&what, e.to_string()))?;
    let table = Table::new(chain.table, chain.family);
    let mut base = Chain::new(chain.chain, &table);
    base.set_type(chain.chain_type);
    base.set_hook(chain.hook, chain.priority);
    base.set_policy(Policy::Accept);
    let mut rule = Rule::new(&base);
    rule.set_comment(c_comment.as_c_str())
        .map_err(|e| KernelError::other(&what, e.to_string()))?;
    build(&mut rule);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    batch.add(&base, MsgType::Add);
    batch.add(&rule, MsgType::Add);
    send_batch(batch).map_err(|e| io_err(&what, e))
}

/// Deletes the rules of `chain` that `select` picks, reading the chain back from the
/// kernel. Returns how many were deleted. A missing table/chain deletes nothing.
pub(crate) fn delete_rules(
    chain: &NftChain,
    select: impl Fn(&ListedRule) -> bool,
) -> Result<usize, KernelError> {
    let what = format!("deleting rules from {}", chain.describe());
    // A concurrent DEL may remove a rule between our dump and our delete (ENOENT aborts
    // the whole transaction): dump again and retry.
    let mut attempts = 0;
    loop {
        let victims: Vec<u64> = list_rules(chain)?
            .into_iter()
            .filter(|r| select(r))
            .map(|r| r.handle)
            .collect();
        if victims.is_empty() {
            return Ok(0);
        }
        let table = Table::new(chain.table, chain.family);
        let base = Chain::new(chain.chain, &table);
        let rules: Vec<Rule<'_>> = victims
            .iter()
            .map(|h| {
                let mut r = Rule::new(&base);
                r.set_handle(*h);
                r
            })
            .collect();
        let mut batch = Batch::new();
        for r in &rules {
            batch.add(r, MsgType::Del);
        }
        match send_batch(batch) {
            Ok(()) => return Ok(victims.len()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && attempts < 3 => attempts += 1,
            Err(e) => return Err(io_err(&what, e)),
        }
    }
}

/// `NLM_F_NONREC` (linux/netlink.h): "do not delete recursively": the kernel refuses
/// (`EBUSY`) to delete a chain that still holds rules or a table that still holds chains.
const NLM_F_NONREC: u16 = 0x100;

/// A delete message for the table or the base chain of an [`NftChain`], flagged
/// [`NLM_F_NONREC`] (nftnl's own messages cannot carry the flag).
struct NonRecursiveDel<'a> {
    chain: &'a NftChain,
    /// Delete the chain (else the table).
    is_chain: bool,
}

// SAFETY: writes one message into a buffer of `nft_nlmsg_maxsize()` bytes (the `Batch`
// contract); the libnftnl objects are only used to serialize the names and are freed.
unsafe impl nftnl::NlMsg for NonRecursiveDel<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        let (msg, flags) = (
            if self.is_chain {
                libc::NFT_MSG_DELCHAIN
            } else {
                libc::NFT_MSG_DELTABLE
            },
            libc::NLM_F_ACK as u16 | NLM_F_NONREC,
        );
        // SAFETY: see the impl.
        unsafe {
            let hdr = sys::nftnl_nlmsg_build_hdr(
                buf.cast::<c_char>(),
                msg as u16,
                self.chain.family as u16,
                flags,
                seq,
            );
            if self.is_chain {
                let c = sys::nftnl_chain_alloc();
                if c.is_null() {
                    return;
                }
                sys::nftnl_chain_set_str(
                    c,
                    sys::NFTNL_CHAIN_TABLE as u16,
                    self.chain.table.as_ptr(),
                );
                sys::nftnl_chain_set_str(
                    c,
                    sys::NFTNL_CHAIN_NAME as u16,
                    self.chain.chain.as_ptr(),
                );
                sys::nftnl_chain_nlmsg_build_payload(hdr, c);
                sys::nftnl_chain_free(c);
            } else {
                let t = sys::nftnl_table_alloc();
                if t.is_null() {
                    return;
                }
                sys::nftnl_table_set_str(
                    t,
                    sys::NFTNL_TABLE_NAME as u16,
                    self.chain.table.as_ptr(),
                );
                sys::nftnl_table_nlmsg_build_payload(hdr, t);
                sys::nftnl_table_free(t);
            }
        }
    }
}

/// Removes the feature's base chain and table when the chain holds no rule, race-free
/// against a concurrent ADD: chain and table are deleted in one transaction, each
/// flagged [`NLM_F_NONREC`], so the kernel itself refuses (`EBUSY`, the whole batch
/// aborted) if a rule is in the chain at commit time. An ADD that commits after us
/// recreates table and chain in its own batch (its adds are create-if-missing).
/// Returns whether the table was removed; "in use" and "already gone" are `Ok(false)`.
pub(crate) fn delete_table_if_empty(chain: &NftChain) -> Result<bool, KernelError> {
    let mut batch = Batch::new();
    batch.add(
        &NonRecursiveDel {
            chain,
            is_chain: true,
        },
        MsgType::Del,
    );
    batch.add(
        &NonRecursiveDel {
            chain,
            is_chain: false,
        },
        MsgType::Del,
    );
    match send_batch(batch) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOENT)) => Ok(false),
        Err(e) => Err(io_err(
            &format!("removing the empty {}", chain.describe()),
            e,
        )),
    }
}

/// After `removed` rules of `chain` were deleted: the table too when that was its last
/// rule ([`delete_table_if_empty`]). A failure only leaves an empty table: logged.
pub(crate) fn drop_table_if_emptied(chain: &NftChain, removed: usize) {
    if removed == 0 {
        return;
    }
    match delete_table_if_empty(chain) {
        Ok(true) => tracing::info!(
            table = %chain.describe(),
            "last rule removed: table removed with it"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "leaving an empty table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_round_trip() {
        let t = Tag {
            net: 0x1234,
            att: u64::MAX,
        };
        let c = t.comment("cni-masq", "src=10.0.0.2/24");
        assert_eq!(
            c,
            "cni-masq net=0000000000001234 att=ffffffffffffffff src=10.0.0.2/24"
        );
        assert_eq!(Tag::parse("cni-masq", &c), Some((t, "src=10.0.0.2/24")));
        assert_eq!(Tag::parse("cni-macspoof", &c), None);
        assert_eq!(Tag::parse("cni-masq", "cni-masq net=zz att=1 x"), None);
    }

    #[test]
    fn comment_tlv() {
        // Type 1 (NFTNL_UDATA_RULE_EBTABLES_POLICY) first: skipped.
        let mut ud = vec![1u8, 3, b'x', b'y', b'z'];
        ud.extend_from_slice(&[sys::NFTNL_UDATA_RULE_COMMENT as u8, 4, b'h', b'i', b'!', 0]);
        assert_eq!(comment_of(&ud).as_deref(), Some("hi!"));
        assert_eq!(comment_of(&[0, 9, 1]), None);
    }
}
