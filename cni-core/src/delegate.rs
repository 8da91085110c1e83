//! Running another plugin (typically IPAM) found in `CNI_PATH`, with the same
//! configuration on stdin and the same environment but for `CNI_COMMAND`.

use std::path::{Path, PathBuf};

use crate::skel::{Command, Env};
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
use crate::spec::version::Version;

/// Finds `plugin` in `path`. Not found is `InvalidConfig` (7) naming the plugin and the
/// directories searched.
pub fn find(plugin: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    let _ = (plugin, path);
    todo!()
}

/// Executes `binary` for `command`. On failure the delegate's own CNI error (parsed from
/// its stdout) is returned unchanged.
pub fn exec(binary: &Path, command: Command, stdin: &[u8], env: &Env) -> Result<Vec<u8>, CniError> {
    let _ = (binary, command, stdin, env);
    todo!()
}

/// ADD through `plugin`; its result is parsed in the shape of `version`.
pub fn add(plugin: &str, stdin: &[u8], env: &Env, version: Version) -> Result<CniResult, CniError> {
    let _ = (plugin, stdin, env, version);
    todo!()
}

/// DEL, CHECK, GC, STATUS through `plugin`.
pub fn run(plugin: &str, command: Command, stdin: &[u8], env: &Env) -> Result<(), CniError> {
    let _ = (plugin, command, stdin, env);
    todo!()
}
