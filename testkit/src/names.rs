//! Unique names. Tests run in parallel (threads of one process, and several test
//! binaries one after the other) on a machine that may hold leftovers of earlier runs, so
//! every name mixes the test's tag, the pid, a process-wide counter and the clock, and
//! is checked against what already exists.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Longest Linux interface name.
pub const IFNAMSIZ_MAX: usize = 15;

/// A 64-bit hash of the tag, the pid, a process-wide counter and the time.
pub fn unique_hash(tag: &str) -> u64 {
    let mut h = DefaultHasher::new();
    tag.hash(&mut h);
    std::process::id().hash(&mut h);
    COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut h);
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .hash(&mut h);
    h.finish()
}

/// `prefix` (at most 5 characters) followed by 8 hex digits: at most 13 characters, a
/// valid interface name. Not currently a link nor a netns on this machine.
pub fn unique(prefix: &str, tag: &str) -> String {
    assert!(prefix.len() <= 5, "prefix {prefix:?} too long");
    loop {
        let name = format!("{prefix}{:08x}", unique_hash(tag) as u32);
        debug_assert!(name.len() <= IFNAMSIZ_MAX);
        if !Path::new("/sys/class/net").join(&name).exists()
            && !Path::new("/run/netns").join(&name).exists()
        {
            return name;
        }
    }
}

/// A container id: valid per the spec (`[A-Za-z0-9][A-Za-z0-9_.-]*`), unique, and
/// carrying the tag (sanitised) for readability in the store and in logs.
pub fn container_id(tag: &str) -> String {
    let clean: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("c{:016x}-{clean}", unique_hash(tag))
}
