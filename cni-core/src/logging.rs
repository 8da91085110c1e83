//! `tracing` set-up for plugins: stderr by default, or the file the configuration names.
//! Never stdout, which carries the CNI result.
//!
//! The subscriber is installed once; a later [`init`] (e.g. the skeleton's, once the
//! configuration's `logFile`/`logLevel` are known, after a binary's own early
//! `init(None, None)`) redirects the output and changes the level instead of being lost.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Where log lines go: stderr until a file is configured.
static SINK: Mutex<Option<File>> = Mutex::new(None);
/// Set when our subscriber is the global one; lets a later call change the level.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber once. `level` is a `tracing` filter such as `debug`;
/// default `warn` (`CNI_LOG_LEVEL` overrides it). A file that cannot be opened falls back
/// to stderr.
pub fn init(log_file: Option<&Path>, level: Option<&str>) {
    let env_level = std::env::var("CNI_LOG_LEVEL").ok();
    if let Some(path) = log_file {
        if let Ok(file) = OpenOptions::new().create(true).append(true).open(path) {
            if let Ok(mut sink) = SINK.lock() {
                *sink = Some(file);
            }
        }
    }
    let filter = || {
        EnvFilter::try_new(directive(env_level.as_deref(), level))
            .unwrap_or_else(|_| EnvFilter::new("warn"))
    };
    if let Some(handle) = FILTER.get() {
        // Only an explicit level changes the one already in force.
        if env_level.is_some() || level.is_some() {
            let _ = handle.reload(filter());
        }
        return;
    }
    let (layer, handle) = reload::Layer::new(filter());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(|| SinkWriter);
    // try_init: a subscriber set by the host program (or a racing call) is no error.
    if Registry::default().with(layer).with(fmt).try_init().is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// The filter directive: `CNI_LOG_LEVEL`, else the configuration's level, else `warn`;
/// an invalid one falls back to `warn` rather than failing the plugin.
fn directive<'a>(env_level: Option<&'a str>, conf_level: Option<&'a str>) -> &'a str {
    [env_level, conf_level]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|l| !l.is_empty() && EnvFilter::try_new(l).is_ok())
        .unwrap_or("warn")
}

/// Writes one formatted event to the current sink.
struct SinkWriter;

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match SINK.lock() {
            Ok(mut sink) => match sink.as_mut() {
                Some(file) => file.write(buf),
                None => std::io::stderr().write(buf),
            },
            // A poisoned lock only means another thread panicked mid-write.
            Err(_) => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match SINK.lock() {
            Ok(mut sink) => match sink.as_mut() {
                Some(file) => file.flush(),
                None => std::io::stderr().flush(),
            },
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_precedence() {
        assert_eq!(directive(None, None), "warn");
        assert_eq!(directive(None, Some("debug")), "debug");
        assert_eq!(directive(Some("trace"), Some("debug")), "trace");
        assert_eq!(directive(Some(""), Some("info")), "info");
        assert_eq!(directive(Some("x=bogus"), Some("error")), "error");
        assert_eq!(directive(None, Some("[[bad")), "warn");
    }

    /// The only test that touches the global subscriber (tests share the process).
    #[test]
    fn later_init_redirects_to_file_and_changes_level() {
        if std::env::var_os("CNI_LOG_LEVEL").is_some() {
            return; // the environment would override the levels this test sets
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("plugin.log");
        init(None, None);
        // A directory cannot be opened for appending: the sink is left as it was.
        init(Some(dir.path()), None);
        init(Some(&log), Some("info"));
        tracing::info!("first line");
        tracing::debug!("not at info");
        init(None, Some("debug"));
        tracing::debug!("now at debug");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("first line"), "{text}");
        assert!(!text.contains("not at info"), "{text}");
        assert!(text.contains("now at debug"), "{text}");
        // Put things back for whatever else logs in this process.
        *SINK.lock().unwrap() = None;
        init(None, Some("warn"));
    }
}
