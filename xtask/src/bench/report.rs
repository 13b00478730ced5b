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

/// Written before each section's heading and at the end of each of its table rows (an
/// extra cell, which Markdown ignores), so that an `--only` run can tell which benchmark
/// each part of the existing report came from, and keep the ones it does not run.
fn marker(name: &str, date: &str) -> String {
    format!("<!-- bench:{name} run:{date} -->")
}

/// (benchmark, date of its run) from a marker anywhere in `text`.
fn parse_marker(text: &str) -> Option<(String, String)> {
    let start = text.find("<!-- bench:")? + "<!-- bench:".len();
    let rest = &text[start..];
    let (name, date) = rest[..rest.find(" -->")?].split_once(" run:")?;
    Some((name.to_string(), date.to_string()))
}

/// Owner of a section in a report written before the markers existed.
fn legacy_section_owner(title: &str) -> Option<String> {
    const OWNERS: [(&str, &str); 6] = [
        ("Items 1–3", "overhead"),
        ("Item 4", "throughput"),
        ("Item 5b", "latency"),
        ("Item 6a", "agent-memory"),
        ("Item 5a", "collector"),
        ("Item 6b", "collector-memory"),
    ];
    OWNERS
        .iter()
        .find(|(prefix, _)| title.starts_with(prefix))
        .map(|(_, name)| (*name).to_string())
        .or_else(|| title.strip_suffix(": failed").map(String::from))
}

/// Owner of a results row in a report written before the markers existed.
fn legacy_row_owner(row: &str) -> Option<String> {
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let (item, name) = (*cells.get(1)?, *cells.get(2)?);
    if super::NAMES.contains(&name) {
        return Some(name.to_string());
    }
    let owner = match item {
        "1" | "2" | "3" => "overhead",
        "4" => "throughput",
        "5" if name.contains("watch") => "latency",
        "5" => "collector",
        "6" if name.starts_with("agent") => "agent-memory",
        "6" => "collector-memory",
        _ => return None,
    };
    Some(owner.to_string())
}

/// One benchmark's part of an earlier report.
#[derive(Debug)]
struct KeptPart {
    name: String,
    date: String,
    rows: Vec<String>,
    sections: Vec<String>,
}

/// What an earlier report holds of the benchmarks not run this time.
#[derive(Debug, Default)]
pub struct Kept {
    parts: Vec<KeptPart>,
    notes: Vec<String>,
}

impl Kept {
    /// Takes from `previous` (an earlier BENCHMARKS.md) the rows, sections and notes of
    /// every benchmark for which `keep` is true.
    pub fn from_report(previous: &str, keep: impl Fn(&str) -> bool) -> Self {
        let header_date = previous
            .lines()
            .find_map(|l| l.strip_prefix("- Date: "))
            .unwrap_or("an earlier run")
            .to_string();
        let mut kept = Kept::default();
        // Before "## Results": header lines and the run's notes.
        let (head, body) = previous.split_once("\n## Results\n").unwrap_or(("", ""));
        for note in head.lines().filter_map(|l| l.strip_prefix("- ")) {
            let owner = super::NAMES
                .iter()
                .find(|n| note.starts_with(*n))
                .copied()
                .or_else(|| note.starts_with("recording").then_some("collector"));
            if owner.is_some_and(&keep) {
                kept.notes.push(note.to_string());
            }
        }
        let mut lines = body.lines().peekable();
        // The results table.
        while let Some(line) = lines.next_if(|l| !l.starts_with("## ") && !l.starts_with("<!--")) {
            if !line.starts_with("| ") || line.starts_with("| # |") {
                continue;
            }
            let (owner, date) = match parse_marker(line) {
                Some((name, date)) => (Some(name), date),
                None => (legacy_row_owner(line), header_date.clone()),
            };
            if let Some(owner) = owner.filter(|o| keep(o)) {
                let row = line.split("<!-- bench:").next().unwrap_or(line);
                kept.part(&owner, &date).rows.push(row.to_string());
            }
        }
        // Sections, each after its marker (or, in an old report, known by its heading).
        let mut marker_seen = None;
        while let Some(line) = lines.next() {
            if line.starts_with("<!-- bench:") {
                marker_seen = parse_marker(line);
                continue;
            }
            let Some(title) = line.strip_prefix("## ") else {
                continue;
            };
            let (owner, date) = match marker_seen.take() {
                Some((name, date)) => (Some(name), date),
                None => (legacy_section_owner(title), header_date.clone()),
            };
            let mut text = format!("{line}\n");
            while let Some(l) = lines.next_if(|l| !l.starts_with("## ") && !l.starts_with("<!--")) {
                text.push_str(l);
                text.push('\n');
            }
            if let Some(owner) = owner.filter(|o| keep(o)) {
                kept.part(&owner, &date)
                    .sections
                    .push(text.trim_end().to_string());
            }
        }
        kept
    }

    fn part(&mut self, name: &str, date: &str) -> &mut KeptPart {
        let i = match self.parts.iter().position(|p| p.name == name) {
            Some(i) => i,
            None => {
                self.parts.push(KeptPart {
                    name: name.to_string(),
                    date: date.to_string(),
                    rows: Vec::new(),
                    sections: Vec::new(),
                });
                self.parts.len() - 1
            }
        };
        &mut self.parts[i]
    }

