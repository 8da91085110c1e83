//! The kernel layer's error: what was being done (`op`, naming the object: link, route,
//! neighbour, nftables chain, namespace, sysctl) and what the kernel said (its errno, and
//! the error underneath).
//!
//! Every netlink, nftables, namespace, sysctl and node primitive returns a
//! [`KernelError`]. Callers ask it questions ([`KernelError::is_exists`],
//! [`KernelError::is_not_found`], [`KernelError::errno`]) instead of looking the object
//! up again, `ipamd` logs it as it is, and a plugin turns it into a CNI error object once,
//! at its boundary, through `From<KernelError> for CniError`: the one place where a CNI
//! code is chosen for a kernel failure (codes are the runtime's language, not the
//! kernel's).

use std::fmt;
use std::io;

use nix::errno::Errno;

use crate::spec::error::{CniError, ErrorCode};

/// The error underneath a [`KernelError`] (an `rtnetlink` or I/O error).
pub(crate) type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure it is, as far as the caller can act on it. Decides the CNI code
/// at the plugin boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The kernel refused a request, or could not be asked (netlink, nftables, `setns`);
    /// [`KernelError::errno`] says why when the kernel gave an errno.
    Kernel,
    /// A kernel file (`/proc/sys`, a namespace file) could not be opened, read or
    /// written.
    File,
    /// The request cannot be made as asked: a bad argument (a VLAN id, a sysctl key), a
    /// path that is no network namespace, a same-named object of another kind in the way.
    Invalid,
    /// Something the request needs is not there yet and may come (an interface still
    /// without its address, no default route yet): worth a retry.
    NotReady,
}

/// A failed kernel operation. Displays as `<op>: <reason>`, where the reason is the
/// errno's text when the kernel gave one (`File exists (os error 17)`).
#[derive(Debug, thiserror::Error)]
#[error("{}", join(.op, .reason))]
pub struct KernelError {
    op: String,
    kind: Kind,
    errno: Option<Errno>,
    reason: String,
    #[source]
    source: Option<Source>,
}

impl KernelError {
    /// A failure of `kind` without an errno: `reason` says what went wrong.
    pub fn new(kind: Kind, op: impl Into<String>, reason: impl Into<String>) -> KernelError {
        KernelError {
            op: op.into(),
            kind,
            errno: None,
            reason: reason.into(),
            source: None,
        }
    }

    /// [`Kind::Kernel`] without an errno (e.g. "vanished right after creation").
    pub fn other(op: impl Into<String>, reason: impl Into<String>) -> KernelError {
        KernelError::new(Kind::Kernel, op, reason)
    }

    /// [`Kind::Invalid`]: the request cannot be made as asked.
    pub fn invalid(op: impl Into<String>, reason: impl Into<String>) -> KernelError {
        KernelError::new(Kind::Invalid, op, reason)
    }

    /// [`Kind::NotReady`]: what the request needs is not there yet.
    pub fn not_ready(op: impl Into<String>, reason: impl Into<String>) -> KernelError {
        KernelError::new(Kind::NotReady, op, reason)
    }

    /// The kernel answered `op` with `errno`.
    pub fn from_errno(op: impl Into<String>, errno: Errno) -> KernelError {
        KernelError {
            reason: errno_text(errno),
            errno: Some(errno),
            ..KernelError::other(op, "")
        }
    }

    /// A netlink request `op` failed: the errno of the kernel's error reply if it is one.
    pub fn netlink(op: impl Into<String>, e: rtnetlink::Error) -> KernelError {
        let errno = match &e {
            rtnetlink::Error::NetlinkError(m) => m.code.map(|c| Errno::from_raw(-c.get())),
            _ => None,
        };
        KernelError {
            op: op.into(),
            kind: Kind::Kernel,
            errno,
            reason: errno.map_or_else(|| e.to_string(), errno_text),
            source: Some(Box::new(e)),
        }
    }

    /// An I/O error of `kind` ([`Kind::Kernel`] for sockets, [`Kind::File`] for files);
    /// its OS error, if any, is the errno.
    pub fn io(kind: Kind, op: impl Into<String>, e: io::Error) -> KernelError {
        KernelError {
            op: op.into(),
            kind,
            errno: e.raw_os_error().map(Errno::from_raw),
            reason: e.to_string(),
            source: Some(Box::new(e)),
        }
    }

    /// Sets the errno the kernel gave for what this error describes in more words (EEXIST
    /// for "a different route to the destination exists"). Never an errno the kernel did
    /// not give: callers act on it.
    pub fn with_errno(mut self, errno: Errno) -> KernelError {
        self.errno = Some(errno);
        self
    }

