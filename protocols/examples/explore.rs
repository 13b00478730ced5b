//! Looks at what the decoders make of the captured vectors (a developer's tool, not a
//! test: it prints and asserts nothing).
//!
//! ```text
//! cargo run -p ktrail-protocols --example explore                 # every vector's summaries
//! KTRAIL_VECTOR=etcd-apiserver.txt cargo run … --example explore one
//! KTRAIL_VECTOR=… KTRAIL_MATCH=Txn cargo run … --example explore bodies|json
//! KTRAIL_VECTOR=… KTRAIL_SKIP=40 cargo run … --example explore mid   # as if joined mid-connection
//! cargo run --release -p ktrail-protocols --example explore throughput
//! ```

#[path = "../tests/common/mod.rs"]
mod common;
use common::*;

fn main() {
    match std::env::args().nth(1).as_deref().unwrap_or("all") {
        "all" => explore(),
        "one" => explore_one(),
        "bodies" => explore_bodies(),
        "mid" => explore_mid(),
        "json" => explore_json(),
        "throughput" => throughput(),
        other => {
            eprintln!("unknown view {other:?}: expected all, one, bodies, mid, json or throughput");
            std::process::exit(2);
        }
    }
}

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

fn explore_one() {
    let v = std::env::var("KTRAIL_VECTOR").unwrap_or_default();
    for m in replay(&chunks(&v), AGENT_CAP) {
        println!("{:?} {:?}", m.part, m.summary());
    }
}

fn explore_bodies() {
    let v = std::env::var("KTRAIL_VECTOR").unwrap_or_default();
    let pat = std::env::var("KTRAIL_MATCH").unwrap_or_default();
    for m in replay(&chunks(&v), AGENT_CAP) {
        if m.summary().contains(&pat) {
            println!("{} :: {}", m.summary(), m.body_prefix.escape_ascii());
        }
    }
}

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
