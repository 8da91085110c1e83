//! How the bench runs a plugin: through a small helper process that forks, execs the
//! plugin and reaps it with `wait4`, as `/usr/bin/time` does, so that the peak RSS it
//! reports is the invocation's own.
//!
//! Why not spawn from the bench: Linux carries the RSS high-water mark of the mm a
//! process leaves at `execve` into the process's `ru_maxrss` (`exec_mmap` ->
//! `setmax_mm_hiwater_rss` of the old mm; `signal->maxrss` survives the exec). A child
//! made by `posix_spawn`/`vfork` (what `std::process::Command` does) leaves the *bench's*
//! mm, so every plugin's peak read at least the bench's own RSS (3.2–3.8 MB, more with
//! the parallel phase's threads). A `fork`ed child leaves a copy of its parent's mm,
//! whose high-water mark is only what the copy holds (the parent's anonymous and written
//! pages): small when the parent is small.
//!
//! The helper is this binary again (`/proc/self/exe` [`HELPER_ARG`]), started on first
//! use and kept: one per concurrent caller, in a pool. Its mm is the fresh one of its own
//! `execve`, whatever the bench has grown to when it starts it; it serves one request at
//! a time from its stdin and answers on its stdout. Per request it writes the plugin's
//! stdin into a pipe first (so no writer runs while the plugin does), forks, and the child
//! takes its time stamps right before `execve`. The reported wall time is from that
//! `execve` to `wait4` returning (after the plugin's stdout reached EOF): neither the
//! helper's fork nor the bench's round trip to the helper is inside it, and no process is
//! started per invocation besides the plugin. `ru_maxrss`, `ru_utime` and `ru_stime` are
//! `wait4`'s, so they include the children the plugin waited for (the reference
//! `bridge`'s exec'd `host-local`, or `cni-ipam` when exec'd): `ru_maxrss` is the larger
//! of the plugin's peak and theirs, CPU is the sum.
//!
//! Wire format (native byte order, one machine): request = argv (argv[0] is the program's
//! path), environment (`K=V`, nothing else is inherited), stdin, each a `u32` count of
//! `u32`-length-prefixed byte strings; answer = `u8` 1 then status, wall ns, exec time
//! (`CLOCK_REALTIME` µs), maxrss KiB, user µs, system µs, stdout; or `u8` 0 then an error
//! message.

use std::ffi::{CString, OsStr, OsString};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// `argv[1]` that makes this binary the spawn helper (checked before anything else runs).
pub const HELPER_ARG: &str = "__spawn-helper";

/// One program to run: what `execve` gets, and the bytes of its stdin.
pub struct Request {
    /// argv[0] is the program's path (not searched in `PATH`).
    pub argv: Vec<OsString>,
    /// The whole environment (`KEY`, `value`).
    pub env: Vec<(OsString, OsString)>,
    pub stdin: Vec<u8>,
}

impl Request {
    /// The program, arguments and environment variables set on `cmd`. Only for commands
    /// made with `env_clear()` (e.g. `cni_runtime::Invocation::command`): variables of
    /// this process are not added.
    pub fn from_command(cmd: &Command, stdin: &[u8]) -> Request {
        let mut argv = vec![cmd.get_program().to_owned()];
        argv.extend(cmd.get_args().map(OsStr::to_owned));
        let env = cmd
            .get_envs()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
            .collect();
        Request {
            argv,
            env,
            stdin: stdin.to_vec(),
        }
    }
}

/// What one run gave.
#[derive(Debug)]
pub struct Run {
    /// The raw `wait4` status.
    pub status: i32,
    /// From the child's last step before `execve` to `wait4` returning.
    pub elapsed: Duration,
    /// When the child called `execve` (`CLOCK_REALTIME`, µs since the epoch).
    pub exec_realtime_us: u64,
    pub maxrss_kib: i64,
    /// The forked child's own peak RSS just before `execve` (KiB): what the exec carries
    /// into `maxrss_kib` at least, so a program whose own peak is below it reads this.
    pub floor_kib: i64,
    pub utime: Duration,
    pub stime: Duration,
    pub stdout: Vec<u8>,
}

impl Run {
    pub fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }
}

/// Idle helpers; a caller takes one (or starts one) and puts it back.
static POOL: Mutex<Vec<Helper>> = Mutex::new(Vec::new());

struct Helper {
    child: Child,
    tx: BufWriter<ChildStdin>,
    rx: BufReader<ChildStdout>,
}