    /// Prefixes the operation with what the caller was doing.
    pub fn context(mut self, ctx: impl fmt::Display) -> KernelError {
        self.op = if self.op.is_empty() {
            ctx.to_string()
        } else {
            format!("{ctx}: {}", self.op)
        };
        self
    }

    /// What was being done, naming the object (`deleting link veth1 (#7)`).
    pub fn op(&self) -> &str {
        &self.op
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The kernel's errno, when it gave one.
    pub fn errno(&self) -> Option<Errno> {
        self.errno
    }

    /// The object to create is already there (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno == Some(Errno::EEXIST)
    }

    /// The object named is not there: ENOENT (neighbour, FDB entry, nftables object,
    /// file), ESRCH (route), ENODEV (link, or the device an entry was on) or
    /// EADDRNOTAVAIL (address), as the kernel says it for each kind of object.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno,
            Some(Errno::ENOENT | Errno::ESRCH | Errno::ENODEV | Errno::EADDRNOTAVAIL)
        )
    }
}

/// The errno as `strerror` text with its number, as `std::io::Error` shows it.
fn errno_text(errno: Errno) -> String {
    io::Error::from_raw_os_error(errno as i32).to_string()
}

/// `<op>: <reason>`, or whichever of the two is not empty.
fn join(op: &str, reason: &str) -> String {
    match (op.is_empty(), reason.is_empty()) {
        (true, _) => reason.to_string(),
        (false, true) => op.to_string(),
        (false, false) => format!("{op}: {reason}"),
    }
}

/// The plugin boundary: the CNI code of a kernel failure is chosen here, and only here.
/// The message is the error's own (`<op>: <reason>`).
impl From<KernelError> for CniError {
    fn from(e: KernelError) -> CniError {
        let code = match e.kind {
            Kind::Kernel => ErrorCode::Internal,
            Kind::File => ErrorCode::Io,
            Kind::Invalid => ErrorCode::InvalidConfig,
            Kind::NotReady => ErrorCode::TryAgainLater,
        };
        CniError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_op_and_errno_text() {
        let e = KernelError::from_errno("adding route to 10.0.0.0/24", Errno::EEXIST);
        assert_eq!(
            e.to_string(),
            "adding route to 10.0.0.0/24: File exists (os error 17)"
        );
        assert!(e.is_exists() && !e.is_not_found());
        let e = e.context("adding route 10.0.0.0/24 in the pod");
        assert_eq!(
            e.op(),
            "adding route 10.0.0.0/24 in the pod: adding route to 10.0.0.0/24"
        );
        assert_eq!(e.errno(), Some(Errno::EEXIST));
        for errno in [
            Errno::ENOENT,
            Errno::ESRCH,
            Errno::ENODEV,
            Errno::EADDRNOTAVAIL,
        ] {
            assert!(
                KernelError::from_errno("x", errno).is_not_found(),
                "{errno}"
            );
        }
        assert!(!KernelError::other("x", "y").is_not_found());
    }

    #[test]
    fn io_keeps_the_os_error_and_the_source() {
        let e = KernelError::io(
            Kind::File,
            "opening netns /x",
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert!(e.is_not_found());
        assert_eq!(
            e.to_string(),
            "opening netns /x: No such file or directory (os error 2)"
        );
        let src = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(
            src.as_deref(),
            Some("No such file or directory (os error 2)")
        );
    }

    #[test]
    fn cni_error_keeps_the_code_and_names_the_op() {
        let cases = [
            (
                KernelError::from_errno("deleting link veth1 (#7)", Errno::EBUSY),
                999,
            ),
            (
                KernelError::io(
                    Kind::File,
                    "setting sysctl net.ipv4.ip_forward",
                    io::Error::from_raw_os_error(libc::EACCES),
                ),
                5,
            ),
            (
                KernelError::invalid("setting VLAN 0 on port #3", "want 1..=4094"),
                7,
            ),
            (
                KernelError::not_ready("choosing the underlay", "no default route"),
                11,
            ),
        ];
        for (e, code) in cases {
            let op = e.op().to_string();
            let msg = e.to_string();
            let c = CniError::from(e);
            assert_eq!(c.code, code, "{msg}");
            assert_eq!(c.msg, msg);
            assert!(c.msg.starts_with(&op), "{}", c.msg);
        }
        let c = CniError::from(KernelError::from_errno(
            "deleting link veth1 (#7)",
            Errno::EBUSY,
        ));
        assert_eq!(
            c.to_string(),
            "deleting link veth1 (#7): Device or resource busy (os error 16) (code 999)"
        );
    }
}
