//! The CNI face of the allocator: [`IpamPlugin`] answers ADD, DEL, CHECK, GC and STATUS.

use cni_core::skel::{Call, Plugin, Target};
use cni_core::spec::error::{CniError, ErrorCode};
use cni_core::spec::result::{CniResult, IpConfig, Route};
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::cluster::local::{self, BlockLayout};
use crate::cluster::{ClusterStore, NodeInfo};
use crate::config::{parse_cni_args_ips, ClusterIpamConfig, IpamConfig, RouteConf};
use crate::error::IpamError;
use crate::resolv;
use crate::store::{AllocKey, AllocMeta, Store};

/// The `cni-ipam` plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct IpamPlugin;

fn key_of(target: &Target) -> AllocKey {
    AllocKey::new(target.container_id.as_str(), target.ifname.as_str())
}

/// The network's store directory under `data_dir`, refused (code 7) when it resolves
/// through a symlink (see [`crate::durable::check_state_path`]).
fn store_dir(call: &Call, data_dir: &std::path::Path) -> Result<PathBuf, IpamError> {
    let dir = IpamConfig::store_dir(data_dir, call.conf.name.as_str());
    crate::durable::check_state_path("ipam.dataDir", &dir)?;
    Ok(dir)
}

/// Opens the store for a command of this invocation: when a plugin of ours delegated to
/// `cni-ipam`, every lock also checks that it is still alive (see
/// [`Store::require_parent`]).
fn open_store(dir: PathBuf) -> Result<Store, IpamError> {
    Ok(Store::open(dir)?.require_parent(cni_core::delegate::expected_parent()))
}

/// [`open_store`] for DEL and GC: `None` (nothing created) when the store does not exist.
fn open_existing_store(dir: PathBuf) -> Result<Option<Store>, IpamError> {
    Ok(Store::open_existing(dir)?.map(|s| s.require_parent(cni_core::delegate::expected_parent())))
}

/// Which mode a configuration selects, validated.
enum Mode {
    Local(IpamConfig),
    Cluster(ClusterIpamConfig),
}

/// An invocation's configuration, parsed and validated once: ADD uses it, STATUS and
/// CHECK answer with its error, so STATUS never says "ready" for a configuration every
/// ADD refuses.
struct Prepared {
    mode: Mode,
    dns: cni_core::spec::result::Dns,
    store_dir: PathBuf,
}

fn prepare(call: &Call) -> Result<Prepared, IpamError> {
    let (mode, data_dir, resolv_conf) = if ClusterIpamConfig::is_cluster(&call.conf.raw) {
        let c = ClusterIpamConfig::from_json(&call.conf.raw)?;
        let (d, r) = (c.data_dir.clone(), c.resolv_conf.clone());
        (Mode::Cluster(c), d, r)
    } else {
        let c = IpamConfig::from_json(&call.conf.raw)?;
        let (d, r) = (c.data_dir.clone(), c.resolv_conf.clone());
        (Mode::Local(c), d, r)
    };
    let dns = match &resolv_conf {
        Some(p) => resolv::load(p)?,
        None => Default::default(),
    };
    Ok(Prepared {
        mode,
        dns,
        store_dir: store_dir(call, &data_dir)?,
    })
}

/// Requested addresses: `runtimeConfig.ips`, `args.cni.ips`, then `CNI_ARGS` `IP=`.
pub(crate) fn requested_ips(call: &Call) -> Result<Vec<IpAddr>, IpamError> {
    let mut out: Vec<IpAddr> = call.conf.requested_ips().iter().map(|r| r.ip).collect();
    if let Some(v) = call.env.args.get("IP") {
        out.extend(parse_cni_args_ips(v)?);
    }
    let mut seen = BTreeSet::new();
    out.retain(|ip| seen.insert(*ip));
    Ok(out)
}

/// The ADD result for `ips` allocated under `cfg`.
pub(crate) fn build_result(
    cfg: &IpamConfig,
    ips: &[IpNetwork],
    dns: cni_core::spec::result::Dns,
) -> CniResult {
    result_for(
        ips,
        |ip| cfg.ranges.range_for(ip).and_then(|r| r.gateway),
        &cfg.routes,
        dns,
    )
}

