//! The node-local allocation store of one network: the entries of ONE directory, whose
//! data lives in their metadata (symlink targets), so that one fsync of that directory
//! makes a whole ADD or DEL durable.
//!
//! ```text
//! <dir>/lock                   flock(2)-ed for every mutation
//! <dir>/ip-<ip>                symlink, one per reserved address; target: the owner,
//!                              written as its key entry name (key-<cid>+<ifname>)
//! <dir>/key-<cid>+<ifname>     symlink, one per attachment; target: compact JSON
//!                              {"containerID","ifname","ips":[...],"netns","created"}
//! <dir>/cursor-<set id>        symlink -> the last address reserved in a range set (a hint)
//! <dir>/tmp-<pid>-<n>          temp symlinks, renamed into place
//! ```
//!
//! Key names: every byte of the container id and ifname outside `[A-Za-z0-9_.-]` is
//! written `%XX`, so `+` separates unambiguously and the name decodes back to the key.
//! A name over 200 bytes becomes `key-h-<128-bit FNV-1a hex>` (the JSON holds the full
//! key, compared on every read); an address entry always names its owner unhashed.
//!
//! No operation reads more than the entries of the attachment at hand (plus the probed
//! address entries), so ADD, DEL, CHECK cost the same with 10 or 10 000 allocations; only
//! [`Store::list`] and [`Store::retain`] (GC) read the whole directory.
//!
//! # Crash safety with one fsync
//!
//! - **Exclusive reservation**: an address is reserved by `symlink(2)`, which fails with
//!   `EEXIST` when the name exists, so two attachments can never both reserve it (and
//!   the flock serializes everything anyway).
//! - **Complete or absent**: a symlink is created together with its target in one
//!   metadata operation; there is no file content that could be lost or half written,
//!   so no file fsync is needed. Replacing an entry (the cursor) is a temp symlink
//!   `rename(2)`-d over it.
//! - **Order**: ADD creates the address entries first, then the key entry (then the
//!   cursor hint), then fsyncs the directory **once** before answering. DEL removes the
//!   key entry first, then the address entries, then fsyncs once.
//!
//! Assumption: a journaling file system that commits metadata operations in the order
//! they were made (ext4 in its default `data=ordered` or in `data=journal` mode, xfs):
//! after a crash the directory holds a prefix of the operations. A crash therefore
//! leaves either nothing, or address entries no key entry lists (orphans: probing skips
//! them since the name exists, so they are never handed out again until GC, or an ADD
//! retry of the same attachment asking for them, reclaims them), or the complete
//! allocation; never a key entry naming an address that is free. Once the fsync
//! returned, the whole operation survives a crash. A `kill -9` loses nothing at all
//! (nothing lives only in the process).
//!
//! The cursor is only where probing starts: it is written without fsync, and a missing
//! or garbled cursor is treated as absent (probing starts at the beginning of the set,
//! which only costs probes).
//!
//! A store of the older layout (`ips/`, `keys/` subdirectories of one file each) is
//! refused by [`Store::open`], naming the directory: it is never silently ignored, which
//! would hand its addresses out a second time.

use ipnetwork::IpNetwork;
use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::allocator::assign_requested;
use crate::durable::{
    create_symlink, read_symlink, remove_optional, replace_symlink, sync_dir, temp_name, Link,
    MAX_TARGET,
};
use crate::error::IpamError;
use crate::range::{RangeSet, RangeSets};

const IP_PREFIX: &str = "ip-";
const KEY_PREFIX: &str = "key-";
const CURSOR_PREFIX: &str = "cursor-";
const TMP_PREFIX: &str = "tmp-";
/// Subdirectories of the older one-file-per-entry layout.
const OLD_LAYOUT: [&str; 2] = ["ips", "keys"];

/// What an allocation is keyed by: one interface of one container.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AllocKey {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl AllocKey {
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Self {
        AllocKey {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }

    /// The key's part of its entry name (`key-<file_name>`): `<container id>+<ifname>`,
    /// each with every byte outside `[A-Za-z0-9_.-]` written `%XX` (so `+` separates
    /// unambiguously); a 128-bit FNV-1a hash `h-<hex>` when that would be too long for a
    /// file name (the entry holds the full key, which is compared on read).
    pub fn file_name(&self) -> String {
        let name = self.escaped();
        if name.len() <= 200 {
            name
        } else {
            format!("h-{:032x}", fnv1a128(name.as_bytes()))
        }
    }

    fn escaped(&self) -> String {
        format!("{}+{}", escape(&self.container_id), escape(&self.ifname))
    }

    /// What an address entry of this key points to: its key entry name, never hashed.
    fn owner_target(&self) -> String {
        format!("{KEY_PREFIX}{}", self.escaped())
    }

    /// The key an address entry's target names; `None` if it names none.
    fn from_owner_target(target: &[u8]) -> Option<AllocKey> {
        let text = std::str::from_utf8(target).ok()?;
        let (cid, ifname) = text.strip_prefix(KEY_PREFIX)?.split_once('+')?;
        Some(AllocKey::new(unescape(cid)?, unescape(ifname)?))
    }
}

