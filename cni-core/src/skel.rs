//! The plugin skeleton: reads the `CNI_*` environment and the configuration on stdin,
//! validates both for the command, dispatches to a [`Plugin`], and writes the result
//! (or a CNI error object) on stdout. Nothing but the result ever goes to stdout.
//!
//! Guards every plugin gets from here, once:
//! - `CNI_ARGS` keys the suite does not know are refused (code 4, naming the keys) unless
//!   `IgnoreUnknown=1` is among them (CNI CONVENTIONS.md "CNI_ARGS"); see [`KNOWN_ARGS`].
//! - The host guard, for plugins that configure the netns ([`Plugin::configures_netns`]:
//!   the four datapath plugins; not IPAM): a `CNI_NETNS` that is the plugin's own
//!   network namespace (same nsfs device and inode, whatever the path) is not a pod. ADD and CHECK are refused with
//!   `InvalidEnv` (4) before the plugin runs, so nothing is created; DEL runs as if the
//!   netns were gone (the plugin never enters it, so no interface, address or route of
//!   it is touched) and still releases what the container holds elsewhere (IPAM
//!   reservation, host-side rules and routes), logging a WARN about what it refused.
//! - `<binary> --version` prints the plugin's name, version and spec versions, exit 0.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::kernel_error::KernelError;
use crate::netns::NetNs;
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

    /// The command named by a `CNI_COMMAND` value, if it is one.
    pub fn from_name(s: &str) -> Option<Command> {
        [
            Command::Add,
            Command::Del,
            Command::Check,
            Command::Gc,
            Command::Status,
            Command::Version,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// The `CNI_ARGS` keys the suite reads or accepts: `IP` (cni-ipam's requested address),
/// `IgnoreUnknown`, and the keys kubelet/containerd/CRI-O/podman pass to every plugin.
pub(crate) const KNOWN_ARGS: [&str; 6] = [
    "IgnoreUnknown",
    "IP",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

/// `CNI_ARGS`: `K1=V1;K2=V2`, order kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs(pub Vec<(String, String)>);

impl CniArgs {
    /// A malformed pair is `InvalidEnv` (4).
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let mut pairs = Vec::new();
        // Empty segments (a trailing `;`) are skipped; a value may itself contain `=`.
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) if !k.is_empty() => pairs.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(CniError::invalid_env(format!(
                        "invalid CNI_ARGS pair \"{pair}\": expected KEY=VALUE"
                    )))
                }
            }
        }
        Ok(CniArgs(pairs))
    }

    /// Back to the `K1=V1;K2=V2` form (for a delegated plugin's environment).
    pub fn to_env_string(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
    /// Refuses keys outside [`KNOWN_ARGS`] unless `IgnoreUnknown` is true (`1`, `true`;
    /// CONVENTIONS.md). `InvalidEnv` (4) naming every unknown key, like the reference's
    /// `ARGS: unknown args [...]` (which it reports as 999).
    pub fn check_known(&self) -> Result<(), CniError> {
        let ignore = match self.get("IgnoreUnknown") {
            None => false,
            Some(v) if v == "1" || v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                return Err(CniError::invalid_env(format!(
                    "CNI_ARGS: IgnoreUnknown={v:?} is not a boolean: use 1 or true (0 or false)"
                )))
            }
        };
        if ignore {
            return Ok(());
        }
        let unknown: Vec<String> = self
            .0
            .iter()
            .filter(|(k, _)| !KNOWN_ARGS.contains(&k.as_str()))
            .map(|(k, v)| format!("{k:?}={v:?}"))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(CniError::invalid_env(format!(
            "CNI_ARGS: unknown args [{}]: known are {}; add IgnoreUnknown=1 to pass others",
            unknown.join(", "),
            KNOWN_ARGS.join(", ")
        )))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
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
        // An empty variable counts as unset, as in the reference skeleton.
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND") {
            None => {
                return Err(CniError::invalid_env(
                    "required environment variable CNI_COMMAND is missing",
                ))
            }
            Some(c) => Command::from_name(&c)
                .ok_or_else(|| CniError::invalid_env(format!("unknown CNI_COMMAND \"{c}\"")))?,
        };
        let needs_target = matches!(command, Command::Add | Command::Check | Command::Del);
        let needs_netns = matches!(command, Command::Add | Command::Check);

        let mut missing = Vec::new();
        if needs_target && get("CNI_CONTAINERID").is_none() {
            missing.push("CNI_CONTAINERID");
        }
        if needs_netns && get("CNI_NETNS").is_none() {
            missing.push("CNI_NETNS");
        }
        if needs_target && get("CNI_IFNAME").is_none() {
            missing.push("CNI_IFNAME");
        }
        if !missing.is_empty() {
            return Err(CniError::invalid_env(format!(
                "required environment variables [{}] missing for {}",
                missing.join(", "),
                command.as_str()
            )));
        }

        // Commands that do not need a variable ignore a bad value of it.
        let container_id = match get("CNI_CONTAINERID") {
            Some(v) if needs_target => Some(ContainerId::parse(&v)?),
            Some(v) if command != Command::Version => ContainerId::parse(&v).ok(),
            _ => None,
        };
        let ifname = match get("CNI_IFNAME") {
            Some(v) if needs_target => Some(IfName::parse(&v)?),
            Some(v) if command != Command::Version => IfName::parse(&v).ok(),
            _ => None,
        };
        let netns = match command {
            Command::Version => None,
            _ => get("CNI_NETNS").map(PathBuf::from),
        };
        let args = match (command, get("CNI_ARGS")) {
            (Command::Version, _) | (_, None) => CniArgs::default(),
            (_, Some(a)) => CniArgs::parse(&a)?,
        };
        // Unknown keys matter where they are read: ADD, CHECK, DEL (as the reference).
        if needs_target {
            args.check_known()?;
        }
        let path = get("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// The target of an ADD, DEL or CHECK (`InvalidEnv` if the variables are missing).
    pub fn target(&self) -> Result<Target, CniError> {
        let missing = |v: &str| {
            CniError::invalid_env(format!("required environment variable {v} is missing"))
        };
        let container_id = self
            .container_id
            .clone()
            .ok_or_else(|| missing("CNI_CONTAINERID"))?;
        let ifname = self.ifname.clone().ok_or_else(|| missing("CNI_IFNAME"))?;
        if matches!(self.command, Command::Add | Command::Check) && self.netns.is_none() {
            return Err(missing("CNI_NETNS"));
        }
        Ok(Target {
            container_id,
            ifname,
            netns: self.netns.clone(),
            opened: None,
        })
    }
}

