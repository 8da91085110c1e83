//! Which range set each requested address belongs to: the pure part of an allocation.
//! The store ([`crate::store`]) then reserves one address per set, the requested one or
//! the first free candidate after the set's cursor.

use std::net::IpAddr;

use crate::error::IpamError;
use crate::range::RangeSets;

/// For each range set of `sets` (same order), the address requested in it, if any.
/// An address outside every range, reserved (gateway, network, broadcast), or a second
/// address for the same set is an error naming it.
pub(crate) fn assign_requested(
    sets: &RangeSets,
    requested: &[IpAddr],
) -> Result<Vec<Option<IpAddr>>, IpamError> {
    let mut out: Vec<Option<IpAddr>> = vec![None; sets.sets().len()];
    for &ip in requested {
        let found = sets
            .sets()
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.range_for(ip).map(|r| (i, r)));
        let Some((i, range)) = found else {
            return Err(IpamError::Unavailable {
                ip,
                reason: "is not in any configured range".into(),
            });
        };
        if let Some(reason) = range.reserved_reason(ip) {
            return Err(IpamError::Unavailable {
                ip,
                reason: format!("is {reason} of {range}"),
            });
        }
        match out.get_mut(i) {
            Some(slot @ None) => *slot = Some(ip),
            Some(Some(other)) if *other == ip => {}
            Some(Some(other)) => {
                return Err(IpamError::Unavailable {
                    ip,
                    reason: format!("is in the same range set as requested IP {other}"),
                })
            }
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::{Range, RangeSet};

    fn sets() -> RangeSets {
        let v4 = Range::new("a", "10.0.0.0/24".parse().unwrap(), None, None, None).unwrap();
        let v6 = Range::new("b", "fd00::/64".parse().unwrap(), None, None, None).unwrap();
        RangeSets::new(
            "r",
            vec![
                RangeSet::new("a", vec![v4]).unwrap(),
                RangeSet::new("b", vec![v6]).unwrap(),
            ],
        )
        .unwrap()
    }

    #[test]
    fn assigns_per_family() {
        let got = assign_requested(&sets(), &["fd00::9".parse().unwrap()]).unwrap();
        assert_eq!(got, vec![None, Some("fd00::9".parse().unwrap())]);
    }

    #[test]
    fn rejects_outside_reserved_and_duplicates() {
        let e = assign_requested(&sets(), &["10.9.9.9".parse().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("10.9.9.9"), "{e}");
        let e = assign_requested(&sets(), &["10.0.0.1".parse().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("gateway"), "{e}");
        let e = assign_requested(
            &sets(),
            &["10.0.0.5".parse().unwrap(), "10.0.0.6".parse().unwrap()],
        )
        .unwrap_err();
        assert!(e.to_string().contains("10.0.0.6"), "{e}");
    }
}
