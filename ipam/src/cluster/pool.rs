//! A cluster pool: one or more CIDRs (at most one per family is typical) cut into
//! blocks of a fixed size.

use ipnetwork::IpNetwork;

use crate::error::IpamError;
use crate::range::ip_to_u128;

pub(super) const DEFAULT_BLOCK_V4: u8 = 26;
pub(super) const DEFAULT_BLOCK_V6: u8 = 122;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    cidrs: Vec<IpNetwork>,
    block_v4: u8,
    block_v6: u8,
}

impl Pool {
    /// Validates that every block size fits its family's CIDRs and that CIDRs do not
    /// overlap. Errors are `IpamError::Config` naming the field.
    pub fn new(
        cidrs: Vec<IpNetwork>,
        block_v4: Option<u8>,
        block_v6: Option<u8>,
    ) -> Result<Pool, IpamError> {
        if cidrs.is_empty() {
            return Err(IpamError::config("ipam.pool: at least one CIDR is needed"));
        }
        let block_v4 = block_v4.unwrap_or(DEFAULT_BLOCK_V4);
        let block_v6 = block_v6.unwrap_or(DEFAULT_BLOCK_V6);
        // A block must leave room for at least 2 usable addresses (network/broadcast
        // excluded in IPv4).
        if block_v4 > 30 {
            return Err(IpamError::config(format!(
                "ipam.blockSize: /{block_v4} is too small for a block (at most /30)"
            )));
        }
        if block_v6 > 126 {
            return Err(IpamError::config(format!(
                "ipam.blockSize6: /{block_v6} is too small for a block (at most /126)"
            )));
        }
        for (i, c) in cidrs.iter().enumerate() {
            let field = format!("ipam.pool[{i}]");
            if c.ip() != c.network() {
                return Err(IpamError::config(format!(
                    "{field}: {c} has host bits set (the network is {}/{})",
                    c.network(),
                    c.prefix()
                )));
            }
            let (bs, name) = if c.is_ipv4() {
                (block_v4, "ipam.blockSize")
            } else {
                (block_v6, "ipam.blockSize6")
            };
            if bs < c.prefix() {
                return Err(IpamError::config(format!(
                    "{name}: /{bs} is larger than {field} {c} (the block prefix must be >= /{})",
                    c.prefix()
                )));
            }
            for (j, o) in cidrs[..i].iter().enumerate() {
                if o.is_ipv4() == c.is_ipv4()
                    && (o.contains(c.network()) || c.contains(o.network()))
                {
                    return Err(IpamError::config(format!(
                        "{field}: {c} overlaps with ipam.pool[{j}] {o}"
                    )));
                }
            }
        }
        Ok(Pool {
            cidrs,
            block_v4,
            block_v6,
        })
    }

    pub fn cidrs(&self) -> &[IpNetwork] {
        &self.cidrs
    }

    pub fn block_prefix(&self, v6: bool) -> u8 {
        if v6 {
            self.block_v6
        } else {
            self.block_v4
        }
    }

    /// Whether the pool has a CIDR of the family.
    pub fn has_family(&self, v6: bool) -> bool {
        self.cidrs.iter().any(|c| c.is_ipv6() == v6)
    }

    /// Every block of the family, in address order.
    pub fn blocks(&self, v6: bool) -> Box<dyn Iterator<Item = IpNetwork> + '_> {
        let bp = self.block_prefix(v6);
        let bits: u32 = if v6 { 128 } else { 32 };
        let step: u128 = 1u128 << (bits - u32::from(bp));
        Box::new(
            self.cidrs
                .iter()
                .filter(move |c| c.is_ipv6() == v6)
                .flat_map(move |c| {
                    let first = ip_to_u128(c.network());
                    // Number of blocks: 2^(bp - prefix), capped so the count fits.
                    let count: u128 = 1u128
                        .checked_shl(u32::from(bp) - u32::from(c.prefix()))
                        .unwrap_or(u128::MAX);
                    let like = c.network();
                    (0..count).filter_map(move |i| {
                        let v = first.checked_add(i.checked_mul(step)?)?;
                        IpNetwork::new(from_u128(v, like), bp).ok()
                    })
                }),
        )
    }

    /// Whether `net` lies inside the pool.
    pub fn contains(&self, net: IpNetwork) -> bool {
        self.cidrs.iter().any(|c| {
            c.is_ipv4() == net.is_ipv4() && c.prefix() <= net.prefix() && c.contains(net.network())
        })
    }

    /// Whether `net` is exactly one of the pool's blocks.
    pub fn is_block(&self, net: IpNetwork) -> bool {
        net.prefix() == self.block_prefix(net.is_ipv6())
            && net.ip() == net.network()
            && self.contains(net)
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, c) in self.cidrs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

fn from_u128(v: u128, like: std::net::IpAddr) -> std::net::IpAddr {
    match like {
        std::net::IpAddr::V4(_) => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::from((v & 0xffff_ffff) as u32))
        }
        std::net::IpAddr::V6(_) => std::net::IpAddr::V6(std::net::Ipv6Addr::from(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_and_validation() {
        let p = Pool::new(vec![n("10.244.0.0/24"), n("fd00:244::/120")], None, None).unwrap();
        let v4: Vec<_> = p.blocks(false).collect();
        assert_eq!(
            v4,
            vec![
                n("10.244.0.0/26"),
                n("10.244.0.64/26"),
                n("10.244.0.128/26"),
                n("10.244.0.192/26")
            ]
        );
        let v6: Vec<_> = p.blocks(true).collect();
        assert_eq!(v6.len(), 4);
        assert_eq!(v6[1], n("fd00:244::40/122"));
        assert!(p.contains(n("10.244.0.64/26")));
        assert!(!p.contains(n("10.245.0.0/26")));
        assert!(p.is_block(n("10.244.0.64/26")));
        assert!(!p.is_block(n("10.244.0.64/27")));
        // Huge v6 pools are lazy.
        let big = Pool::new(vec![n("fd00::/56")], None, None).unwrap();
        assert_eq!(big.blocks(true).nth(3), Some(n("fd00::c0/122")));
        let e = Pool::new(vec![n("10.0.0.0/24")], Some(16), None).unwrap_err();
        assert!(e.to_string().contains("ipam.blockSize"), "{e}");
        let e = Pool::new(vec![n("10.0.0.0/16"), n("10.0.1.0/24")], None, None).unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
        assert!(Pool::new(vec![n("10.0.0.1/24")], None, None).is_err());
        assert!(Pool::new(vec![], None, None).is_err());
    }
}