/// What an ADD, DEL or CHECK acts on.
#[derive(Clone, Debug)]
pub struct Target {
    pub container_id: ContainerId,
    pub ifname: IfName,
    /// Always `Some` for ADD and CHECK; may be `None` for DEL.
    pub netns: Option<PathBuf>,
    /// `netns`, opened by the host guard: handed on so that it is opened once per call.
    opened: Option<Arc<NetNs>>,
}

impl Target {
    pub fn attachment(&self) -> Attachment {
        Attachment {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }

    /// The netns, as the host guard opened it, or opened now (a plugin without the guard,
    /// or a netns the guard could not open: then this reports what is wrong with it).
    /// `None` when the target has no netns.
    pub fn open_netns(&self) -> Option<Result<Arc<NetNs>, KernelError>> {
        let path = self.netns.as_deref()?;
        Some(match &self.opened {
            Some(ns) => Ok(Arc::clone(ns)),
            None => NetNs::open(path).map(Arc::new),
        })
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
    /// Whether the plugin configures the inside of `CNI_NETNS` (makes interfaces,
    /// addresses, routes there): then the skeleton's host guard applies (see the module
    /// doc). Every datapath plugin says `true`; an IPAM plugin never enters the netns
    /// and keeps the default.
    fn configures_netns(&self) -> bool {
        false
    }
}

/// The C `main` of a plugin binary: the binary is `#![no_main]` and its `main` is made
/// by [`crate::plugin_main!`], which calls this. std's runtime start (what it does before
/// a Rust `fn main`) is skipped: it reads `/proc/self/maps` to find the main thread's
/// stack guard and maps a signal stack for its stack-overflow message, in every process
/// and again for every thread (README § Performance, "Process start"). What of it a
/// plugin needs is done here: SIGPIPE ignored (a closed stdout is an error we report,
/// not a silent death; children get the default back from `std::process::Command`),
/// fds 0-2 made valid, and glibc told to keep one malloc arena (see [`start_process`]).
/// `std::env::args` still works (std captures them from glibc's `.init_array` call).
pub fn main(plugin: &dyn Plugin, about: &str) -> std::ffi::c_int {
    start_process();
    std::ffi::c_int::from(run_status(plugin, about))
}

/// The part of std's runtime start a plugin needs (see [`main`]).
fn start_process() {
    // SAFETY: setting a signal's disposition to SIG_IGN runs no code of ours.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // A runtime always passes stdin, stdout and stderr; should one be closed, the first
    // file we open would take its number and receive the result: /dev/null instead
    // (what std's start does too).
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll reads and writes the three pollfd we own; open and dup2 take a
    // NUL-terminated literal and plain integers.
    unsafe {
        if libc::poll(fds.as_mut_ptr(), 3, 0) >= 0 {
            for p in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 && null != p.fd {
                    libc::dup2(null, p.fd);
                    libc::close(null);
                }
            }
        }
    }
    // One malloc arena: the in-process IPAM thread (crate::inproc) would otherwise get
    // an arena of its own at its first allocation (mmap of 128 MiB of address space, two
    // munmap, an mprotect and fresh page faults) for the few kilobytes it allocates.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a parameter of glibc's allocator; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Runs `plugin` against the process environment, stdin and stdout.
/// `about` is printed on stderr when `CNI_COMMAND` is unset (like the reference skel).
/// Once a command's answer is written and flushed the process ends here (`_exit`, see
/// `exit_now`); it returns only for `--version`, a run without `CNI_COMMAND`, and a
/// stdout that cannot be written.
pub fn run(plugin: &dyn Plugin, about: &str) -> ExitCode {
    ExitCode::from(run_status(plugin, about))
}

/// A typical configuration (a few hundred bytes, a few KiB with a `prevResult`) is read
/// in one `read` (and one more that sees the end) instead of std's growing reads of
/// 32, 32, 64, 128 ... bytes.
const STDIN_CAPACITY: usize = 16 * 1024;

/// [`run`], with the exit status as a number.
fn run_status(plugin: &dyn Plugin, about: &str) -> u8 {
    if std::env::args_os().nth(1).is_some_and(|a| a == "--version") {
        // A human (or a packaging script) asks what this is: name, version, spec versions.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", version_text(plugin, about));
        return match stdout.flush() {
            Ok(()) => 0,
            Err(_) => 1,
        };
    }
    if std::env::var_os("CNI_COMMAND").is_none_or(|c| c.is_empty()) {
        // A human ran the binary: tell them what it is. A runtime still gets a proper
        // error object, and stdin is not read (it may be a terminal).
        eprintln!("{}", version_text(plugin, about));
        let err = CniError::invalid_env("required environment variable CNI_COMMAND is missing");
        let mut stdout = std::io::stdout().lock();
        write_json(&mut stdout, &err.to_json(Version::LATEST));
        let _ = stdout.flush();
        return 1;
    }
    install_panic_hook();
    let mut stdin = Vec::with_capacity(STDIN_CAPACITY);
    let mut out = Vec::new();
    let status = match std::io::stdin().read_to_end(&mut stdin) {
        Err(e) => {
            let err = CniError::io(format!("error reading from stdin: {e}"));
            write_json(&mut out, &err.to_json(Version::LATEST));
            1
        }
        Ok(_) => {
            let var = |k: &str| std::env::var(k).ok();
            // With panic=unwind (debug builds) the hook has already printed the error.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_with(plugin, &var, &stdin, &mut out)
            }))
            .unwrap_or(1)
        }
    };
    // The answer is buffered so that a panic never leaves half a result on stdout.
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(&out).and_then(|_| stdout.flush()).is_err() {
        return 1;
    }
    exit_now(status)
}

