//! Writing lines to stdout, flushed one by one, and noticing a closed pipe.

use std::io::{self, Write};

pub struct Out {
    stdout: io::Stdout,
}

impl Out {
    pub fn new() -> Self {
        Self {
            stdout: io::stdout(),
        }
    }

    /// Writes `text` as is (terminal control sequences) and flushes.
    pub fn raw(&mut self, text: &str) -> io::Result<()> {
        let mut lock = self.stdout.lock();
        lock.write_all(text.as_bytes())?;
        lock.flush()
    }

    /// Writes `text` and a newline, and flushes (a reader such as `jq` or a
    /// test sees each line as soon as it is printed).
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        let mut lock = self.stdout.lock();
        lock.write_all(text.as_bytes())?;
        lock.write_all(b"\n")?;
        lock.flush()
    }
}

/// Whether `err` is stdout's reader having gone away (`ktrail watch | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}
