//! kubectl against the local cluster, for the tests that drive it.

use std::process::{Command, Output};
use std::time::Duration;

use crate::run_with_timeout;

/// The admin kubeconfig `cargo xtask cluster up` writes.
pub const KUBECONFIG: &str = "/var/lib/ktrail-cluster/admin.conf";

/// Runs `cmd` for at most `timeout`; a command that cannot run fails the test.
pub fn run_step(cmd: Command, timeout: Duration) -> Output {
    let shown = format!("{cmd:?}");
    run_with_timeout(cmd, timeout).unwrap_or_else(|e| panic!("{shown}: {e:#}"))
}

/// `kubectl --kubeconfig KUBECONFIG ARGS` on this machine.
pub fn kubectl(args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(KUBECONFIG).args(args);
    run_step(cmd, timeout)
}

/// kubectl that must succeed; returns stdout.
pub fn kubectl_ok(args: &[&str], timeout: Duration) -> String {
    let o = kubectl(args, timeout);
    assert!(
        o.status.success(),
        "kubectl {args:?} failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
