//! The CLI subcommands that look at (or repair) state: `nodes`, `blocks`, `usage`,
//! `pod`, `release`. Plain tables, or JSON with `--json`.

use ipam::cluster::{ClusterStore, NodeRecord, StoreUrl};
use ipam::{AllocKey, Allocation, Store};
use serde::Serialize;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::blocks::usable;
use crate::cli::{node_name_or_hostname, PodArgs, RemoveNodeArgs, StoreArgs, UsageArgs};
use crate::error::Error;

async fn connect(store: &str) -> Result<ClusterStore, Error> {
    Ok(ClusterStore::connect(&StoreUrl::parse(store)?).await?)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn join<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Prints rows as columns padded to their widest cell.
fn table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> Result<(), Error> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s
    };
    let mut text = line(header.to_vec());
    text.push('\n');
    for r in rows {
        text.push_str(&line(r.iter().map(String::as_str).collect()));
        text.push('\n');
    }
    out.write_all(text.as_bytes())
        .map_err(|e| Error::io("write stdout", e))
}

fn json(out: &mut dyn Write, v: &impl Serialize) -> Result<(), Error> {
    let mut s = serde_json::to_string_pretty(v)
        .map_err(|e| Error::io("encode JSON", std::io::Error::other(e)))?;
    s.push('\n');
    out.write_all(s.as_bytes())
        .map_err(|e| Error::io("write stdout", e))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeRow<'a> {
    #[serde(flatten)]
    record: &'a NodeRecord,
    lease_left_secs: u64,
}

/// `remove-node`: the record and its blocks go at once (also a node whose lease expired
/// that still holds blocks); peers see a removal.
pub(crate) async fn remove_node(args: &RemoveNodeArgs, out: &mut dyn Write) -> Result<(), Error> {
    let store = connect(&args.store.store).await?;
    if store.node(&args.name).await?.is_none()
        && !store.expired_holders().await?.contains_key(&args.name)
    {
        return Err(Error::Usage(format!(
            "node {:?} is not in the cluster store (see `ipamd nodes`)",
            args.name
        )));
    }
    store.remove_node(&args.name).await?;
    writeln!(out, "removed node {}", args.name).map_err(|e| Error::io("stdout", e))
}

pub(crate) async fn nodes(args: &StoreArgs, out: &mut dyn Write) -> Result<(), Error> {
    let mut nodes = connect(&args.store).await?.nodes_live_expiry().await?;
    nodes.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    let now = now_secs();
    if args.json {
        let rows: Vec<NodeRow> = nodes
            .iter()
            .map(|r| NodeRow {
                record: r,
                lease_left_secs: r.lease_expiry.saturating_sub(now),
            })
            .collect();
        return json(out, &rows);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|r| {
            vec![
                r.info.name.clone(),
                r.info
                    .underlay_ip
                    .map_or_else(|| "-".into(), |ip| ip.to_string()),
                join(&r.blocks),
                format!("{}s", r.lease_expiry.saturating_sub(now)),
            ]
        })
        .collect();
    table(out, &["NAME", "UNDERLAY", "BLOCKS", "LEASE-LEFT"], &rows)
}

#[derive(Serialize)]
struct BlockRow {
    block: ipnetwork::IpNetwork,
    owner: String,
}

