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
use crate::spec::error::CniError;

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
    spawn(plugin, command, stdin, env, None)
}

/// Lets a delegate started with [`start_gated`] go on to its ADD; dropping it unopened
/// calls the ADD off: the delegate ends without allocating anything (and its answer,
/// which nobody reads, is empty).
pub(crate) struct Gate(std::sync::mpsc::SyncSender<()>);

impl Gate {
    pub(crate) fn open(self) {
        let _ = self.0.send(());
    }
}

/// Starts an ADD of `binary` in-process (if registered) that reads and checks its
/// environment and configuration at once but allocates only once the [`Gate`] is
/// opened: the thread's start and the delegate's parsing overlap the caller's own
/// before the caller may let it allocate (see `attach`: not before the pod's interface
/// name was found free).
pub(crate) fn start_gated(
    binary: &std::path::Path,
    stdin: &[u8],
    env: &Env,
) -> Option<(Running, Gate)> {
    let plugin = lookup(binary)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let running = spawn(plugin, Command::Add, stdin, env, Some(rx))?;
    Some((running, Gate(tx)))
}

fn spawn(
    plugin: InProcessPlugin,
    command: Command,
    stdin: &[u8],
    env: &Env,
    gate: Option<std::sync::mpsc::Receiver<()>>,
) -> Option<Running> {
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
            let code = match gate {
                Some(gate) => {
                    let gated = Gated {
                        inner: plugin,
                        gate,
                    };
                    skel::run_with(&gated, &var, &stdin, &mut out)
                }
                None => skel::run_with(plugin, &var, &stdin, &mut out),
            };
            (code, out)
        })
        .ok()?;
    Some(Running { thread })
}

/// A delegate whose ADD waits for its [`Gate`].
struct Gated {
    inner: InProcessPlugin,
    gate: std::sync::mpsc::Receiver<()>,
}

impl Plugin for Gated {
    fn add(
        &self,
        call: &skel::Call,
        target: &skel::Target,
    ) -> Result<crate::spec::result::CniResult, CniError> {
        let waited = {
            let _timing = crate::timing::phase("ipam.gate");
            self.gate.recv()
        };
        if waited.is_err() {
            // The caller failed before it may allocate and has answered the runtime
            // itself: nothing is allocated, and this empty answer is never read (an
            // error here would only log a second, misleading failure).
            tracing::debug!("in-process IPAM ADD called off before allocating");
            return Ok(crate::spec::result::CniResult::default());
        }
        self.inner.add(call, target)
    }
    fn del(&self, call: &skel::Call, target: &skel::Target) -> Result<(), CniError> {
        self.inner.del(call, target)
    }
    fn check(&self, call: &skel::Call, target: &skel::Target) -> Result<(), CniError> {
        self.inner.check(call, target)
    }
    fn gc(&self, call: &skel::Call) -> Result<(), CniError> {
        self.inner.gc(call)
    }
    fn status(&self, call: &skel::Call) -> Result<(), CniError> {
        self.inner.status(call)
    }
    fn versions(&self) -> &'static [crate::spec::version::Version] {
        self.inner.versions()
    }
    fn configures_netns(&self) -> bool {
        self.inner.configures_netns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skel::{Call, Target};
    use crate::spec::result::CniResult;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its ADDs; everything else succeeds.
    struct Counting(AtomicUsize);
    impl Plugin for Counting {
        fn add(&self, _: &Call, _: &Target) -> Result<CniResult, CniError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(CniResult::default())
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
    static GATED: Counting = Counting(AtomicUsize::new(0));

    /// A gated ADD runs its plugin's `add` only once the gate is opened; a gate dropped
    /// unopened ends the delegate with an error and no `add` at all.
    #[test]
    fn gated_add_waits_for_its_gate() {
        register("inproc-gate-test", &GATED);
        let env = Env {
            command: Command::Add,
            container_id: Some(crate::spec::names::ContainerId::parse("gate-1").unwrap()),
            netns: Some(PathBuf::from("/var/run/netns/gate")),
            ifname: Some(crate::spec::names::IfName::parse("eth0").unwrap()),
            args: Default::default(),
            path: vec![],
        };
        let conf = br#"{"cniVersion":"1.0.0","name":"gate","type":"inproc-gate-test"}"#;
        let bin = Path::new("/nonexistent/inproc-gate-test");

        let (running, gate) = start_gated(bin, conf, &env).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(GATED.0.load(Ordering::SeqCst), 0, "add ran before the gate");
        drop(gate);
        running.wait();
        assert_eq!(
            GATED.0.load(Ordering::SeqCst),
            0,
            "add ran after the call-off"
        );

        let (running, gate) = start_gated(bin, conf, &env).unwrap();
        gate.open();
        let out = running.wait();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(GATED.0.load(Ordering::SeqCst), 1);
    }
}
