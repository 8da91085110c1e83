//! Host name lookups of a statically linked binary: `files` and `dns` only.
//!
//! The plugins and `cni-ipam` may be linked with glibc's static archive
//! (`scripts/build-dist.sh`, README § Performance). glibc resolves a name through the
//! NSS modules that `/etc/nsswitch.conf` lists for `hosts`; `files` and `dns` are part of
//! libc itself (also of `libc.a`), every other module (`myhostname`, `resolve`,
//! `mymachines`, …) is a shared library that glibc dlopens, which in a static process
//! loads a second libc beside the linked-in one. Measured on Debian 12 (glibc 2.36) with
//! `hosts: myhostname`: a static binary's lookup of `localhost` died of SIGSEGV, the
//! dynamic build of the same program answered. The only names this crate resolves are
//! etcd endpoints, so before connecting a static binary limits `hosts` to `files dns`
//! (glibc's `__nss_configure_lookup`, declared in `<nss.h>`): /etc/hosts and DNS, what a
//! Go binary built without cgo (the reference plugins, flannel, Calico) resolves with.
//! A dynamically linked binary (ipamd, the tests) keeps the full NSS configuration.

use std::ffi::{c_char, c_int};
use std::sync::Once;

extern "C" {
    /// glibc: replaces the service list of NSS database `db` by `services`; 0 on success.
    fn __nss_configure_lookup(db: *const c_char, services: *const c_char) -> c_int;
}

/// Whether this process was started without a program interpreter (`ld.so`), i.e. is a
/// statically linked executable.
fn statically_linked() -> bool {
    // SAFETY: getauxval reads the auxiliary vector the kernel passed; no pointers.
    unsafe { libc::getauxval(libc::AT_BASE) == 0 }
}

/// In a statically linked process, limits host name lookups to `files dns` (once).
pub(crate) fn files_and_dns_when_static() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if !statically_linked() {
            return;
        }
        // SAFETY: two NUL-terminated static strings; glibc copies what it keeps. Called
        // before this process resolves any name (the etcd client is not yet connected).
        let rc = unsafe { __nss_configure_lookup(c"hosts".as_ptr(), c"files dns".as_ptr()) };
        if rc != 0 {
            tracing::warn!(
                "could not limit host name lookups to files and dns (static binary): \
                 an etcd endpoint given by name may resolve through a module of \
                 /etc/nsswitch.conf that a static binary cannot load; use addresses"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamically_linked_test_binary_is_not_taken_for_static() {
        // Test binaries are linked against libc.so: the auxiliary vector names ld.so's
        // base, so the full NSS configuration stays in force.
        assert!(!statically_linked());
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        assert!(maps.contains("ld-linux"), "expected ld.so mapped:\n{maps}");
    }
}