/// `blocks`: every owned block; those of a node whose lease expired show as
/// `NAME (expired)` (still its own, see `ipam::cluster`).
pub(crate) async fn blocks(args: &StoreArgs, out: &mut dyn Write) -> Result<(), Error> {
    let store = connect(&args.store).await?;
    let nodes = store.nodes().await?;
    let expired = store.expired_holders().await?;
    let mut rows: Vec<BlockRow> = nodes
        .iter()
        .flat_map(|n| {
            n.blocks.iter().map(|b| BlockRow {
                block: *b,
                owner: n.info.name.clone(),
            })
        })
        .chain(expired.iter().flat_map(|(name, blocks)| {
            blocks.iter().map(move |b| BlockRow {
                block: *b,
                owner: format!("{name} (expired)"),
            })
        }))
        .collect();
    rows.sort_by_key(|r| (r.block.is_ipv6(), r.block.ip()));
    if args.json {
        return json(out, &rows);
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| vec![r.block.to_string(), r.owner.clone()])
        .collect();
    table(out, &["BLOCK", "OWNER"], &rows)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageRow {
    node: String,
    blocks: usize,
    capacity: u128,
    /// Only for this node (its node-local store); `None` for the others.
    used: Option<u128>,
}

pub(crate) async fn usage(args: &UsageArgs, out: &mut dyn Write) -> Result<(), Error> {
    let me = node_name_or_hostname(args.node_name.as_deref())?;
    let mut nodes = connect(&args.store.store).await?.nodes().await?;
    nodes.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    let mut rows = Vec::new();
    for n in &nodes {
        let capacity = n
            .blocks
            .iter()
            .map(|b| usable(b, args.local.reserve_gateway))
            .fold(0, u128::saturating_add);
        let used = if n.info.name == me {
            let store = Store::open(args.local.store_dir())?;
            let u = crate::blocks::usage(&store, &n.blocks, args.local.reserve_gateway)?;
            Some(u.iter().map(|(_, used, _)| used).sum())
        } else {
            None
        };
        rows.push(UsageRow {
            node: n.info.name.clone(),
            blocks: n.blocks.len(),
            capacity,
            used,
        });
    }
    if args.store.json {
        return json(out, &rows);
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                r.blocks.to_string(),
                r.capacity.to_string(),
                r.used.map_or_else(|| "-".into(), |u| u.to_string()),
            ]
        })
        .collect();
    table(out, &["NODE", "BLOCKS", "CAPACITY", "USED"], &rows)
}

/// The allocations of a container (one interface when `ifname` is given).
fn of_container(store: &Store, args: &PodArgs) -> Result<Vec<Allocation>, Error> {
    if let Some(ifname) = &args.ifname {
        let key = AllocKey::new(args.container_id.clone(), ifname.clone());
        return Ok(store.get(&key)?.into_iter().collect());
    }
    Ok(store
        .list()?
        .into_iter()
        .filter(|a| a.key.container_id == args.container_id)
        .collect())
}

fn print_allocs(out: &mut dyn Write, allocs: &[Allocation], as_json: bool) -> Result<(), Error> {
    if as_json {
        return json(out, &allocs);
    }
    let rows: Vec<Vec<String>> = allocs
        .iter()
        .map(|a| {
            vec![
                a.key.container_id.clone(),
                a.key.ifname.clone(),
                join(&a.ips),
            ]
        })
        .collect();
    table(out, &["CONTAINER", "IFNAME", "ADDRESSES"], &rows)
}

pub(crate) fn pod(args: &PodArgs, out: &mut dyn Write) -> Result<(), Error> {
    let store = Store::open(args.local.store_dir())?;
    let allocs = of_container(&store, args)?;
    if allocs.is_empty() {
        return Err(Error::Usage(format!(
            "no addresses for container {} in {}",
            args.container_id,
            store.dir().display()
        )));
    }
    print_allocs(out, &allocs, args.json)
}

/// Releases under the store lock ([`Store::release`] takes it); prints what it released.
pub(crate) fn release(args: &PodArgs, out: &mut dyn Write) -> Result<(), Error> {
    let store = Store::open(args.local.store_dir())?;
    let mut released = Vec::new();
    for a in of_container(&store, args)? {
        if let Some(r) = store.release(&a.key)? {
            tracing::info!(key = %r.key, ips = ?r.ips, "released by hand");
            released.push(r);
        }
    }
    if released.is_empty() {
        return Err(Error::Usage(format!(
            "nothing reserved for container {}{} in {}",
            args.container_id,
            args.ifname
                .as_deref()
                .map(|i| format!(" interface {i}"))
                .unwrap_or_default(),
            store.dir().display()
        )));
    }
    print_allocs(out, &released, args.json)
}
