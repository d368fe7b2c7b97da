//! Logging set-up: journald under systemd, stderr otherwise; text or JSON lines.

use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::{LogFormat, LogTarget};

/// The socket journald listens on for native protocol messages.
pub const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

/// Where `auto` sends logs: journald when its socket exists and we are not talking to
/// a person on a terminal (a service, or a pod with the socket mounted); else stderr.
pub fn resolve_target(target: LogTarget) -> LogTarget {
    match target {
        LogTarget::Auto => {
            let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some()
                || std::env::var_os("INVOCATION_ID").is_some();
            if Path::new(JOURNALD_SOCKET).exists()
                && (under_systemd || !std::io::stderr().is_terminal())
            {
                LogTarget::Journald
            } else {
                LogTarget::Stderr
            }
        }
        t => t,
    }
}

/// Installs the global subscriber. A bad filter or an unreachable journald falls back
/// to stderr with a warning, never to silence.
pub fn init(level: &str, format: LogFormat, target: LogTarget) {
    let (filter, bad_filter) = match EnvFilter::try_new(level) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(format!("{level:?}: {e}"))),
    };
    let mut journald_error = None;
    let target = resolve_target(target);
    let layer: Box<dyn Layer<_> + Send + Sync> = match target {
        LogTarget::Journald => match tracing_journald::layer() {
            Ok(l) => Box::new(
                l.with_syslog_identifier("vmrecover".into())
                    .with_field_prefix(None),
            ),
            Err(e) => {
                journald_error = Some(e.to_string());
                stderr_layer(format)
            }
        },
        _ => stderr_layer(format),
    };
    // The audit trail goes to journald whenever its socket exists, whatever the log
    // target, with its fields as journal fields (OBJECT=, ACTION=, …). When all logs
    // go to journald already, the main layer carries it.
    let audit = (target != LogTarget::Journald && Path::new(JOURNALD_SOCKET).exists())
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|l| {
            l.with_syslog_identifier("vmrecover".into())
                .with_field_prefix(None)
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target(crate::recovery::AUDIT_TARGET, tracing::Level::INFO),
                )
        });
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .with(audit)
        .try_init();
    if let Some(e) = bad_filter {
        tracing::warn!("ignoring log filter {e}; using info");
    }
    if let Some(e) = journald_error {
        tracing::warn!("journald is not reachable ({e}); logging to stderr");
    }
}

fn stderr_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => Box::new(base.with_ansi(std::io::stderr().is_terminal())),
        LogFormat::Json => Box::new(base.json().flatten_event(true)),
    }
}
