//! The nf_tables expressions our rules are made of, and their netlink encoding. Every
//! expression that loads or compares works on register 1 (the 16-byte `NFT_REG_1`), so a
//! rule reads as a sequence: load (payload, meta), optionally mask (bitwise), compare
//! (cmp); a statement (masquerade, a verdict) ends it.
//!
//! The attributes are the ones libnftnl sent for the same expressions, so a rule written
//! by this code dumps (`nft --debug=netlink list ruleset`) exactly as one written by the
//! `nftnl` crate before, and nft(8) prints it the same way.

use super::wire::{self, Attrs};

/// Header a payload expression reads from (`enum nft_payload_bases`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Base {
    /// The link-layer (Ethernet) header.
    Link = 0,
    /// The network (IPv4 / IPv6) header.
    Network = 1,
}

/// Comparison operator (`enum nft_cmp_ops`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq = 0,
    Neq = 1,
}

/// A verdict of an `immediate` expression (`NF_DROP`, `NF_ACCEPT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Drop = 0,
}

/// `NFT_META_IIFNAME`: the input interface's name.
const META_IIFNAME: u32 = 6;

/// One expression of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Expr {
    /// Loads `len` bytes at `offset` of the `base` header into register 1.
    Payload { base: Base, offset: u32, len: u32 },
    /// Loads the input interface name (16 bytes, NUL-padded) into register 1.
    MetaIifName,
    /// Register 1 = (register 1 & `mask`) ^ `xor`; both as long as the loaded value.
    Bitwise { mask: Vec<u8>, xor: Vec<u8> },
    /// Compares register 1 with `data`; the rule goes on only if it holds.
    Cmp { op: CmpOp, data: Vec<u8> },
    /// Source NAT to the outgoing interface's address.
    Masquerade,
    /// Ends the rule with a verdict.
    Verdict(Verdict),
}

impl Expr {
    /// `ip saddr` (IPv4 header, bytes 12..16).
    pub(crate) fn ip_saddr() -> Expr {
        Expr::network(12, 4)
    }

    /// `ip daddr` (IPv4 header, bytes 16..20).
    pub(crate) fn ip_daddr() -> Expr {
        Expr::network(16, 4)
    }

    /// `ip6 saddr` (IPv6 header, bytes 8..24).
    pub(crate) fn ip6_saddr() -> Expr {
        Expr::network(8, 16)
    }

    /// `ip6 daddr` (IPv6 header, bytes 24..40).
    pub(crate) fn ip6_daddr() -> Expr {
        Expr::network(24, 16)
    }

    /// `ether saddr` (Ethernet header, bytes 6..12).
    pub(crate) fn ether_saddr() -> Expr {
        Expr::Payload {
            base: Base::Link,
            offset: 6,
            len: 6,
        }
    }

    fn network(offset: u32, len: u32) -> Expr {
        Expr::Payload {
            base: Base::Network,
            offset,
            len,
        }
    }

    /// Register 1 == `data`.
    pub(crate) fn eq(data: impl Into<Vec<u8>>) -> Expr {
        Expr::Cmp {
            op: CmpOp::Eq,
            data: data.into(),
        }
    }

    /// Register 1 != `data`.
    pub(crate) fn neq(data: impl Into<Vec<u8>>) -> Expr {
        Expr::Cmp {
            op: CmpOp::Neq,
            data: data.into(),
        }
    }

    /// Register 1 &= `mask` (the xor is zeros).
    pub(crate) fn and(mask: impl Into<Vec<u8>>) -> Expr {
        let mask = mask.into();
        let xor = vec![0; mask.len()];
        Expr::Bitwise { mask, xor }
    }

    /// An interface name as `iifname` compares it: the name and its NUL, so that
    /// `veth1` does not match `veth10`.
    pub(crate) fn ifname(name: &str) -> Vec<u8> {
        let mut v = name.as_bytes().to_vec();
        v.push(0);
        v
    }

    /// The expression's name in the kernel (`NFTA_EXPR_NAME`).
    fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::MetaIifName => "meta",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Cmp { .. } => "cmp",
            Expr::Masquerade => "masq",
            Expr::Verdict(_) => "immediate",
        }
    }

    /// Appends the expression as one `NFTA_LIST_ELEM` of `NFTA_RULE_EXPRESSIONS`.
    pub(super) fn encode(&self, a: &mut Attrs<'_>) {
        a.nested(wire::NFTA_LIST_ELEM, |a| {
            a.strz(wire::NFTA_EXPR_NAME, self.name());
            if *self == Expr::Masquerade {
                return; // no attributes: masquerade to the primary address, no flags
            }
            a.nested(wire::NFTA_EXPR_DATA, |a| self.encode_data(a));
        });
    }

    fn encode_data(&self, a: &mut Attrs<'_>) {
        use wire::*;
        let value = |a: &mut Attrs<'_>, kind: u16, data: &[u8]| {
            a.nested(kind, |a| a.bytes(NFTA_DATA_VALUE, data));
        };
        match self {
            Expr::Payload { base, offset, len } => {
                a.be32(NFTA_PAYLOAD_DREG, NFT_REG_1);
                a.be32(NFTA_PAYLOAD_BASE, *base as u32);
                a.be32(NFTA_PAYLOAD_OFFSET, *offset);
                a.be32(NFTA_PAYLOAD_LEN, *len);
            }
            Expr::MetaIifName => {
                a.be32(NFTA_META_KEY, META_IIFNAME);
                a.be32(NFTA_META_DREG, NFT_REG_1);
            }
            Expr::Bitwise { mask, xor } => {
                a.be32(NFTA_BITWISE_SREG, NFT_REG_1);
                a.be32(NFTA_BITWISE_DREG, NFT_REG_1);
                a.be32(NFTA_BITWISE_LEN, len32(mask));
                value(a, NFTA_BITWISE_MASK, mask);
                value(a, NFTA_BITWISE_XOR, xor);
            }
            Expr::Cmp { op, data } => {
                a.be32(NFTA_CMP_SREG, NFT_REG_1);
                a.be32(NFTA_CMP_OP, *op as u32);
                value(a, NFTA_CMP_DATA, data);
            }
            Expr::Masquerade => {}
            Expr::Verdict(v) => {
                a.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                a.nested(NFTA_IMMEDIATE_DATA, |a| {
                    a.nested(NFTA_DATA_VERDICT, |a| a.be32(NFTA_VERDICT_CODE, *v as u32));
                });
            }
        }
    }
}

fn len32(b: &[u8]) -> u32 {
    u32::try_from(b.len()).unwrap_or(u32::MAX)
}
