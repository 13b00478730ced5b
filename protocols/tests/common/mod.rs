//! Replays the captured vectors through the decoders.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use ktrail_protocols::capture::{self, Chunk};
use ktrail_protocols::{ConnectionDecoder, Message};

/// Every capture in tests/vectors.
pub const ALL: &[&str] = &[
    "h2c-kubectl.txt",
    "http1-kubectl.txt",
    "etcd-apiserver.txt",
    "cri-kubelet.txt",
    "cri-kubelet-run.txt",
    "kubectl-run.txt",
    "kube-scheduler.txt",
    "kubectl-patch-status.txt",
    "kubectl-get-watch.txt",
    "kubectl-delete.txt",
    "apiserver-etcd-pods.txt",
    "late-kubelet-apiserver.txt",
];

/// What the agent captures of one read/write.
pub const AGENT_CAP: usize = 4096;

/// The vectors' directory; `KTRAIL_VECTORS_DIR` points the tests at
/// freshly captured ones (see tests/gen/capture.sh).
pub fn vector_path(name: &str) -> PathBuf {
    match std::env::var_os("KTRAIL_VECTORS_DIR") {
        Some(d) => PathBuf::from(d).join(name),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors")
            .join(name),
    }
}

pub fn chunks(name: &str) -> Vec<Chunk> {
    let text = std::fs::read_to_string(vector_path(name)).unwrap();
    capture::parse(&text).unwrap()
}

pub fn file(name: &str) -> Vec<u8> {
    std::fs::read(vector_path(name)).unwrap()
}

/// Feeds chunks as the agent would see them (each cut to `cap` bytes, with
/// its real length), then closes the connection.
pub fn replay(chunks: &[Chunk], cap: usize) -> Vec<Message> {
    let mut d = ConnectionDecoder::new();
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let data = &c.data[..c.data.len().min(cap)];
        out.extend(d.feed(c.dir, data, c.total_len, i as u64 + 1));
    }
    out.extend(d.finish(chunks.len() as u64 + 1));
    out
}

pub fn summaries(msgs: &[Message]) -> Vec<String> {
    msgs.iter().map(|m| m.summary()).collect()
}
