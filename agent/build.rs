//! Builds the eBPF programs (agent-ebpf) and leaves the object in OUT_DIR, where
//! `src/ebpf.rs` embeds it into the agent binary.
//!
//! The Rust BPF target needs a `core` built for bpfel-unknown-none: Debian's rustc-web
//! ships one (libstd-rust-web-dev-bpf), and bpf-linker links. `cargo xtask setup`
//! installs both.

use std::{env, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

const EBPF_RUSTC: &str = "/usr/bin/rustc";
const EBPF_CARGO: &str = "/usr/bin/cargo";

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("agent crate has no parent dir")?;
    let ebpf_dir = root.join("agent-ebpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    for dir in ["agent-ebpf/src", "agent-common/src"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for file in ["agent-ebpf/Cargo.toml", "agent-ebpf/.cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }

    let missing: Vec<&str> = [EBPF_RUSTC, EBPF_CARGO]
        .into_iter()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the eBPF toolchain is missing ({}): run `cargo xtask setup` (installs Debian's \
             rustc-web, libstd-rust-web-dev-bpf and bpf-linker)",
            missing.join(", ")
        );
    }

    let target_dir = root.join("target").join("ebpf");
    let mut cmd = Command::new(EBPF_CARGO);
    cmd.current_dir(&ebpf_dir)
        .args(["build", "--release", "--target", "bpfel-unknown-none"])
        .arg("--target-dir")
        .arg(&target_dir);
    // Do not leak the host build's settings into the BPF build.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO") || key.starts_with("RUSTC") || key.starts_with("RUSTFLAGS") {
            cmd.env_remove(&key);
        }
    }
    let home = env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = env::var("PATH").unwrap_or_default();
    cmd.env("RUSTC", EBPF_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("PATH", format!("{home}/.cargo/bin:{path}"));
    let status = cmd
        .status()
        .context("running Debian's cargo for the eBPF crate")?;
    if !status.success() {
        bail!(
            "building agent-ebpf failed ({status}); if bpf-linker is missing run `cargo xtask setup`"
        );
    }
    let object = target_dir.join("bpfel-unknown-none/release/ktrail");
    std::fs::copy(&object, out_dir.join("ktrail.bpf.o"))
        .with_context(|| format!("copying {}", object.display()))?;
    Ok(())
}
