//! Running a plugin the way a runtime does: `CNI_*` environment and the config on stdin;
//! the outcome is the exit status, stdout (a result or a CNI error object) and stderr.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// How long a plugin may run before the harness kills it and fails the test.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// One plugin invocation. Every `CNI_*` variable is optional so tests can leave any out;
/// [`Invocation::new`] sets the usual ones.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub plugin: PathBuf,
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub cni_path: Option<String>,
    pub stdin: Vec<u8>,
}

impl Invocation {
    /// `plugin` with `CNI_COMMAND=command` and `CNI_PATH=cni_path`, nothing else set yet.
    pub fn new(plugin: impl Into<PathBuf>, command: &str, cni_path: &Path) -> Invocation {
        Invocation {
            plugin: plugin.into(),
            command: Some(command.to_string()),
            container_id: None,
            netns: None,
            ifname: None,
            args: None,
            cni_path: Some(cni_path.display().to_string()),
            stdin: Vec::new(),
        }
    }
    pub fn container_id(mut self, id: impl Into<String>) -> Self {
        self.container_id = Some(id.into());
        self
    }
    pub fn netns(mut self, path: impl AsRef<Path>) -> Self {
        self.netns = Some(path.as_ref().display().to_string());
        self
    }
    pub fn ifname(mut self, ifname: impl Into<String>) -> Self {
        self.ifname = Some(ifname.into());
        self
    }
    pub fn args(mut self, args: impl Into<String>) -> Self {
        self.args = Some(args.into());
        self
    }
    pub fn config(mut self, conf: &Value) -> Self {
        // A `Value` prints as compact JSON, the same bytes `serde_json::to_vec` gives.
        self.stdin = conf.to_string().into_bytes();
        self
    }
    pub fn raw_stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = stdin.into();
        self
    }

    /// The command, with a clean environment (only `PATH` and the `CNI_*` set here).
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.plugin);
        c.env_clear().env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        for (k, v) in [
            ("CNI_COMMAND", &self.command),
            ("CNI_CONTAINERID", &self.container_id),
            ("CNI_NETNS", &self.netns),
            ("CNI_IFNAME", &self.ifname),
            ("CNI_ARGS", &self.args),
            ("CNI_PATH", &self.cni_path),
        ] {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs the plugin to completion (killed after [`TIMEOUT`]); panics when it cannot
    /// be run or times out (see [`Invocation::try_run`]).
    pub fn run(&self) -> Outcome {
        self.try_run().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the plugin. A plugin file written just before (a test's wrapper script) can
    /// fail `execve` with ETXTBSY for a moment: another thread of this process may have
    /// forked while the file was open for writing, and its child holds that descriptor
    /// until it calls exec itself (close-on-exec closes it only then). That window ends
    /// on its own within the other child's fork-to-exec time, so the exec is tried again
    /// (up to 100 times, 2 ms apart); any other error is returned at once.
    fn spawn(&self) -> Result<std::process::Child, String> {
        let mut tries = 0;
        loop {
            match self.command().spawn() {
                Ok(c) => return Ok(c),
                Err(e)
                    if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32)
                        && tries < 100 =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(format!("cannot run {}: {e}", self.plugin.display())),
            }
        }
    }

    /// Runs the plugin to completion (killed after [`TIMEOUT`]). An error when it cannot
    /// be started or timed out; any exit status is an `Ok` outcome.
    pub fn try_run(&self) -> Result<Outcome, String> {
        let start = Instant::now();
        let mut child = self.spawn()?;
        // All three are piped by `command()`, so they are always there.
        let (Some(mut stdin), Some(mut out), Some(mut err)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{}: no pipes to the plugin", self.plugin.display()));
        };
        let input = self.stdin.clone();
        // The plugin may fail before reading its stdin: a broken pipe is not our error.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        let err_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err.read_to_end(&mut v);
            v
        });
        // Wait without polling (64 tests threads polling starve the kernel's workers).
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(TIMEOUT) {
            Ok(s) => s.map_err(|e| format!("wait: {e}"))?,
            Err(_) => {
                // Our own child, not reaped yet: the waiter thread is still blocked in
                // wait on it, so the pid cannot have been reused.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = waiter.join();
                return Err(format!(
                    "{} {:?} timed out after {TIMEOUT:?}",
                    self.plugin.display(),
                    self.command
                ));
            }
        };
        let _ = waiter.join();
        let _ = writer.join();
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        Ok(Outcome {
            what: format!(
                "{} CNI_COMMAND={:?} CNI_CONTAINERID={:?} CNI_IFNAME={:?}",
                self.plugin.display(),
                self.command,
                self.container_id,
                self.ifname
            ),
            exit_code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            elapsed: start.elapsed(),
        })
    }
}

/// A CNI error object as printed by a failing plugin.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ErrorObject {
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
    #[serde(default, rename = "cniVersion")]
    pub cni_version: Option<String>,
}

/// What a plugin run gave.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The invocation, for failure messages.
    pub what: String,
    /// `None` when killed by a signal (a crash, e.g. a panic with `panic = "abort"`).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// The invocation and what it printed, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{}\n  exit: {:?}\n  stdout: {}\n  stderr: {}",
            self.what,
            self.exit_code,
            self.stdout.trim(),
            self.stderr.trim()
        )
    }

    /// Asserts success and returns stdout parsed as JSON (`Null` when empty, as DEL's
    /// output is).
    pub fn expect_ok(&self) -> Value {
        assert!(self.success(), "plugin failed:\n{}", self.describe());
        if self.stdout.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.describe()))
    }

    /// Asserts a proper CNI failure: a non-zero exit (not a crash) and a well-formed
    /// error object on stdout. Returns it.
    pub fn expect_err(&self) -> ErrorObject {
        assert!(
            matches!(self.exit_code, Some(c) if c != 0),
            "expected a CNI error (non-zero exit, not a crash):\n{}",
            self.describe()
        );
        let e: ErrorObject = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not a CNI error object ({e}):\n{}",
                self.describe()
            )
        });
        assert!(
            !e.msg.is_empty(),
            "error object without msg:\n{}",
            self.describe()
        );
        e
    }

    /// Asserts a CNI error with `code`.
    pub fn expect_code(&self, code: u32) -> ErrorObject {
        let e = self.expect_err();
        assert_eq!(e.code, code, "wrong error code:\n{}", self.describe());
        e
    }
}