/// Ends the process once its answer is written and flushed. Every undo and cleanup ran
/// before the answer; logs and `CNI_TRACE` lines are unbuffered writes, already made;
/// every fd closes with the process. What an ordinary exit would still do (std's
/// runtime cleanup, libc's exit handlers and thread-local destructors) changes nothing
/// the runtime can see, and the runtime waits for it: skipped.
fn exit_now(status: u8) -> ! {
    // SAFETY: `_exit` ends the process without running any code of ours or libc's; the
    // only state that must reach the kernel (stdout) was flushed just above.
    unsafe { libc::_exit(i32::from(status)) }
}

/// What `--version` prints (and a run without `CNI_COMMAND` on stderr).
fn version_text(plugin: &dyn Plugin, about: &str) -> String {
    format!(
        "{about}\nCNI protocol versions supported: {}",
        Version::list(plugin.versions())
    )
}

/// The version error objects are written in: that of the configuration once it is known.
static ERROR_VERSION: AtomicUsize = AtomicUsize::new(Version::ALL.len() - 1);

fn set_error_version(v: Version) {
    if let Some(i) = Version::ALL.iter().position(|x| *x == v) {
        ERROR_VERSION.store(i, Ordering::Relaxed);
    }
}

fn error_version() -> Version {
    Version::ALL
        .get(ERROR_VERSION.load(Ordering::Relaxed))
        .copied()
        .unwrap_or(Version::LATEST)
}

/// Release builds abort on panic, so the hook is the only place a panic can still be
/// reported to the runtime as a CNI error rather than as empty output.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let err = CniError::internal(format!("internal error: {payload}{location}"));
        eprintln!("{err}");
        let mut stdout = std::io::stdout().lock();
        write_json(&mut stdout, &err.to_json(error_version()));
        let _ = stdout.flush();
    }));
}

fn write_json(out: &mut dyn Write, v: &serde_json::Value) {
    let _ = serde_json::to_writer(&mut *out, v);
    let _ = out.write_all(b"\n");
}

/// The configuration's `cniVersion`, if it can be read at all (for error objects
/// written before the configuration is validated).
fn peek_version(stdin: &[u8]) -> Option<Version> {
    let v: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    Version::parse(v.get("cniVersion")?.as_str()?).ok()
}

/// The testable core of [`run`]: returns the process exit status (0 on success).
pub(crate) fn run_with(
    plugin: &dyn Plugin,
    var: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
    stdout: &mut dyn Write,
) -> u8 {
    let mut version = peek_version(stdin).unwrap_or(Version::LATEST);
    set_error_version(version);
    match dispatch(plugin, var, stdin, &mut version) {
        Ok(None) => 0,
        Ok(Some(answer)) => {
            write_json(stdout, &answer);
            0
        }
        Err(e) => {
            tracing::error!(code = e.code, "{e}");
            write_json(stdout, &e.to_json(version));
            1
        }
    }
}

