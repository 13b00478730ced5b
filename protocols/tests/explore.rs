mod common;
use common::*;

#[test]
#[ignore = "prints what the vectors decode to"]
fn explore() {
    for v in [
        "h2c-kubectl.txt",
        "http1-kubectl.txt",
        "etcd-apiserver.txt",
        "cri-kubelet.txt",
        "cri-kubelet-run.txt",
    ] {
        println!("== {v}");
        for m in replay(&chunks(v), AGENT_CAP) {
            println!("{:?}", m.summary());
        }
    }
}

#[test]
#[ignore = "prints what a named vector decodes to (KTRAIL_VECTOR)"]
fn explore_one() {
    let v = std::env::var("KTRAIL_VECTOR").unwrap_or_default();
    for m in replay(&chunks(&v), AGENT_CAP) {
        println!("{:?} {:?}", m.part, m.summary());
    }
}

#[test]
#[ignore = "prints bodies of one vector (KTRAIL_VECTOR, KTRAIL_MATCH)"]
fn explore_bodies() {
    let v = std::env::var("KTRAIL_VECTOR").unwrap_or_default();
    let pat = std::env::var("KTRAIL_MATCH").unwrap_or_default();
    for m in replay(&chunks(&v), AGENT_CAP) {
        if m.summary().contains(&pat) {
            println!("{} :: {}", m.summary(), m.body_prefix.escape_ascii());
        }
    }
}

#[test]
#[ignore = "prints a vector decoded from chunk KTRAIL_SKIP on (mid-connection)"]
fn explore_mid() {
    let v = std::env::var("KTRAIL_VECTOR").unwrap_or_default();
    let skip: usize = std::env::var("KTRAIL_SKIP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let c = chunks(&v);
    for m in replay(&c[skip.min(c.len())..], AGENT_CAP) {
        println!("{:?} unknown={} {:?}", m.part, m.unknown, m.summary());
    }
}

#[test]
#[ignore = "prints messages of a vector as JSON (KTRAIL_VECTOR, KTRAIL_MATCH)"]
fn explore_json() {
    let v = std::env::var("KTRAIL_VECTOR").unwrap_or_default();
    let pat = std::env::var("KTRAIL_MATCH").unwrap_or_default();
    for m in replay(&chunks(&v), AGENT_CAP) {
        if m.summary().contains(&pat) {
            let mut m = m.clone();
            m.body_prefix.truncate(80);
            println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
        }
    }
}

#[test]
#[ignore = "throughput of the decoders on all vectors (run with --release)"]
fn throughput() {
    let all: Vec<_> = ALL.iter().map(|v| chunks(v)).collect();
    let bytes: usize = all
        .iter()
        .flat_map(|c| c.iter().map(|ch| ch.data.len().min(AGENT_CAP)))
        .sum();
    let start = std::time::Instant::now();
    let rounds = 200;
    let mut n = 0;
    for _ in 0..rounds {
        for c in &all {
            n += replay(c, AGENT_CAP).len();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:.1} MB/s, {:.0} messages/s ({} bytes x {rounds})",
        (bytes * rounds) as f64 / secs / 1e6,
        n as f64 / secs,
        bytes
    );
}
