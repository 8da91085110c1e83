//! The node-local allocation store of one network: the entries of ONE directory, whose
//! data lives in their metadata (symlink targets), so that one fsync of that directory
//! makes a whole ADD or DEL durable.
//!
//! ```text
//! <dir>/lock                   flock(2)-ed for every mutation
//! <dir>/ip-<ip>                one per reserved address: the attachment's record, a
//!                              symlink whose target is compact JSON
//!                              {"containerID","ifname","ips":[...],"netns","created"}
//!                              (which must list <ip>); created as the first address's
//!                              entry, every other entry of the attachment is a hard link
//!                              of it. Earlier builds: target = the owner's key entry
//!                              name (key-<cid>+<ifname>), still read.
//! <dir>/key-<cid>+<ifname>     one per attachment: a hard link of the record (a symlink
//!                              of its own with the JSON in earlier builds)
//! <dir>/held-<ip>              the index of what key entries list: one per address of a
//!                              key entry, naming the same attachment as the ip- entry; a
//!                              hard link of the record (a symlink of its own where hard
//!                              links are refused, and in stores of earlier builds)
//! <dir>/index-v1               symlink -> "v1": every key entry's addresses are indexed
//! <dir>/cursor-<set id>        regular file, the last address reserved in a range set
//!                              (a hint), rewritten in place; a symlink in earlier builds
//! <dir>/tmp-<pid>-<n>          temp entries, renamed into place
//! <dir>/quarantine/            corrupt entries moved aside by DEL and GC (never read)
//! ```
//!
//! # Two records per address
//!
//! An address is reserved by its `ip-` entry and indexed by its `held-` entry, both
//! naming the attachment whose key entry lists it. An address is handed out only when
//! its `ip-` entry could be created *and* its `held-` entry is absent or stale (its
//! attachment no longer lists it): an address whose `ip-` entry alone was lost (deleted
//! by hand, damaged) is still seen as held, its `ip-` entry is re-created for its owner,
//! and the next candidate is tried. This is the cross-check of address and key entries
//! at the cost of one more `readlink` per probe, whatever the store's size.
//!
//! One inode per attachment: its record is created as the first `ip-` entry, and its
//! other `ip-` entries, its `held-` entries and its key entry are further names
//! (`link(2)`, which does not follow a symlink) of it: the same target without a new
//! inode. An address or index entry is read in either form (`read_owner`). The names
//! stay independent records: removing or replacing one name (by hand, or by `rename(2)`
//! over it as this module does) leaves the others with their target. Where the file
//! system refuses the hard link it is a symlink of its own, which every reader treats
//! the same. A store written before the index existed (no `index-v1`) is indexed once,
//! under the lock, by the first ADD of this build; GC rebuilds the index from the key
//! entries every time.
//!
//! # Corrupt entries
//!
//! A corrupt entry (a key entry that does not parse or holds another key, an address
//! entry that names no attachment) is never reset in place. ADD and CHECK report it
//! (code 101). DEL and GC must make progress past it: DEL of an attachment whose key
//! entry is corrupt moves the entry to `quarantine/` (WARN), and releases the address
//! entries that name the attachment (found by reading the directory: the only path of
//! DEL whose cost grows with the store, taken only for a corrupt entry). GC quarantines
//! the corrupt key entries of attachments that are no longer valid and leaves those of
//! valid ones (and their addresses) in place for their DEL; corrupt address entries are
//! quarantined and re-created for the attachment that lists them. [`GcReport`] counts
//! all of it, and the double ownerships found and repaired (two key entries listing one
//! address: the one its `ip-` entry names keeps it, else the older one).
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
//! - **Exclusive reservation**: the flock serializes every writer; under it the addresses
//!   are chosen by `readlink` (the record must list them all before it exists), then
//!   created by `symlink(2)`/`link(2)`, which fail with `EEXIST` when the name exists:
//!   a name made by hand meanwhile fails the ADD, it is never overwritten.
//! - **Complete or absent**: a symlink is created together with its target in one
//!   metadata operation, and a hard link is one more name of it; there is no file
//!   content that could be lost or half written, so no file fsync is needed. Replacing
//!   an entry is a temp entry `rename(2)`-d over it.
//! - **Order**: ADD creates the address entries (the record, then its links), then the
//!   index entries, then the key entry, then fsyncs the directory **once** before
//!   answering. DEL removes the key entry first, then the address entries, then the
//!   index entries, then fsyncs once. (ipam/README.md has a table of what a crash
//!   after each step leaves.)
//!
//! Inodes: an ADD allocates one inode (the record), whatever the number of addresses,
//! and frees none; a DEL frees it with its last name. The cursor files and the
//! lock are allocated once per store. (On ext4 without a journal, allocating an inode
//! scans past every inode freed in the last few seconds: the cost of an ADD there grows
//! with the inodes the store allocates and frees.)
//!
//! Assumption: a journaling file system that commits metadata operations in the order
//! they were made (ext4 with its journal, in `data=ordered` or `data=journal` mode; xfs):
//! after a crash the directory holds a prefix of the operations. A crash therefore
//! leaves either nothing, or address entries no key entry lists (orphans: probing skips
//! them since the name exists, so they are never handed out again until GC, or an ADD
//! retry of the same attachment asking for them, reclaims them), or the complete
//! allocation; never a key entry naming an address that is free. Once the fsync
//! returned, the whole operation survives a crash. A `kill -9` loses nothing at all
//! (nothing lives only in the process), on any file system.
//!
//! Without a journal (ext4 created or tuned without `has_journal`, like the root file
//! system of the VM this suite is developed on, or ext2) neither half of that holds
//! after a power loss or kernel crash: metadata blocks are written back in no particular
//! order, and an fsync of the directory writes the directory's blocks and inode but
//! not necessarily the inode-table blocks of the entries just created; `e2fsck` then
//! decides what survives, and an acknowledged ADD can be lost or left as orphans. The
//! store cannot do better than the file system there (an fsync per entry would not make
//! the set of entries atomic either): give it a journaling file system where a power
//! loss must not lose allocations.
//!
//! The cursor is only where probing starts: it is rewritten in place without fsync (the
//! directory's fsync does not carry file content), so a crash may bring back an older
//! cursor, and a missing or garbled cursor is treated as absent (probing starts at the
//! beginning of the set, which only costs probes; a released address may then be handed
//! out again sooner than the cursor would have).
//!
//! A store of the older layout (`ips/`, `keys/` subdirectories of one file each) is
//! refused by [`Store::open`], naming the directory: it is never silently ignored, which
//! would hand its addresses out a second time.

use cni_core::hash::stable_hash_128;
use ipnetwork::IpNetwork;
use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::allocator::assign_requested;
use crate::durable::{
    create_symlink, link_entry, read_symlink, remove_optional, replace_symlink, replace_with_link,
    sync_dir, temp_name, write_hint, Hint, Link, MAX_TARGET,
};
use crate::error::IpamError;
use crate::range::{RangeSet, RangeSets};

const IP_PREFIX: &str = "ip-";
const KEY_PREFIX: &str = "key-";
const CURSOR_PREFIX: &str = "cursor-";
const TMP_PREFIX: &str = "tmp-";
const HELD_PREFIX: &str = "held-";
/// Present once every key entry's addresses have their `held-` entry.
const INDEX_MARK: &str = "index-v1";
const QUARANTINE_DIR: &str = "quarantine";
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
            format!("h-{:032x}", stable_hash_128(&[&name]))
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

/// What [`Store::retain`] removed and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub released: Vec<Allocation>,
    /// Address entries no key entry listed (leftovers of a crash), now free.
    pub orphans: Vec<IpAddr>,
    /// Corrupt entries moved to `quarantine/` (where they are now).
    pub quarantined: Vec<PathBuf>,
    /// Corrupt key entries of attachments that are still valid: left in place, with the
    /// addresses that name them, for their DEL.
    pub corrupt_kept: Vec<PathBuf>,
    /// Addresses whose `ip-` entry was missing, corrupt or named another attachment
    /// while a key entry listed them: re-pointed at the attachment that keeps them.
    pub repaired: Vec<IpAddr>,
    /// Addresses listed by more than one key entry.
    pub conflicts: Vec<Conflict>,
}

/// One address listed by more than one attachment's key entry (found by GC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub ip: IpAddr,
    /// Who keeps it: the attachment its `ip-` entry named, else the oldest one.
    pub kept: AllocKey,
    /// The other attachments that list it (their CHECK fails; their DEL leaves it).
    pub also: Vec<AllocKey>,
}

/// What the index says when an address entry was just created for an attachment.
enum Indexed {
    /// The address is the attachment's (its `held-` entry now says so).
    Mine,
    /// The address is held by another attachment (its `ip-` entry was given back to
    /// it), or its index entry cannot be read: not handed out.
    Held(Option<AllocKey>),
}

