//! The benchmark harness (`cargo xtask bench`) runs on its shortest setting and writes a
//! well-formed report. No timing is asserted: the figures depend on the machine.

use std::process::Command;
use std::time::Duration;

use ktrail_tests::{cargo, run_with_timeout, skip_unless_root, workspace_root, WorkDir};

/// The benchmarks and the issue-7 items each covers, as the report's table numbers them
/// (7, end to end, runs on the local cluster: it takes the cluster lock, and brings the
/// cluster up and down again when it is down).
const ITEMS: [&str; 7] = ["1", "2", "3", "4", "5", "6", "7"];

#[test]
fn short_bench_writes_a_well_formed_report() {
    skip_unless_root();
    let dir = WorkDir::new("bench").expect("work dir");
    let out = dir.path().join("BENCHMARKS.md");
    let mut cmd = Command::new(cargo());
    cmd.current_dir(workspace_root())
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "bench",
            "--short",
        ])
        .arg("--out")
        .arg(&out);
    // The short run takes a few minutes, but its end-to-end part waits for the local
    // cluster's lock, which another test or a soak on this shared machine may hold for
    // a good while.
    let run = run_with_timeout(cmd, Duration::from_secs(2400)).expect("bench runs");
    let log = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        run.status.success(),
        "cargo xtask bench --short failed\n{log}"
    );
    let report = std::fs::read_to_string(&out).expect("the report was written");

    assert!(report.starts_with("# ktrail benchmarks\n"), "{report}");
    for field in [
        "- Command: `cargo xtask bench --short`",
        "- Date: ",
        "- Machine: ",
        "- Kernel: ",
        "- Versions: ",
        "## Results",
        "| # | benchmark | target | measured | result |",
    ] {
        assert!(
            report.contains(field),
            "no {field:?} in the report:\n{report}"
        );
    }

    let rows: Vec<Vec<&str>> = report
        .lines()
        .skip_while(|l| !l.starts_with("| # | benchmark"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        // A row may end with the comment that says which run wrote it.
        .map(|l| l.split("<!--").next().unwrap_or(l))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split(" | ")
                .map(str::trim)
                .collect()
        })
        .collect();
    assert!(
        rows.len() >= 12,
        "expected a row per measured figure:\n{report}"
    );
    for row in &rows {
        assert_eq!(row.len(), 5, "five columns: {row:?}");
        assert!(
            ["pass", "**miss**", "reported"].contains(&row[4]),
            "result column: {row:?}"
        );
        assert!(!row[3].is_empty(), "measured column: {row:?}");
        assert!(
            !row[3].contains("failed") && !row[3].contains("NaN"),
            "a benchmark did not produce a figure: {row:?}\n{report}"
        );
    }
    for item in ITEMS {
        assert!(
            rows.iter().any(|r| r[0] == item),
            "no row for item {item}:\n{report}"
        );
    }
    // Overhead figures are ratios with their spread.
    let ratio_rows = rows.iter().filter(|r| ["1", "2", "3", "7"].contains(&r[0]));
    for row in ratio_rows {
        assert!(
            row[3].contains("x (") && row[3].contains(", n="),
            "ratio with median, min–max and n: {row:?}"
        );
    }
}
