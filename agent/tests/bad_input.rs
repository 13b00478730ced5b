//! Issue 8, bad input: the real `ktrail-agent` given bad flags, missing files,
//! too few capabilities, or a kernel whose BTF or tracefs it cannot find exits
//! non-zero with a message naming what is wrong. Run as root (`cargo xtask
//! test`): the capability and kernel cases take them away from a root process
//! (setpriv, a private mount namespace) and fail, never skip, without root.

use std::process::Command;

/// A collector address no one listens on: every case must fail before it matters.
const NOWHERE: [&str; 5] = [
    "--insecure",
    "--collector",
    "http://127.0.0.1:1",
    "--metrics-addr",
    "127.0.0.1:0",
];

/// Runs `cmd` under `timeout 60` (an agent that does not fail would run
/// forever); returns its exit code and stderr.
fn run(mut cmd: Command) -> (i32, String) {
    let out = cmd
        .env_remove("RUST_BACKTRACE")
        .env_remove("KTRAIL_COLLECTOR")
        .output()
        .expect("run ktrail-agent");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(
        code, 124,
        "ktrail-agent did not fail within 60 s:\n{stderr}"
    );
    (code, stderr)
}

fn agent(wrapper: &[&str], args: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .args(wrapper)
        .arg(env!("CARGO_BIN_EXE_ktrail-agent"))
        .args(args);
    cmd
}

fn expect_failure(wrapper: &[&str], args: &[&str], code: i32, wanted: &[&str]) {
    let (got, stderr) = run(agent(wrapper, args));
    assert_eq!(got, code, "ktrail-agent {args:?}: exit code\n{stderr}");
    for w in wanted {
        assert!(
            stderr.contains(w),
            "ktrail-agent {args:?}: stderr must name {w:?}:\n{stderr}"
        );
    }
}

fn with_nowhere<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    NOWHERE.iter().chain(extra).copied().collect()
}

#[test]
fn bad_flags_are_named() {
    expect_failure(&[], &["--bogus"], 2, &["unexpected argument '--bogus'"]);
    expect_failure(
        &[],
        &["--insecure", "--metrics-addr", "nope"],
        2,
        &["invalid value 'nope' for '--metrics-addr"],
    );
    expect_failure(
        &[],
        &with_nowhere(&["--scope", "mine"]),
        1,
        &["--scope \"mine\": expected `auto`, `all` or a network-namespace inode"],
    );
    expect_failure(
        &[],
        &[
            "--collector",
            "https://127.0.0.1:1",
            "--tls-cert",
            "/nonexistent/agent.crt",
        ],
        1,
        &["mutual TLS with the collector needs --tls-key"],
    );
    expect_failure(
        &[],
        &[
            "--collector",
            "https://127.0.0.1:1",
            "--tls-cert",
            "/nonexistent/agent.crt",
            "--tls-key",
            "/nonexistent/agent.key",
            "--tls-ca",
            "/nonexistent/ca.crt",
        ],
        1,
        &["cannot read --tls-ca /nonexistent/ca.crt: No such file or directory"],
    );
}

/// Root without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN in its bounding set (so
/// not in its effective set after exec): loading fails and the error lists them.
#[test]
fn missing_capabilities_are_named() {
    expect_failure(
        &[
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-bpf,-perfmon,-sys_admin",
        ],
        &NOWHERE,
        1,
        &[
            "loading the eBPF programs failed",
            "this process lacks CAP_BPF",
            "CAP_PERFMON",
            "CAP_SYS_ADMIN",
        ],
    );
}

/// Runs the agent in a private mount namespace after `mount_args` (a mount
/// that hides a piece of the kernel from it).
fn hidden(mount_args: &str, wanted: &[&str]) {
    let script = format!(
        "mount --make-rprivate / && mount {mount_args} && exec \"$0\" {}",
        NOWHERE.join(" ")
    );
    expect_failure(&["unshare", "--mount", "sh", "-c", &script], &[], 1, wanted);
}

/// A kernel without BTF, as the agent sees it: an empty tmpfs over
/// /sys/kernel/btf.
#[test]
fn a_kernel_without_btf_is_named() {
    hidden(
        "-t tmpfs none /sys/kernel/btf",
        &[
            "cannot read /sys/kernel/btf/vmlinux: No such file or directory",
            "CONFIG_DEBUG_INFO_BTF",
        ],
    );
}

/// No tracefs and nowhere to mount it: /sys/kernel replaced by an empty
/// read-only tmpfs.
#[test]
fn a_kernel_without_tracefs_is_named() {
    hidden(
        "-t tmpfs -o ro none /sys/kernel",
        &[
            "tracefs is not mounted and mounting it at /sys/kernel/tracing failed",
            "mount -t tracefs nodev /sys/kernel/tracing",
        ],
    );
}
