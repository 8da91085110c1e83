//! `ipamd run`: composes the pieces, holds no logic of its own.
//!
//! start: bind the metrics listener -> connect the cluster store -> register + claim
//! first blocks -> spawn: lease renewal, peer watch -> handler, expiry, GC + usage +
//! empty-block release, HTTP -> wait for SIGTERM/SIGINT -> stop every loop -> exit 0.
//!
//! On shutdown the node record is *kept*: its lease runs out after the TTL unless the
//! daemon comes back first, so a restart (upgrade, crash loop) keeps the node's blocks
//! and nothing is reprogrammed on the peers.

use ipam::cluster::{ClusterStore, NodeInfo};
use ipam::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::blocks::FirstBlocks;
use crate::cli::RunArgs;
use crate::error::Error;
use crate::events::PeerHandler;
use crate::http::JsonSnapshot;
use crate::lease::{expire_interval, Lease};
use crate::metrics::Metrics;
use crate::release::EmptyBlocks;

/// Queue depth between the watch and the handler.
const EVENT_QUEUE: usize = 1024;

/// The daemon, handing remote node changes to `handler`; `metrics` (the handler may
/// hold them too) and `bgp_peers` (`GET /bgp/peers`) are served on `--listen`.
pub(crate) async fn run_with_handler<H: PeerHandler>(
    args: RunArgs,
    mut handler: H,
    metrics: Arc<Metrics>,
    bgp_peers: Option<JsonSnapshot>,
) -> Result<(), Error> {
    crate::http::check_listen(args.listen, args.listen_any).map_err(Error::Usage)?;
    raise_fd_limit();
    let node = args.node_name()?;
    let url = args.store_url()?;
    let pool = args.pool()?;
    let local = Store::open(args.local.store_dir())?;
    let reserve_gateway =
        args.local.reserve_gateway || matches!(args.datapath.kind, crate::cli::DatapathKind::Vxlan);
    let usage_of = local.clone();
    metrics.read_usage_with(move || usage(&usage_of, reserve_gateway));

    let (stop_tx, stop) = watch::channel(false);
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::io("SIGTERM handler", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::io("SIGINT handler", e))?;
    let stopper = tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        let _ = stop_tx.send(true);
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Error::io(format!("listen on {}", args.listen), e))?;
    let bound = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(listen = %bound, node = %node, store = %args.store, "ipamd starting");
    let mut tasks = JoinSet::new();
    tasks.spawn(crate::http::serve(
        listener,
        metrics.clone(),
        bgp_peers,
        stop.clone(),
    ));

    let Some(store) = connect(&url, &metrics, &mut stop.clone()).await else {
        return finish(tasks, stopper).await;
    };
    let store = Arc::new(store);
    let lease = Lease {
        store: store.clone(),
        info: NodeInfo {
            name: node.clone(),
            underlay_ip: args.underlay_ip,
            backend: handler.node_backend(),
        },
        ttl: args.lease_ttl,
        metrics: metrics.clone(),
        first_blocks: FirstBlocks::new(node.clone(), pool, local.clone()),
        underlay_updates: handler.underlay_updates(),
        url: url.clone(),
    };
    if lease.start(&mut stop.clone()).await.is_none() {
        return finish(tasks, stopper).await;
    }
    tasks.spawn(lease.run(stop.clone()));

    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    tasks.spawn(crate::watch::run(
        store.clone(),
        node.clone(),
        args.resync,
        tx,
        metrics.clone(),
        stop.clone(),
    ));
    // Ends when the watch loop drops its sender.
    tasks.spawn(crate::watch::deliver(rx, handler));
    tasks.spawn(crate::lease::expire_loop(
        store.clone(),
        expire_interval(args.lease_ttl),
        args.expired_node_grace,
        metrics.clone(),
        stop.clone(),
    ));
    tasks.spawn(local_loop(
        store,
        node,
        local,
        args.gc_grace,
        args.block_release_grace,
        args.resync,
        metrics,
        stop,
    ));
    finish(tasks, stopper).await
}

/// Raises the soft limit of open files to the hard one (systemd's default soft limit is
/// 1024; see the README for `LimitNOFILE`), so a burst of connections does not starve
/// the store connection the lease needs.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-files limit"),
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit"),
        },
        Ok((soft, _)) => tracing::debug!(limit = soft, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-files limit"),
    }
}

/// The address usage of this node's cached blocks in the node-local store (`None`, and
/// a DEBUG line, when it cannot be read).
fn usage(local: &Store, reserve_gateway: bool) -> Option<crate::metrics::Usage> {
    let blocks = ipam::cluster::local::cached_blocks(local)
        .map_err(|e| tracing::debug!(error = %e, "metrics: cannot read the node-local block cache"))
        .ok()?;
    crate::blocks::usage(local, &blocks, reserve_gateway)
        .map_err(|e| tracing::debug!(error = %e, "metrics: cannot read the node-local store"))
        .ok()
}

/// Connects, retrying every second until it works or the daemon is stopped.
async fn connect(
    url: &ipam::cluster::StoreUrl,
    metrics: &Metrics,
    stop: &mut watch::Receiver<bool>,
) -> Option<ClusterStore> {
    loop {
        match ClusterStore::connect(url).await {
            Ok(s) => return Some(s),
            Err(e) => {
                metrics.store_error();
                tracing::warn!(error = %e, "cannot reach the cluster store; retrying");
                tokio::select! {
                    _ = stop.changed() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Every `every`: GC of the node-local store, this node's block and address gauges,
/// then the release of blocks empty for `release_grace` (0: never).
#[allow(clippy::too_many_arguments)]
async fn local_loop(
    store: Arc<ClusterStore>,
    node: String,
    local: Store,
    grace: Duration,
    release_grace: Duration,
    every: Duration,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut empty = EmptyBlocks::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let blocks = match store.node(&node).await {
            Ok(Some(rec)) => rec.blocks,
            Ok(None) => Vec::new(),
            Err(e) => {
                metrics.store_error();
                tracing::warn!(error = %e, "cannot read this node's record");
                continue;
            }
        };
        metrics.set_blocks_owned(blocks.len());
        let (l, m) = (local.clone(), metrics.clone());
        let done = tokio::task::spawn_blocking(move || {
            match crate::gc::collect(&l, grace) {
                Ok(released) => m.gc_released(released.len()),
                Err(e) => tracing::warn!(error = %e, "gc of the node-local store failed"),
            }
            // The address gauges are read at scrape time (see Metrics::refresh_usage).
            if release_grace.is_zero() {
                return None;
            }
            match crate::release::observe_cache(&l, &blocks) {
                Ok(o) => Some(o),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the node-local block cache");
                    None
                }
            }
        })
        .await;
        let observed = match done {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "gc task");
                None
            }
        };
        if let Some(observed) = observed {
            let due = empty.observe(Instant::now(), &observed, release_grace);
            if !due.is_empty() {
                crate::release::release(
                    &local,
                    &store,
                    &node,
                    &due,
                    &mut empty,
                    &metrics,
                    release_grace,
                )
                .await;
            }
        }
    }
}

/// Waits for the stop signal, then for every loop to end (bounded).
async fn finish(mut tasks: JoinSet<()>, stopper: tokio::task::JoinHandle<()>) -> Result<(), Error> {
    let _ = stopper.await;
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some loops did not stop within 5s: aborted");
        tasks.abort_all();
    }
    tracing::info!("ipamd stopped");
    Ok(())
}
