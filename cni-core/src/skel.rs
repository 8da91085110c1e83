//! The plugin skeleton: reads the `CNI_*` environment and the configuration on stdin,
//! validates both for the command, dispatches to a [`Plugin`], and writes the result
//! (or a CNI error object) on stdout. Nothing but the result ever goes to stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::spec::config::{Attachment, NetConf};
use crate::spec::error::CniError;
use crate::spec::names::{ContainerId, IfName};
use crate::spec::result::CniResult;
use crate::spec::version::Version;

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// `CNI_ARGS`: `K1=V1;K2=V2`, order kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs(pub Vec<(String, String)>);

impl CniArgs {
    /// A malformed pair is `InvalidEnv` (4).
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let _ = s;
        todo!()
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The validated `CNI_*` environment.
#[derive(Clone, Debug)]
pub struct Env {
    pub command: Command,
    pub container_id: Option<ContainerId>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<IfName>,
    pub args: CniArgs,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Reads and validates the environment through `var` (so tests need not touch the
    /// process environment). ADD and CHECK need container id, netns and ifname; DEL needs
    /// container id and ifname (netns may be absent); GC, STATUS and VERSION need none.
    /// Every problem is `InvalidEnv` (4) naming the variable.
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let _ = var;
        todo!()
    }
}

/// What an ADD, DEL or CHECK acts on.
#[derive(Clone, Debug)]
pub struct Target {
    pub container_id: ContainerId,
    pub ifname: IfName,
    /// Always `Some` for ADD and CHECK; may be `None` for DEL.
    pub netns: Option<PathBuf>,
}

impl Target {
    pub fn attachment(&self) -> Attachment {
        Attachment { container_id: self.container_id.clone(), ifname: self.ifname.clone() }
    }
}

/// One invocation: environment, parsed configuration and the raw stdin (passed on
/// unchanged to delegated plugins).
#[derive(Clone, Debug)]
pub struct Call {
    pub env: Env,
    pub conf: NetConf,
    pub stdin: Vec<u8>,
}

/// A CNI plugin. The skeleton has already checked the environment, the configuration
/// and that `conf.cni_version` is one of [`Plugin::versions`] and allows the command.
pub trait Plugin {
    fn add(&self, call: &Call, target: &Target) -> Result<CniResult, CniError>;
    /// Must succeed when the netns, the interface or the allocation is already gone.
    fn del(&self, call: &Call, target: &Target) -> Result<(), CniError>;
    /// `call.conf.prev_result` is `Some` (the skeleton rejects CHECK without it).
    fn check(&self, call: &Call, target: &Target) -> Result<(), CniError>;
    /// `call.conf.valid_attachments` lists what to keep.
    fn gc(&self, call: &Call) -> Result<(), CniError>;
    fn status(&self, call: &Call) -> Result<(), CniError>;
    fn versions(&self) -> &'static [Version] {
        &Version::ALL
    }
}

/// Runs `plugin` against the process environment, stdin and stdout.
/// `about` is printed on stderr when `CNI_COMMAND` is unset (like the reference skel).
pub fn run(plugin: &dyn Plugin, about: &str) -> ExitCode {
    let _ = (plugin, about);
    todo!()
}

/// The testable core of [`run`]: returns the process exit status (0 on success).
pub fn run_with(
    plugin: &dyn Plugin,
    var: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
    stdout: &mut dyn Write,
) -> u8 {
    let _ = (plugin, var, stdin, stdout);
    todo!()
}