impl Helper {
    fn start() -> Result<Helper, String> {
        let mut child = Command::new("/proc/self/exe")
            .arg(HELPER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the spawn helper: {e}"))?;
        let (Some(tx), Some(rx)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("spawn helper without pipes".into());
        };
        Ok(Helper {
            child,
            tx: BufWriter::new(tx),
            rx: BufReader::new(rx),
        })
    }

    fn call(&mut self, req: &Request) -> std::io::Result<Result<Run, String>> {
        write_request(&mut self.tx, req)?;
        self.tx.flush()?;
        read_answer(&mut self.rx)
    }
}

/// Runs `req` through a helper of the pool and waits for it.
pub fn run(req: &Request) -> Result<Run, String> {
    let taken = POOL.lock().map_err(|_| "spawn pool poisoned")?.pop();
    let mut helper = match taken {
        Some(h) => h,
        None => Helper::start()?,
    };
    match helper.call(req) {
        Ok(answer) => {
            if let Ok(mut pool) = POOL.lock() {
                pool.push(helper);
            }
            answer
        }
        Err(e) => {
            let _ = helper.child.kill();
            let _ = helper.child.wait();
            Err(format!("spawn helper: {e}"))
        }
    }
}

fn put_bytes(w: &mut impl Write, b: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(b.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "too long"))?;
    w.write_all(&len.to_ne_bytes())?;
    w.write_all(b)
}

fn put_list<'a>(
    w: &mut impl Write,
    items: impl ExactSizeIterator<Item = &'a [u8]>,
) -> std::io::Result<()> {
    w.write_all(&(items.len() as u32).to_ne_bytes())?;
    for i in items {
        put_bytes(w, i)?;
    }
    Ok(())
}

