//! User-Mode Linux: this machine's kernel has no IPIP, Debian's `user-mode-linux` has it
//! (as a module). [`Uml::run`] boots `linux.uml` with the host's root file system
//! (hostfs, read-write), an init script that mounts proc, sysfs and a tmpfs on `/run`,
//! makes `/run/netns`, loads `ipip veth bridge vxlan`, runs one command with a given
//! environment and prints a verdict line with its exit status, then powers off. The host
//! side reads the verdict from the console output.
//!
//! Inside the guest `/tmp` is the host's `/tmp`: [`run_test_in_uml`] gives the guest a
//! private `TMPDIR` that the host removes afterwards.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set (to `1`) in the environment of a command run inside the guest.
pub const IN_UML_ENV: &str = "CNI_E2E_IN_UML";

/// The verdict line's prefix.
const VERDICT: &str = "CNI-UML-VERDICT exit=";

/// Where Debian's package puts the modules of its UML kernel.
pub const MODULES_DIR: &str = "/usr/lib/uml/modules";

/// The UML kernel: `$CNI_LINUX_UML`, else `/usr/bin/linux.uml`. Panics, naming the
/// packages to install, when it is missing.
pub fn linux_uml() -> PathBuf {
    let p = std::env::var_os("CNI_LINUX_UML")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/linux.uml"));
    assert!(
        p.is_file(),
        "{} not found: this kernel has no IPIP, so the IPIP tests run inside User-Mode \
         Linux; install it: apt-get install user-mode-linux kmod (scripts/deps.sh does)",
        p.display()
    );
    p
}

/// The version of the UML kernel's modules (the directory under [`MODULES_DIR`]).
pub fn modules_version() -> Result<String, String> {
    let mut v: Vec<String> = std::fs::read_dir(MODULES_DIR)
        .map_err(|e| format!("{MODULES_DIR}: {e} (apt-get install user-mode-linux kmod)"))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v.pop()
        .ok_or_else(|| format!("no module directory under {MODULES_DIR}"))
}

