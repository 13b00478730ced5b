//! The eBPF toolchain, in one place.
//!
//! `agent/build.rs` builds `agent-ebpf/` for `bpfel-unknown-none` with Debian's
//! `/usr/bin/cargo` + `/usr/bin/rustc` (package rustc-web, whose
//! libstd-rust-web-dev-bpf ships a prebuilt `core` for that target, so no `-Z build-std`
//! and no rust-src are needed), linked by `bpf-linker` built against Debian's LLVM 22.
//! Userspace builds with the rustup stable toolchain. `cargo xtask setup` installs the
//! pieces listed here.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The kernel-side target.
pub const BPF_TARGET: &str = "bpfel-unknown-none";
/// Debian's rustc (rustc-web), which has `core` for [`BPF_TARGET`].
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// The LLVM that rustc-web uses and bpf-linker links against.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// `cargo install bpf-linker` arguments: the version that is known to work here, against
/// the system LLVM 22 instead of a downloaded one.
pub const BPF_LINKER_INSTALL_ARGS: &[&str] = &[
    "install",
    "bpf-linker",
    "--version",
    "^0.13",
    "--no-default-features",
    "--features",
    "llvm-22",
];
/// Environment for that install: the LLVM prefix for llvm-sys, and `LLVM_PREFIX/bin` first
/// on PATH for its `llvm-config` (Debian does not put it on PATH; without it the build
/// fails with "unable to find library -lLLVM").
pub fn bpf_linker_install_env(path: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PATH", format!("{LLVM_PREFIX}/bin:{path}")),
        ("LLVM_PREFIX", LLVM_PREFIX.to_string()),
        ("LLVM_SYS_221_PREFIX", LLVM_PREFIX.to_string()),
    ]
}

/// Debian packages: the eBPF toolchain, then what the tests and the demo run.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "rustc-web",
    // /usr/bin/cargo, which agent/build.rs runs; rustc-web only recommends it.
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "curl",
    "strace",
];

/// Where Debian's rustc keeps the libraries for [`BPF_TARGET`], if it runs.
pub fn bpf_core_dir() -> Option<PathBuf> {
    let out = Command::new(DEBIAN_RUSTC)
        .args(["--print", "target-libdir", "--target", BPF_TARGET])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// Whether Debian's rustc can build for [`BPF_TARGET`] (its `libcore-*.rlib` is there).
pub fn bpf_core_present() -> bool {
    let Some(dir) = bpf_core_dir() else {
        return false;
    };
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libcore-") && name.ends_with(".rlib")
        })
    })
}
