//! `cargo xtask test`: the one test command (README and `.ci/run` run exactly this).

use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util::{cargo, elapsed, require_root, run_cmd};
use crate::{jaeger, setup};

pub const LONG_ABOUT: &str = "\
Run every test of the workspace; exits non-zero if anything fails. This is the test command:
the README and CI (.ci/run) run exactly `cargo xtask test`.

  1. cargo xtask setup (installs what is missing)
  2. Jaeger for the OTLP export test: built from its Go module the first time (about 10
     minutes), then reused from /var/cache/ktrail/jaeger-<version>/
  3. cargo build --workspace --bins (the agent's build also builds its eBPF programs)
  4. cargo test --workspace --exclude ktrail-tests --no-fail-fast
  5. cargo test -p ktrail-tests --no-fail-fast -- --test-threads=1
     integration tests, serially: as root they load eBPF programs for real and create the
     k8s-control/k8s-worker network namespaces; they fail (never skip) without root

Steps 4 and 5 both run even if 4 fails, and every test binary runs even if an earlier
one failed (--no-fail-fast), so one run shows every failure. Needs root.";

pub fn run() -> Result<()> {
    require_root("test")?;
    let start = Instant::now();
    setup::run()?;

    println!("\n==> jaeger (for the OTLP export test)");
    jaeger::ensure()?;

    println!("\n==> build");
    run_cmd(cargo().args(["build", "--workspace", "--bins"]))
        .context("the build failed, so no tests ran")?;

    let suites: [(&str, &[&str]); 2] = [
        (
            "unit and crate tests",
            &[
                "test",
                "--workspace",
                "--exclude",
                "ktrail-tests",
                "--no-fail-fast",
            ],
        ),
        (
            "integration tests (root, eBPF, one at a time)",
            &[
                "test",
                "-p",
                "ktrail-tests",
                "--no-fail-fast",
                "--",
                "--test-threads=1",
            ],
        ),
    ];
    let mut failed = Vec::new();
    for (name, args) in suites {
        println!("\n==> {name}");
        if let Err(e) = run_cmd(cargo().args(args)) {
            eprintln!("{e:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("failed: {} ({} in all)", failed.join(", "), elapsed(start));
    }
    println!("\nall tests passed ({})", elapsed(start));
    Ok(())
}
