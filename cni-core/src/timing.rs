//! Phase timing for the breakdown of an ADD/DEL (`scripts/breakdown.sh`, `cni-bench
//! breakdown`): wall and CPU time of the named phases of one invocation.
//!
//! Off unless `CNI_TRACE` is set; then every finished phase appends one JSON line
//! `{"pid","phase","start_us","wall_us","cpu_us"}` to the file `CNI_TRACE` names (an
//! absolute path), or to stderr when it is `1` or `stderr`. Never stdout, which carries
//! the CNI result. `start_us` is `CLOCK_REALTIME` in microseconds so that a harness can
//! place the phases against the time it spawned the process; `cpu_us` is the CPU time of
//! the calling thread (`CLOCK_THREAD_CPUTIME_ID`) during the phase.
//!
//! When tracing is off, [`phase`] costs one read of a cached flag.

use std::io::Write;
use std::sync::OnceLock;

enum Sink {
    Off,
    Stderr,
    File(std::sync::Mutex<std::fs::File>),
}

fn sink() -> &'static Sink {
    static SINK: OnceLock<Sink> = OnceLock::new();
    SINK.get_or_init(|| match std::env::var("CNI_TRACE") {
        Err(_) => Sink::Off,
        Ok(v) if v.is_empty() || v == "0" => Sink::Off,
        Ok(v) if v == "1" || v == "stderr" => Sink::Stderr,
        Ok(v) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(v)
        {
            Ok(f) => Sink::File(std::sync::Mutex::new(f)),
            Err(_) => Sink::Stderr,
        },
    })
}

/// Whether `CNI_TRACE` is on.
pub(crate) fn enabled() -> bool {
    !matches!(sink(), Sink::Off)
}

fn clock_us(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// A running phase; its line is written when it is dropped.
#[must_use = "a phase is timed until the guard is dropped"]
pub struct Phase {
    name: &'static str,
    start: Option<(u64, u64, std::time::Instant)>,
}

/// Starts timing `name` (no-op when tracing is off).
pub fn phase(name: &'static str) -> Phase {
    let start = enabled().then(|| {
        (
            clock_us(libc::CLOCK_REALTIME),
            clock_us(libc::CLOCK_THREAD_CPUTIME_ID),
            std::time::Instant::now(),
        )
    });
    Phase { name, start }
}

/// Records an instant (a zero-length phase), e.g. `main` entered.
pub fn mark(name: &'static str) {
    drop(phase(name));
}

impl Drop for Phase {
    fn drop(&mut self) {
        let Some((start_us, cpu0, t0)) = self.start else {
            return;
        };
        let wall_us = t0.elapsed().as_micros() as u64;
        let cpu_us = clock_us(libc::CLOCK_THREAD_CPUTIME_ID).saturating_sub(cpu0);
        let line = format!(
            "{{\"pid\":{},\"phase\":\"{}\",\"start_us\":{start_us},\"wall_us\":{wall_us},\"cpu_us\":{cpu_us}}}\n",
            std::process::id(),
            self.name,
        );
        // One write per line (O_APPEND): lines of concurrent processes do not interleave.
        match sink() {
            Sink::Off => {}
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            Sink::File(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
        }
    }
}
