//! Running another plugin (typically IPAM) found in `CNI_PATH`, with the same
//! configuration on stdin and the same environment but for `CNI_COMMAND`.
//!
//! A delegate never outlives the plugin that started it: it is started with
//! `PR_SET_PDEATHSIG` = `SIGKILL` (so a plugin killed mid-ADD takes its IPAM child with
//! it, and that child cannot reserve an address after the runtime's DEL of the same
//! container), and with [`PARENT_PID_ENV`] naming the plugin, which `cni-ipam` compares
//! with its parent once it holds its store's lock (the check that closes the window
//! before the death signal is armed). The death signal follows the *thread* that
//! started the delegate: start and wait for it on one thread (every caller does, on the
//! plugin's main thread).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::skel::{Command, Env};
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
use crate::spec::version::Version;

/// The environment variable naming (decimal pid) the plugin that started a delegate.
/// Extra to the CNI environment; plugins that do not know it ignore it.
pub const PARENT_PID_ENV: &str = "CNI_DELEGATE_PARENT_PID";

/// The pid [`PARENT_PID_ENV`] names, if set and well formed.
pub fn expected_parent() -> Option<i32> {
    std::env::var(PARENT_PID_ENV).ok()?.trim().parse().ok()
}

/// Makes the child of `cmd` die with this process: `SIGKILL` on the death of the
/// forking thread, armed before `exec`; if the parent is already gone by then, the
/// child exits before `exec`.
fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    cmd.env(PARENT_PID_ENV, parent.as_raw().to_string());
    // SAFETY: the closure runs in the forked child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes two system calls (prctl, getppid),
    // allocates nothing, takes no lock, and touches only the copied `parent` value.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Finds `plugin` in `path`. Not found is `InvalidConfig` (7) naming the plugin and the
