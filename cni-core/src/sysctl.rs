//! sysctls through `/proc/sys`, in the calling thread's network namespace.

use std::path::PathBuf;

use crate::kernel_error::{KernelError, Kind};

/// Per-interface sysctl trees: `<prefix>.<ifname>.<leaf>`.
const IFACE_PREFIXES: [&str; 4] = [
    "net.ipv4.conf.",
    "net.ipv6.conf.",
    "net.ipv4.neigh.",
    "net.ipv6.neigh.",
];

/// Maps a dotted key to its `/proc/sys` path. Interface names may contain dots, so under
/// the per-interface trees only the first and the last dots are separators
/// (`net.ipv4.conf.eth0.100.rp_filter` -> `net/ipv4/conf/eth0.100/rp_filter`). A key that
/// already uses `/` is taken as a path as is.
fn path_of(key: &str) -> Result<PathBuf, KernelError> {
    if key.is_empty() || key.contains("..") || key.starts_with(['.', '/']) {
        return Err(KernelError::invalid(
            format!("invalid sysctl key {key:?}"),
            "",
        ));
    }
    let rel = if key.contains('/') {
        key.to_string()
    } else if let Some(p) = IFACE_PREFIXES.iter().find(|p| key.starts_with(*p)) {
        let rest = &key[p.len()..];
        match rest.rsplit_once('.') {
            Some((ifname, leaf)) => format!(
                "{}/{ifname}/{leaf}",
                p.trim_end_matches('.').replace('.', "/")
            ),
            None => key.replace('.', "/"),
        }
    } else {
        key.replace('.', "/")
    };
    Ok(PathBuf::from("/proc/sys").join(rel))
}

/// Sets `key` (dotted, e.g. `net.ipv4.ip_forward`, or an interface key such as
/// `net.ipv6.conf.eth0.accept_dad`) to `value`.
pub fn set(key: &str, value: &str) -> Result<(), KernelError> {
    let _timing = crate::timing::phase("sysctl.set");
    let path = path_of(key)?;
    std::fs::write(&path, value).map_err(|e| {
        KernelError::io(
            Kind::File,
            format!("setting sysctl {key} ({}) to {value:?}", path.display()),
            e,
        )
    })
}

/// Reads `key`, without the trailing newline.
pub fn get(key: &str) -> Result<String, KernelError> {
    let path = path_of(key)?;
    let s = std::fs::read_to_string(&path).map_err(|e| {
        KernelError::io(
            Kind::File,
            format!("reading sysctl {key} ({})", path.display()),
            e,
        )
    })?;
    Ok(s.trim_end_matches('\n').to_string())
}

/// Turns on IP forwarding for the families asked for (writes only when not already on).
pub fn enable_forwarding(v4: bool, v6: bool) -> Result<(), KernelError> {
    let keys = [
        (v4, "net.ipv4.ip_forward"),
        (v6, "net.ipv6.conf.all.forwarding"),
    ];
    for (_, key) in keys.iter().filter(|(want, _)| *want) {
        if get(key).map(|v| v.trim() == "1").unwrap_or(false) {
            continue;
        }
        set(key, "1").map_err(|e| e.context(format!("enabling {key}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::path_of;

    #[test]
    fn paths() {
        assert_eq!(
            path_of("net.ipv4.ip_forward").unwrap().to_str(),
            Some("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            path_of("net.ipv4.conf.eth0.100.rp_filter")
                .unwrap()
                .to_str(),
            Some("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        assert_eq!(
            path_of("net.ipv6.conf.eth0.accept_dad").unwrap().to_str(),
            Some("/proc/sys/net/ipv6/conf/eth0/accept_dad")
        );
        assert!(path_of("../etc/passwd").is_err());
    }
}