/// Validates and runs one command; returns what goes on stdout on success.
fn dispatch(
    plugin: &dyn Plugin,
    var: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
    version: &mut Version,
) -> Result<Option<serde_json::Value>, CniError> {
    let env = Env::from_vars(var)?;
    if env.command == Command::Version {
        // stdin may hold a configuration or nothing: VERSION does not depend on it.
        let supported: Vec<&str> = plugin.versions().iter().map(|v| v.as_str()).collect();
        return Ok(Some(serde_json::json!({
            "cniVersion": Version::LATEST.as_str(),
            "supportedVersions": supported,
        })));
    }

    let conf = NetConf::parse(stdin)?;
    *version = conf.cni_version;
    set_error_version(conf.cni_version);
    crate::logging::init(
        conf.log_file.as_deref().map(Path::new),
        conf.log_level.as_deref(),
    );

    if !plugin.versions().contains(&conf.cni_version) {
        return Err(CniError::incompatible_version(format!(
            "incompatible CNI versions: config is \"{}\", plugin supports [{}]",
            conf.cni_version,
            Version::list(plugin.versions())
        )));
    }
    let cmd = env.command;
    if cmd == Command::Check && !conf.cni_version.has_check() {
        return Err(CniError::incompatible_version(format!(
            "config version \"{}\" does not allow CHECK (needs 0.4.0 or later)",
            conf.cni_version
        )));
    }
    if matches!(cmd, Command::Gc | Command::Status) && !conf.cni_version.has_gc_status() {
        return Err(CniError::incompatible_version(format!(
            "config version \"{}\" does not allow {} (needs 1.1.0 or later)",
            conf.cni_version,
            cmd.as_str()
        )));
    }
    if cmd == Command::Check && conf.prev_result.is_none() {
        return Err(CniError::invalid_config(
            "CHECK: required prevResult missing",
        ));
    }

    let call = Call {
        env,
        conf,
        stdin: stdin.to_vec(),
    };
    tracing::debug!(command = cmd.as_str(), network = %call.conf.name, "invoked");
    match cmd {
        Command::Add => {
            let mut target = call.env.target()?;
            if plugin.configures_netns() {
                refuse_own_netns(&mut target, cmd)?;
            }
            let result = plugin.add(&call, &target)?;
            Ok(Some(result.to_json(call.conf.cni_version)))
        }
        Command::Del => {
            let mut target = call.env.target()?;
            if plugin.configures_netns() && guard_netns(&mut target) {
                tracing::warn!(
                    container = %target.container_id,
                    ifname = %target.ifname,
                    netns = ?target.netns,
                    "DEL: CNI_NETNS is the plugin's own network namespace (the host), not a \
                     pod's: nothing inside it is deleted or changed; releasing only what the \
                     container holds elsewhere"
                );
                target.netns = None;
                target.opened = None;
            }
            plugin.del(&call, &target).map(|_| None)
        }
        Command::Check => {
            let mut target = call.env.target()?;
            if plugin.configures_netns() {
                refuse_own_netns(&mut target, cmd)?;
            }
            plugin.check(&call, &target).map(|_| None)
        }
        Command::Gc => plugin.gc(&call).map(|_| None),
        Command::Status => plugin.status(&call).map(|_| None),
        Command::Version => Ok(None),
    }
}

/// True when `target`'s netns is the namespace this plugin runs in; the namespace
/// opened for the comparison is kept in `target` ([`Target::open_netns`]). A netns that
/// cannot be opened is not (the plugin reports, or for DEL ignores, what is wrong with it).
fn guard_netns(target: &mut Target) -> bool {
    let Some(path) = target.netns.as_deref() else {
        return false;
    };
    let ns = match NetNs::open(path) {
        Ok(ns) => Arc::new(ns),
        Err(e) => {
            tracing::debug!(error = %e, "host guard: netns not comparable");
            return false;
        }
    };
    let own = match ns.is_current() {
        Ok(own) => own,
        Err(e) => {
            tracing::debug!(error = %e, "host guard: netns not comparable");
            false
        }
    };
    target.opened = Some(ns);
    own
}

