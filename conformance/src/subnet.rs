//! A private IPv4 /24 per test: `10.<200+n>.<k>.0/24`, n < 50, derived from a hash of the
//! test's tag, the pid and a counter; never one already handed out in this process, nor
//! one that appears in the host's routes (leftovers of an earlier run).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use crate::names::unique_hash;

static TAKEN: Mutex<Option<HashSet<(u8, u8)>>> = Mutex::new(None);

/// A /24 inside 10.200.0.0/13-ish space reserved for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subnet {
    pub b: u8,
    pub c: u8,
}

impl Subnet {
    /// A fresh subnet for `tag`.
    pub fn for_test(tag: &str) -> Subnet {
        let host_routes = crate::try_sh("ip", &["-4", "route", "show", "table", "all"])
            .unwrap_or_default()
            + &crate::try_sh("ip", &["-4", "addr", "show"]).unwrap_or_default();
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        let taken = taken.get_or_insert_with(HashSet::new);
        loop {
            let h = unique_hash(tag);
            let s = Subnet {
                b: 200 + (h % 50) as u8,
                c: ((h >> 8) % 256) as u8,
            };
            if taken.contains(&(s.b, s.c)) || host_routes.contains(&s.prefix()) {
                continue;
            }
            taken.insert((s.b, s.c));
            return s;
        }
    }

    /// `10.b.c.` — the textual prefix of every address of the subnet.
    pub fn prefix(&self) -> String {
        format!("10.{}.{}.", self.b, self.c)
    }

    /// `10.b.c.0/24`.
    pub fn cidr(&self) -> String {
        format!("10.{}.{}.0/24", self.b, self.c)
    }

    /// Host `n` of the subnet.
    pub fn host(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.b, self.c, n)
    }

    /// The gateway host-local (and so cni-ipam) picks by default: `.1`.
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let o = ip.octets();
        o[0] == 10 && o[1] == self.b && o[2] == self.c
    }
}
