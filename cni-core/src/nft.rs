//! Shared nftables plumbing for [`crate::masq`] and [`crate::macspoof`]: one base chain
//! per feature, rules tagged in their comment (rule user data), listed back from the
//! kernel by dumping the chain.
//!
//! The nf_tables messages are built here, in Rust, on a `NETLINK_NETFILTER` socket
//! ([`wire`]: batch, table, chain, rule, dump, ACKs; [`expr`]: the expressions; one
//! socket per operation, see [`Nft`]), no longer through libnftnl/libmnl (the
//! `nftnl`/`mnl` crates): those are C libraries linked dynamically, and Debian ships no static libmnl, which kept the
//! plugins from a fully static (`crt-static`) build, the one lever found for peak RSS
//! (of the 3.2 MB a plugin holds at start, 1.39 MB are `libc.so.6` pages, 0.12 + 0.02 MB
//! libnftnl and libmnl; a static glibc binary maps only what it links) and worth
//! ~0.3-0.5 ms of process start (README, Performance). What the rules need is a few
//! hundred lines; the messages carry the same attributes libnftnl sent, so rules read
//! back identically, and rules written by the old code are found and deleted.
//!
//! Tag format, in the rule comment: `<kind> net=<16 hex> att=<16 hex> <detail>`, where
//! `net` hashes the network name and `att` hashes (network, container id, ifname). A
//! hash rather than the names keeps the comment under nft's 128-byte limit whatever
//! the length of the ids. The names come in as plain strings: this module knows nftables,
//! not the CNI types (its callers, [`crate::masq`] and [`crate::macspoof`], do).
//!
//! A feature's table goes when its last rule does ([`Nft::delete_table_if_empty`]), so a node
//! without pods keeps no empty `cni_masq` table around.

mod expr;
mod wire;

use std::io;

pub(crate) use expr::{Expr, Verdict};

use crate::kernel_error::{KernelError, Kind};
use crate::netlink::detached::release_detached;
use wire::{Batch, Conn};

/// An nftables address family (`NFPROTO_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Ip = 2,
    Ip6 = 10,
    Bridge = 7,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Bridge => "bridge",
        }
    }
}

/// A base chain's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChainType {
    Filter,
    Nat,
}

impl ChainType {
    fn name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        }
    }
}

/// A base chain's hook (`NF_INET_*`, the same numbers for the bridge family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    PreRouting = 0,
    PostRouting = 4,
}

/// `NF_ACCEPT`: the policy of our base chains (they only drop or rewrite what matches).
const POLICY_ACCEPT: u32 = 1;

/// The longest comment nft(8) and libnftnl accept: the user data buffer is 128 bytes,
/// the comment's TLV takes 2 and its NUL 1.
const MAX_COMMENT: usize = 128 - 3;

/// Where a feature keeps its rules: one table with one base chain.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NftChain {
    pub family: Family,
    pub table: &'static str,
    pub chain: &'static str,
    pub chain_type: ChainType,
    pub hook: Hook,
    pub priority: i32,
}

impl NftChain {
    fn describe(&self) -> String {
        format!(
            "nftables chain {} {} {}",
            self.family.name(),
            self.table,
            self.chain
        )
    }

    fn family(&self) -> u8 {
        self.family as u8
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

/// The nftables requests of one operation (an ADD's rule, a DEL's or a GC's removals),
/// all on one `NETLINK_NETFILTER` socket, opened at the first request.
///
/// One socket, not one per request: closing a netfilter netlink socket after a
/// committed transaction waits for nf_tables' destroy work, which waits for an RCU
/// grace period (`close` -> `netlink_release` -> `nft_rcv_nl_event` -> `__flush_work`,
/// seen with `perf record -e sched:sched_switch -g` on Linux 6.18): 9-13 ms per close
/// on the loaded 2-core test VM, against 0.1-1 ms for the requests themselves. A DEL
/// that removed a rule and then its table paid that twice per family with a socket per
/// request; now once per operation, when the `Nft` is dropped, and not by us: after
/// a committed deletion (a DEL, a GC, a re-ADD replacing a rule) the socket's last
/// reference is handed to a detached process that waits in our stead
/// ([`release_detached`], ~0.5 ms here), so that neither the rest of the operation
/// nor the plugin's exit, which its runtime waits for, does. Acknowledged before: only
/// the close moves. Additions leave nothing for that work (the kernel frees their
/// transaction at commit; measured: an ADD's close takes microseconds), so an ADD's,
/// a listing's or a refused request's socket is closed here. Such a close can still
/// wait while another process's deletion is fresh (the list is global): not covered.
/// The kernel's wait itself does not go away: the releasing process's flush holds the
/// namespace's nf_tables commit mutex, which the next operation's commit and even its
/// veth creation (nf_tables' netdev notifier) take, so an ADD that follows a DEL within
/// one or two grace periods waits for the rest of it (measured back to back: ADD+DEL
/// pairs at ~0.4-0.5x of the time with the close in the DEL, `scripts/bench-masq-close.py`).
pub(crate) struct Nft {
    conn: Option<Conn>,
    /// A deletion was committed on `conn`: its close would wait.
    deleted: bool,
}

impl Drop for Nft {
    fn drop(&mut self) {
        self.release();
    }
}

impl Nft {
    pub(crate) fn new() -> Nft {
        Nft {
            conn: None,
            deleted: false,
        }
    }

    /// Runs `f` on the socket (opening it first if needed). The socket stays open after
    /// an error too: replies still queued from the failed request (the ACKs of an
    /// aborted batch) carry that request's sequence numbers, which every later request
    /// skips ([`Conn`] numbers each request anew). A second socket would cost a second
    /// release (a missing table, the common error, is an ENOENT of the first dump).
    fn with<T>(&mut self, f: impl FnOnce(&mut Conn) -> io::Result<T>) -> io::Result<T> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(Conn::open()?),
        };
        f(conn)
    }

