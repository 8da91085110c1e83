//! A small CNI runtime, the side of the spec that calls plugins (what `cnitool` and
//! libcni do), for the conformance suite, the end-to-end tests and the
//! `cni-conformance` command line:
//!
//! - [`Invocation`]: run one plugin binary the way a runtime does (`CNI_*` environment,
//!   config on stdin) and get its [`Outcome`] (exit status, result or [`ErrorObject`]);
//! - [`NetworkConfigList`]: `.conflist` / `.conf` loading ([`load_network`]);
//! - [`CniConfig`]: version negotiation, ADD/DEL/CHECK through a chain with
//!   `prevResult`, GC with `cni.dev/valid-attachments`, STATUS, capability args, and the
//!   result cache ([`ResultCache`]);
//! - [`Version`] and [`AddResult`]: the spec versions and the result shapes, written
//!   from SPEC.md.
//!
//! It shares no code with the plugins it runs (no `cni-core`): the harness that tests
//! them must not read their output with their own code.

mod cache;
mod conf;
mod exec;
mod result;
mod runtime;
mod version;

pub use cache::{CachedAttachment, ResultCache};
pub use conf::{conf_files, load_network, NetworkConfigList};
pub use exec::{ErrorObject, Invocation, Outcome, TIMEOUT};
pub use result::{
    AddResult, CurrentResult, Dns, Interface, IpConfig, LegacyIp, LegacyResult, Route,
};
pub use runtime::{parse_args, valid_attachments, CniConfig, GcReport, RtError, RuntimeConf};
pub use version::{Version, VERSIONS};