/// True when this kernel can make IPIP tunnels: in a fresh netns, `tunl0` exists or an
/// `ipip` link can be added.
pub fn kernel_has_ipip() -> bool {
    let ns = crate::netns::Netns::new("ipip-probe");
    ns.try_exec(&["ip", "link", "show", "tunl0"]).is_ok()
        || ns
            .try_exec(&[
                "ip",
                "link",
                "add",
                "ipprobe",
                "type",
                "ipip",
                "remote",
                "192.0.2.1",
            ])
            .is_ok()
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A UML guest to boot.
#[derive(Clone, Debug)]
pub struct Uml {
    /// `mem=` of the guest.
    pub mem: String,
    /// Killed (with every process of it) after this.
    pub timeout: Duration,
    pub modules: Vec<String>,
    /// Environment of the command (the guest's init starts with an empty one).
    pub env: Vec<(String, String)>,
    /// Working directory of the command.
    pub cwd: PathBuf,
}

impl Default for Uml {
    fn default() -> Self {
        Uml {
            mem: "1G".into(),
            timeout: Duration::from_secs(240),
            modules: ["ipip", "sit", "veth", "bridge", "vxlan"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            env: vec![],
            cwd: PathBuf::from("/"),
        }
    }
}

/// What a guest run gave.
#[derive(Clone, Debug)]
pub struct UmlOutcome {
    /// The command's exit status from the verdict line; None when there was no verdict
    /// (the guest did not boot, crashed or timed out).
    pub exit: Option<i32>,
    /// Everything the guest printed on its console.
    pub output: String,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl UmlOutcome {
    pub fn success(&self) -> bool {
        self.exit == Some(0)
    }
    /// For failure messages.
    pub fn describe(&self) -> String {
        format!(
            "UML guest: exit {:?}{} after {:?}; console:\n{}",
            self.exit,
            if self.timed_out { " (timed out)" } else { "" },
            self.elapsed,
            self.output
        )
    }
}

impl Uml {
    /// The init script that runs `argv`.
    fn init_script(&self, argv: &[String], moddir: &Path, version: &str) -> String {
        let mut s = String::from(
            "#!/bin/sh\n\
             export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             mount -t proc proc /proc\n\
             mount -t sysfs sysfs /sys\n\
             mount -t tmpfs tmpfs /run\n\
             mkdir -p /run/netns\n",
        );
        if !self.modules.is_empty() {
            s += &format!(
                "modprobe -d {} -S {} -a {} || {{ echo '{VERDICT}253 (modprobe failed)'; \
                 exec poweroff -f; }}\n",
                quote(&moddir.display().to_string()),
                quote(version),
                self.modules.join(" ")
            );
        }
        s += &format!("cd {} || exit 1\n", quote(&self.cwd.display().to_string()));
        for (k, v) in &self.env {
            s += &format!("export {k}={}\n", quote(v));
        }
        s += &argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
        s += &format!(" </dev/null 2>&1\necho \"{VERDICT}$?\"\nexec poweroff -f\n");
        s
    }

    /// Boots the guest, runs `argv` inside it, returns the outcome (an error only when
    /// the guest cannot be started at all).
    pub fn run(&self, argv: &[String]) -> Result<UmlOutcome, String> {
        let kernel = linux_uml();
        let version = modules_version()?;
        let dir = tempfile::Builder::new()
            .prefix("cni-uml-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let moddir = dir.path().join("mod");
        std::fs::create_dir_all(moddir.join("lib/modules")).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(
            Path::new(MODULES_DIR).join(&version),
            moddir.join("lib/modules").join(&version),
        )
        .map_err(|e| e.to_string())?;
        let init = dir.path().join("init.sh");
        std::fs::write(&init, self.init_script(argv, &moddir, &version))
            .map_err(|e| e.to_string())?;
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let out_path = dir.path().join("console");
        let out = File::create(&out_path).map_err(|e| e.to_string())?;
        // UML keeps its memory in a file under TMPDIR: on tmpfs when there is one.
        let mem_dir = tempfile::Builder::new()
            .prefix("cni-uml-mem-")
            .tempdir_in(if Path::new("/dev/shm").is_dir() {
                Path::new("/dev/shm")
            } else {
                dir.path()
            })
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let mut child = Command::new(&kernel)
            .args([
                format!("mem={}", self.mem),
                "root=/dev/root".into(),
                "rootfstype=hostfs".into(),
                "rootflags=/".into(),
                "rw".into(),
                "quiet".into(),
                format!("init={}", init.display()),
                "con=null".into(),
                "con0=fd:0,fd:1".into(),
            ])
            .env("TMPDIR", mem_dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", kernel.display()))?;
        let pgid = child.id() as i32;
        let mut timed_out = false;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if start.elapsed() < self.timeout => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    timed_out = true;
                    break;
                }
            }
        }
        // The guest's processes are host processes of the same group: none may outlive it.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        let output = String::from_utf8_lossy(&std::fs::read(&out_path).unwrap_or_default())
            .replace('\r', "");
        let exit = output
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(VERDICT))
            .and_then(|v| v.split_whitespace().next()?.parse().ok());
        Ok(UmlOutcome {
            exit,
            output,
            elapsed: start.elapsed(),
            timed_out,
        })
    }
}

/// Runs the test `name` of the current test binary inside a UML guest
/// (`--exact <name> --nocapture --test-threads=1`, plus `extra` arguments such as
/// `--ignored`), with [`IN_UML_ENV`] set, our binaries' directory as `CNI_BIN_DIR`, and a
/// private `TMPDIR` removed afterwards.
pub fn run_test_in_uml(name: &str, extra: &[&str], timeout: Duration) -> UmlOutcome {
    let exe = std::env::current_exe().expect("current_exe");
    let tmp = tempfile::Builder::new()
        .prefix("cni-uml-tmp-")
        .tempdir()
        .expect("tempdir");
    let mut env = vec![
        (IN_UML_ENV.to_string(), "1".to_string()),
        (
            "CNI_BIN_DIR".to_string(),
            crate::bins::our_bin_dir().display().to_string(),
        ),
        (
            "CNI_REF_DIR".to_string(),
            crate::bins::ref_bin_dir().display().to_string(),
        ),
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ),
        ("TMPDIR".to_string(), tmp.path().display().to_string()),
        ("RUST_BACKTRACE".to_string(), "1".to_string()),
    ];
    for k in ["BENCH_ROUNDS", "BENCH_SECONDS"] {
        if let Ok(v) = std::env::var(k) {
            env.push((k.to_string(), v));
        }
    }
    let mut argv = vec![
        exe.display().to_string(),
        "--exact".to_string(),
        name.to_string(),
        "--nocapture".to_string(),
        "--test-threads=1".to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let uml = Uml {
        env,
        timeout,
        cwd: crate::bins::workspace_root(),
        ..Uml::default()
    };
    uml.run(&argv).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_quotes_and_reports() {
        let u = Uml {
            env: vec![("A".into(), "it's".into())],
            ..Uml::default()
        };
        let s = u.init_script(
            &["/bin/echo".into(), "a b".into()],
            Path::new("/tmp/m"),
            "6.1.1",
        );
        assert!(s.contains("export A='it'\\''s'\n"), "{s}");
        assert!(s.contains("'/bin/echo' 'a b' </dev/null 2>&1\n"), "{s}");
        assert!(s.contains("modprobe -d '/tmp/m' -S '6.1.1' -a ipip sit veth bridge vxlan"));
        assert!(s.ends_with("echo \"CNI-UML-VERDICT exit=$?\"\nexec poweroff -f\n"));
    }
}