/// The ADD result of cluster mode for blocks laid out by `layout`: addresses with their
/// block's prefix; with `reserveGateway` every address carries its block's first host
/// address as `gateway`, else none.
pub(crate) fn build_cluster_result_in(
    layout: BlockLayout,
    routes: &[RouteConf],
    ips: &[IpNetwork],
    dns: cni_core::spec::result::Dns,
) -> CniResult {
    let mut r = result_for(ips, |_| None, routes, dns);
    for ip in &mut r.ips {
        ip.gateway = layout.gateway(ip.address);
    }
    r
}

/// An IPAM result: no interfaces (the calling plugin adds them), `gateway` per address.
fn result_for(
    ips: &[IpNetwork],
    gateway: impl Fn(std::net::IpAddr) -> Option<std::net::IpAddr>,
    routes: &[RouteConf],
    dns: cni_core::spec::result::Dns,
) -> CniResult {
    CniResult {
        interfaces: Vec::new(),
        ips: ips
            .iter()
            .map(|n| IpConfig {
                address: *n,
                gateway: gateway(n.ip()),
                interface: None,
            })
            .collect(),
        routes: routes.iter().map(|r| Route::new(r.dst, r.gw)).collect(),
        dns,
    }
}

/// Claims one block for the plugin: connects to the cluster store (lazily, once per
/// invocation), registers the node if it has no live record, claims and caches.
struct Claimer<'a> {
    cfg: &'a ClusterIpamConfig,
    store: &'a Store,
    rt: Option<tokio::runtime::Runtime>,
    cluster: Option<ClusterStore>,
}

impl Claimer<'_> {
    /// Checks the node's block cache against the cluster store
    /// ([`local::verify_cache`]).
    fn verify(&mut self) -> Result<(), IpamError> {
        self.ensure_runtime()?;
        let Some(rt) = self.rt.as_ref() else {
            return Err(IpamError::StoreUnavailable("no runtime".into()));
        };
        let (cfg, store, cluster) = (self.cfg, self.store, &mut self.cluster);
        rt.block_on(async move {
            if cluster.is_none() {
                *cluster = Some(ClusterStore::connect(&cfg.store).await?);
            }
            let Some(c) = cluster.as_ref() else {
                return Err(IpamError::StoreUnavailable("not connected".into()));
            };
            local::verify_cache(store, c, &cfg.node_name).await
        })
    }

    fn ensure_runtime(&mut self) -> Result<(), IpamError> {
        if self.rt.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| IpamError::StoreUnavailable(format!("cannot start a runtime: {e}")))?;
            self.rt = Some(rt);
        }
        Ok(())
    }

    fn claim(&mut self, v6: bool, seen: &[IpNetwork]) -> Result<IpNetwork, IpamError> {
        self.ensure_runtime()?;
        let Some(rt) = self.rt.as_ref() else {
            return Err(IpamError::StoreUnavailable("no runtime".into()));
        };
        let (cfg, store, cluster) = (self.cfg, self.store, &mut self.cluster);
        rt.block_on(async move {
            if cluster.is_none() {
                *cluster = Some(ClusterStore::connect(&cfg.store).await?);
            }
            let Some(c) = cluster.as_ref() else {
                return Err(IpamError::StoreUnavailable("not connected".into()));
            };
            let claim = || {
                local::claim_into_cache(
                    store,
                    c,
                    &cfg.node_name,
                    &cfg.pool,
                    v6,
                    cfg.max_blocks,
                    seen,
                )
            };
            match claim().await {
                Err(IpamError::NotFound(why)) => {
                    tracing::info!(node = %cfg.node_name, %why, "registering the node");
                    let info = NodeInfo {
                        name: cfg.node_name.clone(),
                        underlay_ip: None,
                        backend: Default::default(),
                    };
                    c.register(&info, cfg.node_ttl).await?;
                    claim().await
                }
                other => other,
            }
        })
    }
}