/// directories searched.
pub(crate) fn find(plugin: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if plugin.is_empty() {
        return Err(CniError::invalid_config("no plugin name provided"));
    }
    // A name, never a path: the configuration must not pick an arbitrary binary.
    if plugin.contains('/') || plugin == "." || plugin == ".." {
        return Err(CniError::invalid_config(format!(
            "invalid plugin name \"{plugin}\""
        )));
    }
    for dir in path {
        let candidate = dir.join(plugin);
        if let Ok(md) = std::fs::metadata(&candidate) {
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    let dirs: Vec<String> = path.iter().map(|d| d.display().to_string()).collect();
    Err(CniError::invalid_config(format!(
        "failed to find plugin \"{plugin}\" in path [{}]",
        dirs.join(", ")
    )))
}

/// Executes `binary` for `command`. On failure the delegate's own CNI error (parsed from
/// its stdout) is returned unchanged.
pub fn exec(binary: &Path, command: Command, stdin: &[u8], env: &Env) -> Result<Vec<u8>, CniError> {
    start(binary, command, stdin, env)?.wait()
}

/// Starts `binary` for `command` without waiting for it (see [`Pending::wait`]).
pub(crate) fn start(
    binary: &Path,
    command: Command,
    stdin: &[u8],
    env: &Env,
) -> Result<Pending, CniError> {
    // Our own IPAM, linked into this binary, runs on a thread instead (see `inproc`).
    if let Some(running) = crate::inproc::start(binary, command, stdin, env) {
        return Ok(Pending::in_process(running, binary));
    }
    start_exec(binary, command, stdin, env)
}

/// Starts `binary` for `command` as a child process.
fn start_exec(
    binary: &Path,
    command: Command,
    stdin: &[u8],
    env: &Env,
) -> Result<Pending, CniError> {
    let mut cmd = std::process::Command::new(binary);
    for (k, v) in delegate_vars(command, env) {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    Pending::start(cmd, binary, stdin)
}

/// The `CNI_*` variables a delegate sees: ours, with `CNI_COMMAND` replaced (`None` is
/// unset). One list for both ways of running a delegate: a child's environment
/// ([`start`]) and our own IPAM on a thread (`inproc`).
pub(crate) fn delegate_vars(command: Command, env: &Env) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("CNI_COMMAND", Some(command.as_str().to_string())),
        (
            "CNI_CONTAINERID",
            env.container_id.as_ref().map(|c| c.as_str().to_string()),
        ),
        (
            "CNI_NETNS",
            env.netns.as_ref().map(|n| n.display().to_string()),
        ),
        (
            "CNI_IFNAME",
            env.ifname.as_ref().map(|i| i.as_str().to_string()),
        ),
        (
            "CNI_ARGS",
            Some(env.args.to_env_string()).filter(|a| !a.is_empty()),
        ),
        (
            "CNI_PATH",
            Some(
                env.path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            )
            .filter(|p| !p.is_empty()),
        ),
    ]
}

/// A delegated plugin that is running: [`Pending::wait`] collects its answer. Lets the
/// caller work while the delegate (e.g. IPAM, which waits on fsync) runs.
pub(crate) struct Pending {
    /// `None` when the delegate runs in-process (`inproc`).
    child: Option<std::process::Child>,
    writer: Option<std::thread::JoinHandle<()>>,
    name: String,
    inproc: Option<crate::inproc::Running>,
}

impl Pending {
    fn in_process(running: crate::inproc::Running, binary: &Path) -> Pending {
        Pending {
            child: None,
            writer: None,
            name: binary.display().to_string(),
            inproc: Some(running),
        }
    }

    fn start(
        mut cmd: std::process::Command,
        binary: &Path,
        stdin: &[u8],
    ) -> Result<Pending, CniError> {
        let name = binary.display().to_string();
        let mut child = spawn(&mut cmd)
            .map_err(|e| CniError::io(format!("failed to execute plugin {name}: {e}")))?;
        // A configuration fits in the pipe: write it without blocking. Whatever does not
        // fit is fed from another thread, so that a delegate that writes before reading
        // cannot deadlock against us.
        let writer = match child.stdin.take() {
            Some(pipe) => write_or_hand_off(pipe, stdin),
            None => None,
        };
        Ok(Pending {
            child: Some(child),
            writer,
            name,
            inproc: None,
        })
    }

    /// Waits for the delegate; its stdout on success, its own CNI error otherwise.
    pub(crate) fn wait(self) -> Result<Vec<u8>, CniError> {
        let name = self.name;
        let child = match (self.child, self.inproc) {
            (_, Some(running)) => return finish(&name, running.wait()),
            (Some(child), None) => child,
            (None, None) => return Err(CniError::internal(format!("plugin {name} not started"))),
        };
        let output = child
            .wait_with_output()
            .map_err(|e| CniError::io(format!("failed to wait for plugin {name}: {e}")))?;
        if let Some(w) = self.writer {
            let _ = w.join();
        }
        finish(&name, output)
    }
}

/// Writes `data` to `pipe` without blocking as far as it goes; the rest (if any) is
/// written by a thread, returned. The pipe is closed once everything is written.
fn write_or_hand_off(
    mut pipe: std::process::ChildStdin,
    data: &[u8],
) -> Option<std::thread::JoinHandle<()>> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(&pipe, FcntlArg::F_GETFL).map(OFlag::from_bits_retain);
    let nonblocking = match flags {
        Ok(f) => fcntl(&pipe, FcntlArg::F_SETFL(f | OFlag::O_NONBLOCK)).is_ok(),
        Err(_) => false,
    };
    let mut done = 0;
    if let (true, Ok(flags)) = (nonblocking, flags) {
        while done < data.len() {
            match pipe.write(&data[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // Back to blocking for the thread, if one is needed.
        let _ = fcntl(&pipe, FcntlArg::F_SETFL(flags));
    }
    if done >= data.len() {
        return None; // dropping the pipe closes it: the delegate sees EOF
    }
    let rest = data[done..].to_vec();
    Some(std::thread::spawn(move || {
        let _ = pipe.write_all(&rest);
    }))
}

fn finish(name: &str, output: std::process::Output) -> Result<Vec<u8>, CniError> {
    // The delegate's logs belong to ours.
    if !output.stderr.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
    }
    if output.status.success() {
        return Ok(output.stdout);
    }
    if let Ok(err) = serde_json::from_slice::<CniError>(&output.stdout) {
        return Err(err);
    }
    Err(
        CniError::internal(format!("plugin {name} failed ({})", output.status)).with_details(
            format!(
                "stdout: {}; stderr: {}",
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ),
    )
}

/// Spawns, retrying on ETXTBSY: a binary just written may still be open for writing in
/// a child forked concurrently by another thread (libcni retries for the same reason).
fn spawn(cmd: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    let mut attempt = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
            }
            other => return other,
        }
    }
}

