//! The node-local allocation store of one network: a directory of small files.
//!
//! ```text
//! <dir>/lock                 flock(2)-ed for every mutation
//! <dir>/ips/<ip>             one per reserved address; JSON {"containerID","ifname"} (owner)
//! <dir>/keys/<key>           one per attachment; JSON {"containerID","ifname","ips":[...]}
//! <dir>/cursor-<set id>      last address reserved in a range set (where probing resumes)
//! <dir>/tmp/                 temp files, linked or renamed into place when complete
//! ```
//!
//! No operation reads more than the files of the attachment at hand (plus the probed
//! address files), so ADD, DEL, CHECK cost the same with 10 or 10 000 allocations; only
//! [`Store::list`] and [`Store::retain`] (GC) read everything.
//!
//! Crash safety: an address file is created complete and exclusively (`link(2)` of an
//! fsynced temp file) and its directory fsynced *before* the attachment's key file is
//! written; on release the key file is removed (and its directory fsynced) *before* the
//! address files. Whatever the crash point, every address named by a key file is
//! reserved; the only leftover is an address file without a key file listing it, which
//! is never handed out again until [`Store::retain`] (GC) reclaims it.

use ipnetwork::IpNetwork;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::allocator::assign_requested;
use crate::durable::{read_optional, remove_optional, sync_dir, Durable};
use crate::error::IpamError;
use crate::range::{RangeSet, RangeSets};

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

    /// The key file's name: `<container id>+<ifname>`, each with every byte outside
    /// `[A-Za-z0-9_.-]` written `%XX` (so `+` separates unambiguously); a 128-bit FNV-1a
    /// hash when that would be too long for a file name (the file holds the full key,
    /// which is compared on read).
    pub fn file_name(&self) -> String {
        let name = format!("{}+{}", escape(&self.container_id), escape(&self.ifname));
        if name.len() <= 200 {
            name
        } else {
            format!("h-{:032x}", fnv1a128(name.as_bytes()))
        }
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
}

/// What [`Store::retain`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub released: Vec<Allocation>,
    /// Address files no key file listed (leftovers of a crash), now free.
    pub orphans: Vec<IpAddr>,
}

/// The allocation store of one network. Cheap to open; every mutation takes the lock.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
    ips: PathBuf,
    keys: PathBuf,
    tmp: PathBuf,
    durable: Durable,
}

/// Held while the store is locked; unlocks on drop.
pub struct StoreLock {
    _lock: Flock<File>,
}