fn get<const N: usize>(r: &mut impl Read) -> std::io::Result<[u8; N]> {
    let mut b = [0; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn get_bytes(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let len = u32::from_ne_bytes(get(r)?) as usize;
    let mut b = vec![0; len];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn get_list(r: &mut impl Read) -> std::io::Result<Vec<Vec<u8>>> {
    let n = u32::from_ne_bytes(get(r)?);
    (0..n).map(|_| get_bytes(r)).collect()
}

fn write_request(w: &mut impl Write, req: &Request) -> std::io::Result<()> {
    put_list(w, req.argv.iter().map(|a| a.as_bytes()))?;
    let env: Vec<Vec<u8>> = req
        .env
        .iter()
        .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
        .collect();
    put_list(w, env.iter().map(Vec::as_slice))?;
    put_bytes(w, &req.stdin)
}

fn read_answer(r: &mut impl Read) -> std::io::Result<Result<Run, String>> {
    if get::<1>(r)? != [1] {
        return Ok(Err(String::from_utf8_lossy(&get_bytes(r)?).into_owned()));
    }
    let status = i32::from_ne_bytes(get(r)?);
    let mut n = [0u64; 6];
    for v in &mut n {
        *v = u64::from_ne_bytes(get(r)?);
    }
    Ok(Ok(Run {
        status,
        elapsed: Duration::from_nanos(n[0]),
        exec_realtime_us: n[1],
        maxrss_kib: n[2] as i64,
        utime: Duration::from_micros(n[3]),
        stime: Duration::from_micros(n[4]),
        floor_kib: n[5] as i64,
        stdout: get_bytes(r)?,
    }))
}

fn write_answer(w: &mut impl Write, run: &Result<Run, String>) -> std::io::Result<()> {
    match run {
        Err(e) => {
            w.write_all(&[0])?;
            put_bytes(w, e.as_bytes())
        }
        Ok(r) => {
            w.write_all(&[1])?;
            w.write_all(&r.status.to_ne_bytes())?;
            for v in [
                r.elapsed.as_nanos() as u64,
                r.exec_realtime_us,
                r.maxrss_kib as u64,
                r.utime.as_micros() as u64,
                r.stime.as_micros() as u64,
                r.floor_kib as u64,
            ] {
                w.write_all(&v.to_ne_bytes())?;
            }
            put_bytes(w, &r.stdout)
        }
    }
}

/// The helper's main loop: one request at a time from stdin until it closes.
#[allow(unsafe_code)] // signal(SIGPIPE): see the SAFETY note
pub fn serve() -> ! {
    // SAFETY: setting a disposition to SIG_DFL. Rust's runtime ignores SIGPIPE, and an
    // ignored signal stays ignored across exec: the plugins get the default, as from a
    // runtime. (The helper itself then dies on a write to a bench that is gone.)
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mut rx = BufReader::new(std::io::stdin().lock());
    let mut tx = BufWriter::new(std::io::stdout().lock());
    let devnull = match std::fs::OpenOptions::new().write(true).open("/dev/null") {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            eprintln!("cni-bench spawn helper: /dev/null: {e}");
            std::process::exit(1)
        }
    };
    loop {
        let argv = match get_list(&mut rx) {
            Ok(a) => a,
            // The bench closed its end (or exited): done.
            Err(_) => std::process::exit(0),
        };
        let (Ok(env), Ok(stdin)) = (get_list(&mut rx), get_bytes(&mut rx)) else {
            std::process::exit(1)
        };
        let answer = fork_exec_wait(argv, env, &stdin, &devnull);
        if write_answer(&mut tx, &answer)
            .and_then(|()| tx.flush())
            .is_err()
        {
            std::process::exit(1)
        }
    }
}

fn cstrings(v: Vec<Vec<u8>>) -> Result<Vec<CString>, String> {
    v.into_iter()
        .map(|s| CString::new(s).map_err(|e| format!("NUL in an argument: {e}")))
        .collect()
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

#[allow(unsafe_code)] // clock_gettime: see the SAFETY note
fn now(clock: libc::clockid_t) -> libc::timespec {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to fill.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t
}

fn ns(t: libc::timespec) -> u64 {
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn tv_us(t: libc::timeval) -> u64 {
    t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64
}

/// Forks a child that runs `argv` with `env` ([`exec_child`]), `stdin` already in its
/// stdin pipe, stderr to /dev/null; reads its stdout to EOF and reaps it.
#[allow(unsafe_code)] // fork/execve/wait4: see the SAFETY notes
fn fork_exec_wait(
    argv: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    stdin: &[u8],
    devnull: &OwnedFd,
) -> Result<Run, String> {
    // Everything the child uses is made before the fork: it allocates nothing.
    let argv = cstrings(argv)?;
    let env = cstrings(env)?;
    let Some(program) = argv.first() else {
        return Err("empty argv".into());
    };
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|s| s.as_ptr()).collect();
    env_p.push(std::ptr::null());

    let (in_r, in_w) = pipe()?;
    if stdin.len() > 65536 {
        // SAFETY: F_SETPIPE_SZ on a pipe we own.
        unsafe { libc::fcntl(in_w.as_raw_fd(), libc::F_SETPIPE_SZ, stdin.len() as i32) };
    }
    std::fs::File::from(in_w)
        .write_all(stdin)
        .map_err(|e| format!("stdin of {}: {e}", program.to_string_lossy()))?;
    let (out_r, out_w) = pipe()?;
    let (st_r, st_w) = pipe()?;
    let fds = [
        in_r.as_raw_fd(),
        out_w.as_raw_fd(),
        devnull.as_raw_fd(),
        st_w.as_raw_fd(),
    ];

    // SAFETY: a plain fork (clone with SIGCHLD only) of this single-threaded process;
    // the child only runs `exec_child` below.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the child; the pointers are the NUL-terminated arrays above.
        unsafe { exec_child(fds, program.as_ptr(), argv_p.as_ptr(), env_p.as_ptr()) }
    }
    let pid = pid as libc::pid_t;
    drop((in_r, out_w, st_w));
    let mut stdout = Vec::new();
    let read_out = std::fs::File::from(out_r).read_to_end(&mut stdout);
    let mut st = Vec::new();
    let read_st = std::fs::File::from(st_r).read_to_end(&mut st);
    let mut status = 0;
    // SAFETY: rusage is plain old data that wait4 fills; `pid` is our unreaped child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let end = ns(now(libc::CLOCK_MONOTONIC));
    if r != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    let name = program.to_string_lossy();
    read_out.map_err(|e| format!("stdout of {name}: {e}"))?;
    read_st.map_err(|e| format!("status pipe of {name}: {e}"))?;
    if st.len() < 24 {
        return Err(format!(
            "{name}: the child failed before exec (status {status:#x})"
        ));
    }
    if st.len() >= 28 {
        let errno = i32::from_ne_bytes([st[24], st[25], st[26], st[27]]);
        return Err(format!(
            "exec {name}: {}",
            std::io::Error::from_raw_os_error(errno)
        ));
    }
    let mono = u64::from_ne_bytes(st[0..8].try_into().unwrap_or_default());
    let real = u64::from_ne_bytes(st[8..16].try_into().unwrap_or_default());
    let floor = u64::from_ne_bytes(st[16..24].try_into().unwrap_or_default());
    Ok(Run {
        status,
        elapsed: Duration::from_nanos(end.saturating_sub(mono)),
        exec_realtime_us: real,
        maxrss_kib: ru.ru_maxrss,
        floor_kib: floor as i64,
        utime: Duration::from_micros(tv_us(ru.ru_utime)),
        stime: Duration::from_micros(tv_us(ru.ru_stime)),
        stdout,
    })
}

/// The forked child: `fds` (stdin, stdout, stderr, status pipe) onto 0, 1, 2, its time
/// stamps (`CLOCK_MONOTONIC` ns, `CLOCK_REALTIME` µs) and its own peak RSS so far (KiB,
/// the floor the exec carries into the program's) on the status pipe, `execve`; when
/// that fails, errno on the status pipe and exit 127.
///
/// Only raw system calls through `libc::syscall`: the fork copied none of the parent's
/// code pages into the child's page tables, so every code page the child runs before the
/// exec faults in (the kernel maps the 64 KiB around it) and counts in the RSS the exec
/// carries into the plugin's `ru_maxrss`. Through glibc's `fork`, `dup2`, `write` and
/// `execve` (and glibc's fork handlers) a debug build's floor was 1,220 KiB, above
/// `/bin/true`'s own peak (~1,050); this way the child touches this function's pages
/// and `syscall`'s: the floor (`cni-bench measure` of a static program that only calls
/// `exit`) is 868 KiB in a debug build, 264 KiB in the `dist` one; `/usr/bin/time`'s is
/// 440–484 KiB.
///
/// # Safety
/// Only in a child just forked from a single-threaded process; `program`, `argv` and
/// `env` are valid NUL-terminated strings and NULL-terminated pointer arrays.
#[allow(unsafe_code)] // raw system calls in the forked child: see the SAFETY note
#[inline(never)]
unsafe fn exec_child(
    fds: [libc::c_int; 4],
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    env: *const *const libc::c_char,
) -> ! {
    // SAFETY: the caller's contract; each call gets valid descriptors and pointers to
    // live memory of this function or the caller's (copied by the fork).
    unsafe {
        for (i, fd) in fds[..3].iter().enumerate() {
            if libc::syscall(libc::SYS_dup3, *fd as libc::c_long, i as libc::c_long, 0) < 0 {
                libc::syscall(libc::SYS_exit_group, 126 as libc::c_long);
            }
        }
        let mut t = [libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }; 2];
        libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_REALTIME, &mut t[1]);
        libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &mut t[0]);
        let [mono, real] = t.map(|t| t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::syscall(libc::SYS_getrusage, libc::RUSAGE_SELF, &mut ru);
        let stamps: [u64; 3] = [mono, real / 1000, ru.ru_maxrss as u64];
        libc::syscall(libc::SYS_write, fds[3], stamps.as_ptr(), 24usize);
        let r = libc::syscall(libc::SYS_execve, program, argv, env);
        // glibc's `syscall` returned -1 and set errno (read only on this failure path).
        let errno: i32 = if r < 0 { *libc::__errno_location() } else { 0 };
        libc::syscall(libc::SYS_write, fds[3], &errno as *const i32, 4usize);
        libc::syscall(libc::SYS_exit_group, 127 as libc::c_long);
        std::hint::unreachable_unchecked()
    }
}

