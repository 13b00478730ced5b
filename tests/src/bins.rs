//! Locating (and if needed building) the workspace's binaries.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

pub const AGENT_BIN: &str = "ktrail-agent";
pub const COLLECTOR_BIN: &str = "ktrail-collector";
pub const CLI_BIN: &str = "ktrail";
/// The HTTP peer of `src/bin/test_peer.rs`, copied as `kube-apiserver` and `kubelet`.
pub const PEER_BIN: &str = "ktrail-test-peer";

/// The repository root (the workspace's `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests_dir.parent().unwrap_or(tests_dir).to_path_buf()
}

/// `$CARGO_TARGET_DIR` (relative to the workspace root) or `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The cargo that runs us (`$CARGO`), else `cargo` from PATH.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `target/debug/<name>`, running `cargo build --workspace --bins` first if it is missing.
///
/// A binary that exists is used as it is: `cargo xtask test` builds everything before the
/// tests run, so it is current there; when running `cargo test -p ktrail-tests` by hand,
/// build first.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let path = target_dir().join("debug").join(name);
    if !path.exists() {
        build_workspace_bins()?;
    }
    if !path.exists() {
        bail!(
            "{name} not found at {} even after `cargo build --workspace --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// Runs `cargo build --workspace --bins` in the workspace root (once at a time).
pub fn build_workspace_bins() -> Result<()> {
    static BUILD: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    eprintln!("ktrail-tests: building workspace binaries (cargo build --workspace --bins)");
    let status = Command::new(cargo())
        .args(["build", "--workspace", "--bins"])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .status()
        .context("running cargo build --workspace --bins")?;
    if !status.success() {
        bail!("cargo build --workspace --bins failed ({status})");
    }
    Ok(())
}
