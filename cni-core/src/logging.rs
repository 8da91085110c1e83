//! `tracing` set-up for plugins: stderr by default, or the file the configuration names.
//! Never stdout, which carries the CNI result.

use std::path::Path;

/// Installs the global subscriber once. `level` is a `tracing` filter such as `debug`;
/// default `warn` (`CNI_LOG_LEVEL` overrides it). A file that cannot be opened falls back
/// to stderr.
pub fn init(log_file: Option<&Path>, level: Option<&str>) {
    let _ = (log_file, level);
    todo!()
}