/// ADD through `plugin`; its result is parsed in the shape of `version`.
#[cfg(test)]
pub(crate) fn add(
    plugin: &str,
    stdin: &[u8],
    env: &Env,
    version: Version,
) -> Result<CniResult, CniError> {
    let _timing = crate::timing::phase("delegate.add");
    let binary = find(plugin, &env.path)?;
    let out = exec(&binary, Command::Add, stdin, env)?;
    let value: serde_json::Value = serde_json::from_slice(&out)
        .map_err(|e| CniError::decode(format!("invalid result from plugin {plugin}: {e}")))?;
    CniResult::from_json(&value, version)
        .map_err(|e| e.context(format!("result of plugin {plugin}")))
}

/// An ADD through a delegate, made ready before it may allocate ([`add_ready`]); only
/// [`AddReady::go`] lets it allocate. Dropped without `go`, nothing was allocated.
pub(crate) struct AddReady {
    /// The delegate's binary, or why it was not found (reported by `go`, so that errors
    /// keep their order).
    binary: Result<PathBuf, CniError>,
    /// Our own IPAM, already running in-process up to its allocation.
    inproc: Option<(crate::inproc::Running, crate::inproc::Gate)>,
}

/// Gets an ADD through `plugin` ready: finds it, and when it runs in-process (`inproc`)
/// starts its thread, which reads its configuration and then waits for
/// [`AddReady::go`]. An exec'd delegate is started by `go`.
pub(crate) fn add_ready(plugin: &str, stdin: &[u8], env: &Env) -> AddReady {
    let _timing = crate::timing::phase("ipam.ready");
    let binary = find(plugin, &env.path);
    let inproc = match &binary {
        Ok(b) => crate::inproc::start_gated(b, stdin, env),
        Err(_) => None,
    };
    AddReady { binary, inproc }
}

impl AddReady {
    /// Lets the ADD allocate (starts it, if exec'd); [`add_finish`] parses its result.
    pub(crate) fn go(self, stdin: &[u8], env: &Env) -> Result<Pending, CniError> {
        let _timing = crate::timing::phase("ipam.start");
        let binary = self.binary?;
        match self.inproc {
            Some((running, gate)) => {
                gate.open();
                Ok(Pending::in_process(running, &binary))
            }
            None => start_exec(&binary, Command::Add, stdin, env),
        }
    }
}

/// The result of an ADD started with [`AddReady::go`], in the shape of `version`.
pub(crate) fn add_finish(
    plugin: &str,
    pending: Pending,
    version: Version,
) -> Result<CniResult, CniError> {
    let _timing = crate::timing::phase("ipam.wait");
    let out = pending.wait()?;
    let value: serde_json::Value = serde_json::from_slice(&out)
        .map_err(|e| CniError::decode(format!("invalid result from plugin {plugin}: {e}")))?;
    CniResult::from_json(&value, version)
        .map_err(|e| e.context(format!("result of plugin {plugin}")))
}