impl Store {
    /// Opens (creating it and its subdirectories if needed) the store in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, IpamError> {
        let dir = dir.into();
        let (ips, keys, tmp) = (dir.join("ips"), dir.join("keys"), dir.join("tmp"));
        for d in [&dir, &ips, &keys, &tmp] {
            fs::create_dir_all(d).map_err(|e| IpamError::io("create directory", d, e))?;
        }
        Ok(Store {
            durable: Durable::new(tmp.clone()),
            dir,
            ips,
            keys,
            tmp,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the store's exclusive lock (blocking).
    pub fn lock(&self) -> Result<StoreLock, IpamError> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| IpamError::io("open", &path, e))?;
        let mut file = file;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => return Ok(StoreLock { _lock: lock }),
                Err((f, nix::errno::Errno::EINTR)) => file = f,
                Err((_, errno)) => {
                    return Err(IpamError::io("flock", &path, std::io::Error::from(errno)))
                }
            }
        }
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.ips.join(ip.to_string())
    }

    fn key_path(&self, key: &AllocKey) -> PathBuf {
        self.keys.join(key.file_name())
    }

    fn cursor_path(&self, set: &RangeSet) -> PathBuf {
        self.dir.join(format!("cursor-{}", set.id()))
    }

    fn read_key_file(&self, path: &Path) -> Result<Option<Allocation>, IpamError> {
        let Some(bytes) = read_optional(path)? else {
            return Ok(None);
        };
        serde_json::from_slice::<Allocation>(&bytes)
            .map(Some)
            .map_err(|e| IpamError::corrupt(path, e.to_string()))
    }

    /// The owner of a reserved address, `None` when it is free.
    pub fn owner_of(&self, ip: IpAddr) -> Result<Option<AllocKey>, IpamError> {
        let path = self.ip_path(ip);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        serde_json::from_slice::<AllocKey>(&bytes)
            .map(Some)
            .map_err(|e| IpamError::corrupt(&path, e.to_string()))
    }

    /// The allocation of `key`, if any. Reads only that attachment's file.
    pub fn get(&self, key: &AllocKey) -> Result<Option<Allocation>, IpamError> {
        let path = self.key_path(key);
        match self.read_key_file(&path)? {
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
        self.list_locked()
    }

    fn list_locked(&self) -> Result<Vec<Allocation>, IpamError> {
        let mut out = Vec::new();
        for path in list_dir(&self.keys)? {
            if let Some(a) = self.read_key_file(&path)? {
                out.push(a);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn read_cursor(&self, set: &RangeSet) -> Result<Option<IpAddr>, IpamError> {
        let path = self.cursor_path(set);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        let text =
            std::str::from_utf8(&bytes).map_err(|e| IpamError::corrupt(&path, e.to_string()))?;
        text.trim()
            .parse::<IpAddr>()
            .map(Some)
            .map_err(|e| IpamError::corrupt(&path, format!("{e}: {:?}", text)))
    }

    /// Tries to reserve `ip` (exclusive create of its file): `Ok(false)` when taken.
    fn reserve(&self, ip: IpAddr, owner: &[u8]) -> Result<bool, IpamError> {
        self.durable.create_new(&self.ip_path(ip), owner)
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
        let wanted = assign_requested(sets, requested)?;
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
            // The key file is written only after its address files are durable, so they
            // exist unless removed by hand: re-reserve a missing one rather than hand
            // out an address the store would consider free.
            let owner = encode_owner(key)?;
            let mut recreated = false;
            for n in &existing.ips {
                match self.owner_of(n.ip())? {
                    Some(o) if o == *key => {}
                    None => {
                        tracing::warn!(ip = %n.ip(), %key, "address file missing: re-reserved");
                        recreated |= self.reserve(n.ip(), &owner)?;
                    }
                    Some(o) => {
                        return Err(IpamError::corrupt(
                            &self.ip_path(n.ip()),
                            format!("owned by {o} but listed by {key}"),
                        ))
                    }
                }
            }
            if recreated {
                sync_dir(&self.ips)?;
            }
            tracing::debug!(%key, ips = %join(&existing.ips), "already allocated");
            return Ok(existing.ips);
        }
        let owner = encode_owner(key)?;
        let mut taken: Vec<IpAddr> = Vec::new();
        let result = self.reserve_all(key, sets, &wanted, &owner, &mut taken);
        let ips = match result {
            Ok(ips) => ips,
            Err(e) => {
                for ip in taken {
                    if let Err(re) = remove_optional(&self.ip_path(ip)) {
                        tracing::warn!(%ip, error = %re, "rollback: cannot release address");
                    }
                }
                return Err(e);
            }
        };
        Ok(ips)
    }

    fn reserve_all(
        &self,
        key: &AllocKey,
        sets: &RangeSets,
        wanted: &[Option<IpAddr>],
        owner: &[u8],
        taken: &mut Vec<IpAddr>,
    ) -> Result<Vec<IpNetwork>, IpamError> {
        let mut ips = Vec::new();
        let mut cursors = Vec::new();
        // One fsynced temp file, linked to as many candidate names as needed.
        let prepared = self.durable.prepare(owner)?;
        for (set, want) in sets.sets().iter().zip(wanted) {
            let ip = match want {
                Some(ip) => {
                    if prepared.link_to(&self.ip_path(*ip))? {
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
                    let cursor = self.read_cursor(set)?;
                    let mut found = None;
                    for ip in set.candidates(cursor) {
                        if prepared.link_to(&self.ip_path(ip))? {
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
        drop(prepared);
        // The addresses are durable before the key file that names them exists.
        sync_dir(&self.ips)?;
        let record = Allocation {
            key: key.clone(),
            ips: ips.clone(),
        };
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| IpamError::config(format!("cannot encode {key}: {e}")))?;
        self.durable.replace(&self.key_path(key), &bytes)?;
        sync_dir(&self.keys)?;
        // Cursors are hints (fsynced content, so never garbage; losing one only means
        // probing starts over), written after the allocation is durable.
        for (set, ip) in cursors {
            self.durable
                .replace(&self.cursor_path(set), format!("{ip}\n").as_bytes())?;
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
                        self.ips.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Releases what `key` holds; `Ok(None)` when it holds nothing.
    pub fn release(&self, key: &AllocKey) -> Result<Option<Allocation>, IpamError> {
        let _lock = self.lock()?;
        self.release_locked(key)
    }

    fn release_locked(&self, key: &AllocKey) -> Result<Option<Allocation>, IpamError> {
        let Some(alloc) = self.get(key)? else {
            return Ok(None);
        };
        // Check every address file first: a corrupt one stops the release, untouched.
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
        // The key file goes first: after a crash here the addresses are orphans, not free.
        remove_optional(&self.key_path(key))?;
        sync_dir(&self.keys)?;
        for ip in mine {
            remove_optional(&self.ip_path(ip))?;
        }
        tracing::debug!(%key, ips = %join(&alloc.ips), "released");
        Ok(Some(alloc))
    }

    /// GC: releases every allocation whose key `keep` rejects, then reclaims address files
    /// no remaining key file lists (crash leftovers) and stale temp files.
    pub fn retain(&self, keep: &dyn Fn(&AllocKey) -> bool) -> Result<GcReport, IpamError> {
        let _lock = self.lock()?;
        let mut report = GcReport::default();
        let mut live: BTreeSet<IpAddr> = BTreeSet::new();
        for alloc in self.list_locked()? {
            if keep(&alloc.key) {
                live.extend(alloc.ips.iter().map(IpNetwork::ip));
            } else if let Some(a) = self.release_locked(&alloc.key)? {
                report.released.push(a);
            }
        }
        let mut orphans: BTreeMap<IpAddr, PathBuf> = BTreeMap::new();
        for path in list_dir(&self.ips)? {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let Ok(ip) = name.parse::<IpAddr>() else {
                tracing::warn!(path = %path.display(), "unexpected file in the store: ignored");
                continue;
            };
            if !live.contains(&ip) {
                // Parse it anyway: a corrupt file is reported, not silently dropped.
                self.owner_of(ip)?;
                orphans.insert(ip, path);
            }
        }
        for (ip, path) in orphans {
            remove_optional(&path)?;
            report.orphans.push(ip);
        }
        for path in list_dir(&self.tmp)? {
            let _ = remove_optional(&path);
        }
        Ok(report)
    }

    /// STATUS: the store can be locked and written.
    pub fn check_writable(&self) -> Result<(), IpamError> {
        let _lock = self.lock()?;
        let probe = self.dir.join("status-probe");
        self.durable.replace(&probe, b"ok\n")?;
        sync_dir(&self.dir)?;
        remove_optional(&probe)?;
        Ok(())
    }
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, IpamError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IpamError::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| IpamError::io("list", dir, e))?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

fn encode_owner(key: &AllocKey) -> Result<Vec<u8>, IpamError> {
    serde_json::to_vec(key).map_err(|e| IpamError::config(format!("cannot encode {key}: {e}")))
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
        fs::remove_file(d.path().join("ips").join("10.0.0.2")).unwrap();
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
    fn corrupt_files_are_reported_never_reset() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.allocate(&key(1), &v4(), &[]).unwrap();
        let kp = d.path().join("keys").join(key(1).file_name());
        let truncated = b"{\"containerID\":\"c1\",\"ifn";
        fs::write(&kp, truncated).unwrap();
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
        assert_eq!(fs::read(&kp).unwrap(), truncated);

        // A corrupt address file stops the release of its owner, untouched.
        s.allocate(&key(2), &v4(), &[]).unwrap();
        let ipp = d.path().join("ips").join("10.0.0.3");
        fs::write(&ipp, b"").unwrap();
        let e = s.release(&key(2)).unwrap_err();
        assert!(e.to_string().contains(&ipp.display().to_string()), "{e}");
        assert!(s.get(&key(2)).unwrap().is_some());

        // A corrupt cursor.
        let cp = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("cursor-")
            })
            .unwrap();
        fs::write(&cp, b"10.0.0.").unwrap();
        let e = s.allocate(&key(3), &v4(), &[]).unwrap_err();
        assert!(e.to_string().contains(&cp.display().to_string()), "{e}");
        assert_eq!(fs::read(&cp).unwrap(), b"10.0.0.");
    }

    #[test]
    fn crash_leftover_is_not_reused_until_gc() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        // A crash between the address file and the key file of c9's ADD.
        fs::write(
            d.path().join("ips").join("10.0.0.2"),
            serde_json::to_vec(&key(9)).unwrap(),
        )
        .unwrap();
        // And a crash in the middle of a release of c8 (key file gone, address left).
        fs::write(
            d.path().join("ips").join("10.0.0.3"),
            serde_json::to_vec(&key(8)).unwrap(),
        )
        .unwrap();
        fs::write(d.path().join("tmp").join("123-0"), b"partial").unwrap();
        let a = s.allocate(&key(1), &v4(), &[]).unwrap();
        assert_eq!(a[0].ip(), ip("10.0.0.4"));
        let e = s.allocate(&key(2), &v4(), &[ip("10.0.0.2")]).unwrap_err();
        assert!(e.to_string().contains("10.0.0.2"), "{e}");
        // The crashed attachment retrying with the same request adopts its leftover.
        assert_eq!(
            s.allocate(&key(9), &v4(), &[ip("10.0.0.2")]).unwrap()[0].ip(),
            ip("10.0.0.2")
        );
        let report = s.retain(&|_| true).unwrap();
        assert_eq!(report.orphans, vec![ip("10.0.0.3")]);
        assert!(report.released.is_empty());
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(
            s.allocate(&key(2), &v4(), &[ip("10.0.0.3")]).unwrap()[0].ip(),
            ip("10.0.0.3")
        );
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
        assert_eq!(fs::read_dir(d.path().join("ips")).unwrap().count(), 2);
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
