//! The CNI face of the allocator: [`IpamPlugin`] answers ADD, DEL, CHECK, GC and STATUS.

use cni_core::skel::{Call, Plugin, Target};
use cni_core::spec::error::{CniError, ErrorCode};
use cni_core::spec::result::{CniResult, IpConfig, Route};
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::config::{parse_cni_args_ips, IpamConfig};
use crate::error::IpamError;
use crate::resolv;
use crate::store::{AllocKey, Store};

/// The `cni-ipam` plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct IpamPlugin;

fn key_of(target: &Target) -> AllocKey {
    AllocKey::new(target.container_id.as_str(), target.ifname.as_str())
}

fn store_dir(call: &Call, data_dir: &std::path::Path) -> PathBuf {
    IpamConfig::store_dir(data_dir, call.conf.name.as_str())
}

/// Requested addresses: `runtimeConfig.ips`, `args.cni.ips`, then `CNI_ARGS` `IP=`.
pub fn requested_ips(call: &Call) -> Result<Vec<IpAddr>, IpamError> {
    let mut out: Vec<IpAddr> = call.conf.requested_ips().iter().map(|r| r.ip).collect();
    if let Some(v) = call.env.args.get("IP") {
        out.extend(parse_cni_args_ips(v)?);
    }
    let mut seen = BTreeSet::new();
    out.retain(|ip| seen.insert(*ip));
    Ok(out)
}

/// The ADD result for `ips` allocated under `cfg`.
pub fn build_result(
    cfg: &IpamConfig,
    ips: &[IpNetwork],
    dns: cni_core::spec::result::Dns,
) -> CniResult {
    CniResult {
        interfaces: Vec::new(),
        ips: ips
            .iter()
            .map(|n| IpConfig {
                address: *n,
                gateway: cfg.ranges.range_for(n.ip()).and_then(|r| r.gateway),
                interface: None,
            })
            .collect(),
        routes: cfg.routes.iter().map(|r| Route::new(r.dst, r.gw)).collect(),
        dns,
    }
}

impl Plugin for IpamPlugin {
    fn add(&self, call: &Call, target: &Target) -> Result<CniResult, CniError> {
        let cfg = IpamConfig::from_json(&call.conf.raw)?;
        // Everything that can fail without side effects comes before the allocation.
        let dns = match &cfg.resolv_conf {
            Some(p) => resolv::load(p)?,
            None => Default::default(),
        };
        let requested = requested_ips(call)?;
        let store = Store::open(store_dir(call, &cfg.data_dir))?;
        let ips = store.allocate(&key_of(target), &cfg.ranges, &requested)?;
        Ok(build_result(&cfg, &ips, dns))
    }

    fn del(&self, call: &Call, target: &Target) -> Result<(), CniError> {
        let dir = store_dir(call, &IpamConfig::data_dir_from_json(&call.conf.raw));
        if !dir.exists() {
            return Ok(());
        }
        Store::open(dir)?.release(&key_of(target))?;
        Ok(())
    }

    fn check(&self, call: &Call, target: &Target) -> Result<(), CniError> {
        let cfg = IpamConfig::from_json(&call.conf.raw)?;
        let store = Store::open(store_dir(call, &cfg.data_dir))?;
        let key = key_of(target);
        let Some(alloc) = store.get(&key)? else {
            return Err(IpamError::NotFound(format!(
                "no address is allocated to {key} in {}",
                store.dir().display()
            ))
            .into());
        };
        store.verify(&alloc)?;
        if let Some(prev) = &call.conf.prev_result {
            for n in &alloc.ips {
                if !prev.ips.iter().any(|p| p.address.ip() == n.ip()) {
                    return Err(IpamError::NotFound(format!(
                        "{} allocated to {key} is missing from prevResult",
                        n.ip()
                    ))
                    .into());
                }
            }
        }
        Ok(())
    }

    fn gc(&self, call: &Call) -> Result<(), CniError> {
        let dir = store_dir(call, &IpamConfig::data_dir_from_json(&call.conf.raw));
        if !dir.exists() {
            return Ok(());
        }
        let store = Store::open(dir)?;
        let report = match &call.conf.valid_attachments {
            Some(valid) => {
                let keep: BTreeSet<AllocKey> = valid
                    .iter()
                    .map(|a| AllocKey::new(a.container_id.as_str(), a.ifname.as_str()))
                    .collect();
                store.retain(&|k| keep.contains(k))?
            }
            // Without a list, release nothing; still reclaim crash leftovers.
            None => store.retain(&|_| true)?,
        };
        tracing::info!(
            released = report.released.len(),
            orphans = report.orphans.len(),
            "gc done"
        );
        Ok(())
    }

    fn status(&self, call: &Call) -> Result<(), CniError> {
        let dir = store_dir(call, &IpamConfig::data_dir_from_json(&call.conf.raw));
        Store::open(dir)
            .and_then(|s| s.check_writable())
            .map_err(|e| CniError::new(ErrorCode::NotAvailable, format!("store unavailable: {e}")))
    }
}