/// The host guard of ADD and CHECK: `InvalidEnv` (4) naming the path.
fn refuse_own_netns(target: &mut Target, cmd: Command) -> Result<(), CniError> {
    if !guard_netns(target) {
        return Ok(());
    }
    let path = target.netns.as_deref().unwrap_or(Path::new("")).display();
    tracing::warn!(netns = %path, "{} refused: CNI_NETNS is the plugin's own network namespace", cmd.as_str());
    Err(CniError::invalid_env(format!(
        "CNI_NETNS {path} is the network namespace the plugin runs in (the host's), not a \
         pod's: refusing {} so that nothing of the host is changed; pass the pod's netns",
        cmd.as_str()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::error::ErrorCode;
    use crate::spec::result::IpConfig;
    use serde_json::{json, Value};
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Records what it was called with; fails when the network is named "fail".
    struct Dummy {
        versions: &'static [Version],
        calls: RefCell<Vec<String>>,
        /// [`Plugin::configures_netns`].
        netns_plugin: bool,
    }

    impl Dummy {
        fn new() -> Self {
            Dummy {
                versions: &Version::ALL,
                calls: RefCell::new(Vec::new()),
                netns_plugin: true,
            }
        }
        fn record(&self, call: &Call, what: &str, target: Option<&Target>) -> Result<(), CniError> {
            let t = target
                .map(|t| format!(" {} {} {:?}", t.container_id, t.ifname, t.netns))
                .unwrap_or_default();
            self.calls.borrow_mut().push(format!("{what}{t}"));
            if call.conf.name.as_str() == "fail" {
                return Err(CniError::try_again("store busy").with_details("lock held"));
            }
            Ok(())
        }
    }

    impl Plugin for Dummy {
        fn add(&self, call: &Call, target: &Target) -> Result<CniResult, CniError> {
            self.record(call, "add", Some(target))?;
            Ok(CniResult {
                ips: vec![IpConfig {
                    address: "10.5.0.2/24".parse().unwrap(),
                    gateway: Some("10.5.0.1".parse().unwrap()),
                    interface: None,
                }],
                ..Default::default()
            })
        }
        fn del(&self, call: &Call, target: &Target) -> Result<(), CniError> {
            self.record(call, "del", Some(target))
        }
        fn check(&self, call: &Call, target: &Target) -> Result<(), CniError> {
            assert!(call.conf.prev_result.is_some());
            self.record(call, "check", Some(target))
        }
        fn gc(&self, call: &Call) -> Result<(), CniError> {
            let n = call.conf.valid_attachments.as_ref().map_or(0, |a| a.len());
            self.record(call, &format!("gc {n}"), None)
        }
        fn status(&self, call: &Call) -> Result<(), CniError> {
            self.record(call, "status", None)
        }
        fn versions(&self) -> &'static [Version] {
            self.versions
        }
        fn configures_netns(&self) -> bool {
            self.netns_plugin
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    fn target_env(cmd: &str) -> Vec<(&str, &str)> {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "ctr-1"),
            ("CNI_NETNS", "/var/run/netns/p1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
        ]
    }

    /// Runs the skeleton; returns exit status and stdout (parsed when not empty).
    fn invoke(plugin: &Dummy, env: &[(&str, &str)], stdin: &str) -> (u8, Option<Value>) {
        let mut out = Vec::new();
        let status = run_with(plugin, &vars(env), stdin.as_bytes(), &mut out);
        let parsed = if out.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&out).unwrap())
        };
        (status, parsed)
    }

    fn conf(version: &str) -> String {
        json!({"cniVersion": version, "name": "net1", "type": "dummy"}).to_string()
    }

    #[test]
    fn cni_args() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=web-0;EMPTY=;X=a=b;").unwrap();
        assert_eq!(a.get("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(a.get("EMPTY"), Some(""));
        assert_eq!(a.get("X"), Some("a=b"));
        assert_eq!(a.get("missing"), None);
        assert_eq!(a.0.len(), 4);
        assert_eq!(
            a.to_env_string(),
            "IgnoreUnknown=1;K8S_POD_NAME=web-0;EMPTY=;X=a=b"
        );
        for bad in ["foo", "=v", "a=b;c", "a=b;;=x"] {
            let e = CniArgs::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidEnv as u32, "{bad}");
            assert!(e.msg.contains("CNI_ARGS"));
        }
    }

    #[test]
    fn unknown_cni_args_refused_unless_ignore_unknown() {
        let with = |args: &'static str, cmd: &'static str| {
            let mut env = target_env(cmd);
            env.push(("CNI_ARGS", args));
            Env::from_vars(&vars(&env))
        };
        // What kubelet / containerd / podman pass, and cni-ipam's IP: accepted.
        let k8s = "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;\
                   K8S_POD_UID=u-1;IP=10.5.0.9";
        for cmd in ["ADD", "DEL", "CHECK"] {
            assert!(with(k8s, cmd).is_ok(), "{cmd}");
            let e = with("FOO=bar;K8S_POD_NAME=x;BAZ=", cmd).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidEnv as u32);
            assert!(
                e.msg.contains(r#""FOO"="bar""#) && e.msg.contains(r#""BAZ"="""#),
                "{}",
                e.msg
            );
            assert!(!e.msg.contains("K8S_POD_NAME\"=\"x"), "{}", e.msg);
            assert!(e.msg.contains("IgnoreUnknown=1"), "{}", e.msg);
            for on in ["IgnoreUnknown=1;FOO=bar", "FOO=bar;IgnoreUnknown=true"] {
                assert!(with(on, cmd).is_ok(), "{on}");
            }
            for off in ["IgnoreUnknown=0;FOO=bar", "IgnoreUnknown=false;FOO=bar"] {
                assert_eq!(with(off, cmd).unwrap_err().code, 4, "{off}");
            }
            let e = with("IgnoreUnknown=maybe", cmd).unwrap_err();
            assert!(e.msg.contains("IgnoreUnknown"), "{}", e.msg);
        }
        // Commands without a container do not read CNI_ARGS' keys.
        assert!(Env::from_vars(&vars(&[("CNI_COMMAND", "GC"), ("CNI_ARGS", "FOO=1")])).is_ok());
        // Through the skeleton: an error object, the plugin never called.
        let p = Dummy::new();
        let mut env = target_env("ADD");
        env.push(("CNI_ARGS", "FOO=bar"));
        let (st, out) = invoke(&p, &env, &conf("1.0.0"));
        assert_eq!(st, 1);
        assert!(expect_error(out, "1.0.0", 4).contains("FOO"));
        assert!(p.calls.borrow().is_empty());
    }

    /// The host guard, on the namespace this test runs in (compared only: the dummy
    /// plugin touches nothing). A different path to the same namespace is caught too.
    #[test]
    fn own_netns_refused_for_add_check_and_emptied_for_del() {
        let own = "/proc/self/ns/net";
        let p = Dummy::new();
        let with_netns = |cmd: &'static str| -> Vec<(&'static str, &'static str)> {
            target_env(cmd)
                .into_iter()
                .map(|(k, v)| if k == "CNI_NETNS" { (k, own) } else { (k, v) })
                .collect()
        };
        let (st, out) = invoke(&p, &with_netns("ADD"), &conf("1.0.0"));
        assert_eq!(st, 1);
        let msg = expect_error(out, "1.0.0", 4);
        assert!(msg.contains(own) && msg.contains("ADD"), "{msg}");
        let prev = json!({"cniVersion": "1.0.0", "name": "net1", "type": "dummy",
                          "prevResult": {"ips": [{"address": "10.5.0.2/24"}]}});
        let (st, out) = invoke(&p, &with_netns("CHECK"), &prev.to_string());
        assert_eq!(st, 1);
        assert!(expect_error(out, "1.0.0", 4).contains("CHECK"));
        assert!(p.calls.borrow().is_empty(), "{:?}", p.calls.borrow());
        // DEL runs, without the netns: the plugin releases what lives elsewhere only.
        assert_eq!(invoke(&p, &with_netns("DEL"), &conf("1.0.0")), (0, None));
        assert_eq!(p.calls.borrow().as_slice(), ["del ctr-1 eth0 None"]);
        // A plugin that never enters the netns (IPAM) is not guarded: it changes nothing
        // there.
        let ipam = Dummy {
            netns_plugin: false,
            ..Dummy::new()
        };
        let (st, _) = invoke(&ipam, &with_netns("ADD"), &conf("1.0.0"));
        assert_eq!(st, 0);
        assert_eq!(invoke(&ipam, &with_netns("DEL"), &conf("1.0.0")), (0, None));
        assert_eq!(
            ipam.calls.borrow().as_slice(),
            [
                "add ctr-1 eth0 Some(\"/proc/self/ns/net\")",
                "del ctr-1 eth0 Some(\"/proc/self/ns/net\")"
            ]
        );
        // The same namespace under another path is the same namespace.
        let ns = crate::netns::NetNs::open(Path::new("/proc/thread-self/ns/net")).unwrap();
        assert!(ns.is_current().unwrap());
    }

    #[test]
    fn env_requirements_per_command() {
        let e = Env::from_vars(&vars(&target_env("ADD"))).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id.as_ref().unwrap().as_str(), "ctr-1");
        assert_eq!(e.netns, Some(PathBuf::from("/var/run/netns/p1")));
        assert_eq!(e.ifname.as_ref().unwrap().as_str(), "eth0");
        assert_eq!(
            e.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        let t = e.target().unwrap();
        assert_eq!(t.attachment().container_id.as_str(), "ctr-1");

        for (cmd, drop, var) in [
            ("ADD", "CNI_NETNS", "CNI_NETNS"),
            ("CHECK", "CNI_NETNS", "CNI_NETNS"),
            ("ADD", "CNI_CONTAINERID", "CNI_CONTAINERID"),
            ("DEL", "CNI_IFNAME", "CNI_IFNAME"),
            ("DEL", "CNI_CONTAINERID", "CNI_CONTAINERID"),
        ] {
            let env: Vec<_> = target_env(cmd)
                .into_iter()
                .filter(|(k, _)| *k != drop)
                .collect();
            let err = Env::from_vars(&vars(&env)).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnv as u32);
            assert!(err.msg.contains(var), "{cmd}: {}", err.msg);
        }
        // An empty variable is a missing one.
        let mut env = target_env("ADD");
        env[2] = ("CNI_NETNS", "");
        assert!(Env::from_vars(&vars(&env))
            .unwrap_err()
            .msg
            .contains("CNI_NETNS"));

        // DEL: netns optional, empty string = absent.
        let e = Env::from_vars(&vars(
            &env.iter()
                .map(|&(k, v)| {
                    if k == "CNI_COMMAND" {
                        (k, "DEL")
                    } else {
                        (k, v)
                    }
                })
                .collect::<Vec<_>>(),
        ))
        .unwrap();
        assert_eq!(e.netns, None);
        assert_eq!(e.target().unwrap().netns, None);

        // GC, STATUS, VERSION need nothing, and ignore what they do not need.
        for cmd in ["GC", "STATUS", "VERSION"] {
            let e = Env::from_vars(&vars(&[("CNI_COMMAND", cmd)])).unwrap();
            assert!(e.container_id.is_none() && e.ifname.is_none() && e.netns.is_none());
            assert!(e.path.is_empty());
            let e = Env::from_vars(&vars(&[("CNI_COMMAND", cmd), ("CNI_CONTAINERID", "-bad")]))
                .unwrap();
            assert!(e.container_id.is_none());
        }
        assert!(Env::from_vars(&vars(&[("CNI_COMMAND", "VERSION"), ("CNI_ARGS", "junk")])).is_ok());
        assert_eq!(
            Env::from_vars(&vars(&[("CNI_COMMAND", "GC"), ("CNI_ARGS", "junk")]))
                .unwrap_err()
                .code,
            4
        );

        // Invalid values where required.
        let mut env = target_env("ADD");
        env[1] = ("CNI_CONTAINERID", "bad id");
        assert!(Env::from_vars(&vars(&env))
            .unwrap_err()
            .msg
            .contains("CNI_CONTAINERID"));
        let mut env = target_env("ADD");
        env[3] = ("CNI_IFNAME", "this-name-is-too-long");
        assert!(Env::from_vars(&vars(&env))
            .unwrap_err()
            .msg
            .contains("CNI_IFNAME"));
        let mut env = target_env("ADD");
        env.push(("CNI_ARGS", "nopair"));
        assert_eq!(Env::from_vars(&vars(&env)).unwrap_err().code, 4);

        // Unknown or missing command.
        let e = Env::from_vars(&vars(&[("CNI_COMMAND", "ADDX")])).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("ADDX"));
        let e = Env::from_vars(&vars(&[])).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_COMMAND"));
    }

    #[test]
    fn version_command() {
        let p = Dummy::new();
        for stdin in ["", &conf("0.3.1"), "not json"] {
            let (st, out) = invoke(&p, &[("CNI_COMMAND", "VERSION")], stdin);
            assert_eq!(st, 0);
            assert_eq!(
                out.unwrap(),
                json!({"cniVersion": "1.1.0",
                       "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
            );
        }
        let p = Dummy {
            versions: &[Version::V1_0_0, Version::V1_1_0],
            ..Dummy::new()
        };
        let (_, out) = invoke(&p, &[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(out.unwrap()["supportedVersions"], json!(["1.0.0", "1.1.0"]));
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn add_writes_result_in_config_version() {
        let p = Dummy::new();
        let (st, out) = invoke(&p, &target_env("ADD"), &conf("1.0.0"));
        assert_eq!(st, 0);
        assert_eq!(
            out.unwrap(),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.5.0.2/24", "gateway": "10.5.0.1"}]})
        );
        assert_eq!(
            p.calls.borrow()[0],
            "add ctr-1 eth0 Some(\"/var/run/netns/p1\")"
        );

        let (st, out) = invoke(&p, &target_env("ADD"), &conf("0.2.0"));
        assert_eq!(st, 0);
        assert_eq!(
            out.unwrap(),
            json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.5.0.2/24", "gateway": "10.5.0.1"}})
        );

        let (_, out) = invoke(&p, &target_env("ADD"), &conf("0.3.1"));
        assert_eq!(out.unwrap()["ips"][0]["version"], "4");
    }

    fn expect_error(out: Option<Value>, version: &str, code: u32) -> String {
        let out = out.expect("an error object on stdout");
        assert_eq!(out["cniVersion"], version, "{out}");
        assert_eq!(out["code"], code, "{out}");
        out["msg"].as_str().unwrap().to_string()
    }

    #[test]
    fn config_errors() {
        let p = Dummy::new();
        let (st, out) = invoke(&p, &target_env("ADD"), "{not json");
        assert_eq!(st, 1);
        expect_error(out, "1.1.0", 6);
        let (st, out) = invoke(
            &p,
            &target_env("ADD"),
            r#"{"cniVersion":"0.4.0","type":"dummy"}"#,
        );
        assert_eq!(st, 1);
        assert!(expect_error(out, "0.4.0", 7).contains("name"));
        let (st, out) = invoke(&p, &target_env("DEL"), &conf("0.5.0"));
        assert_eq!(st, 1);
        expect_error(out, "1.1.0", 1);
        let (_, out) = invoke(&p, &target_env("ADD"), &conf("banana"));
        expect_error(out, "1.1.0", 7);
        // Env errors are reported in the configuration's version.
        let env: Vec<_> = target_env("ADD")
            .into_iter()
            .filter(|(k, _)| *k != "CNI_IFNAME")
            .collect();
        let (st, out) = invoke(&p, &env, &conf("0.4.0"));
        assert_eq!(st, 1);
        assert!(expect_error(out, "0.4.0", 4).contains("CNI_IFNAME"));
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn unsupported_versions() {
        let p = Dummy {
            versions: &[Version::V1_0_0, Version::V1_1_0],
            ..Dummy::new()
        };
        let (st, out) = invoke(&p, &target_env("ADD"), &conf("0.4.0"));
        assert_eq!(st, 1);
        let msg = expect_error(out, "0.4.0", 1);
        assert!(
            msg.contains("0.4.0") && msg.contains("1.0.0, 1.1.0"),
            "{msg}"
        );

        let p = Dummy::new();
        let prev = json!({"cniVersion": "0.3.1", "name": "net1", "type": "dummy",
                          "prevResult": {"ips": [{"version": "4", "address": "10.5.0.2/24"}]}});
        let (st, out) = invoke(&p, &target_env("CHECK"), &prev.to_string());
        assert_eq!(st, 1);
        assert!(expect_error(out, "0.3.1", 1).contains("CHECK"));
        for cmd in ["GC", "STATUS"] {
            let (st, out) = invoke(&p, &[("CNI_COMMAND", cmd)], &conf("1.0.0"));
            assert_eq!(st, 1);
            assert!(expect_error(out, "1.0.0", 1).contains(cmd));
        }
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn check_needs_prev_result() {
        let p = Dummy::new();
        let (st, out) = invoke(&p, &target_env("CHECK"), &conf("1.0.0"));
        assert_eq!(st, 1);
        assert!(expect_error(out, "1.0.0", 7).contains("prevResult"));
        let prev = json!({"cniVersion": "0.4.0", "name": "net1", "type": "dummy",
                          "prevResult": {"ips": [{"version": "4", "address": "10.5.0.2/24"}]}});
        let (st, out) = invoke(&p, &target_env("CHECK"), &prev.to_string());
        assert_eq!((st, out), (0, None));
        assert_eq!(
            p.calls.borrow().as_slice(),
            ["check ctr-1 eth0 Some(\"/var/run/netns/p1\")"]
        );
    }

    #[test]
    fn del_gc_status_write_nothing() {
        let p = Dummy::new();
        let env: Vec<_> = target_env("DEL")
            .into_iter()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        assert_eq!(invoke(&p, &env, &conf("0.1.0")), (0, None));
        let gc = json!({"cniVersion": "1.1.0", "name": "net1", "type": "dummy",
                        "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"},
                                                       {"containerID": "b", "ifname": "eth0"}]});
        assert_eq!(
            invoke(&p, &[("CNI_COMMAND", "GC")], &gc.to_string()),
            (0, None)
        );
        assert_eq!(
            invoke(&p, &[("CNI_COMMAND", "STATUS")], &conf("1.1.0")),
            (0, None)
        );
        assert_eq!(
            p.calls.borrow().as_slice(),
            ["del ctr-1 eth0 None", "gc 2", "status"]
        );
    }

    #[test]
    fn plugin_errors_are_written_as_is() {
        let p = Dummy::new();
        let c = json!({"cniVersion": "1.0.0", "name": "fail", "type": "dummy"}).to_string();
        for cmd in ["ADD", "DEL"] {
            let (st, out) = invoke(&p, &target_env(cmd), &c);
            assert_eq!(st, 1);
            assert_eq!(
                out.unwrap(),
                json!({"cniVersion": "1.0.0", "code": 11, "msg": "store busy", "details": "lock held"})
            );
        }
    }

    #[test]
    fn peeked_version_for_early_errors() {
        assert_eq!(
            peek_version(conf("0.3.0").as_bytes()),
            Some(Version::V0_3_0)
        );
        assert_eq!(peek_version(b"{}"), None);
        assert_eq!(peek_version(b"junk"), None);
        assert_eq!(Command::from_name("STATUS"), Some(Command::Status));
        assert_eq!(Command::from_name("add"), None);
    }

    struct Panicker;
    impl Plugin for Panicker {
        fn add(&self, _: &Call, _: &Target) -> Result<CniResult, CniError> {
            panic!("boom in add")
        }
        fn del(&self, _: &Call, _: &Target) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Call, _: &Target) -> Result<(), CniError> {
            Ok(())
        }
        fn gc(&self, _: &Call) -> Result<(), CniError> {
            Ok(())
        }
        fn status(&self, _: &Call) -> Result<(), CniError> {
            Ok(())
        }
    }

    /// Not a test on its own: the body of the child process `run_reports_panics` starts.
    #[test]
    fn panic_child() {
        if std::env::var_os("CNI_CORE_SKEL_CHILD").is_none() {
            return;
        }
        let code = run(&Panicker, "panicker test plugin");
        std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
    }

    fn run_child(env: &[(&str, &str)], stdin: &str) -> (Option<i32>, String, String) {
        use std::process::Stdio;
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "skel_impl::tests::panic_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CNI_CORE_SKEL_CHILD", "1")
        .env_remove("CNI_COMMAND")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn run_reports_panics_as_cni_errors() {
        let (code, stdout, _) = run_child(&target_env("ADD"), &conf("0.4.0"));
        assert_eq!(code, Some(1));
        // The test harness prints its own text around the child's stdout.
        let start = stdout.find("{\"cniVersion\"").expect(&stdout);
        let line = stdout[start..].lines().next().unwrap();
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["code"], 999);
        let msg = v["msg"].as_str().unwrap();
        assert!(msg.starts_with("internal error: boom in add at "), "{msg}");
        assert!(msg.contains("skel.rs"), "{msg}");
        // Exactly one error object.
        assert_eq!(stdout.matches("\"code\"").count(), 1, "{stdout}");
    }

    #[test]
    fn run_without_command_prints_about() {
        let (code, stdout, stderr) = run_child(&[], "");
        assert_eq!(code, Some(1));
        assert!(stderr.contains("panicker test plugin"), "{stderr}");
        assert!(
            stderr.contains("CNI protocol versions supported: 0.1.0"),
            "{stderr}"
        );
        let start = stdout.find("{\"cniVersion\"").expect(&stdout);
        let v: Value = serde_json::from_str(stdout[start..].lines().next().unwrap()).unwrap();
        assert_eq!(v["code"], 4);
        assert!(v["msg"].as_str().unwrap().contains("CNI_COMMAND"));
        let (code, stdout, _) = run_child(&[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(code, Some(0));
        assert!(stdout.contains("\"supportedVersions\""), "{stdout}");
    }
}
