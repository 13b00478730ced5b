//! Replaying a recorded capture through the flow stitcher, as the collector
//! would have stitched it live: for tests and examples of what reads flows
//! (exports, the web page, the CLI's renderers) on real data.
//!
//! A capture is two length-delimited, gzipped protobuf streams: the hops the
//! capture's collector emitted (`<name>.hops.pb.gz`) and the process events
//! (`<name>.procs.pb.gz`, [`StoredEvent`]s). `collector/tests/fixtures/`
//! holds one of the local cluster: `kubectl run mynginx-trace-test
//! --image=nginx`, `kubectl create deployment web --image=nginx --replicas=2`
//! and `kubectl run bad --image=does-not-exist`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use ktrail_proto::v1::{Flow, Hop};
use prost::Message;

use crate::flows::{FlowStitcher, StitchConfig, Update};
use crate::store::StoredEvent;

/// A hop is handed to the stitcher this long after it ended (the hop
/// assembler's quiet time).
const QUIET_NS: u64 = 100_000_000;
/// The stitcher's tick.
const TICK_NS: u64 = 50_000_000;

/// The capture of the local cluster kept in this crate's test fixtures.
pub fn cluster_capture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster-capture")
}

/// Title of the `kubectl run mynginx-trace-test --image=nginx` flow.
pub const KUBECTL_RUN: &str = "kubectl POST pods default/mynginx-trace-test";
/// Title of the `kubectl run bad --image=does-not-exist` flow (a failed pull).
pub const KUBECTL_RUN_BAD: &str = "kubectl POST pods default/bad";

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("decoding {path}: {error}")]
    Decode {
        path: PathBuf,
        error: prost::DecodeError,
    },
}

/// What the stitcher emitted while replaying a capture.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Every update in the order the stitcher emitted it, with the replay
    /// time (ns, the capture's clock).
    pub updates: Vec<(u64, Update)>,
    /// The last version of each hop and flow.
    pub hops: HashMap<String, Hop>,
    pub flows: HashMap<String, Flow>,
}

impl Replayed {
    /// A flow's hops in start order.
    pub fn flow_hops(&self, flow_id: &str) -> Vec<Hop> {
        let mut v: Vec<Hop> = self
            .hops
            .values()
            .filter(|h| h.flow_id == flow_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.start_unix_ns, &a.id).cmp(&(b.start_unix_ns, &b.id)));
        v
    }

    /// The one flow with this title and its hops in start order.
    pub fn flow_titled(&self, title: &str) -> Option<(Flow, Vec<Hop>)> {
        let mut matching = self.flows.values().filter(|f| f.title == title);
        let flow = matching.next()?.clone();
        if matching.next().is_some() {
            return None;
        }
        let hops = self.flow_hops(&flow.id);
        Some((flow, hops))
    }
}

fn gunzip(path: &Path) -> Result<Vec<u8>, ReplayError> {
    let read_err = |error| ReplayError::Read {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .map_err(read_err)?;
    Ok(out)
}

fn decode_all<M: Message + Default>(path: &Path) -> Result<Vec<M>, ReplayError> {
    let bytes = gunzip(path)?;
    let mut buf = &bytes[..];
    let mut out = Vec::new();
    while !buf.is_empty() {
        let m = M::decode_length_delimited(&mut buf).map_err(|error| ReplayError::Decode {
            path: path.to_owned(),
            error,
        })?;
        out.push(m);
    }
    Ok(out)
}

enum Item {
    Hop(Box<Hop>),
    Process(Box<StoredEvent>),
}

/// Replays the capture `base` (`base.hops.pb.gz`, `base.procs.pb.gz`): hops
/// in the order the capture's collector emitted them, process events at their
/// time, ticks every 50 ms, then a minute of ticks so every flow settles or
/// goes idle.
pub fn replay(base: &Path, cfg: StitchConfig) -> Result<Replayed, ReplayError> {
    let with_ext = |ext: &str| {
        let mut p = base.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let mut items: Vec<(u64, Item)> = Vec::new();
    for mut hop in decode_all::<Hop>(&with_ext(".hops.pb.gz"))? {
        // The capture's collector grouped hops its own way; forget that.
        hop.flow_id.clear();
        let at = hop.start_unix_ns + hop.duration_ns + QUIET_NS;
        items.push((at, Item::Hop(Box::new(hop))));
    }
    for ev in decode_all::<StoredEvent>(&with_ext(".procs.pb.gz"))? {
        let at = ev.event.as_ref().map_or(0, |e| e.timestamp_unix_ns);
        items.push((at, Item::Process(Box::new(ev))));
    }
    items.sort_by_key(|(at, _)| *at);

    let mut s = FlowStitcher::new(cfg, 7);
    let mut out = Vec::new();
    let mut r = Replayed::default();
    let mut next_tick = items.first().map_or(0, |(at, _)| *at);
    let mut last = 0;
    for (at, item) in items {
        while next_tick <= at {
            s.tick(next_tick, &mut out);
            r.collect(&mut out, next_tick);
            next_tick += TICK_NS;
        }
        match item {
            Item::Hop(hop) => s.on_hop(*hop, at, &mut out),
            Item::Process(ev) => {
                if let Some(event) = ev.event {
                    s.on_process_event(&ev.node, "agent", &event, at, &mut out);
                }
            }
        }
        r.collect(&mut out, at);
        last = at;
    }
    for i in 0..=(60_000_000_000 / TICK_NS) {
        let t = last + i * TICK_NS;
        s.tick(t, &mut out);
        r.collect(&mut out, t);
    }
    Ok(r)
}

impl Replayed {
    fn collect(&mut self, out: &mut Vec<Update>, at: u64) {
        for u in out.drain(..) {
            match &u {
                Update::Hop(h) => {
                    self.hops.insert(h.id.clone(), (**h).clone());
                }
                Update::Flow(f) => {
                    self.flows.insert(f.id.clone(), (**f).clone());
                }
            }
            self.updates.push((at, u));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_capture_replays_into_its_flows() {
        let r = replay(&cluster_capture(), StitchConfig::default()).expect("replay");
        let (_, hops) = r.flow_titled(KUBECTL_RUN).expect("kubectl run flow");
        assert!(hops.len() >= 12, "{} hops", hops.len());
        assert!(hops
            .windows(2)
            .all(|w| w[0].start_unix_ns <= w[1].start_unix_ns));
        let (bad, _) = r.flow_titled(KUBECTL_RUN_BAD).expect("failed flow");
        assert!(bad.failure.is_some(), "{bad:?}");
    }

    #[test]
    fn a_missing_capture_is_an_error_naming_the_file() {
        let err = replay(Path::new("/nonexistent/capture"), StitchConfig::default())
            .expect_err("no such capture");
        assert!(err.to_string().contains("/nonexistent/capture.hops.pb.gz"));
    }
}
