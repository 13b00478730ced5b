//! A scratch directory per test (logs, copied binaries, collector data).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// A directory removed on drop — unless the thread is panicking (a failing test) or
/// [`WorkDir::keep`] was called, in which case its path is printed so the logs can be read.
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// A fresh directory `$TMPDIR/ktrail-tests/<prefix>-<pid>-<nanos>`.
    pub fn new(prefix: &str) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir()
            .join("ktrail-tests")
            .join(format!("{prefix}-{}-{nanos}", std::process::id()));
        Self::at(path)
    }

    /// Exactly `path`, emptied first if it exists (the demo uses a fixed place).
    pub fn at(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing old {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leave the directory in place on drop.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep || std::thread::panicking() {
            eprintln!("ktrail-tests: files kept in {}", self.path.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!(
                "ktrail-tests: could not remove {}: {e}",
                self.path.display()
            );
        }
    }
}