/// The allocation store of one network. Cheap to open; every mutation takes the lock.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
    /// The pid that must still be this process's parent once the lock is taken (see
    /// [`Store::require_parent`]).
    parent: Option<i32>,
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
    helds: Vec<(IpAddr, PathBuf)>,
    tmps: Vec<PathBuf>,
}

impl Store {
    /// Opens (creating it if needed) the store in `dir`. A directory of the older
    /// one-file-per-entry layout (`ips/`, `keys/`) is refused (code 101, naming it).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, IpamError> {
        let dir = dir.into();
        let d = crate::durable::open_or_create_dir(&dir)?;
        Store::opened(dir, d)
    }

    /// [`Store::open`] of a store that exists: `Ok(None)` (nothing created) when `dir`
    /// does not exist (DEL and GC of a network that never had an ADD).
    pub fn open_existing(dir: impl Into<PathBuf>) -> Result<Option<Store>, IpamError> {
        let dir = dir.into();
        match crate::durable::open_dir(&dir) {
            Ok(d) => Store::opened(dir, d).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IpamError::io("open directory", &dir, e)),
        }
    }

    /// The checks of [`Store::open`] on the opened directory `d`.
    fn opened(dir: PathBuf, d: File) -> Result<Store, IpamError> {
        use std::os::unix::fs::MetadataExt;
        let md = d.metadata().map_err(|e| IpamError::io("stat", &dir, e))?;
        // A directory an older build made under a permissive umask is tightened.
        crate::durable::tighten_known(&d, &dir, &md);
        drop(d);
        // The refusal of an older layout (reading it as empty would hand its addresses
        // out again) depends on seeing `ips/` or `keys/`. A directory's link count is 2
        // plus its subdirectories on the file systems that count them (ext2/3/4, xfs,
        // tmpfs); those that do not report 1 (btrfs, ext4 past 65000 subdirectories).
        // So exactly 2 means no subdirectory at all (a fresh store: no stat needed);
        // any other count is looked at.
        if md.nlink() == 2 {
            return Ok(Store { dir, parent: None });
        }
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
        Ok(Store { dir, parent: None })
    }

    /// Every later [`Store::lock`] also checks, once the lock is held, that this
    /// process's parent is still `pid` (the plugin that delegated to `cni-ipam`), and
    /// fails (nothing changed) when it is not: a child orphaned by a killed ADD must not
    /// reserve an address after the runtime's DEL of the same container.
    pub fn require_parent(mut self, pid: Option<i32>) -> Store {
        self.parent = pid;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the store's exclusive lock (blocking).
    pub fn lock(&self) -> Result<StoreLock, IpamError> {
        let lock = StoreLock {
            _lock: crate::durable::lock_exclusive(&self.dir.join("lock"))?,
        };
        if let Some(p) = self.parent {
            let now = nix::unistd::getppid().as_raw();
            if now != p {
                tracing::warn!(parent = p, now, dir = %self.dir.display(),
                    "the plugin that started cni-ipam has exited: the store is left unchanged");
                return Err(IpamError::Orphaned(format!(
                    "the plugin that started cni-ipam (pid {p}) has exited (parent is now pid                      {now}): nothing was changed in {}",
                    self.dir.display()
                )));
            }
        }
        Ok(lock)
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

    fn held_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(format!("{HELD_PREFIX}{ip}"))
    }

    fn tmp_path(&self) -> PathBuf {
        self.dir.join(temp_name(TMP_PREFIX))
    }

    fn cursor_path(&self, set: &RangeSet) -> PathBuf {
        self.dir.join(format!("{CURSOR_PREFIX}{}", set.id()))
    }

    fn read_key_entry(&self, path: &Path) -> Result<Option<Allocation>, IpamError> {
        match read_symlink(path)? {
            Link::Missing => Ok(None),
            Link::Other => Err(IpamError::corrupt(path, "not a symlink".to_string())),
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
        read_owner(&self.ip_path(ip), ip)
    }

    /// Whom the index says holds `ip`.
    fn index_owner(&self, ip: IpAddr) -> Result<Option<AllocKey>, IpamError> {
        read_owner(&self.held_path(ip), ip)
    }

    /// Whether `owner`'s key entry lists `ip`. A key entry that cannot be read counts
    /// as listing it: what it may hold is never handed out.
    fn lists(&self, owner: &AllocKey, ip: IpAddr) -> bool {
        match self.get(owner) {
            Ok(Some(a)) => a.ips.iter().any(|n| n.ip() == ip),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Makes the index entry of `ip` a second name of its address entry, which names
    /// `owner` (no new inode; a symlink where hard links are refused), replacing
    /// whatever index entry was there.
    fn index_as_address(&self, ip: IpAddr, owner: &str) -> Result<(), IpamError> {
        let (src, held) = (self.ip_path(ip), self.held_path(ip));
        if !link_entry(&src, owner, &held)? {
            replace_with_link(&src, owner, &held, &self.tmp_path())?;
        }
        Ok(())
    }

    /// Cross-checks the index for `ip`, whose address entry is absent (it looked free),
    /// before it is given to `key`. Nothing is created for `key` here; an address whose
    /// address entry alone was lost gets it back for its owner.
    fn index_allows(&self, key: &AllocKey, ip: IpAddr) -> Result<Indexed, IpamError> {
        match self.index_owner(ip) {
            Ok(None) => Ok(Indexed::Mine),
            Ok(Some(o)) if o == *key => Ok(Indexed::Mine),
            Ok(Some(o)) if self.lists(&o, ip) => {
                tracing::warn!(%ip, owner = %o, dir = %self.dir.display(),
                    "the address entry was lost but the attachment still lists the address: re-reserved for it, not handed out");
                replace_symlink(&o.owner_target(), &self.ip_path(ip), &self.tmp_path())?;
                Ok(Indexed::Held(Some(o)))
            }
            // Stale: its attachment was released (a crash between its entries' removal);
            // replaced when the address is indexed for `key`.
            Ok(Some(_)) => Ok(Indexed::Mine),
            Err(e @ IpamError::Corrupt { .. }) => {
                tracing::warn!(%ip, error = %e, "index entry unreadable: the address is not handed out (GC rebuilds the index)");
                Ok(Indexed::Held(None))
            }
            Err(e) => Err(e),
        }
    }

    /// Indexes every address of every key entry, once per store (a store written by an
    /// older build has no index). Under the lock.
    fn ensure_index(&self) -> Result<(), IpamError> {
        let mark = self.dir.join(INDEX_MARK);
        if matches!(read_symlink(&mark)?, Link::Target(_)) {
            return Ok(());
        }
        let scan = self.scan()?;
        let mut n = 0usize;
        for path in &scan.keys {
            // A corrupt key entry is for its DEL or GC to handle.
            let Ok(Some(a)) = self.read_key_entry(path) else {
                continue;
            };
            for ip in a.ips.iter().map(IpNetwork::ip) {
                if create_symlink(&a.key.owner_target(), &self.held_path(ip))? {
                    n += 1;
                }
            }
        }
        // No fsync of its own: the entries ride along with the caller's (the ADD's)
        // fsync, and created after the index entries, the mark never survives a crash
        // without them (the journal commits in order, see the module docs).
        replace_symlink("v1", &mark, &self.tmp_path())?;
        if n > 0 {
            tracing::info!(dir = %self.dir.display(), indexed = n, "indexed the addresses of a store written by an older build (once)");
        }
        Ok(())
    }

    /// Moves the corrupt entry `path` to `quarantine/` (not synced: the caller syncs
    /// the store directory); logged at WARN. Returns where it is now.
    fn quarantine(&self, path: &Path, reason: &str) -> Result<PathBuf, IpamError> {
        let qdir = self.dir.join(QUARANTINE_DIR);
        crate::durable::create_dir_all(&qdir)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let dest = qdir.join(format!("{name}.{secs}.{}", temp_name("")));
        fs::rename(path, &dest).map_err(|e| IpamError::io("quarantine", path, e))?;
        sync_dir(&qdir)?;
        tracing::warn!(entry = %path.display(), moved_to = %dest.display(), %reason, "corrupt store entry quarantined");
        Ok(dest)
    }

    /// Removes every address and index entry naming `key` (reads the directory): the
    /// release of an attachment whose key entry was corrupt.
    fn sweep_owner(&self, key: &AllocKey) -> Result<Vec<IpAddr>, IpamError> {
        let scan = self.scan()?;
        let mut freed = Vec::new();
        // Either form (owner name or record); an unreadable entry names nobody here.
        let names =
            |path: &Path, ip: IpAddr| matches!(read_owner(path, ip), Ok(Some(o)) if o == *key);
        for (ip, path) in &scan.ips {
            if names(path, *ip) {
                remove_optional(path)?;
                freed.push(*ip);
            }
        }
        for (ip, path) in &scan.helds {
            if names(path, *ip) {
                remove_optional(path)?;
            }
        }
        Ok(freed)
    }
}

/// The attachment the address or index entry `path` of `ip` names, `None` when there is
/// none. Two forms: the owner's key entry name (`key-<cid>+<ifname>`, earlier builds and
/// repairs), or the owner's whole record (this build: the entry is the record's inode),
/// which must list `ip`.
fn read_owner(path: &Path, ip: IpAddr) -> Result<Option<AllocKey>, IpamError> {
    let t = match read_symlink(path)? {
        Link::Missing => return Ok(None),
        Link::Other => return Err(IpamError::corrupt(path, "not a symlink".to_string())),
        Link::Target(t) => t,
    };
    if t.first() == Some(&b'{') {
        return match serde_json::from_slice::<Allocation>(&t) {
            Ok(a) if a.ips.iter().any(|n| n.ip() == ip) => Ok(Some(a.key)),
            Ok(a) => Err(IpamError::corrupt(
                path,
                format!("the record of {} does not list {ip}", a.key),
            )),
            Err(e) => Err(IpamError::corrupt(
                path,
                format!("{e} in target {:?}", String::from_utf8_lossy(&t)),
            )),
        };
    }
    AllocKey::from_owner_target(&t).map(Some).ok_or_else(|| {
        IpamError::corrupt(
            path,
            format!(
                "target {:?} does not name an attachment",
                String::from_utf8_lossy(&t)
            ),
        )
    })
}

impl Store {
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
            } else if let Some((list, ip)) = name
                .strip_prefix(IP_PREFIX)
                .map(|ip| (&mut scan.ips, ip))
                .or_else(|| {
                    name.strip_prefix(HELD_PREFIX)
                        .map(|ip| (&mut scan.helds, ip))
                })
            {
                match ip.parse::<IpAddr>() {
                    Ok(ip) => list.push((ip, entry.path())),
                    Err(_) => {
                        tracing::warn!(path = %entry.path().display(), "unexpected entry in the store: ignored")
                    }
                }
            }
        }
        scan.keys.sort();
        scan.ips.sort();
        scan.helds.sort();
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

    /// The cursor of `set` (opened once per ADD, read here and rewritten by
    /// [`Store::write_cursor`]), and where probing resumes: absent when the cursor is
    /// missing, unreadable or garbled (it is only a hint, never an error). Reads the
    /// regular file of this build and the symlink of earlier ones.
    fn read_cursor(&self, set: &RangeSet) -> (Hint, Option<IpAddr>) {
        let hint = Hint::open(&self.cursor_path(set));
        let ip = hint.text().and_then(|t| t.parse().ok());
        if ip.is_none() && hint.text().is_some_and(|t| !t.is_empty()) {
            tracing::debug!(set = %set, "garbled cursor: ignored");
        }
        (hint, ip)
    }

    /// Records where probing resumes, rewriting the cursor file in place (no inode
    /// allocated or freed; an earlier build's symlink is converted once). Not synced: a
    /// crash may bring back an older cursor, and a failure only costs probes later.
    fn write_cursor(&self, set: &RangeSet, hint: Option<&Hint>, ip: IpAddr) {
        let text = ip.to_string();
        let written = match hint {
            Some(h) => h.write(&text),
            None => write_hint(&self.cursor_path(set), &text),
        };
        if let Err(e) = written {
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
        self.ensure_index()?;
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
                        // Another name of the key entry (the record), no new inode.
                        link_entry(&self.key_path(key), &owner, &self.ip_path(n.ip()))?;
                    }
                    Some(o) => {
                        return Err(IpamError::corrupt(
                            &self.ip_path(n.ip()),
                            format!("owned by {o} but listed by {key}"),
                        ))
                    }
                }
            }
            for n in &existing.ips {
                if !matches!(self.index_owner(n.ip()), Ok(Some(ref o)) if o == key) {
                    // Its address entry names `key` (checked above); where links are
                    // refused the index entry gets the same target (record or name).
                    let target = match read_symlink(&self.ip_path(n.ip()))? {
                        Link::Target(t) => String::from_utf8(t).ok(),
                        _ => None,
                    };
                    self.index_as_address(n.ip(), target.as_deref().unwrap_or(&owner))?;
                }
            }
            // An ADD killed between its last entry and its fsync leaves entries that are
            // not yet durable: answer only what is.
            self.sync()?;
            tracing::debug!(%key, ips = %join(&existing.ips), "already allocated");
            return Ok(existing.ips);
        }
        let mut created: Vec<PathBuf> = Vec::new();
        let result = self.reserve_all(key, sets, &wanted, &mut created, meta);
        if result.is_err() {
            // Newest first: the key entry goes before the addresses it lists.
            for path in created.iter().rev() {
                if let Err(re) = remove_optional(path) {
                    tracing::warn!(path = %path.display(), error = %re, "rollback: cannot remove the entry");
                }
            }
        }
        result
    }

    /// Chooses one address per set, then records them: the first address entry is a new
    /// symlink whose target is the whole record, and every other entry of the attachment
    /// (further address entries, the index entries, the key entry last) is another name
    /// of it (one inode per ADD). Every entry it creates is pushed to `created` (removed
    /// by the caller if this fails).
    fn reserve_all(
        &self,
        key: &AllocKey,
        sets: &RangeSets,
        wanted: &[Option<IpAddr>],
        created: &mut Vec<PathBuf>,
        meta: &AllocMeta,
    ) -> Result<Vec<IpNetwork>, IpamError> {
        let unavailable = |ip: IpAddr, o: Option<AllocKey>| {
            let who = o.map_or_else(|| "another attachment".into(), |o| o.to_string());
            IpamError::Unavailable {
                ip,
                reason: format!("is already allocated to {who}"),
            }
        };
        let mut ips = Vec::new();
        // Per address: its entry is a leftover of this attachment's crashed ADD (adopted).
        let mut adopted = Vec::new();
        // Per set: its address, and its cursor file when it probed (read once, rewritten
        // below).
        let mut cursors: Vec<(&RangeSet, IpAddr, Option<Hint>)> = Vec::new();
        // Choosing creates nothing: the lock keeps every other writer out until the
        // entries are created below (exclusively all the same: a name that appeared by
        // hand meanwhile fails the ADD, it is never overwritten).
        for (set, want) in sets.sets().iter().zip(wanted) {
            let (ip, hint) = match want {
                Some(ip) => {
                    match self.owner_of(*ip)? {
                        None => match self.index_allows(key, *ip)? {
                            Indexed::Mine => adopted.push(false),
                            Indexed::Held(o) => return Err(unavailable(*ip, o)),
                        },
                        Some(o) if o == *key => adopted.push(true),
                        o => return Err(unavailable(*ip, o)),
                    }
                    (*ip, None)
                }
                None => {
                    let (hint, cursor) = self.read_cursor(set);
                    let mut found = None;
                    for ip in set.candidates(cursor) {
                        if matches!(read_symlink(&self.ip_path(ip))?, Link::Missing)
                            && matches!(self.index_allows(key, ip)?, Indexed::Mine)
                        {
                            found = Some(ip);
                            break;
                        }
                    }
                    adopted.push(false);
                    let ip = found.ok_or_else(|| IpamError::Exhausted {
                        set: set.to_string(),
                    })?;
                    (ip, Some(hint))
                }
            };
            cursors.push((set, ip, hint));
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
        let appeared = |path: &Path| {
            IpamError::corrupt(path, "appeared while the store was locked".to_string())
        };
        // The record's inode: created as the first address entry, every further entry is
        // a hard link of it (a symlink of its own, same target, where links are refused).
        let mut record_entry: Option<PathBuf> = None;
        for (n, adopt) in ips.iter().zip(&adopted) {
            let path = self.ip_path(n.ip());
            if *adopt {
                // A leftover naming this attachment: replaced by the record.
                match &record_entry {
                    None => replace_symlink(&json, &path, &self.tmp_path())?,
                    Some(src) => replace_with_link(src, &json, &path, &self.tmp_path())?,
                }
            } else {
                let made = match &record_entry {
                    None => create_symlink(&json, &path)?,
                    Some(src) => link_entry(src, &json, &path)?,
                };
                if !made {
                    return Err(appeared(&path));
                }
                created.push(path.clone());
            }
            record_entry.get_or_insert(path);
        }
        for n in &ips {
            // A stale index entry (or one of this attachment's crashed ADD) is replaced.
            self.index_as_address(n.ip(), &json)?;
            created.push(self.held_path(n.ip()));
        }
        // After the address entries: the journal commits in order, so a key entry never
        // survives a crash without the addresses it names.
        let path = self.key_path(key);
        let made = match &record_entry {
            Some(src) => link_entry(src, &json, &path)?,
            None => create_symlink(&json, &path)?,
        };
        if !made {
            // The entry was absent when read under the lock: only a hand edit gets here.
            return Err(appeared(&path));
        }
        created.push(path);
        // Hints, rewritten in place in their files: the directory's fsync does not carry
        // them (file content), the kernel writes them back later.
        for (set, ip, hint) in &cursors {
            self.write_cursor(set, hint.as_ref(), *ip);
        }
        // The one fsync: addresses, index and key entry become durable together (on
        // failure the caller removes them all, key entry first).
        self.sync()?;
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

    /// Releases what `key` holds; `Ok(None)` when it holds nothing. Makes progress past
    /// corrupt entries: they are quarantined (see the module docs).
    pub fn release(&self, key: &AllocKey) -> Result<Option<Allocation>, IpamError> {
        let _lock = self.lock()?;
        let mut quarantined = Vec::new();
        let released = self.unlink_locked(key, &mut quarantined)?;
        if released.is_some() || !quarantined.is_empty() {
            self.sync()?;
        }
        Ok(released)
    }

    /// Removes the entries of `key` (not synced); corrupt ones are quarantined (their
    /// new paths pushed to `quarantined`).
    fn unlink_locked(
        &self,
        key: &AllocKey,
        quarantined: &mut Vec<PathBuf>,
    ) -> Result<Option<Allocation>, IpamError> {
        let alloc = match self.get(key) {
            Ok(None) => return Ok(None),
            Ok(Some(a)) => a,
            Err(IpamError::Corrupt { path, reason }) => {
                quarantined.push(self.quarantine(&path, &reason)?);
                let freed = self.sweep_owner(key)?;
                tracing::warn!(%key, freed = %freed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                    "released the addresses naming an attachment whose key entry was corrupt");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut mine = Vec::new();
        for n in &alloc.ips {
            let ip = n.ip();
            match self.owner_of(ip) {
                Ok(Some(o)) if o == *key => mine.push(ip),
                Ok(Some(o)) => {
                    tracing::warn!(%ip, owner = %o, %key, "address owned by another attachment: kept")
                }
                Ok(None) => {}
                Err(IpamError::Corrupt { path, reason }) => {
                    quarantined.push(self.quarantine(&path, &reason)?);
                    // Listed by this attachment; the index tells whether another holds it.
                    if let Ok(Some(o)) = self.index_owner(ip) {
                        if o != *key && self.lists(&o, ip) {
                            create_symlink(&o.owner_target(), &self.ip_path(ip))?;
                            tracing::warn!(%ip, owner = %o, "address entry re-created for the attachment the index names");
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // The key entry goes first: after a crash here the addresses are orphans, not free.
        remove_optional(&self.key_path(key))?;
        for ip in mine {
            remove_optional(&self.ip_path(ip))?;
        }
        for n in &alloc.ips {
            match self.index_owner(n.ip()) {
                Ok(Some(o)) if o != *key => {}
                Ok(None) => {}
                // Ours, or unreadable (an index entry only: GC rebuilds the index).
                _ => {
                    remove_optional(&self.held_path(n.ip()))?;
                }
            }
        }
        tracing::debug!(%key, ips = %join(&alloc.ips), "released");
        Ok(Some(alloc))
    }

    /// The attachment whose key entry is (or should be) at `path`: decoded from the name,
    /// or for a hashed name, the one of `owners` whose entry it is.
    fn key_of_entry<'a>(
        &self,
        path: &Path,
        owners: impl Iterator<Item = &'a AllocKey>,
    ) -> Option<AllocKey> {
        let name = path.file_name()?.to_str()?;
        if let Some(k) = AllocKey::from_owner_target(name.as_bytes()) {
            return Some(k);
        }
        owners
            .into_iter()
            .find(|o| self.key_path(o) == path)
            .cloned()
    }

    /// GC: releases every allocation whose key `keep` rejects, then reclaims address
    /// entries no remaining key entry lists (crash leftovers) and stale temp entries,
    /// quarantines corrupt entries, repairs address entries and the index from the key
    /// entries, and reports addresses listed by two attachments. One fsync at the end.
    pub fn retain(&self, keep: &dyn Fn(&AllocKey) -> bool) -> Result<GcReport, IpamError> {
        let _lock = self.lock()?;
        let scan = self.scan()?;
        let mut report = GcReport::default();
        // Key entries: the readable ones, and the corrupt ones.
        let mut allocs = Vec::new();
        let mut corrupt = Vec::new();
        for path in &scan.keys {
            let read = self.read_key_entry(path).and_then(|a| match a {
                Some(a) if self.key_path(&a.key) != *path => Err(IpamError::corrupt(
                    path,
                    format!("holds {}, whose entry has another name", a.key),
                )),
                other => Ok(other),
            });
            match read {
                Ok(Some(a)) => allocs.push(a),
                Ok(None) => {}
                Err(IpamError::Corrupt { path, reason }) => corrupt.push((path, reason)),
                Err(e) => return Err(e),
            }
        }
        // Whose is a corrupt key entry: a valid attachment keeps it (and its addresses)
        // for its own DEL; any other is quarantined.
        let mut protected: BTreeSet<AllocKey> = BTreeSet::new();
        if !corrupt.is_empty() {
            let mut owners = Vec::new();
            for (ip, p) in scan.ips.iter().chain(&scan.helds) {
                if let Ok(Some(o)) = read_owner(p, *ip) {
                    owners.push(o);
                }
            }
            for (path, reason) in corrupt {
                match self.key_of_entry(&path, owners.iter()) {
                    Some(k) if keep(&k) => {
                        tracing::warn!(entry = %path.display(), %reason, key = %k,
                            "corrupt key entry of a valid attachment: left in place with its addresses for its DEL");
                        protected.insert(k);
                        report.corrupt_kept.push(path);
                    }
                    _ => report.quarantined.push(self.quarantine(&path, &reason)?),
                }
            }
        }
        let mut kept = Vec::new();
        for alloc in allocs {
            if keep(&alloc.key) {
                kept.push(alloc);
            } else if let Some(a) = self.unlink_locked(&alloc.key, &mut report.quarantined)? {
                report.released.push(a);
            }
        }
        // Who lists each address, oldest first.
        kept.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
        let mut listers: BTreeMap<IpAddr, Vec<&AllocKey>> = BTreeMap::new();
        for a in &kept {
            for n in &a.ips {
                listers.entry(n.ip()).or_default().push(&a.key);
            }
        }
        // Address entries: orphans go, corrupt ones are quarantined.
        let mut changed = false;
        for (ip, path) in &scan.ips {
            let owner = match self.owner_of(*ip) {
                Ok(Some(o)) => o,
                Ok(None) => continue, // released above
                Err(IpamError::Corrupt { path, reason }) => {
                    report.quarantined.push(self.quarantine(&path, &reason)?);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let listed = listers.get(ip);
            if listed.is_some() || protected.contains(&owner) {
                continue; // repaired below if it names a non-lister
            }
            remove_optional(path)?;
            report.orphans.push(*ip);
        }
        // Every listed address: one owner, in its address entry and in the index.
        for (ip, owners) in &listers {
            let current = self.owner_of(*ip).ok().flatten();
            let Some(first) = owners.first() else {
                continue;
            };
            let winner: &AllocKey = current
                .as_ref()
                .and_then(|c| owners.iter().find(|o| **o == c))
                .copied()
                .unwrap_or(first);
            if owners.len() > 1 {
                let also: Vec<AllocKey> = owners
                    .iter()
                    .filter(|o| **o != winner)
                    .map(|o| (*o).clone())
                    .collect();
                tracing::warn!(%ip, kept = %winner, also = %also.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                    "address listed by more than one attachment: kept by one, the others' CHECK fails until they are deleted");
                report.conflicts.push(Conflict {
                    ip: *ip,
                    kept: winner.clone(),
                    also,
                });
            }
            if current.as_ref() != Some(winner) {
                tracing::warn!(%ip, owner = %winner, was = ?current.as_ref().map(ToString::to_string),
                    "address entry missing or naming another attachment: re-pointed at the attachment that lists it");
                // Another name of the winner's (readable) key entry: its record.
                replace_with_link(
                    &self.key_path(winner),
                    &winner.owner_target(),
                    &self.ip_path(*ip),
                    &self.tmp_path(),
                )?;
                report.repaired.push(*ip);
            }
            if !matches!(self.index_owner(*ip), Ok(Some(ref o)) if o == winner) {
                // The address entry names the winner now.
                replace_with_link(
                    &self.ip_path(*ip),
                    &winner.owner_target(),
                    &self.held_path(*ip),
                    &self.tmp_path(),
                )?;
                changed = true;
            }
        }
        // Index entries of nothing listed are stale.
        for (ip, path) in &scan.helds {
            if listers.contains_key(ip) {
                continue;
            }
            if matches!(self.index_owner(*ip), Ok(Some(ref o)) if protected.contains(o)) {
                continue;
            }
            changed |= remove_optional(path)?;
        }
        let mark = self.dir.join(INDEX_MARK);
        if !matches!(read_symlink(&mark)?, Link::Target(_)) {
            replace_symlink("v1", &mark, &self.tmp_path())?;
            changed = true;
        }
        changed |= !report.released.is_empty()
            || !report.orphans.is_empty()
            || !report.quarantined.is_empty()
            || !report.repaired.is_empty();
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
        replace_symlink("ok", &probe, &self.tmp_path())?;
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

    fn quarantined(dir: &Path) -> Vec<String> {
        match fs::read_dir(dir.join("quarantine")) {
            Ok(_) => entries(&dir.join("quarantine"), ""),
            Err(_) => Vec::new(),
        }
    }

    #[test]
    fn corrupt_key_entry_is_reported_by_add_and_quarantined_by_del() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.allocate(&key(1), &v4(), &[]).unwrap();
        let truncated = "{\"containerID\":\"c1\",\"ifn";
        let kp = plant(d.path(), "key-c1+eth0", truncated);
        for e in [
            s.get(&key(1)).unwrap_err(),
            s.allocate(&key(1), &v4(), &[]).unwrap_err(),
            s.list().unwrap_err(),
        ] {
            assert!(e.to_string().contains(&kp.display().to_string()), "{e}");
            assert_eq!(e.code(), crate::error::CODE_STORE_CORRUPT);
        }
        // Never reset in place...
        assert_eq!(fs::read_link(&kp).unwrap(), Path::new(truncated));
        // ...but DEL makes progress: the entry is moved aside, the addresses naming the
        // attachment are released, and a second DEL finds nothing.
        assert_eq!(s.release(&key(1)).unwrap(), None);
        assert!(!kp.exists() && fs::symlink_metadata(&kp).is_err());
        let q = quarantined(d.path());
        assert_eq!(q.len(), 1, "{q:?}");
        assert!(q[0].starts_with("key-c1+eth0."), "{q:?}");
        let moved = d.path().join("quarantine").join(&q[0]);
        assert_eq!(fs::read_link(moved).unwrap(), Path::new(truncated));
        assert_eq!(s.owner_of(ip("10.0.0.2")).unwrap(), None);
        assert!(entries(d.path(), "held-").is_empty());
        assert_eq!(s.release(&key(1)).unwrap(), None);
        // A regular file where a key entry belongs, and an entry holding another key.
        for bad in [
            None,
            Some(r#"{"containerID":"c7","ifname":"eth0","ips":["10.0.0.2/24"]}"#),
        ] {
            s.allocate(&key(1), &v4(), &[]).unwrap();
            fs::remove_file(&kp).unwrap();
            match bad {
                None => fs::write(&kp, b"{}").unwrap(),
                Some(t) => {
                    plant(d.path(), "key-c1+eth0", t);
                }
            }
            let e = s.get(&key(1)).unwrap_err();
            assert!(e.to_string().contains(&kp.display().to_string()), "{e}");
            assert_eq!(s.release(&key(1)).unwrap(), None);
            assert!(fs::symlink_metadata(&kp).is_err());
            assert!(entries(d.path(), "ip-").is_empty());
        }
        assert_eq!(quarantined(d.path()).len(), 3);
    }

    #[test]
    fn corrupt_address_entry_is_never_reused_and_quarantined_by_its_owners_del() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.allocate(&key(1), &v4(), &[]).unwrap();
        s.allocate(&key(2), &v4(), &[]).unwrap();
        let ipp = plant(d.path(), "ip-10.0.0.3", "key-c2");
        let e = s.owner_of(ip("10.0.0.3")).unwrap_err();
        assert!(e.to_string().contains(&ipp.display().to_string()), "{e}");
        assert_eq!(e.code(), crate::error::CODE_STORE_CORRUPT);
        // Probing sees the name taken.
        assert_eq!(
            s.allocate(&key(3), &v4(), &[]).unwrap()[0].ip(),
            ip("10.0.0.4")
        );
        // DEL of its owner quarantines it and succeeds.
        assert!(s.release(&key(2)).unwrap().is_some());
        assert!(fs::symlink_metadata(&ipp).is_err());
        assert!(quarantined(d.path())[0].starts_with("ip-10.0.0.3."));
        assert!(s.get(&key(2)).unwrap().is_none());
        assert_eq!(
            s.allocate(&key(4), &v4(), &[ip("10.0.0.3")]).unwrap()[0].ip(),
            ip("10.0.0.3")
        );
    }

    /// Issue 14 item 3: an address whose `ip-` entry was lost while its key entry still
    /// lists it is never handed out again; the entry is re-created for its owner.
    #[test]
    fn lost_address_entry_is_never_handed_out_again() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        assert_eq!(
            s.allocate(&key(1), &v4(), &[]).unwrap()[0].ip(),
            ip("10.0.0.2")
        );
        fs::remove_file(d.path().join("ip-10.0.0.2")).unwrap();
        // The cursor too, so that probing starts at the lost address.
        for c in entries(d.path(), "cursor-") {
            fs::remove_file(d.path().join(c)).unwrap();
        }
        assert_eq!(
            s.allocate(&key(2), &v4(), &[]).unwrap()[0].ip(),
            ip("10.0.0.3")
        );
        assert_eq!(s.owner_of(ip("10.0.0.2")).unwrap(), Some(key(1)));
        // Asked for by name: refused, naming the owner.
        fs::remove_file(d.path().join("ip-10.0.0.2")).unwrap();
        let e = s.allocate(&key(3), &v4(), &[ip("10.0.0.2")]).unwrap_err();
        assert_eq!(e.code(), crate::error::CODE_IP_UNAVAILABLE);
        assert!(e.to_string().contains("c1"), "{e}");
        assert_eq!(s.owner_of(ip("10.0.0.2")).unwrap(), Some(key(1)));
        assert!(s.get(&key(3)).unwrap().is_none());
        // Released normally, the address is free again.
        s.release(&key(1)).unwrap();
        assert!(entries(d.path(), "held-10.0.0.2").is_empty());
        assert_eq!(
            s.allocate(&key(3), &v4(), &[ip("10.0.0.2")]).unwrap()[0].ip(),
            ip("10.0.0.2")
        );
    }

    /// Issue 14 item 3: GC reports and repairs two owners of one address and a lost
    /// address entry; a corrupt key entry does not block it.
    #[test]
    fn gc_repairs_double_ownership_and_progresses_past_corrupt_keys() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        // What an older build left after a lost ip- entry: c2 got c1's address.
        plant(
            d.path(),
            "key-c1+eth0",
            r#"{"containerID":"c1","ifname":"eth0","ips":["10.0.0.2/24"],"created":100}"#,
        );
        plant(
            d.path(),
            "key-c2+eth0",
            r#"{"containerID":"c2","ifname":"eth0","ips":["10.0.0.2/24"],"created":200}"#,
        );
        plant(d.path(), "ip-10.0.0.2", "key-c2+eth0");
        // A key entry whose address entry is lost.
        plant(
            d.path(),
            "key-c3+eth0",
            r#"{"containerID":"c3","ifname":"eth0","ips":["10.0.0.5/24"],"created":300}"#,
        );
        // Corrupt key entries: c4 (container gone) and c5 (still valid), with addresses.
        plant(d.path(), "key-c4+eth0", "{garbage");
        plant(d.path(), "ip-10.0.0.7", "key-c4+eth0");
        plant(d.path(), "key-c5+eth0", "{garbage");
        plant(d.path(), "ip-10.0.0.8", "key-c5+eth0");
        // A live one to release.
        plant(
            d.path(),
            "key-c6+eth0",
            r#"{"containerID":"c6","ifname":"eth0","ips":["10.0.0.9/24"]}"#,
        );
        plant(d.path(), "ip-10.0.0.9", "key-c6+eth0");
        let report = s
            .retain(&|k| k.container_id != "c4" && k.container_id != "c6")
            .unwrap();
        assert_eq!(
            report.conflicts,
            vec![Conflict {
                ip: ip("10.0.0.2"),
                kept: key(2),
                also: vec![key(1)]
            }]
        );
        assert_eq!(report.repaired, vec![ip("10.0.0.5")]);
        assert_eq!(report.orphans, vec![ip("10.0.0.7")]);
        assert_eq!(
            report
                .released
                .iter()
                .map(|a| a.key.clone())
                .collect::<Vec<_>>(),
            vec![key(6)]
        );
        assert_eq!(report.quarantined.len(), 1);
        assert!(report.quarantined[0].starts_with(d.path().join("quarantine")));
        assert_eq!(report.corrupt_kept, vec![d.path().join("key-c5+eth0")]);
        assert_eq!(s.owner_of(ip("10.0.0.5")).unwrap(), Some(key(3)));
        assert_eq!(s.owner_of(ip("10.0.0.2")).unwrap(), Some(key(2)));
        assert_eq!(s.owner_of(ip("10.0.0.8")).unwrap(), Some(key(5)));
        assert_eq!(s.owner_of(ip("10.0.0.9")).unwrap(), None);
        // The loser's CHECK fails; the index is complete: losing an ip- entry of c3 now
        // does not hand its address out.
        assert!(s.verify(&s.get(&key(1)).unwrap().unwrap()).is_err());
        fs::remove_file(d.path().join("ip-10.0.0.5")).unwrap();
        let got = s.allocate(&key(7), &v4(), &[ip("10.0.0.5")]).unwrap_err();
        assert!(got.to_string().contains("c3"), "{got}");
        // Nothing left to repair the second time (but the conflict is still reported).
        let again = s.retain(&|k| k.container_id != "c4").unwrap();
        assert!(
            again.repaired.is_empty() && again.quarantined.is_empty(),
            "{again:?}"
        );
        assert_eq!(again.conflicts.len(), 1);
    }

    /// A store written by the previous build (no `held-` index): read and released as
    /// before, indexed once by the first ADD, and a lost address entry of an old
    /// allocation is still never handed out.
    #[test]
    fn store_of_the_previous_format_is_upgraded_in_place() {
        let d = tempfile::tempdir().unwrap();
        plant(
            d.path(),
            "key-old1+eth0",
            r#"{"containerID":"old1","ifname":"eth0","ips":["10.0.0.2/24"],"netns":"/run/netns/a","created":1700000000}"#,
        );
        plant(d.path(), "ip-10.0.0.2", "key-old1+eth0");
        plant(
            d.path(),
            "key-old2+eth0",
            r#"{"containerID":"old2","ifname":"eth0","ips":["10.0.0.3/24"]}"#,
        );
        plant(d.path(), "ip-10.0.0.3", "key-old2+eth0");
        plant(d.path(), "cursor-10.0.0.0-10.0.0.1", "10.0.0.1");
        fs::write(d.path().join("lock"), b"").unwrap();
        let s = Store::open(d.path()).unwrap();
        let old1 = AllocKey::new("old1", "eth0");
        assert_eq!(
            s.get(&old1).unwrap().unwrap().netns,
            Some(PathBuf::from("/run/netns/a"))
        );
        assert_eq!(s.list().unwrap().len(), 2);
        fs::remove_file(d.path().join("ip-10.0.0.2")).unwrap();
        let a = s.allocate(&key(1), &v4(), &[]).unwrap();
        assert_eq!(a[0].ip(), ip("10.0.0.4"));
        assert_eq!(
            entries(d.path(), "held-"),
            vec!["held-10.0.0.2", "held-10.0.0.3", "held-10.0.0.4"]
        );
        assert_eq!(entries(d.path(), "index-"), vec!["index-v1"]);
        assert!(s.release(&AllocKey::new("old2", "eth0")).unwrap().is_some());
        assert_eq!(s.owner_of(ip("10.0.0.3")).unwrap(), None);
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
        assert_eq!(cursor_text(&cp), "10.0.0.3");
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
        assert_eq!(cursor_text(&cp), "10.0.0.5");
    }

    /// The cursor file's text (this build writes a regular file).
    fn cursor_text(path: &Path) -> String {
        let md = fs::symlink_metadata(path).unwrap();
        assert!(md.is_file(), "{} is not a regular file", path.display());
        fs::read_to_string(path).unwrap().trim().to_string()
    }

    /// The inode numbers of the entries of `dir` (subdirectories' contents not counted).
    fn inodes(dir: &Path) -> BTreeSet<u64> {
        use std::os::unix::fs::MetadataExt;
        fs::read_dir(dir)
            .unwrap()
            .map(|e| fs::symlink_metadata(e.unwrap().path()).unwrap().ino())
            .collect()
    }

    fn ino(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(path).unwrap().ino()
    }

    /// Asserts that `held-<ip>` is the same entry as `ip-<ip>`: one inode with two names
    /// when hard links work, else two symlinks; the same target either way.
    fn assert_index_entry(dir: &Path, ip: &str, hard_links: bool) {
        use std::os::unix::fs::MetadataExt;
        let (a, h) = (dir.join(format!("ip-{ip}")), dir.join(format!("held-{ip}")));
        assert_eq!(
            fs::read_link(&a).unwrap(),
            fs::read_link(&h).unwrap(),
            "{ip}"
        );
        let (ma, mh) = (
            fs::symlink_metadata(&a).unwrap(),
            fs::symlink_metadata(&h).unwrap(),
        );
        assert!(ma.file_type().is_symlink() && mh.file_type().is_symlink());
        if hard_links {
            assert_eq!(ma.ino(), mh.ino(), "{ip}: held- is not a hard link of ip-");
            // Two names at least: more when it is an attachment's record (key entry,
            // the other addresses' entries).
            assert!(ma.nlink() >= 2, "{ip}");
        } else {
            assert_ne!(ma.ino(), mh.ino(), "{ip}");
            assert_eq!((ma.nlink(), mh.nlink()), (1, 1), "{ip}");
        }
    }

    /// Issue 17: the index entry made by ADD is a second name of the address entry
    /// (no inode of its own), or a symlink of its own where hard links are refused; in
    /// both cases it stays an independent record: a lost or replaced `ip-` entry leaves
    /// it, a stale one is replaced, and GC rebuilds it the same way.
    #[test]
    fn index_entry_is_a_second_name_of_the_address_entry_or_a_symlink() {
        for refuse in [false, true] {
            crate::durable::REFUSE_HARD_LINKS.with(|r| r.set(refuse));
            let d = tempfile::tempdir().unwrap();
            let dir = d.path();
            let s = Store::open(dir).unwrap();
            let r = sets(&[("10.0.0.0/24", None, None), ("fd00::/64", None, None)]);
            s.allocate(&key(1), &r, &[]).unwrap();
            assert_index_entry(dir, "10.0.0.2", !refuse);
            assert_index_entry(dir, "fd00::2", !refuse);
            // A lost ip- entry: the index still names c1, the address is not handed out
            // and its entry is re-created for c1.
            fs::remove_file(dir.join("ip-10.0.0.2")).unwrap();
            assert_eq!(s.index_owner(ip("10.0.0.2")).unwrap(), Some(key(1)));
            let e = s.allocate(&key(2), &v4(), &[ip("10.0.0.2")]).unwrap_err();
            assert!(e.to_string().contains("c1"), "{e}");
            assert_eq!(s.owner_of(ip("10.0.0.2")).unwrap(), Some(key(1)));
            // An ip- entry replaced by hand (rename over it): the index keeps its target.
            plant(dir, "ip-fd00::2", "key-c9+eth0");
            assert_eq!(s.index_owner(ip("fd00::2")).unwrap(), Some(key(1)));
            // A stale index entry (its attachment is gone): replaced by a second name of
            // the new address entry.
            plant(dir, "held-10.0.0.7", "key-c7+eth0");
            s.allocate(&key(3), &v4(), &[ip("10.0.0.7")]).unwrap();
            assert_index_entry(dir, "10.0.0.7", !refuse);
            assert_eq!(s.index_owner(ip("10.0.0.7")).unwrap(), Some(key(3)));
            // A re-ADD restores a lost index entry the same way.
            fs::remove_file(dir.join("held-10.0.0.7")).unwrap();
            s.allocate(&key(3), &v4(), &[]).unwrap();
            assert_index_entry(dir, "10.0.0.7", !refuse);
            // GC rebuilds the index from the key entries: c1's fd00::2 back to c1.
            let report = s.retain(&|_| true).unwrap();
            assert_eq!(report.repaired, vec![ip("fd00::2")]);
            assert_eq!(s.owner_of(ip("fd00::2")).unwrap(), Some(key(1)));
            assert_eq!(s.index_owner(ip("fd00::2")).unwrap(), Some(key(1)));
            if !refuse {
                // Re-pointed as another name of c1's record.
                assert_eq!(ino(&dir.join("ip-fd00::2")), ino(&dir.join("key-c1+eth0")));
            }
            fs::remove_file(dir.join("held-10.0.0.2")).unwrap();
            s.retain(&|_| true).unwrap();
            // (ip-10.0.0.2 was re-created as a symlink of its own above, so GC's new index
            // entry is a second name of that one.)
            assert_index_entry(dir, "10.0.0.2", !refuse);
            assert!(entries(dir, "tmp-").is_empty());
            // Released: nothing left of either name.
            s.release(&key(1)).unwrap();
            s.release(&key(3)).unwrap();
            for prefix in ["ip-", "held-", "key-", "tmp-"] {
                assert!(entries(dir, prefix).is_empty(), "{prefix}");
            }
            crate::durable::REFUSE_HARD_LINKS.with(|r| r.set(false));
        }
    }

    /// Issue 17: after the first ADD of a store (lock, index mark, cursor), an ADD
    /// allocates exactly one inode, single or dual stack (its ip-, held- and key- entries
    /// are names of it), and frees none; a DEL frees exactly that one and allocates none;
    /// the cursor keeps its inode. Counted as distinct inode numbers of the directory.
    #[test]
    fn add_allocates_one_inode_and_del_frees_it() {
        for (r, per_add) in [
            (v4(), 1),
            (
                sets(&[("10.0.0.0/24", None, None), ("fd00::/64", None, None)]),
                1,
            ),
        ] {
            let d = tempfile::tempdir().unwrap();
            let dir = d.path();
            let s = Store::open(dir).unwrap();
            s.allocate(&key(0), &r, &[]).unwrap();
            let cursors: Vec<PathBuf> = entries(dir, "cursor-")
                .iter()
                .map(|c| dir.join(c))
                .collect();
            assert_eq!(cursors.len(), r.sets().len());
            let cursor_inos: Vec<u64> = cursors.iter().map(|c| ino(c)).collect();
            let mut before = inodes(dir);
            for n in 1..=6 {
                s.allocate(&key(n), &r, &[]).unwrap();
                let after = inodes(dir);
                assert!(before.is_subset(&after), "ADD {n} freed an inode");
                assert_eq!(after.len(), before.len() + per_add, "ADD {n}");
                before = after;
            }
            for n in 1..=6 {
                s.release(&key(n)).unwrap();
                let after = inodes(dir);
                assert!(after.is_subset(&before), "DEL {n} allocated an inode");
                assert_eq!(after.len() + per_add, before.len(), "DEL {n}");
                before = after;
            }
            let now: Vec<u64> = cursors.iter().map(|c| ino(c)).collect();
            assert_eq!(now, cursor_inos, "the cursor files were replaced");
            assert_eq!(cursor_text(&cursors[0]), "10.0.0.8");
        }
    }

    /// Issue 17: the cursor is a regular file of one fixed-size record rewritten in
    /// place, never group/other-writable; a file of another length is cut to the record.
    #[test]
    fn cursor_is_a_regular_file_rewritten_in_place() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.allocate(&key(1), &v4(), &[]).unwrap();
        let cp = d.path().join("cursor-10.0.0.0-10.0.0.1");
        let first = ino(&cp);
        let md = fs::metadata(&cp).unwrap();
        assert_eq!(md.len(), 64);
        assert_eq!(md.permissions().mode() & 0o022, 0);
        assert_eq!(cursor_text(&cp), "10.0.0.2");
        // Made world-writable and longer by hand (the extra text garbles it: probing
        // starts over): tightened and cut by the next ADD.
        fs::set_permissions(&cp, fs::Permissions::from_mode(0o666)).unwrap();
        fs::write(&cp, format!("10.0.0.9\n{}", "x".repeat(200))).unwrap();
        assert_eq!(
            s.allocate(&key(2), &v4(), &[]).unwrap()[0].ip(),
            ip("10.0.0.3")
        );
        let md = fs::metadata(&cp).unwrap();
        assert_eq!((md.len(), md.permissions().mode() & 0o777), (64, 0o644));
        assert_eq!(ino(&cp), first);
        assert_eq!(cursor_text(&cp), "10.0.0.3");
        // A requested address moves it too (as before).
        s.allocate(&key(3), &v4(), &[ip("10.0.0.50")]).unwrap();
        assert_eq!(cursor_text(&cp), "10.0.0.50");
        assert_eq!(
            s.allocate(&key(4), &v4(), &[]).unwrap()[0].ip(),
            ip("10.0.0.51")
        );
        assert_eq!(ino(&cp), first);
        // The longest address text fits the record.
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        crate::durable::write_hint(&cp, longest).unwrap();
        assert_eq!(crate::durable::Hint::open(&cp).text(), Some(longest));
        assert_eq!((fs::metadata(&cp).unwrap().len(), ino(&cp)), (64, first));
    }

    /// Issue 17: a store written by the previous build (held- entries and the cursor as
    /// symlinks of their own) is read as it is; the cursor is converted to a file by the
    /// first ADD (probing resumes where it pointed), the old index entries keep working
    /// and go with their DEL.
    #[test]
    fn store_of_the_previous_build_with_symlink_index_and_cursor() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        plant(
            dir,
            "key-old1+eth0",
            r#"{"containerID":"old1","ifname":"eth0","ips":["10.0.0.2/24"]}"#,
        );
        plant(dir, "ip-10.0.0.2", "key-old1+eth0");
        plant(dir, "held-10.0.0.2", "key-old1+eth0");
        plant(dir, "index-v1", "v1");
        plant(dir, "cursor-10.0.0.0-10.0.0.1", "10.0.0.40");
        fs::write(dir.join("lock"), b"").unwrap();
        let s = Store::open(dir).unwrap();
        let old1 = AllocKey::new("old1", "eth0");
        // The old index entry still protects a lost address entry.
        fs::remove_file(dir.join("ip-10.0.0.2")).unwrap();
        let e = s.allocate(&key(1), &v4(), &[ip("10.0.0.2")]).unwrap_err();
        assert!(e.to_string().contains("old1"), "{e}");
        assert!(s.get(&key(1)).unwrap().is_none());
        // The cursor symlink is still read, and becomes a file.
        assert_eq!(
            s.allocate(&key(1), &v4(), &[]).unwrap()[0].ip(),
            ip("10.0.0.41")
        );
        assert_eq!(
            cursor_text(&dir.join("cursor-10.0.0.0-10.0.0.1")),
            "10.0.0.41"
        );
        assert_index_entry(dir, "10.0.0.41", true);
        assert!(s.release(&old1).unwrap().is_some());
        assert_eq!(s.owner_of(ip("10.0.0.2")).unwrap(), None);
        assert!(entries(dir, "held-10.0.0.2").is_empty());
        // Nothing created by the conversion is left behind.
        assert!(entries(dir, "tmp-").is_empty());
        assert_eq!(
            entries(dir, ""),
            vec![
                "cursor-10.0.0.0-10.0.0.1",
                "held-10.0.0.41",
                "index-v1",
                "ip-10.0.0.41",
                "key-c1+eth0",
                "lock"
            ]
        );
    }

    /// Replacing an entry by another name of the same inode: rename(2) does nothing
    /// then, and the temp name must not be left behind.
    #[test]
    fn replace_with_link_of_the_same_entry_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, tmp) = (
            d.path().join("a"),
            d.path().join("b"),
            d.path().join("tmp-1"),
        );
        std::os::unix::fs::symlink("key-x+y", &a).unwrap();
        assert!(crate::durable::link_entry(&a, "key-x+y", &b).unwrap());
        assert!(!crate::durable::link_entry(&a, "key-x+y", &b).unwrap());
        crate::durable::replace_with_link(&a, "key-x+y", &b, &tmp).unwrap();
        assert_eq!(ino(&a), ino(&b));
        assert!(fs::symlink_metadata(&tmp).is_err());
        assert_eq!(entries(d.path(), ""), vec!["a", "b"]);
    }

    /// The record of `cid`+eth0 listing `ips` (/24 or /64), as this build writes it.
    fn record(cid: &str, ips: &[&str]) -> String {
        let ips: Vec<String> = ips
            .iter()
            .map(|i| format!("{i}/{}", if i.contains(':') { 64 } else { 24 }))
            .collect();
        serde_json::json!({"containerID": cid, "ifname": "eth0", "ips": ips}).to_string()
    }

    /// Issue 17: a crash after any step of a dual-stack ADD of this build (the record as
    /// ip-<a1>, then ip-<a2>, held-<a1>, held-<a2> as hard links of it, the key entry
    /// last, then the fsync), re-created on disk: before the key entry the addresses
    /// are orphans, never handed out (probing skips them, a request names c9), GC
    /// frees them with every name of the record; the crashed attachment retrying with
    /// the same request adopts them; with the key entry the allocation is whole.
    #[test]
    fn crash_after_each_step_of_a_record_add_is_recovered() {
        let r = sets(&[("10.0.0.0/24", None, None), ("fd00::/64", None, None)]);
        let steps = ["ip-10.0.0.2", "ip-fd00::2", "held-10.0.0.2", "held-fd00::2"];
        let c9 = AllocKey::new("c9", "eth0");
        for done in 1..=steps.len() + 1 {
            let d = tempfile::tempdir().unwrap();
            let dir = d.path();
            let s = Store::open(dir).unwrap();
            s.allocate(&key(0), &r, &[ip("10.0.0.9"), ip("fd00::9")])
                .unwrap();
            s.release(&key(0)).unwrap(); // lock, index mark
            for c in entries(dir, "cursor-") {
                fs::remove_file(dir.join(c)).unwrap(); // probing starts at .2 / ::2
            }
            let first = dir.join(steps[0]);
            std::os::unix::fs::symlink(record("c9", &["10.0.0.2", "fd00::2"]), &first).unwrap();
            let mut names: Vec<&str> = steps.iter().take(done).copied().collect();
            if done > steps.len() {
                names.push("key-c9+eth0");
            }
            for n in &names[1..] {
                fs::hard_link(&first, dir.join(n)).unwrap();
            }
            if done > steps.len() {
                // Complete: it is c9's, and its DEL frees every name.
                assert_eq!(s.get(&c9).unwrap().unwrap().ips.len(), 2);
                assert_eq!(s.allocate(&c9, &r, &[]).unwrap().len(), 2);
                s.release(&c9).unwrap();
                assert_eq!(entries(dir, ""), entries_of_an_empty_store(dir));
                continue;
            }
            // Not handed out: probing skips both, a request names c9.
            let got = s.allocate(&key(1), &r, &[]).unwrap();
            for n in &got {
                let name = format!("ip-{}", n.ip());
                assert!(!names.contains(&name.as_str()), "step {done}: {got:?}");
            }
            assert_eq!(got[0].ip(), ip("10.0.0.3"), "step {done}");
            let e = s.allocate(&key(2), &v4(), &[ip("10.0.0.2")]).unwrap_err();
            assert!(e.to_string().contains("c9"), "step {done}: {e}");
            if done == 1 {
                // The crashed attachment retrying with the same request adopts it.
                let a = s
                    .allocate(&c9, &r, &[ip("10.0.0.2"), ip("fd00::5")])
                    .unwrap();
                assert_eq!(a.len(), 2);
                assert_eq!(ino(&dir.join("ip-10.0.0.2")), ino(&dir.join("key-c9+eth0")));
                assert_eq!(ino(&dir.join("ip-fd00::5")), ino(&dir.join("key-c9+eth0")));
                s.release(&c9).unwrap();
            } else {
                let report = s.retain(&|_| true).unwrap();
                let want: Vec<IpAddr> = names
                    .iter()
                    .filter_map(|n| n.strip_prefix("ip-"))
                    .map(ip)
                    .collect();
                assert_eq!(report.orphans, want, "step {done}");
            }
            s.release(&key(1)).unwrap();
            assert_eq!(
                entries(dir, ""),
                entries_of_an_empty_store(dir),
                "step {done}"
            );
            // Free again.
            assert_eq!(
                s.allocate(&key(2), &v4(), &[ip("10.0.0.2")]).unwrap()[0].ip(),
                ip("10.0.0.2")
            );
        }
    }

    /// What a store holds with no allocation (after its first ADD).
    fn entries_of_an_empty_store(dir: &Path) -> Vec<String> {
        let mut v = vec!["index-v1".to_string(), "lock".to_string()];
        v.extend(entries(dir, "cursor-"));
        v.sort();
        v
    }

    /// Issue 17: a crash after each step of a DEL of this build (key entry, then the
    /// address entries, then the index entries removed): the addresses whose address
    /// entry is left are orphans until GC, never handed out; no name of the record is
    /// left after GC.
    #[test]
    fn crash_after_each_step_of_a_record_del_is_recovered() {
        let r = sets(&[("10.0.0.0/24", None, None), ("fd00::/64", None, None)]);
        let steps = ["key-c9+eth0", "ip-10.0.0.2", "ip-fd00::2", "held-10.0.0.2"];
        let c9 = AllocKey::new("c9", "eth0");
        for done in 1..=steps.len() {
            let d = tempfile::tempdir().unwrap();
            let dir = d.path();
            let s = Store::open(dir).unwrap();
            s.allocate(&c9, &r, &[]).unwrap();
            for n in &steps[..done] {
                fs::remove_file(dir.join(n)).unwrap();
            }
            let left: Vec<IpAddr> = ["10.0.0.2", "fd00::2"]
                .into_iter()
                .filter(|a| !steps[..done].contains(&format!("ip-{a}").as_str()))
                .map(ip)
                .collect();
            for a in &left {
                let e = s.allocate(&key(2), &r, &[*a]).unwrap_err();
                assert!(e.to_string().contains("c9"), "step {done}: {e}");
            }
            assert!(s.get(&c9).unwrap().is_none());
            let report = s.retain(&|_| true).unwrap();
            assert_eq!(report.orphans, left, "step {done}");
            assert_eq!(
                entries(dir, ""),
                entries_of_an_empty_store(dir),
                "step {done}"
            );
        }
    }

    /// A record entry whose record does not list its address (copied by hand) is
    /// corrupt: never handed out, quarantined by GC.
    #[test]
    fn record_entry_of_another_address_is_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        plant(d.path(), "ip-10.0.0.2", &record("c5", &["10.0.0.6"]));
        let e = s.owner_of(ip("10.0.0.2")).unwrap_err();
        assert!(e.to_string().contains("does not list 10.0.0.2"), "{e}");
        assert_eq!(
            s.allocate(&key(1), &v4(), &[]).unwrap()[0].ip(),
            ip("10.0.0.3")
        );
        let report = s.retain(&|_| true).unwrap();
        assert_eq!(report.quarantined.len(), 1);
        assert_eq!(s.owner_of(ip("10.0.0.2")).unwrap(), None);
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
                "held-10.0.0.2",
                "held-fd00::2",
                "index-v1",
                "ip-10.0.0.2",
                "ip-fd00::2",
                "key-ctr%2F1+eth0",
                "lock"
            ]
        );
        // One inode, the record, under five names.
        let names = [
            "key-ctr%2F1+eth0",
            "ip-10.0.0.2",
            "ip-fd00::2",
            "held-10.0.0.2",
            "held-fd00::2",
        ];
        for n in names {
            let md = fs::symlink_metadata(d.path().join(n)).unwrap();
            assert_eq!(ino(&d.path().join(n)), ino(&d.path().join(names[0])), "{n}");
            assert_eq!(std::os::unix::fs::MetadataExt::nlink(&md), 5, "{n}");
        }
        let rec: serde_json::Value = serde_json::from_str(
            fs::read_link(d.path().join("ip-fd00::2"))
                .unwrap()
                .to_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(rec["containerID"], "ctr/1");
        assert_eq!(s.owner_of(ip("fd00::2")).unwrap(), Some(k.clone()));
        assert_eq!(rec["ips"], serde_json::json!(["10.0.0.2/24", "fd00::2/64"]));
        assert_eq!(rec["netns"], "/run/netns/x");
        assert!(rec["created"].as_u64().unwrap() > 1_700_000_000);
        let got = s.get(&k).unwrap().unwrap();
        assert_eq!(got.netns, meta.netns);
        s.release(&k).unwrap();
        assert!(entries(d.path(), "ip-").is_empty());
        assert!(entries(d.path(), "held-").is_empty());
        assert!(entries(d.path(), "key-").is_empty());
        assert!(entries(d.path(), "tmp-").is_empty());
    }

    /// DEL and GC of a store that does not exist create nothing; an existing one opens
    /// with the same checks as `open` (an older layout is refused).
    #[test]
    fn open_existing_creates_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("net");
        assert!(Store::open_existing(&dir).unwrap().is_none());
        assert!(fs::symlink_metadata(&dir).is_err());
        Store::open(&dir).unwrap();
        assert!(Store::open_existing(&dir).unwrap().is_some());
        // A subdirectory besides the older layout's (link count 4, not 2): still seen.
        fs::create_dir(dir.join("quarantine")).unwrap();
        fs::create_dir(dir.join("keys")).unwrap();
        let e = Store::open_existing(&dir).unwrap_err();
        assert_eq!(e.code(), crate::error::CODE_STORE_CORRUPT, "{e}");
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
        // The name on disk: 128-bit FNV-1a of "xxx…x+eth0" (as written by every earlier
        // build: it must never change, or a long key's entry is not found again).
        assert_eq!(long.file_name(), "h-cf643f4f42ba449726e5648689f12e03");
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