    /// Closes the socket, if open; after a deletion without waiting for the kernel's
    /// tail end of it.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.deleted {
                release_detached(conn.into_socket());
            }
        }
    }

    /// Dumps the rules of `chain`. A missing table or chain is an empty list.
    pub(crate) fn list_rules(&mut self, chain: &NftChain) -> Result<Vec<ListedRule>, KernelError> {
        let what = format!("listing {}", chain.describe());
        let mut tries = 0;
        loop {
            tries += 1;
            match self.with(|c| c.dump_rules(chain.family(), chain.table, chain.chain)) {
                Ok(rules) => return Ok(rules),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
                // The ruleset changed during the dump (another plugin added a rule: the
                // kernel flags the dump NLM_F_DUMP_INTR): dump again, as `nft` does.
                Err(e) if e.raw_os_error() == Some(libc::EINTR) && tries < DUMP_TRIES => continue,
                Err(e) => return Err(io_err(&what, e)),
            }
        }
    }

    /// Creates the table and base chain if missing (both are idempotent adds) and
    /// appends a rule made of `exprs`, commented `comment`, in one transaction.
    pub(crate) fn add_rule(
        &mut self,
        chain: &NftChain,
        comment: &str,
        exprs: &[Expr],
    ) -> Result<(), KernelError> {
        let what = format!("adding rule {comment:?} to {}", chain.describe());
        if comment.contains('\0') {
            return Err(KernelError::other(&what, "the comment contains NUL"));
        }
        if comment.len() > MAX_COMMENT {
            return Err(KernelError::other(
                &what,
                format!(
                    "comment of {} bytes, at most {MAX_COMMENT} fit",
                    comment.len()
                ),
            ));
        }
        let mut batch = Batch::new();
        batch.add(
            wire::NFT_MSG_NEWTABLE,
            chain.family(),
            wire::NLM_F_CREATE,
            |a| {
                a.strz(wire::NFTA_TABLE_NAME, chain.table);
                a.be32(wire::NFTA_TABLE_FLAGS, 0);
            },
        );
        batch.add(
            wire::NFT_MSG_NEWCHAIN,
            chain.family(),
            wire::NLM_F_CREATE,
            |a| {
                a.strz(wire::NFTA_CHAIN_TABLE, chain.table);
                a.strz(wire::NFTA_CHAIN_NAME, chain.chain);
                a.nested(wire::NFTA_CHAIN_HOOK, |a| {
                    a.be32(wire::NFTA_HOOK_HOOKNUM, chain.hook as u32);
                    a.be32(wire::NFTA_HOOK_PRIORITY, chain.priority as u32);
                });
                a.be32(wire::NFTA_CHAIN_POLICY, POLICY_ACCEPT);
                a.strz(wire::NFTA_CHAIN_TYPE, chain.chain_type.name());
            },
        );
        batch.add(
            wire::NFT_MSG_NEWRULE,
            chain.family(),
            wire::NLM_F_CREATE | wire::NLM_F_APPEND | wire::NLM_F_EXCL,
            |a| {
                a.strz(wire::NFTA_RULE_TABLE, chain.table);
                a.strz(wire::NFTA_RULE_CHAIN, chain.chain);
                a.bytes(wire::NFTA_RULE_USERDATA, &wire::comment_udata(comment));
                a.nested(wire::NFTA_RULE_EXPRESSIONS, |a| {
                    for e in exprs {
                        e.encode(a);
                    }
                });
            },
        );
        self.with(|c| c.commit(batch)).map_err(|e| io_err(&what, e))
    }

    /// Deletes the rules of `chain` that `select` picks, reading the chain back from the
    /// kernel. Returns how many were deleted. A missing table/chain deletes nothing.
    pub(crate) fn delete_rules(
        &mut self,
        chain: &NftChain,
        select: impl Fn(&ListedRule) -> bool,
    ) -> Result<usize, KernelError> {
        let what = format!("deleting rules from {}", chain.describe());
        // A concurrent DEL may remove a rule between our dump and our delete (ENOENT
        // aborts the whole transaction): dump again and retry.
        let mut attempts = 0;
        let mut deleted = 0;
        loop {
            let victims: Vec<u64> = self
                .list_rules(chain)?
                .into_iter()
                .filter(|r| select(r))
                .map(|r| r.handle)
                .collect();
            if victims.is_empty() {
                return Ok(deleted);
            }
            let mut result = Ok(());
            for handles in victims.chunks(DELETES_PER_BATCH) {
                result = self.with(|c| c.commit(delete_batch(chain, handles)));
                if result.is_err() {
                    break;
                }
                self.deleted = true;
                deleted += handles.len();
            }
            match result {
                Ok(()) => return Ok(deleted),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && attempts < 3 => attempts += 1,
                Err(e) => return Err(io_err(&what, e)),
            }
        }
    }

    /// Removes the feature's base chain and table when the chain holds no rule,
    /// race-free against a concurrent ADD: chain and table are deleted in one
    /// transaction, each flagged `NLM_F_NONREC`, so the kernel itself refuses (`EBUSY`,
    /// the whole batch aborted) if a rule is in the chain at commit time. An ADD that
    /// commits after us recreates table and chain in its own batch (its adds are
    /// create-if-missing). Returns whether the table was removed; "in use" and "already
    /// gone" are `Ok(false)`.
    pub(crate) fn delete_table_if_empty(&mut self, chain: &NftChain) -> Result<bool, KernelError> {
        let mut batch = Batch::new();
        batch.add(
            wire::NFT_MSG_DELCHAIN,
            chain.family(),
            wire::NLM_F_NONREC,
            |a| {
                a.strz(wire::NFTA_CHAIN_TABLE, chain.table);
                a.strz(wire::NFTA_CHAIN_NAME, chain.chain);
            },
        );
        batch.add(
            wire::NFT_MSG_DELTABLE,
            chain.family(),
            wire::NLM_F_NONREC,
            |a| a.strz(wire::NFTA_TABLE_NAME, chain.table),
        );
        match self.with(|c| c.commit(batch)) {
            Ok(()) => {
                self.deleted = true;
                Ok(true)
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOENT)) => {
                Ok(false)
            }
            Err(e) => Err(io_err(
                &format!("removing the empty {}", chain.describe()),
                e,
            )),
        }
    }

    /// After `removed` rules of `chain` were deleted: the table too when that was its
    /// last rule ([`Nft::delete_table_if_empty`]). A failure only leaves an empty table:
    /// logged.
    pub(crate) fn drop_table_if_emptied(&mut self, chain: &NftChain, removed: usize) {
        if removed == 0 {
            return;
        }
        match self.delete_table_if_empty(chain) {
            Ok(true) => tracing::info!(
                table = %chain.describe(),
                "last rule removed: table removed with it"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leaving an empty table"),
        }
    }
}

