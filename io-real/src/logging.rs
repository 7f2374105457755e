//! Where the store's log events go in the command-line tools: a `tracing` subscriber
//! that writes to standard error, filtered by `AOF2_LOG`.
//!
//! The core logs every event of its machines to `tracing` (docs/operations.md, "Log
//! events"); an application embedding AOF2 installs its own subscriber instead, or
//! this one.

use std::io::IsTerminal;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// The environment variable of the log filter: comma-separated `target=level`
/// directives and a bare default level, e.g. `warn,aof2::tier2=info`.
pub const ENV_LOG: &str = "AOF2_LOG";

/// The filter when `AOF2_LOG` is unset: warnings and errors of every target.
pub const LOG_FILTER_DEFAULT: &str = "warn";

/// The filter `value` (the value of `AOF2_LOG`, if set) names.
///
/// # Errors
/// The value is empty or is not a list of directives; the message names the variable
/// and the value.
pub fn log_filter(value: Option<&str>) -> Result<Targets, String> {
    let text = value.unwrap_or(LOG_FILTER_DEFAULT);
    if text.trim().is_empty() {
        return Err(format!(
            "environment variable {ENV_LOG} is empty: give a filter such as \
             \"aof2=info\", or unset it for \"{LOG_FILTER_DEFAULT}\""
        ));
    }
    text.parse::<Targets>().map_err(|error| {
        format!(
            "environment variable {ENV_LOG} = {text:?}: {error} (expected directives \
             such as \"warn,aof2::tier2=info\")"
        )
    })
}

/// Installs the process-wide subscriber: one line per event on standard error (coloured
/// only when it is a terminal), filtered
/// by `AOF2_LOG` as `env` reads it (pass [`crate::config::process_env`]).
///
/// # Errors
/// A bad `AOF2_LOG` (see [`log_filter`]), or a subscriber is already installed.
pub fn install_stderr_logging(env: impl Fn(&str) -> Option<String>) -> Result<(), String> {
    let filter = log_filter(env(ENV_LOG).as_deref())?;
    tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter),
        )
        .try_init()
        .map_err(|error| format!("installing the log subscriber: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn unset_means_warnings_of_every_target() {
        let filter = log_filter(None).unwrap();
        assert!(filter.would_enable("aof2::tier2", &Level::WARN));
        assert!(!filter.would_enable("aof2::tier2", &Level::INFO));
    }

    #[test]
    fn directives_pick_levels_per_target() {
        let filter = log_filter(Some("warn,aof2::tier2=info,aof2::stream=debug")).unwrap();
        assert!(filter.would_enable("aof2::tier2", &Level::INFO));
        assert!(!filter.would_enable("aof2::tier1", &Level::INFO));
        assert!(filter.would_enable("aof2::stream", &Level::DEBUG));
        assert!(filter.would_enable("aof2::tier1", &Level::WARN));
    }

    #[test]
    fn a_bad_or_empty_value_is_an_error_naming_the_variable() {
        let error = log_filter(Some("aof2=loud")).unwrap_err();
        assert!(error.contains("AOF2_LOG = \"aof2=loud\""), "{error}");
        let error = log_filter(Some(" ")).unwrap_err();
        assert!(error.contains("AOF2_LOG is empty"), "{error}");
    }
}