    /// "name (date of its run)" of every benchmark kept.
    pub fn described(&self) -> Vec<String> {
        self.parts
            .iter()
            .map(|p| format!("{} (run {})", p.name, p.date))
            .collect()
    }

    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// The report: this run's sections (benchmark name, section) and the parts kept from
/// an earlier report, in the order of [`super::NAMES`].
pub fn render(
    header: &Header,
    sections: &[(String, Section)],
    kept: &Kept,
    preamble: &str,
) -> String {
    let mut order: Vec<&str> = super::NAMES.to_vec();
    let names = sections.iter().map(|s| s.0.as_str());
    for name in names.chain(kept.parts.iter().map(|p| p.name.as_str())) {
        if !order.contains(&name) {
            order.push(name);
        }
    }
    let kept_part = |name: &str| kept.parts.iter().find(|p| p.name == name);
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
    for name in &order {
        for (_, s) in sections.iter().filter(|s| s.0 == *name) {
            for r in &s.rows {
                let result = match r.pass {
                    Some(true) => "pass",
                    Some(false) => "**miss**",
                    None => "reported",
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |{}",
                    r.item,
                    r.name,
                    r.target,
                    r.measured,
                    result,
                    marker(name, &header.date)
                );
            }
        }
        if let Some(part) = kept_part(name) {
            for row in &part.rows {
                let _ = writeln!(out, "{row}{}", marker(name, &part.date));
            }
        }
    }
    let _ = writeln!(out);
    for name in &order {
        for (_, s) in sections.iter().filter(|s| s.0 == *name) {
            let _ = writeln!(out, "{}", marker(name, &header.date));
            let _ = writeln!(out, "## {}\n\n{}\n", s.title, s.body.trim_end());
        }
        if let Some(part) = kept_part(name) {
            for text in &part.sections {
                let _ = writeln!(out, "{}\n{text}\n", marker(name, &part.date));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(date: &str) -> Header {
        Header {
            command: "cargo xtask bench".into(),
            date: date.into(),
            machine: Vec::new(),
            versions: Vec::new(),
            duration: "1s".into(),
            short: false,
        }
    }

    fn section(title: &str, measured: &str) -> Section {
        Section {
            title: title.into(),
            rows: vec![Row::new("5", title, "t", measured.into(), Some(true))],
            body: format!("body of {title}\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"),
        }
    }

    #[test]
    fn an_only_run_keeps_the_other_benchmarks_parts() {
        let first = render(
            &header("day 1"),
            &[
                ("overhead".into(), section("Items 1–3: o", "x1")),
                ("collector".into(), section("Item 5a: c", "y1")),
            ],
            &Kept::default(),
            "pre",
        );
        let kept = Kept::from_report(&first, |n| n != "collector");
        assert_eq!(kept.described(), ["overhead (run day 1)"]);
        let second = render(
            &header("day 2"),
            &[("collector".into(), section("Item 5a: c", "y2"))],
            &kept,
            "pre",
        );
        assert!(second.contains("| x1 | pass |<!-- bench:overhead run:day 1 -->"));
        assert!(second.contains("| y2 | pass |<!-- bench:collector run:day 2 -->"));
        assert!(!second.contains("y1"));
        assert!(second.contains("## Items 1–3: o\n\nbody of Items 1–3: o\n\n| a | b |"));
        assert_eq!(second.matches("## Item 5a").count(), 1);
        // Overhead comes first in the table and the sections, as in a full run.
        assert!(second.find("x1").unwrap() < second.find("y2").unwrap());
        assert!(second.find("## Items 1–3").unwrap() < second.find("## Item 5a").unwrap());
        // And a third run keeps what the second kept.
        let third = Kept::from_report(&second, |n| n == "overhead");
        assert_eq!(third.described(), ["overhead (run day 1)"]);
    }

    #[test]
    fn a_report_without_markers_is_split_by_its_headings() {
        let old = "# ktrail benchmarks\n\n- Date: old day\n\nNotes from this run:\n\n\
                   - throughput: per-run overhead events 66 and 66\n\
                   - recording for items 5a/6b: 9 events\n\n## Results\n\n\
                   | # | benchmark | target | measured | result |\n|---|---|---|---|---|\n\
                   | 4 | highest rate | ≥ 1 | 5 | pass |\n\
                   | 5 | collector ingest | ≥ 1 | 7 | **miss** |\n\n\
                   ## Item 4: throughput\n\nrates\n\n## Item 5a: collector\n\ningest\n\n\
                   ## Analysis of misses\n\nwhy\n";
        let kept = Kept::from_report(old, |n| n == "throughput");
        assert_eq!(kept.described(), ["throughput (run old day)"]);
        assert_eq!(
            kept.notes(),
            ["throughput: per-run overhead events 66 and 66"]
        );
        let part = &kept.parts[0];
        assert_eq!(part.rows, ["| 4 | highest rate | ≥ 1 | 5 | pass |"]);
        assert_eq!(part.sections, ["## Item 4: throughput\n\nrates"]);
    }
}