/// `name` as given when it has a `/`, else the first executable of that name in `PATH`.
pub fn resolve(name: &OsStr) -> OsString {
    if name.as_bytes().contains(&b'/') {
        return name.to_owned();
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| p.into_os_string())
        .unwrap_or_else(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip() {
        let req = Request {
            argv: vec!["/bin/x".into(), "a b".into()],
            env: vec![("K".into(), "v=1".into())],
            stdin: b"{}".to_vec(),
        };
        let mut buf = Vec::new();
        write_request(&mut buf, &req).unwrap();
        let mut r = buf.as_slice();
        assert_eq!(
            get_list(&mut r).unwrap(),
            vec![b"/bin/x".to_vec(), b"a b".to_vec()]
        );
        assert_eq!(get_list(&mut r).unwrap(), vec![b"K=v=1".to_vec()]);
        assert_eq!(get_bytes(&mut r).unwrap(), b"{}");
        assert!(r.is_empty());

        let run = Run {
            status: 0x100,
            elapsed: Duration::from_nanos(1_234_567),
            exec_realtime_us: 42,
            maxrss_kib: 3000,
            floor_kib: 264,
            utime: Duration::from_micros(7),
            stime: Duration::from_micros(9),
            stdout: b"out".to_vec(),
        };
        let mut buf = Vec::new();
        write_answer(&mut buf, &Ok(run)).unwrap();
        let back = read_answer(&mut buf.as_slice()).unwrap().unwrap();
        assert_eq!(back.status, 0x100);
        assert_eq!(back.elapsed, Duration::from_nanos(1_234_567));
        assert_eq!(
            (back.exec_realtime_us, back.maxrss_kib, back.floor_kib),
            (42, 3000, 264)
        );
        assert_eq!(
            (back.utime, back.stime),
            (Duration::from_micros(7), Duration::from_micros(9))
        );
        assert_eq!(back.stdout, b"out");

        let mut buf = Vec::new();
        write_answer(&mut buf, &Err("nope".into())).unwrap();
        assert_eq!(
            read_answer(&mut buf.as_slice()).unwrap().unwrap_err(),
            "nope"
        );
    }
}
