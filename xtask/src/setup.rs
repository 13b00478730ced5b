//! `cargo xtask setup`: install what is missing, check what cannot be installed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::ebpf;
use crate::util::{cargo, cargo_bin_dir, elapsed, require_root, run_cmd};

pub const LONG_ABOUT: &str = "\
Install what building and running ktrail needs; idempotent and quick when all is present.

Steps:
  1. Debian packages: the eBPF toolchain (rustc-web, cargo-web, libstd-rust-web-dev-bpf,
     llvm-22-dev, libpolly-22-dev, libzstd-dev, zlib1g-dev) and what the tests and the demo
     run (iproute2, curl, strace), and chromium, in which the web page's test renders the
     page headless. Checked with dpkg-query; `apt-get update` and
     `apt-get install` run only when something is missing.
  2. bpf-linker 0.13 in ~/.cargo/bin, built against Debian's LLVM 22 (takes minutes).
  3. tracefs mounted at /sys/kernel/tracing.
  4. Kernel BTF at /sys/kernel/btf/vmlinux (cannot be installed; needs a kernel built
     with CONFIG_DEBUG_INFO_BTF=y).

Needs root.";

const STEPS: usize = 4;
/// Debian packages the tests need beyond the eBPF toolchain's list: the web
/// page's test (collector/tests/web_page.rs) renders it in headless Chromium.
const TEST_PACKAGES: &[&str] = &["chromium"];
const TRACEFS: &str = "/sys/kernel/tracing";
const BTF: &str = "/sys/kernel/btf/vmlinux";

pub fn run() -> Result<()> {
    require_root("setup")?;
    let start = Instant::now();
    debian_packages(1)?;
    bpf_linker(2)?;
    tracefs(3)?;
    kernel_btf(4)?;
    println!("setup: all {STEPS} steps ok ({})", elapsed(start));
    Ok(())
}

fn step(n: usize, what: &str) -> String {
    format!("[{n}/{STEPS}] {what}:")
}

fn debian_packages(n: usize) -> Result<()> {
    let head = step(n, "Debian packages");
    let wanted: Vec<&str> = ebpf::DEBIAN_PACKAGES
        .iter()
        .chain(TEST_PACKAGES)
        .copied()
        .collect();
    let mut missing = Vec::new();
    for package in &wanted {
        if !installed(package)? {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        println!("{head} {} … already installed", wanted.join(" "));
    } else {
        println!("{head} installing {} …", missing.join(" "));
        let start = Instant::now();
        run_cmd(apt_get().args(["update", "-q"]))?;
        run_cmd(apt_get().args(["install", "-y", "-q"]).args(&missing))?;
        let still: Vec<&str> = missing
            .iter()
            .copied()
            .filter(|p| !installed(p).unwrap_or(false))
            .collect();
        if !still.is_empty() {
            bail!(
                "apt-get reported success but these are not installed: {}",
                still.join(" ")
            );
        }
        println!(
            "{head} installed {} ({})",
            missing.join(" "),
            elapsed(start)
        );
    }
    if !ebpf::bpf_core_present() {
        bail!(
            "{} has no `core` for {} although libstd-rust-web-dev-bpf is installed \
             (looked in `{} --print target-libdir --target {}`)",
            ebpf::DEBIAN_RUSTC,
            ebpf::BPF_TARGET,
            ebpf::DEBIAN_RUSTC,
            ebpf::BPF_TARGET
        );
    }
    Ok(())
}

/// dpkg's view of `package`: true only for state "installed".
fn installed(package: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .stdin(Stdio::null())
        .output()
        .context("running dpkg-query: `cargo xtask setup` supports Debian (bookworm) only")?;
    // Exit status 1 and "no packages found" for a package dpkg has never seen.
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "installed")
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn bpf_linker(n: usize) -> Result<()> {
    let head = step(n, "bpf-linker");
    let bin = cargo_bin_dir().join("bpf-linker");
    if let Some(version) = bpf_linker_version(&bin) {
        println!("{head} {version} already installed ({})", bin.display());
        return Ok(());
    }
    println!(
        "{head} installing into {} with cargo install, against {} (takes several minutes) …",
        bin.display(),
        ebpf::LLVM_PREFIX
    );
    let start = Instant::now();
    let path = std::env::var("PATH").unwrap_or_default();
    let mut install = cargo();
    install
        .args(ebpf::BPF_LINKER_INSTALL_ARGS)
        .envs(ebpf::bpf_linker_install_env(&path));
    run_cmd(&mut install)?;
    let version = bpf_linker_version(&bin).with_context(|| {
        format!(
            "cargo install bpf-linker succeeded but `{} --version` does not run",
            bin.display()
        )
    })?;
    println!("{head} installed {version} ({})", elapsed(start));
    Ok(())
}

/// `bpf-linker --version` output if that binary runs.
fn bpf_linker_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn tracefs(n: usize) -> Result<()> {
    let head = step(n, "tracefs");
    if tracefs_mounted()? {
        println!("{head} mounted at {TRACEFS}");
        return Ok(());
    }
    println!("{head} mounting at {TRACEFS} …");
    run_cmd(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS])).with_context(
        || format!("mounting tracefs at {TRACEFS} (the agent's tracepoints need it)"),
    )?;
    if !tracefs_mounted()? || !Path::new(TRACEFS).join("events").is_dir() {
        bail!("tracefs still not usable at {TRACEFS} after mounting it");
    }
    println!("{head} mounted at {TRACEFS}");
    Ok(())
}

fn tracefs_mounted() -> Result<bool> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    Ok(mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&TRACEFS) && fields.get(2) == Some(&"tracefs")
    }))
}

fn kernel_btf(n: usize) -> Result<()> {
    let head = step(n, "kernel BTF");
    if !Path::new(BTF).exists() {
        bail!(
            "{head} {BTF} is missing: ktrail's eBPF programs need the kernel's BTF type \
             information (a kernel built with CONFIG_DEBUG_INFO_BTF=y). Setup cannot install \
             it; run on a kernel that has it."
        );
    }
    println!("{head} {BTF} present");
    Ok(())
}
