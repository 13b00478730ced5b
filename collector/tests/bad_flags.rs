//! Issue 8, bad input: the real `ktrail-collector` given bad flags or files
//! exits non-zero with a message naming the flag or file and the problem.

use std::process::Command;

/// Exit code and stderr of `ktrail-collector ARGS` (under `timeout 60`: a
/// collector that starts would serve forever).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_ktrail-collector"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run ktrail-collector");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(code, 124, "ktrail-collector {args:?} started:\n{stderr}");
    (code, stderr)
}

fn expect_failure(args: &[&str], code: i32, wanted: &str) -> String {
    let (got, stderr) = run(args);
    assert_eq!(got, code, "ktrail-collector {args:?}: exit code\n{stderr}");
    assert!(
        stderr.contains(wanted),
        "ktrail-collector {args:?}: stderr must say {wanted:?}:\n{stderr}"
    );
    stderr
}

#[test]
fn bad_flags_and_files_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    expect_failure(&["--bogus"], 2, "unexpected argument '--bogus'");
    expect_failure(
        &["--insecure", "--data-dir", data, "--listen", "nope"],
        2,
        "invalid value 'nope' for '--listen",
    );
    expect_failure(
        &["--data-dir", data, "--listen", "127.0.0.1:0"],
        2,
        "--tls-cert <FILE>",
    );
    // 192.0.2.0/24 is TEST-NET-1: never an address of this host.
    expect_failure(
        &[
            "--insecure",
            "--data-dir",
            data,
            "--listen",
            "192.0.2.1:7700",
        ],
        1,
        "cannot listen on 192.0.2.1:7700: Cannot assign requested address",
    );
    expect_failure(
        &[
            "--insecure",
            "--data-dir",
            "/proc/ktrail-nope",
            "--listen",
            "127.0.0.1:0",
        ],
        1,
        "cannot create data directory /proc/ktrail-nope",
    );
    let tls = expect_failure(
        &[
            "--data-dir",
            data,
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/collector.crt",
            "--tls-key",
            "/nonexistent/collector.key",
            "--tls-ca",
            "/nonexistent/ca.crt",
        ],
        1,
        "cannot read CA (--tls-ca) /nonexistent/ca.crt: No such file or directory",
    );
    assert_eq!(
        tls.matches("cannot read CA").count(),
        1,
        "the cause once, not repeated by its wrapper:\n{tls}"
    );
}
