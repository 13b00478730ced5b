//! Issue 8, bad input: the real `ktrail` given bad flags, a bad collector URL,
//! missing certificate files or a collector that is not there exits non-zero
//! with a message naming the problem and what to do.

use std::process::Command;

fn expect_failure(args: &[&str], code: i32, wanted: &str) {
    let out = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_ktrail"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("KTRAIL_COLLECTOR")
        .env_remove("KTRAIL_INSECURE")
        .output()
        .expect("run ktrail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "ktrail {args:?}: exit code\n{stderr}"
    );
    assert!(
        stderr.contains(wanted),
        "ktrail {args:?}: stderr must say {wanted:?}:\n{stderr}"
    );
}

#[test]
fn bad_flags_urls_and_files_are_named() {
    expect_failure(&["--bogus", "status"], 2, "unexpected argument '--bogus'");
    expect_failure(
        &["--insecure", "watch", "--view", "nope"],
        2,
        "invalid value 'nope' for '--view <VIEW>'",
    );
    expect_failure(
        &["--insecure", "show"],
        2,
        "required arguments were not provided",
    );
    expect_failure(
        &["--insecure", "--collector", "http://[bad", "status"],
        1,
        "invalid collector URL \"http://[bad\"",
    );
    expect_failure(
        &[
            "--collector",
            "https://127.0.0.1:1",
            "--tls-cert",
            "/nonexistent/cli.crt",
            "--tls-key",
            "/nonexistent/cli.key",
            "--tls-ca",
            "/nonexistent/ca.crt",
            "status",
        ],
        1,
        "cannot read --tls-ca /nonexistent/ca.crt: No such file or directory",
    );
    // Port 1 on loopback: nothing listens there.
    expect_failure(
        &["--insecure", "--collector", "http://127.0.0.1:1", "status"],
        1,
        "cannot reach the collector at http://127.0.0.1:1",
    );
}
