//! Running commands and the small checks the tasks share.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The cargo running xtask (rustup's stable), for userspace builds and `cargo install`.
pub fn cargo() -> Command {
    let mut cmd = Command::new(ktrail_tests::cargo());
    cmd.current_dir(ktrail_tests::workspace_root())
        .env("PATH", path_with_cargo_bin());
    cmd
}

/// `$CARGO_HOME/bin`, by default `~/.cargo/bin`: where `cargo install` puts bpf-linker.
pub fn cargo_bin_dir() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join("bin"),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cargo/bin"),
    }
}

/// PATH with the cargo bin directory in it (first if it was missing), so that the eBPF
/// build finds the bpf-linker setup installed even when cargo was started by full path.
pub fn path_with_cargo_bin() -> OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let bin = cargo_bin_dir();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return path;
    }
    std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path))).unwrap_or(path)
}

/// Runs `cmd` with stdin from /dev/null and inherited output; fails on a non-zero exit.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    println!("$ {shown}");
    let start = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status}) after {}", elapsed(start));
    }
    Ok(())
}

/// `cmd` as a shell-like line (program and arguments, no environment).
pub fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// "12.3s" or "4m05s".
pub fn elapsed(start: Instant) -> String {
    let secs = start.elapsed().as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = secs as u64;
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

/// Fails with a message saying why `task` needs root.
pub fn require_root(task: &str) -> Result<()> {
    if !ktrail_tests::is_root() {
        bail!(
            "`cargo xtask {task}` must run as root: it installs Debian packages, mounts \
             tracefs, creates network namespaces and loads eBPF programs; re-run it as root"
        );
    }
    Ok(())
}