/// How many times a dump interrupted by a concurrent ruleset change is started again.
const DUMP_TRIES: usize = 16;

/// At most this many rules are deleted per transaction: the kernel queues one ACK per
/// message on our socket before we read any, and the socket's default receive buffer
/// (208 KiB, ~1 KiB per ACK) must hold them all.
const DELETES_PER_BATCH: usize = 64;

/// A transaction deleting the rules `handles` of `chain`.
fn delete_batch(chain: &NftChain, handles: &[u64]) -> Batch {
    let mut batch = Batch::new();
    for h in handles {
        batch.add(wire::NFT_MSG_DELRULE, chain.family(), 0, |a| {
            a.strz(wire::NFTA_RULE_TABLE, chain.table);
            a.strz(wire::NFTA_RULE_CHAIN, chain.chain);
            a.be64(wire::NFTA_RULE_HANDLE, *h);
        });
    }
    batch
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

    /// Deleting a rule that is not there: the kernel's ENOENT reaches the caller (as the
    /// `io::Error` the `KernelError` is made from), and the batch waits for it.
    #[test]
    fn delete_of_a_missing_handle_is_enoent() {
        let kit = testkit::Netns::new("nft-enoent");
        let ns = crate::netns::NetNs::open(&kit.path()).unwrap();
        let chain = NftChain {
            family: Family::Ip,
            table: "cni_enoent",
            chain: "postrouting",
            chain_type: ChainType::Nat,
            hook: Hook::PostRouting,
            priority: 100,
        };
        ns.run(|| {
            let mut nft = Nft::new();
            nft.add_rule(&chain, "x", &[Expr::Masquerade]).unwrap();
            let rules = nft.list_rules(&chain).unwrap();
            assert_eq!(rules.len(), 1);
            assert_eq!(rules[0].comment.as_deref(), Some("x"));
            let missing = delete_batch(&chain, &[rules[0].handle + 1000]);
            let e = Conn::open().unwrap().commit(missing).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
            let e = io_err("deleting rules from x", e);
            assert_eq!(e.errno(), Some(nix::errno::Errno::ENOENT));
            assert!(e.is_not_found());
            // A table with a rule in it is not removed (EBUSY), an absent one neither.
            assert!(!nft.delete_table_if_empty(&chain).unwrap());
            assert_eq!(nft.delete_rules(&chain, |_| true).unwrap(), 1);
            assert!(nft.delete_table_if_empty(&chain).unwrap());
            assert!(!nft.delete_table_if_empty(&chain).unwrap());
            assert!(nft.list_rules(&chain).unwrap().is_empty());
        })
        .unwrap();
    }
}
