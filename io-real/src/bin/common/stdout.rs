//! Standard output for the command-line tools: a reader that closes the pipe early
//! (`| head`) ends the output quietly instead of a panic, as for any Unix filter.
//! Included by each binary with `#[path]` (a file of its own under `src/bin/` would be
//! taken for another binary).

use std::fmt;
use std::io::Write;

/// Why a command stopped early.
#[derive(Debug)]
pub enum Failure {
    /// What went wrong and where.
    Message(String),
    /// Standard output was closed by its reader: stop writing, not an error.
    BrokenPipe,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Message(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::Message(message.to_owned())
    }
}

/// Writes one line to standard output.
pub fn emit(line: fmt::Arguments<'_>) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}") {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::BrokenPipe),
        Err(error) => Err(Failure::Message(format!(
            "writing to standard output: {error}"
        ))),
    }
}

/// `println!` that stops the command when standard output fails.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::emit(format_args!($($arg)*))?
    };
}