impl std::fmt::Display for AllocKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "container {} interface {}",
            self.container_id, self.ifname
        )
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape`]; `None` unless `s` is exactly what `escape` writes.
fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    (escape(&text) == s).then_some(text)
}

fn fnv1a128(data: &[u8]) -> u128 {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for &b in data {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    h
}

/// The addresses held by one attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    #[serde(flatten)]
    pub key: AllocKey,
    /// One per range set, with the prefix length of its subnet.
    pub ips: Vec<IpNetwork>,
    /// The container's network namespace at ADD time (absent when the runtime gave
    /// none), so a daemon can garbage-collect reservations whose netns is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// Unix time (seconds) of the ADD that created the reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
}

/// What [`Store::allocate_with`] records beside the addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocMeta {
    pub netns: Option<PathBuf>,
}

/// What [`Store::retain`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub released: Vec<Allocation>,
    /// Address entries no key entry listed (leftovers of a crash), now free.
    pub orphans: Vec<IpAddr>,
}

/// The allocation store of one network. Cheap to open; every mutation takes the lock.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

/// Held while the store is locked; unlocks on drop.
pub struct StoreLock {
    _lock: Flock<File>,
}

/// The store directory's entries, by kind (from one `readdir`).
#[derive(Default)]
struct Scan {
    keys: Vec<PathBuf>,
    ips: Vec<(IpAddr, PathBuf)>,
    tmps: Vec<PathBuf>,
}

impl Store {
    /// Opens (creating it if needed) the store in `dir`. A directory of the older
    /// one-file-per-entry layout (`ips/`, `keys/`) is refused (code 101, naming it).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, IpamError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| IpamError::io("create directory", &dir, e))?;
        for old in OLD_LAYOUT {
            let path = dir.join(old);
            match fs::symlink_metadata(&path) {
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(IpamError::io("stat", &path, e)),
                Ok(_) => {
                    return Err(IpamError::corrupt(
                        &path,
                        "left by an older cni-ipam build (one file per address in ips/, \
                         one per attachment in keys/), which this build does not read; \
                         release its attachments with that build (or, once no container \
                         uses them, remove the network's store directory) before using \
                         this one"
                            .to_string(),
                    ))
                }
            }
        }
        Ok(Store { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the store's exclusive lock (blocking).
    pub fn lock(&self) -> Result<StoreLock, IpamError> {
        Ok(StoreLock {
            _lock: crate::durable::lock_exclusive(&self.dir.join("lock"))?,
        })
    }

    /// Makes every entry created or removed so far durable.
    fn sync(&self) -> Result<(), IpamError> {
        sync_dir(&self.dir)
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(format!("{IP_PREFIX}{ip}"))
    }

    fn key_path(&self, key: &AllocKey) -> PathBuf {
        self.dir.join(format!("{KEY_PREFIX}{}", key.file_name()))
    }

    fn cursor_path(&self, set: &RangeSet) -> PathBuf {
        self.dir.join(format!("{CURSOR_PREFIX}{}", set.id()))
    }

    fn read_key_entry(&self, path: &Path) -> Result<Option<Allocation>, IpamError> {
        match read_symlink(path)? {
            Link::Missing => Ok(None),
            Link::NotALink => Err(IpamError::corrupt(path, "not a symlink".to_string())),
            Link::Target(t) => serde_json::from_slice::<Allocation>(&t)
                .map(Some)
                .map_err(|e| {
                    IpamError::corrupt(
                        path,
                        format!("{e} in target {:?}", String::from_utf8_lossy(&t)),
                    )
                }),
        }
    }

    /// The owner of a reserved address, `None` when it is free.
    pub fn owner_of(&self, ip: IpAddr) -> Result<Option<AllocKey>, IpamError> {
        let path = self.ip_path(ip);
        match read_symlink(&path)? {
            Link::Missing => Ok(None),
            Link::NotALink => Err(IpamError::corrupt(&path, "not a symlink".to_string())),
            Link::Target(t) => AllocKey::from_owner_target(&t).map(Some).ok_or_else(|| {
                IpamError::corrupt(
                    &path,
                    format!(
                        "target {:?} does not name an attachment",
                        String::from_utf8_lossy(&t)
                    ),
                )
            }),
        }
    }

    /// The allocation of `key`, if any. Reads only that attachment's entry.
    pub fn get(&self, key: &AllocKey) -> Result<Option<Allocation>, IpamError> {
        let path = self.key_path(key);
        match self.read_key_entry(&path)? {
            Some(a) if a.key != *key => Err(IpamError::corrupt(
                &path,
                format!("holds {} where {key} was expected", a.key),
            )),
            other => Ok(other),
        }
    }

    /// Every allocation (reads the whole store).
    pub fn list(&self) -> Result<Vec<Allocation>, IpamError> {
        let _lock = self.lock()?;
        self.list_locked(&self.scan()?)
    }

    fn scan(&self) -> Result<Scan, IpamError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Scan::default()),
            Err(e) => return Err(IpamError::io("list", &self.dir, e)),
        };
        let mut scan = Scan::default();
        for entry in rd {
            let entry = entry.map_err(|e| IpamError::io("list", &self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name.starts_with(KEY_PREFIX) {
                scan.keys.push(entry.path());
            } else if name.starts_with(TMP_PREFIX) {
                scan.tmps.push(entry.path());
            } else if let Some(ip) = name.strip_prefix(IP_PREFIX) {
                match ip.parse::<IpAddr>() {
                    Ok(ip) => scan.ips.push((ip, entry.path())),
                    Err(_) => {
                        tracing::warn!(path = %entry.path().display(), "unexpected entry in the store: ignored")
                    }
                }
            }
        }
        scan.keys.sort();
        scan.ips.sort();
        Ok(scan)
    }

    fn list_locked(&self, scan: &Scan) -> Result<Vec<Allocation>, IpamError> {
        let mut out = Vec::new();
        for path in &scan.keys {
            if let Some(a) = self.read_key_entry(path)? {
                // The entry must be the one of the key it holds.
                if self.key_path(&a.key) != *path {
                    return Err(IpamError::corrupt(
                        path,
                        format!("holds {}, whose entry has another name", a.key),
                    ));
                }
                out.push(a);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Where probing resumes in `set`: absent when the cursor is missing or garbled (it is
    /// only a hint, never an error).
    fn read_cursor(&self, set: &RangeSet) -> Option<IpAddr> {
        let path = self.cursor_path(set);
        match read_symlink(&path) {
            Ok(Link::Target(t)) => {
                let ip = std::str::from_utf8(&t).ok().and_then(|s| s.parse().ok());
                if ip.is_none() {
                    tracing::debug!(path = %path.display(), "garbled cursor: ignored");
                }
                ip
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "unreadable cursor: ignored");
                None
            }
        }
    }

    /// Records where probing resumes; not synced (it rides along with the next fsync of
    /// the directory), and a failure only costs probes later.
    fn write_cursor(&self, set: &RangeSet, ip: IpAddr) {
        let tmp = self.dir.join(temp_name(TMP_PREFIX));
        if let Err(e) = replace_symlink(&ip.to_string(), &self.cursor_path(set), &tmp) {
            tracing::warn!(error = %e, "cannot write the cursor (a hint): ignored");
        }
    }

    /// Gives `key` one address per range set of `sets` (the one of `requested` that lies
    /// in the set, else the next free one after the set's cursor) and records it.
    /// Idempotent: an attachment that already holds addresses gets them back (an error if
    /// they do not include every requested one).
    pub fn allocate(
        &self,
        key: &AllocKey,
        sets: &RangeSets,
        requested: &[IpAddr],
    ) -> Result<Vec<IpNetwork>, IpamError> {
        self.allocate_with(key, sets, requested, &AllocMeta::default())
    }

    /// [`Store::allocate`], also recording `meta` (the netns) and the creation time in
    /// the attachment's key entry.
    pub fn allocate_with(
        &self,
        key: &AllocKey,
        sets: &RangeSets,
        requested: &[IpAddr],
        meta: &AllocMeta,
    ) -> Result<Vec<IpNetwork>, IpamError> {
        let wanted = assign_requested(sets, requested)?;
        let owner = key.owner_target();
        if owner.len() > MAX_TARGET {
            return Err(IpamError::config(format!(
                "{key}: the container id is too long to be recorded"
            )));
        }
        let _lock = self.lock()?;
        if let Some(existing) = self.get(key)? {
            for ip in requested {
                if !existing.ips.iter().any(|n| n.ip() == *ip) {
                    return Err(IpamError::Unavailable {
                        ip: *ip,
                        reason: format!(
                            "cannot be given to {key}: it already holds {}",
                            join(&existing.ips)
                        ),
                    });
                }
            }
            // The key entry is created after its address entries, so they exist unless
            // removed by hand: re-reserve a missing one rather than hand out an address
            // the store would consider free.
            for n in &existing.ips {
                match self.owner_of(n.ip())? {
                    Some(o) if o == *key => {}
                    None => {
                        tracing::warn!(ip = %n.ip(), %key, "address entry missing: re-reserved");
                        create_symlink(&owner, &self.ip_path(n.ip()))?;
                    }
                    Some(o) => {
                        return Err(IpamError::corrupt(
                            &self.ip_path(n.ip()),
                            format!("owned by {o} but listed by {key}"),
                        ))
                    }
                }
            }
            // An ADD killed between its last entry and its fsync leaves entries that are
            // not yet durable: answer only what is.
            self.sync()?;
            tracing::debug!(%key, ips = %join(&existing.ips), "already allocated");
            return Ok(existing.ips);
        }
        let mut taken: Vec<IpAddr> = Vec::new();
        let result = self.reserve_all(key, sets, &wanted, &owner, &mut taken, meta);
        match result {
            Ok(ips) => Ok(ips),
            Err(e) => {
                for ip in taken {
                    if let Err(re) = remove_optional(&self.ip_path(ip)) {
                        tracing::warn!(%ip, error = %re, "rollback: cannot release address");
                    }
                }
                Err(e)
            }
        }
    }

    fn reserve_all(
        &self,
        key: &AllocKey,
        sets: &RangeSets,
        wanted: &[Option<IpAddr>],
        owner: &str,
        taken: &mut Vec<IpAddr>,
        meta: &AllocMeta,
    ) -> Result<Vec<IpNetwork>, IpamError> {
        let mut ips = Vec::new();
        let mut cursors = Vec::new();
        for (set, want) in sets.sets().iter().zip(wanted) {
            let ip = match want {
                Some(ip) => {
                    if create_symlink(owner, &self.ip_path(*ip))? {
                        taken.push(*ip);
                    } else {
                        match self.owner_of(*ip)? {
                            // A leftover of this very attachment's crashed ADD: adopt it.
                            Some(o) if o == *key => {}
                            o => {
                                let who = o
                                    .map_or_else(|| "another attachment".into(), |o| o.to_string());
                                return Err(IpamError::Unavailable {
                                    ip: *ip,
                                    reason: format!("is already allocated to {who}"),
                                });
                            }
                        }
                    }
                    *ip
                }
                None => {
                    let cursor = self.read_cursor(set);
                    let mut found = None;
                    for ip in set.candidates(cursor) {
                        if create_symlink(owner, &self.ip_path(ip))? {
                            taken.push(ip);
                            found = Some(ip);
                            break;
                        }
                    }
                    found.ok_or_else(|| IpamError::Exhausted {
                        set: set.to_string(),
                    })?
                }
            };
            cursors.push((set, ip));
            let range = set
                .range_for(ip)
                .ok_or_else(|| IpamError::config(format!("{ip} is not in range set {set}")))?;
            ips.push(range.network_of(ip)?);
        }
        let record = Allocation {
            key: key.clone(),
            ips: ips.clone(),
            netns: meta.netns.clone(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs()),
        };
        let json = serde_json::to_string(&record)
            .map_err(|e| IpamError::config(format!("cannot encode {key}: {e}")))?;
        if json.len() > MAX_TARGET {
            return Err(IpamError::config(format!(
                "{key}: the allocation record ({} bytes) is too long to be recorded (netns \
                 path or container id too long)",
                json.len()
            )));
        }
        // After the address entries: the journal commits in order, so a key entry never
        // survives a crash without the addresses it names.
        let path = self.key_path(key);
        if !create_symlink(&json, &path)? {
            // The entry was absent when read under the lock: only a hand edit gets here.
            return Err(IpamError::corrupt(
                &path,
                "appeared while the store was locked".to_string(),
            ));
        }
        // Hints, written before the fsync so that it carries them along for free.
        for (set, ip) in cursors {
            self.write_cursor(set, ip);
        }
        // The one fsync: addresses, key entry and cursors become durable together.
        if let Err(e) = self.sync() {
            if let Err(re) = remove_optional(&path) {
                tracing::warn!(%key, error = %re, "rollback: cannot remove the key entry");
            }
            return Err(e);
        }
        tracing::debug!(%key, ips = %join(&ips), "allocated");
        Ok(ips)
    }

    /// CHECK: every address `alloc` lists is reserved for its key (read-only).
    pub fn verify(&self, alloc: &Allocation) -> Result<(), IpamError> {
        for n in &alloc.ips {
            match self.owner_of(n.ip())? {
                Some(o) if o == alloc.key => {}
                other => {
                    let who = other.map_or_else(|| "nobody".to_string(), |o| o.to_string());
                    return Err(IpamError::NotFound(format!(
                        "{} listed for {} is reserved for {who} in {}",
                        n.ip(),
                        alloc.key,
                        self.dir.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Releases what `key` holds; `Ok(None)` when it holds nothing.
    pub fn release(&self, key: &AllocKey) -> Result<Option<Allocation>, IpamError> {
        let _lock = self.lock()?;
        let released = self.unlink_locked(key)?;
        if released.is_some() {
            self.sync()?;
        }
        Ok(released)
    }

    /// Removes the entries of `key` (not synced).
    fn unlink_locked(&self, key: &AllocKey) -> Result<Option<Allocation>, IpamError> {
        let Some(alloc) = self.get(key)? else {
            return Ok(None);
        };
        // Check every address entry first: a corrupt one stops the release, untouched.
        let mut mine = Vec::new();
        for n in &alloc.ips {
            match self.owner_of(n.ip())? {
                Some(o) if o == *key => mine.push(n.ip()),
                Some(o) => {
                    tracing::warn!(ip = %n.ip(), owner = %o, %key, "address owned by another attachment: kept")
                }
                None => {}
            }
        }
        // The key entry goes first: after a crash here the addresses are orphans, not free.
        remove_optional(&self.key_path(key))?;
        for ip in mine {
            remove_optional(&self.ip_path(ip))?;
        }
        tracing::debug!(%key, ips = %join(&alloc.ips), "released");
        Ok(Some(alloc))
    }

    /// GC: releases every allocation whose key `keep` rejects, then reclaims address
    /// entries no remaining key entry lists (crash leftovers) and stale temp entries.
    /// One fsync at the end.
    pub fn retain(&self, keep: &dyn Fn(&AllocKey) -> bool) -> Result<GcReport, IpamError> {
        let _lock = self.lock()?;
        let scan = self.scan()?;
        let mut report = GcReport::default();
        let mut live: BTreeSet<IpAddr> = BTreeSet::new();
        for alloc in self.list_locked(&scan)? {
            if keep(&alloc.key) {
                live.extend(alloc.ips.iter().map(IpNetwork::ip));
            } else if let Some(a) = self.unlink_locked(&alloc.key)? {
                report.released.push(a);
            }
        }
        let mut orphans = Vec::new();
        for (ip, path) in &scan.ips {
            // Read it anyway (those just released are gone): a corrupt entry is reported,
            // not silently dropped.
            if !live.contains(ip) && self.owner_of(*ip)?.is_some() {
                orphans.push((*ip, path));
            }
        }
        for (ip, path) in orphans {
            remove_optional(path)?;
            report.orphans.push(ip);
        }
        let mut changed = !report.released.is_empty() || !report.orphans.is_empty();
        for path in &scan.tmps {
            changed |= remove_optional(path).unwrap_or(false);
        }
        if changed {
            self.sync()?;
        }
        Ok(report)
    }

    /// STATUS: the store can be locked, written and synced.
    pub fn check_writable(&self) -> Result<(), IpamError> {
        let _lock = self.lock()?;
        let probe = self.dir.join("status-probe");
        replace_symlink("ok", &probe, &self.dir.join(temp_name(TMP_PREFIX)))?;
        self.sync()?;
        remove_optional(&probe)?;
        Ok(())
    }
}

fn join(ips: &[IpNetwork]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::Range;
    use std::collections::HashSet;

    fn sets(specs: &[(&str, Option<&str>, Option<&str>)]) -> RangeSets {
        let sets = specs
            .iter()
            .map(|(net, s, e)| {
                let r = Range::new(
                    "t",
                    net.parse().unwrap(),
                    s.map(|s| s.parse().unwrap()),
                    e.map(|e| e.parse().unwrap()),
                    None,
                )
                .unwrap();
                RangeSet::new("t", vec![r]).unwrap()
            })
            .collect();
        RangeSets::new("t", sets).unwrap()
    }

    fn v4() -> RangeSets {
        sets(&[("10.0.0.0/24", None, None)])
    }

    fn key(n: usize) -> AllocKey {
        AllocKey::new(format!("c{n}"), "eth0")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Replaces the store entry `name` with a symlink to `target` (as a crash or a hand
    /// edit could leave it).
    fn plant(dir: &Path, name: &str, target: &str) -> PathBuf {
        let p = dir.join(name);
        let _ = fs::remove_file(&p);
        std::os::unix::fs::symlink(target, &p).unwrap();
        p
    }

    fn entries(dir: &Path, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn idempotent_and_distinct() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let a = s.allocate(&key(1), &v4(), &[]).unwrap();
        assert_eq!(a, vec!["10.0.0.2/24".parse::<IpNetwork>().unwrap()]);
        assert_eq!(s.allocate(&key(1), &v4(), &[]).unwrap(), a);
        let b = s.allocate(&key(2), &v4(), &[]).unwrap();
        assert_eq!(b, vec!["10.0.0.3/24".parse::<IpNetwork>().unwrap()]);
        // Same container, other interface: another address.
        let c = s
            .allocate(&AllocKey::new("c1", "eth1"), &v4(), &[])
            .unwrap();
        assert_ne!(c, a);
        assert_eq!(s.get(&key(1)).unwrap().unwrap().ips, a);
        assert_eq!(s.list().unwrap().len(), 3);
        assert_eq!(s.owner_of(ip("10.0.0.2")).unwrap(), Some(key(1)));
    }

    #[test]
    fn re_add_repairs_a_missing_address_file_and_verify_reports_it() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let a = s.allocate(&key(1), &v4(), &[]).unwrap();
        let alloc = s.get(&key(1)).unwrap().unwrap();
        s.verify(&alloc).unwrap();
        fs::remove_file(d.path().join("ip-10.0.0.2")).unwrap();
        assert!(s.verify(&alloc).is_err());
        assert_eq!(s.allocate(&key(1), &v4(), &[]).unwrap(), a);
        assert_eq!(s.owner_of(ip("10.0.0.2")).unwrap(), Some(key(1)));
        s.verify(&alloc).unwrap();
    }

    #[test]
    fn dual_stack_gives_one_of_each() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let r = sets(&[("10.0.0.0/24", None, None), ("fd00::/64", None, None)]);
        let a = s.allocate(&key(1), &r, &[]).unwrap();
        assert_eq!(
            a,
            vec![
                "10.0.0.2/24".parse::<IpNetwork>().unwrap(),
                "fd00::2/64".parse().unwrap()
            ]
        );
    }

    #[test]
    fn release_is_idempotent_and_cursor_moves_on() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let a = s.allocate(&key(1), &v4(), &[]).unwrap();
        assert!(s.release(&key(1)).unwrap().is_some());
        assert!(s.release(&key(1)).unwrap().is_none());
        assert!(s.release(&key(99)).unwrap().is_none());
        assert!(s.get(&key(1)).unwrap().is_none());
        assert_eq!(s.owner_of(a[0].ip()).unwrap(), None);
        // Like host-local: the next allocation continues after the last one.
        let b = s.allocate(&key(2), &v4(), &[]).unwrap();
        assert_eq!(b[0].ip(), ip("10.0.0.3"));
    }

    #[test]
    fn exhaustion_says_full_and_frees_again() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let r = sets(&[("10.0.0.0/24", Some("10.0.0.10"), Some("10.0.0.12"))]);
        for n in 0..3 {
            s.allocate(&key(n), &r, &[]).unwrap();
        }
        let e = s.allocate(&key(3), &r, &[]).unwrap_err();
        assert!(e.to_string().contains("range is full"), "{e}");
        assert!(e.to_string().contains("10.0.0.0/24"), "{e}");
        assert_eq!(e.code(), crate::error::CODE_RANGE_FULL);
        assert!(s.get(&key(3)).unwrap().is_none());
        s.release(&key(1)).unwrap();
        assert_eq!(
            s.allocate(&key(3), &r, &[]).unwrap()[0].ip(),
            ip("10.0.0.11")
        );
    }

    #[test]
    fn failure_in_second_set_rolls_back_the_first() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let r = sets(&[
            ("10.0.0.0/24", None, None),
            ("fd00::/64", Some("fd00::5"), Some("fd00::5")),
        ]);
        s.allocate(&key(1), &r, &[]).unwrap();
        let e = s.allocate(&key(2), &r, &[]).unwrap_err();
        assert!(e.to_string().contains("full"), "{e}");
        assert_eq!(s.owner_of(ip("10.0.0.3")).unwrap(), None);
    }

    #[test]
    fn requested_addresses() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let a = s.allocate(&key(1), &v4(), &[ip("10.0.0.77")]).unwrap();
        assert_eq!(a[0].ip(), ip("10.0.0.77"));
        // Again, same key: idempotent.
        assert_eq!(s.allocate(&key(1), &v4(), &[ip("10.0.0.77")]).unwrap(), a);
        let e = s.allocate(&key(2), &v4(), &[ip("10.0.0.77")]).unwrap_err();
        assert!(
            e.to_string().contains("10.0.0.77") && e.to_string().contains("c1"),
            "{e}"
        );
        assert_eq!(e.code(), crate::error::CODE_IP_UNAVAILABLE);
        let e = s.allocate(&key(2), &v4(), &[ip("10.1.0.1")]).unwrap_err();
        assert!(e.to_string().contains("10.1.0.1"), "{e}");
        let e = s.allocate(&key(1), &v4(), &[ip("10.0.0.78")]).unwrap_err();
        assert!(e.to_string().contains("already holds"), "{e}");
        assert!(s.get(&key(2)).unwrap().is_none());
    }

    #[test]
    fn corrupt_entries_are_reported_never_reset() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.allocate(&key(1), &v4(), &[]).unwrap();
        let truncated = "{\"containerID\":\"c1\",\"ifn";
        let kp = plant(d.path(), "key-c1+eth0", truncated);
        for e in [
            s.get(&key(1)).unwrap_err(),
            s.allocate(&key(1), &v4(), &[]).unwrap_err(),
            s.release(&key(1)).unwrap_err(),
            s.list().unwrap_err(),
            s.retain(&|_| false).unwrap_err(),
        ] {
            assert!(e.to_string().contains(&kp.display().to_string()), "{e}");
            assert_eq!(e.code(), crate::error::CODE_STORE_CORRUPT);
        }
        assert_eq!(fs::read_link(&kp).unwrap(), Path::new(truncated));
        // A regular file where a key entry belongs.
        fs::remove_file(&kp).unwrap();
        fs::write(&kp, b"{}").unwrap();
        let e = s.get(&key(1)).unwrap_err();
        assert!(e.to_string().contains(&kp.display().to_string()), "{e}");
        assert_eq!(fs::read(&kp).unwrap(), b"{}");
        // A key entry holding another key.
        fs::remove_file(&kp).unwrap();
        let other = r#"{"containerID":"c7","ifname":"eth0","ips":["10.0.0.2/24"]}"#;
        plant(d.path(), "key-c1+eth0", other);
        let e = s.get(&key(1)).unwrap_err();
        assert!(e.to_string().contains(&kp.display().to_string()), "{e}");
        let e = s.list().unwrap_err();
        assert!(e.to_string().contains(&kp.display().to_string()), "{e}");
        fs::remove_file(&kp).unwrap();

        // A corrupt address entry stops the release of its owner, untouched.
        s.allocate(&key(2), &v4(), &[]).unwrap();
        let ipp = plant(d.path(), "ip-10.0.0.3", "key-c2");
        let e = s.release(&key(2)).unwrap_err();
        assert!(e.to_string().contains(&ipp.display().to_string()), "{e}");
        assert_eq!(e.code(), crate::error::CODE_STORE_CORRUPT);
        assert!(s.get(&key(2)).unwrap().is_some());
        assert_eq!(fs::read_link(&ipp).unwrap(), Path::new("key-c2"));
        fs::remove_file(&ipp).unwrap();
        fs::write(&ipp, b"").unwrap();
        let e = s.owner_of(ip("10.0.0.3")).unwrap_err();
        assert!(e.to_string().contains(&ipp.display().to_string()), "{e}");
        // Never reused either: probing sees the name taken.
        let a = s.allocate(&key(3), &v4(), &[]).unwrap();
        assert_eq!(a[0].ip(), ip("10.0.0.4"));
    }

    #[test]
    fn a_garbled_or_missing_cursor_is_only_a_hint() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.allocate(&key(1), &v4(), &[]).unwrap();
        s.allocate(&key(2), &v4(), &[]).unwrap();
        s.release(&key(1)).unwrap();
        let cursors = entries(d.path(), "cursor-");
        assert_eq!(cursors.len(), 1, "{cursors:?}");
        let cp = d.path().join(&cursors[0]);
        assert_eq!(fs::read_link(&cp).unwrap(), Path::new("10.0.0.3"));
        // Garbled (a half-written file of some older tool): probing starts over.
        fs::remove_file(&cp).unwrap();
        fs::write(&cp, b"10.0.0.").unwrap();
        assert_eq!(
            s.allocate(&key(3), &v4(), &[]).unwrap()[0].ip(),
            ip("10.0.0.2")
        );
        plant(d.path(), &cursors[0], "not an address");
        assert_eq!(
            s.allocate(&key(4), &v4(), &[]).unwrap()[0].ip(),
            ip("10.0.0.4")
        );
        fs::remove_file(&cp).unwrap();
        assert_eq!(
            s.allocate(&key(5), &v4(), &[]).unwrap()[0].ip(),
            ip("10.0.0.5")
        );
        assert_eq!(fs::read_link(&cp).unwrap(), Path::new("10.0.0.5"));
    }

    #[test]
    fn crash_leftover_is_not_reused_until_gc() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        // A crash between the address entry and the key entry of c9's ADD.
        plant(d.path(), "ip-10.0.0.2", "key-c9+eth0");
        // And a crash in the middle of a release of c8 (key entry gone, address left).
        plant(d.path(), "ip-10.0.0.3", "key-c8+eth0");
        plant(d.path(), "tmp-123-0", "10.0.0.9");
        let a = s.allocate(&key(1), &v4(), &[]).unwrap();
        assert_eq!(a[0].ip(), ip("10.0.0.4"));
        let e = s.allocate(&key(2), &v4(), &[ip("10.0.0.2")]).unwrap_err();
        assert!(e.to_string().contains("10.0.0.2"), "{e}");
        assert!(e.to_string().contains("c9"), "{e}");
        // The crashed attachment retrying with the same request adopts its leftover.
        assert_eq!(
            s.allocate(&key(9), &v4(), &[ip("10.0.0.2")]).unwrap()[0].ip(),
            ip("10.0.0.2")
        );
        let report = s.retain(&|_| true).unwrap();
        assert_eq!(report.orphans, vec![ip("10.0.0.3")]);
        assert!(report.released.is_empty());
        assert!(entries(d.path(), "tmp-").is_empty());
        assert_eq!(
            s.allocate(&key(2), &v4(), &[ip("10.0.0.3")]).unwrap()[0].ip(),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn one_directory_of_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let r = sets(&[("10.0.0.0/24", None, None), ("fd00::/64", None, None)]);
        let k = AllocKey::new("ctr/1", "eth0");
        let meta = AllocMeta {
            netns: Some("/run/netns/x".into()),
        };
        s.allocate_with(&k, &r, &[], &meta).unwrap();
        assert_eq!(
            entries(d.path(), ""),
            vec![
                "cursor-10.0.0.0-10.0.0.1",
                "cursor-fd00__-fd00__1",
                "ip-10.0.0.2",
                "ip-fd00::2",
                "key-ctr%2F1+eth0",
                "lock"
            ]
        );
        let owner = fs::read_link(d.path().join("ip-fd00::2")).unwrap();
        assert_eq!(owner, Path::new("key-ctr%2F1+eth0"));
        let rec: serde_json::Value = serde_json::from_str(
            fs::read_link(d.path().join("key-ctr%2F1+eth0"))
                .unwrap()
                .to_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(rec["ips"], serde_json::json!(["10.0.0.2/24", "fd00::2/64"]));
        assert_eq!(rec["netns"], "/run/netns/x");
        assert!(rec["created"].as_u64().unwrap() > 1_700_000_000);
        let got = s.get(&k).unwrap().unwrap();
        assert_eq!(got.netns, meta.netns);
        s.release(&k).unwrap();
        assert!(entries(d.path(), "ip-").is_empty());
        assert!(entries(d.path(), "key-").is_empty());
        assert!(entries(d.path(), "tmp-").is_empty());
    }

    #[test]
    fn older_layout_is_refused_naming_it() {
        for old in ["ips", "keys"] {
            let d = tempfile::tempdir().unwrap();
            fs::create_dir_all(d.path().join(old)).unwrap();
            let e = Store::open(d.path()).unwrap_err();
            let p = d.path().join(old).display().to_string();
            assert!(e.to_string().contains(&p), "{e}");
            assert!(e.to_string().contains("older"), "{e}");
            assert_eq!(e.code(), crate::error::CODE_STORE_CORRUPT);
        }
    }

    #[test]
    fn too_long_records_are_refused_without_leftovers() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let k = AllocKey::new("x".repeat(3000), "eth0");
        let meta = AllocMeta {
            netns: Some(PathBuf::from(format!("/run/{}", "n".repeat(2000)))),
        };
        assert!(s.allocate_with(&k, &v4(), &[], &meta).is_err());
        assert!(s
            .allocate(&AllocKey::new("y".repeat(5000), "eth0"), &v4(), &[])
            .is_err());
        assert!(entries(d.path(), "ip-").is_empty());
        assert!(entries(d.path(), "key-").is_empty());
        // A long key that fits: hashed entry name, unhashed owner.
        s.allocate(&k, &v4(), &[]).unwrap();
        assert_eq!(s.owner_of(ip("10.0.0.2")).unwrap(), Some(k.clone()));
        assert_eq!(s.list().unwrap()[0].key, k);
        s.release(&k).unwrap();
        assert!(entries(d.path(), "ip-").is_empty());
    }

    #[test]
    fn key_names_round_trip() {
        for (cid, ifname) in [("abc", "eth0"), ("a+b%c", "e/0"), ("ü x", ""), ("", "+")] {
            let k = AllocKey::new(cid, ifname);
            assert_eq!(
                AllocKey::from_owner_target(k.owner_target().as_bytes()),
                Some(k.clone())
            );
        }
        for bad in [
            "abc+eth0",
            "key-abc",
            "key-a%2b+x",
            "key-a+b+c",
            "key-a%+x",
            "key-a b+x",
        ] {
            assert_eq!(AllocKey::from_owner_target(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn retain_releases_what_is_not_kept() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        for n in 0..5 {
            s.allocate(&key(n), &v4(), &[]).unwrap();
        }
        let report = s
            .retain(&|k| k.container_id == "c1" || k.container_id == "c3")
            .unwrap();
        assert_eq!(report.released.len(), 3);
        let left: Vec<_> = s.list().unwrap().into_iter().map(|a| a.key).collect();
        assert_eq!(left, vec![key(1), key(3)]);
        assert_eq!(entries(d.path(), "ip-").len(), 2);
    }

    #[test]
    fn key_file_names() {
        assert_eq!(
            AllocKey::new("abc_1.x-y", "eth0").file_name(),
            "abc_1.x-y+eth0"
        );
        assert_eq!(AllocKey::new("a+b", "e/0").file_name(), "a%2Bb+e%2F0");
        let long = AllocKey::new("x".repeat(300), "eth0");
        assert!(long.file_name().starts_with("h-") && long.file_name().len() == 34);
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let a = s.allocate(&long, &v4(), &[]).unwrap();
        assert_eq!(s.get(&long).unwrap().unwrap().ips, a);
    }

    #[test]
    fn concurrent_threads_get_distinct_addresses() {
        let d = tempfile::tempdir().unwrap();
        let r = sets(&[("10.0.0.0/24", None, None), ("fd00::/64", None, None)]);
        let handles: Vec<_> = (0..64)
            .map(|n| {
                let dir = d.path().to_path_buf();
                let r = r.clone();
                std::thread::spawn(move || {
                    Store::open(dir)
                        .unwrap()
                        .allocate(&key(n), &r, &[])
                        .unwrap()
                })
            })
            .collect();
        let all: Vec<Vec<IpNetwork>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let distinct: HashSet<IpNetwork> = all.iter().flatten().copied().collect();
        assert_eq!(distinct.len(), 128);
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.list().unwrap().len(), 64);
    }

    #[test]
    fn status_probe() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().join("net")).unwrap();
        s.check_writable().unwrap();
        assert!(!d.path().join("net").join("status-probe").exists());
    }
}