fn cluster_add(
    call: &Call,
    target: &Target,
    cfg: &ClusterIpamConfig,
    dns: cni_core::spec::result::Dns,
    store: Store,
) -> Result<CniResult, CniError> {
    let requested = requested_ips(call)?;
    let meta = AllocMeta {
        netns: target.netns.clone(),
    };
    let mut claimer = Claimer {
        cfg,
        store: &store,
        rt: None,
        cluster: None,
    };
    // A cache edited, copied or written by an older build is checked against the store
    // before it is used; the store being down does not stop pods (module docs of
    // `cluster::local`).
    if !local::check_cache_offline(&store, &cfg.node_name)? {
        match claimer.verify() {
            Ok(()) => {}
            Err(IpamError::StoreUnavailable(why)) => tracing::warn!(%why,
                "the block cache could not be checked against the cluster store: used as it is"),
            Err(e) => return Err(e.into()),
        }
    }
    let layout = BlockLayout {
        reserve_gateway: cfg.reserve_gateway,
    };
    let _timing = cni_core::timing::phase("ipam.allocate");
    let ips = local::allocate_in(
        &store,
        &cfg.pool,
        layout,
        &key_of(target),
        &requested,
        &meta,
        &mut |v6, seen| claimer.claim(v6, seen),
    )?;
    Ok(build_cluster_result_in(layout, &cfg.routes, &ips, dns))
}

impl Plugin for IpamPlugin {
    fn add(&self, call: &Call, target: &Target) -> Result<CniResult, CniError> {
        // Everything that can fail without side effects comes before the allocation.
        let p = prepare(call)?;
        let requested = requested_ips(call)?;
        let store = open_store(p.store_dir)?;
        match p.mode {
            Mode::Cluster(cfg) => cluster_add(call, target, &cfg, p.dns, store),
            Mode::Local(cfg) => {
                let meta = AllocMeta {
                    netns: target.netns.clone(),
                };
                let _timing = cni_core::timing::phase("ipam.allocate");
                let ips = store.allocate_with(&key_of(target), &cfg.ranges, &requested, &meta)?;
                Ok(build_result(&cfg, &ips, p.dns))
            }
        }
    }

    fn del(&self, call: &Call, target: &Target) -> Result<(), CniError> {
        let dir = store_dir(call, &IpamConfig::data_dir_from_json(&call.conf.raw)?)?;
        let _timing = cni_core::timing::phase("ipam.release");
        // A missing store: nothing to release (and nothing is created).
        let Some(store) = open_existing_store(dir)? else {
            return Ok(());
        };
        // Corrupt entries of the attachment are quarantined, never a failure forever.
        store.release(&key_of(target))?;
        Ok(())
    }

    fn check(&self, call: &Call, target: &Target) -> Result<(), CniError> {
        let p = prepare(call)?;
        let store = Store::open(p.store_dir)?;
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
        let dir = store_dir(call, &IpamConfig::data_dir_from_json(&call.conf.raw)?)?;
        let Some(store) = open_existing_store(dir)? else {
            return Ok(());
        };
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
            quarantined = report.quarantined.len(),
            corrupt_kept = report.corrupt_kept.len(),
            repaired = report.repaired.len(),
            double_owned = report.conflicts.len(),
            "gc done"
        );
        Ok(())
    }

    fn status(&self, call: &Call) -> Result<(), CniError> {
        // The configuration first, exactly as ADD validates it (code 7 and ADD's message).
        let p = prepare(call)?;
        Store::open(p.store_dir)
            .and_then(|s| s.check_writable())
            .map_err(|e| CniError::new(ErrorCode::NotAvailable, format!("store unavailable: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_result_gateway_follows_reserve_gateway() {
        let ips: Vec<IpNetwork> = vec![
            "10.1.0.70/26".parse().unwrap(),
            "fd00::45/122".parse().unwrap(),
        ];
        let r = build_cluster_result_in(BlockLayout::default(), &[], &ips, Default::default());
        assert!(r.ips.iter().all(|i| i.gateway.is_none()));
        let l = BlockLayout {
            reserve_gateway: true,
        };
        let r = build_cluster_result_in(l, &[], &ips, Default::default());
        assert_eq!(r.ips[0].gateway, Some("10.1.0.65".parse().unwrap()));
        assert_eq!(r.ips[1].gateway, Some("fd00::41".parse().unwrap()));
        assert_eq!(r.ips[0].address, ips[0]);
    }
}
