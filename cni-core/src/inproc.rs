//! In-process delegation: a plugin binary that links a delegate's code (our `cni-ipam`,
//! whose [`Plugin`] lives in the `ipam` crate) registers it with [`register`], and
//! [`crate::delegate`] then runs that delegate on a thread of this process instead of
//! exec'ing its binary. That saves a process spawn, a dynamic link and a second skeleton
//! start per ADD and DEL (see the Performance section of the README).
//!
//! What stays exactly as with exec:
//! - the binary is still looked up in `CNI_PATH` first ([`crate::delegate::find`]): a
//!   missing `cni-ipam` is the same error, and only a delegate whose binary name was
//!   registered (the configured IPAM `type` is ours) runs in-process; every other IPAM
//!   plugin is exec'd as the CNI contract says;
//! - the delegate runs through the same skeleton core ([`skel::run_with`]) with the same
//!   variables (`CNI_COMMAND` replaced, the rest from our environment) and the same stdin,
//!   and its stdout bytes and exit status go through the same parsing as a child's output,
//!   so the result, and every error, is byte for byte what the exec path gives;
//! - durability: the delegate returns only after its store is fsync'd, as the binary does
//!   before it writes its result;
//! - undo: a failed ADD's release goes through the same path ([`crate::delegate::run`]).
//!
//! `CNI_INPROC=0` in the environment turns it off (exec always), for comparison and as an
//! operator's escape hatch.

use std::sync::Mutex;

use crate::skel::{self, Command, Env, Plugin};

/// A delegate that may run in-process.
pub(crate) type InProcessPlugin = &'static (dyn Plugin + Sync);

static REGISTRY: Mutex<Vec<(&'static str, InProcessPlugin)>> = Mutex::new(Vec::new());

/// Lets [`crate::delegate`] run `plugin` in-process whenever the delegate binary it finds
/// in `CNI_PATH` is named `binary_name` (e.g. `cni-ipam`).
pub fn register(binary_name: &'static str, plugin: InProcessPlugin) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.retain(|(n, _)| *n != binary_name);
        r.push((binary_name, plugin));
    }
}

/// The registered delegate for `binary` (a path found in `CNI_PATH`), unless
/// `CNI_INPROC=0`.
fn lookup(binary: &std::path::Path) -> Option<InProcessPlugin> {
    if std::env::var("CNI_INPROC").as_deref() == Ok("0") {
        return None;
    }
    let name = binary.file_name()?.to_str()?;
    let r = REGISTRY.lock().ok()?;
    r.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

/// A delegate running on a thread of this process.
pub(crate) struct Running {
    thread: std::thread::JoinHandle<(u8, Vec<u8>)>,
}

impl Running {
    /// Waits for the delegate: what its process would have returned (stdout and exit
    /// status), so [`crate::delegate`] parses it exactly as a child's output.
    pub(crate) fn wait(self) -> std::process::Output {
        use std::os::unix::process::ExitStatusExt;
        let (code, stdout) = match self.thread.join() {
            Ok(r) => r,
            // A panic was already reported on stderr by the hook; like a crashed child,
            // it leaves no answer.
            Err(_) => (101, Vec::new()),
        };
        std::process::Output {
            status: std::process::ExitStatus::from_raw(i32::from(code) << 8),
            stdout,
            stderr: Vec::new(),
        }
    }
}

/// Starts `binary` for `command` in-process if it is registered; `None` means exec it.
pub(crate) fn start(
    binary: &std::path::Path,
    command: Command,
    stdin: &[u8],
    env: &Env,
) -> Option<Running> {
    let plugin = lookup(binary)?;
    let vars = crate::delegate::delegate_vars(command, env);
    let stdin = stdin.to_vec();
    // A thread of its own: the delegate runs while the caller makes links (as a child
    // process would), and outside the caller's tokio runtime (cluster IPAM starts one).
    let _timing = crate::timing::phase("ipam.spawn-thread");
    let thread = std::thread::Builder::new()
        .name("inproc-delegate".into())
        .spawn(move || {
            let var = |k: &str| match vars.iter().find(|(n, _)| *n == k) {
                Some((_, v)) => v.clone(),
                None => std::env::var(k).ok(),
            };
            let mut out = Vec::new();
            let code = skel::run_with(plugin, &var, &stdin, &mut out);
            (code, out)
        })
        .ok()?;
    Some(Running { thread })
}
