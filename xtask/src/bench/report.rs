//! Statistics and the BENCHMARKS.md report.

use std::fmt::Write as _;

/// Median, min and max of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// "1.23x (1.10–1.40, n=5)"
    pub fn ratio(&self) -> String {
        format!(
            "{:.2}x ({:.2}–{:.2}, n={})",
            self.median, self.min, self.max, self.n
        )
    }
}

/// The `q` quantile (0..=1) of `values`, nearest rank.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.to_vec();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One row of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub item: String,
    pub name: String,
    pub target: String,
    pub measured: String,
    /// None: reported, no target.
    pub pass: Option<bool>,
}

impl Row {
    pub fn new(item: &str, name: &str, target: &str, measured: String, pass: Option<bool>) -> Self {
        Self {
            item: item.into(),
            name: name.into(),
            target: target.into(),
            measured,
            pass,
        }
    }
}

/// What one benchmark contributes: rows and a section of details.
#[derive(Debug, Default)]
pub struct Section {
    pub title: String,
    pub rows: Vec<Row>,
    pub body: String,
}

pub struct Header {
    pub command: String,
    pub date: String,
    pub machine: Vec<(String, String)>,
    pub versions: Vec<(String, String)>,
    pub duration: String,
    pub short: bool,
}

pub fn render(header: &Header, sections: &[Section], preamble: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# ktrail benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench` (xtask/src/bench/, load generators and the \
         Ingest recorder/replayer in bench/). Do not edit by hand: re-run it.\n"
    );
    let _ = writeln!(out, "- Command: `{}`", header.command);
    let _ = writeln!(out, "- Date: {}", header.date);
    let _ = writeln!(
        out,
        "- Setting: {}; whole run took {}",
        if header.short {
            "`--short` (small counts, few repeats: a smoke run, not figures to quote)"
        } else {
            "full"
        },
        header.duration
    );
    for (k, v) in &header.machine {
        let _ = writeln!(out, "- {k}: {v}");
    }
    for (k, v) in &header.versions {
        let _ = writeln!(out, "- {k}: {v}");
    }
    let _ = writeln!(out, "\n{preamble}\n");
    let _ = writeln!(out, "## Results\n");
    let _ = writeln!(out, "| # | benchmark | target | measured | result |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for s in sections {
        for r in &s.rows {
            let result = match r.pass {
                Some(true) => "pass",
                Some(false) => "**miss**",
                None => "reported",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.item, r.name, r.target, r.measured, result
            );
        }
    }
    let _ = writeln!(out);
    for s in sections {
        let _ = writeln!(out, "## {}\n\n{}\n", s.title, s.body.trim_end());
    }
    out
}