/// DEL, CHECK, GC, STATUS through `plugin`.
pub(crate) fn run(plugin: &str, command: Command, stdin: &[u8], env: &Env) -> Result<(), CniError> {
    let _timing = crate::timing::phase("delegate.run");
    let binary = find(plugin, &env.path)?;
    exec(&binary, command, stdin, env).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skel::CniArgs;
    use crate::spec::names::{ContainerId, IfName};
    use std::fs;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn env(path: Vec<PathBuf>) -> Env {
        Env {
            command: Command::Add,
            container_id: Some(ContainerId::parse("ctr1").unwrap()),
            netns: Some(PathBuf::from("/var/run/netns/test")),
            ifname: Some(IfName::parse("eth0").unwrap()),
            args: CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=p").unwrap(),
            path,
        }
    }

    #[test]
    fn find_searches_path_in_order_and_skips_non_executables() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        fs::write(a.path().join("ipam"), "not executable").unwrap();
        fs::create_dir(a.path().join("dir-plugin")).unwrap();
        let exe = script(b.path(), "ipam", "exit 0");
        let path = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find("ipam", &path).unwrap(), exe);

        let e = find("dir-plugin", &path).unwrap_err();
        assert_eq!(e.code, 7);
        let e = find("missing", &path).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("missing"));
        assert!(e.msg.contains(&a.path().display().to_string()));
        assert!(e.msg.contains(&b.path().display().to_string()));
        assert_eq!(find("", &path).unwrap_err().code, 7);
        assert_eq!(find("../ipam", &path).unwrap_err().code, 7);
        assert_eq!(find("ipam", &[]).unwrap_err().code, 7);
    }

    #[test]
    fn add_passes_env_and_stdin_and_parses_result() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        script(
            dir.path(),
            "fake-ipam",
            &format!(
                "{{ echo \"$CNI_COMMAND|$CNI_CONTAINERID|$CNI_NETNS|$CNI_IFNAME|$CNI_ARGS|$CNI_PATH|$KEEP_ME\"; cat; }} > {}\n\
                 echo '{{\"cniVersion\":\"0.3.1\",\"ips\":[{{\"version\":\"4\",\"address\":\"10.9.0.2/24\",\"gateway\":\"10.9.0.1\"}}],\"dns\":{{}}}}'",
                seen.display()
            ),
        );
        std::env::set_var("KEEP_ME", "kept");
        let mut e = env(vec![dir.path().to_path_buf()]);
        e.command = Command::Del; // the delegate's command is the one asked for, not ours
        let conf = br#"{"cniVersion":"0.3.1","name":"n","type":"fake-ipam"}"#;
        let r = add("fake-ipam", conf, &e, Version::V0_3_1).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.9.0.2/24");
        assert_eq!(r.ips[0].gateway.unwrap().to_string(), "10.9.0.1");
        let seen = fs::read_to_string(&seen).unwrap();
        let (line, rest) = seen.split_once('\n').unwrap();
        assert_eq!(
            line,
            format!(
                "ADD|ctr1|/var/run/netns/test|eth0|IgnoreUnknown=1;K8S_POD_NAME=p|{}|kept",
                dir.path().display()
            )
        );
        assert_eq!(rest.as_bytes(), conf);
    }

    /// The delegate is told who started it (what `cni-ipam` checks after its lock).
    #[test]
    fn delegate_is_told_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        script(
            dir.path(),
            "who",
            &format!(
                "echo \"$CNI_DELEGATE_PARENT_PID $PPID\" > {}",
                seen.display()
            ),
        );
        run(
            "who",
            Command::Del,
            b"{}",
            &env(vec![dir.path().to_path_buf()]),
        )
        .unwrap();
        let me = std::process::id().to_string();
        assert_eq!(
            fs::read_to_string(&seen).unwrap().trim(),
            format!("{me} {me}")
        );
    }

    #[test]
    fn run_returns_delegate_error_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "failing",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"try later"}'; exit 1"#,
        );
        let mut e = env(vec![dir.path().to_path_buf()]);
        e.netns = None;
        let err = run("failing", Command::Del, b"{}", &e).unwrap_err();
        assert_eq!(err, CniError::try_again("busy").with_details("try later"));
    }

    #[test]
    fn unparseable_failure_is_internal_with_output() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "crashing",
            "echo garbage; echo 'boom on stderr' >&2; exit 3",
        );
        let err = run(
            "crashing",
            Command::Check,
            b"{}",
            &env(vec![dir.path().to_path_buf()]),
        )
        .unwrap_err();
        assert_eq!(err.code, 999);
        assert!(err.msg.contains("crashing"));
        assert!(err.details.contains("garbage"));
        assert!(err.details.contains("boom on stderr"));
    }

    #[test]
    fn add_with_bad_output_is_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "bad-json", "echo '{not json'");
        script(
            dir.path(),
            "bad-result",
            r#"echo '{"cniVersion":"1.0.0","ips":[{"address":"nope"}]}'"#,
        );
        let e = env(vec![dir.path().to_path_buf()]);
        assert_eq!(
            add("bad-json", b"{}", &e, Version::V1_0_0)
                .unwrap_err()
                .code,
            6
        );
        let err = add("bad-result", b"{}", &e, Version::V1_0_0).unwrap_err();
        assert_eq!(err.code, 6);
        assert!(err.msg.contains("ips[0].address"), "{}", err.msg);
    }

    #[test]
    fn run_succeeds_and_large_stdin_does_not_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        // Writes a lot before reading anything.
        script(
            dir.path(),
            "chatty",
            "head -c 200000 /dev/zero; cat >/dev/null; exit 0",
        );
        let big = vec![b' '; 300_000];
        run(
            "chatty",
            Command::Gc,
            &big,
            &env(vec![dir.path().to_path_buf()]),
        )
        .unwrap();
    }
}
