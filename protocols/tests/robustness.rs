//! Property tests run in CI: seeded random mutations of the real vectors
//! (bit flips, insertions, deletions, re-chunking, truncation, swapped
//! directions, garbage) and adversarial inputs. Asserts: no panic, the
//! decoder's state stays under its bound, and every output is bounded.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use ktrail_protocols::capture::Chunk;
use ktrail_protocols::{hpack, k8s, pb, ConnectionDecoder, Direction, Message};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const MAX_MESSAGE_JSON: usize = 256 * 1024;

fn check_output(msgs: &[Message]) {
    for m in msgs {
        let j = serde_json::to_string(m).unwrap();
        assert!(j.len() <= MAX_MESSAGE_JSON, "message of {} bytes", j.len());
        assert!(m.body_prefix.len() <= ktrail_protocols::message::BODY_PREFIX_MAX + 64);
        let _ = m.summary();
    }
}

fn run(chunks: &[Chunk]) -> usize {
    let mut d = ConnectionDecoder::new();
    let mut n = 0;
    let mut input = 0u64;
    for (i, c) in chunks.iter().enumerate() {
        let data = &c.data[..c.data.len().min(AGENT_CAP)];
        input += data.len() as u64;
        let out = d.feed(c.dir, data, c.total_len, i as u64);
        check_output(&out);
        n += out.len();
        assert!(d.buffered() <= ConnectionDecoder::MAX_BUFFERED);
    }
    let out = d.finish(0);
    check_output(&out);
    n += out.len();
    // Messages are bounded by the input: at most one per 9 bytes (a frame
    // header) plus one per chunk, plus what closing flushes.
    assert!(
        n as u64 <= input / 9 + chunks.len() as u64 * 17 + 2 * 128 + 16,
        "{n} messages from {input} bytes"
    );
    n
}

fn mutate(rng: &mut Rng, base: &[Chunk]) -> Vec<Chunk> {
    let mut c: Vec<Chunk> = base.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        if c.is_empty() {
            break;
        }
        let i = rng.below(c.len());
        match rng.below(10) {
            0 => {
                // flip bits
                let ch = &mut c[i];
                for _ in 0..1 + rng.below(8) {
                    if !ch.data.is_empty() {
                        let p = rng.below(ch.data.len());
                        ch.data[p] ^= 1 << rng.below(8);
                    }
                }
            }
            1 => {
                // insert bytes
                let at = rng.below(c[i].data.len() + 1);
                let n = 1 + rng.below(32);
                let ins = rng.bytes(n);
                c[i].data.splice(at..at, ins);
            }
            2 => {
                // delete a range
                let len = c[i].data.len();
                if len > 0 {
                    let a = rng.below(len);
                    let b = (a + 1 + rng.below(64)).min(len);
                    c[i].data.drain(a..b);
                }
            }
            3 => {
                // split a chunk
                let len = c[i].data.len();
                if len > 1 {
                    let at = 1 + rng.below(len - 1);
                    let tail = c[i].data.split_off(at);
                    c[i].total_len = c[i].data.len() as u64;
                    let dir = c[i].dir;
                    c.insert(
                        i + 1,
                        Chunk {
                            dir,
                            total_len: tail.len() as u64,
                            data: tail,
                        },
                    );
                }
            }
            4 => {
                // merge with the next chunk of the same direction
                if i + 1 < c.len() && c[i + 1].dir == c[i].dir {
                    let next = c.remove(i + 1);
                    c[i].data.extend_from_slice(&next.data);
                    c[i].total_len = c[i].data.len() as u64;
                }
            }
            5 => {
                // cut: the capture lost the tail of this read/write
                let len = c[i].data.len();
                let keep = rng.below(len + 1);
                c[i].data.truncate(keep);
                c[i].total_len = len as u64 + rng.below(3) as u64 * rng.below(1 << 20) as u64;
            }
            6 => {
                // drop a chunk entirely
                c.remove(i);
            }
            7 => {
                // swap the direction
                c[i].dir = c[i].dir.reverse();
            }
            8 => {
                // duplicate
                let d = c[i].clone();
                c.insert(i, d);
            }
            _ => {
                // garbage chunk
                let n = rng.below(200);
                let dir = if rng.below(2) == 0 {
                    Direction::ClientToServer
                } else {
                    Direction::ServerToClient
                };
                let data = rng.bytes(n);
                c.insert(
                    i,
                    Chunk {
                        dir,
                        total_len: n as u64 + rng.below(10) as u64,
                        data,
                    },
                );
            }
        }
    }
    // Sometimes start mid-connection.
    if rng.below(4) == 0 && !c.is_empty() {
        let skip = rng.below(c.len());
        c.drain(..skip);
    }
    c
}

#[test]
fn mutated_captures_never_panic_and_stay_bounded() {
    let iterations: usize = std::env::var("KTRAIL_PROPTEST_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    for (k, v) in ALL.iter().enumerate() {
        let base = chunks(v);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (k as u64 + 1));
        run(&base);
        for _ in 0..iterations {
            let m = mutate(&mut rng, &base);
            run(&m);
        }
    }
}

#[test]
fn mutated_k8s_bodies_never_panic() {
    let mut rng = Rng(42);
    for f in [
        "k8s/pod-pending.json",
        "k8s/pod-bound.pb",
        "k8s/binding.pb",
        "k8s/secret.pb",
        "k8s/podlist.json",
        "k8s/watch-pods.jsonl",
        "k8s/watch-pods.pb",
    ] {
        let base = file(f);
        for _ in 0..400 {
            let mut b = base.clone();
            for _ in 0..1 + rng.below(6) {
                if b.is_empty() {
                    break;
                }
                let p = rng.below(b.len());
                match rng.below(3) {
                    0 => b[p] ^= 1 << rng.below(8),
                    1 => b[p] = rng.next() as u8,
                    _ => b.truncate(p),
                }
            }
            let objs = k8s::decode_body(&b, true);
            assert!(objs.len() <= ktrail_protocols::message::MAX_OBJECTS);
            let mut w = k8s::WatchStream::new(None);
            for piece in b.chunks(1 + rng.below(100)) {
                assert!(w.feed(piece).len() <= k8s::MAX_EVENTS_PER_FEED);
                if rng.below(10) == 0 {
                    let _ = w.gap(rng.below(5000) as u64);
                }
                assert!(w.buffered() <= k8s::MAX_FRAME);
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(7);
    for _ in 0..2000 {
        let n = rng.below(300);
        let b = rng.bytes(n);
        let _ = k8s::decode_body(&b, rng.below(2) == 0);
        let _ = pb::Fields::lenient(&b).count();
        let mut h = hpack::Decoder::mid_connection();
        let _ = h.decode(&b, false);
        let mut h = hpack::Decoder::new();
        let _ = h.decode(&b, true);
        let mut d = ConnectionDecoder::new();
        let out = d.feed(Direction::ClientToServer, &b, n as u64, 0);
        check_output(&out);
    }
}

fn frame(typ: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, typ, flags];
    f.extend_from_slice(&sid.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn adversarial_http2_stays_bounded() {
    let mut d = ConnectionDecoder::new();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    d.feed(Direction::ClientToServer, preface, preface.len() as u64, 0);
    // 10,000 streams opened and never closed; each sends a large body.
    let mut emitted = 0;
    for sid in (1..20_000u32).step_by(2) {
        // :method GET (static 2), literal :path without indexing, 200 bytes
        let mut block = vec![0x82, 0x04, 100];
        block.extend(std::iter::repeat_n(b'a', 100));
        let mut w = frame(1, 0x4, sid, &block);
        w.extend(frame(0, 0, sid, &[b'{'; 3000]));
        emitted += d
            .feed(Direction::ClientToServer, &w, w.len() as u64 + 1_000_000, 0)
            .len();
        assert!(
            d.buffered() <= 4 * 1024 * 1024,
            "{} bytes held",
            d.buffered()
        );
    }
    assert!(emitted > 9000, "evicted streams are emitted as incomplete");
    // A frame claiming 16 MiB, a header block that never ends, and huge
    // HPACK integers and size updates.
    let mut d = ConnectionDecoder::new();
    d.feed(Direction::ClientToServer, preface, preface.len() as u64, 0);
    let mut big = frame(1, 0, 1, &[0x3f, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    big[0] = 0xff;
    for _ in 0..1000 {
        let c = frame(9, 0, 1, &[0x7f; 4000]);
        d.feed(Direction::ClientToServer, &c, c.len() as u64, 0);
        d.feed(Direction::ClientToServer, &big, big.len() as u64, 0);
        assert!(d.buffered() <= 256 * 1024);
    }
}

#[test]
fn adversarial_http1_stays_bounded() {
    let mut d = ConnectionDecoder::new();
    let head = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    d.feed(Direction::ClientToServer, head, head.len() as u64, 0);
    for _ in 0..2000 {
        let c = b"1000\r\n"
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'x', 4096))
            .chain(*b"\r\n")
            .collect::<Vec<u8>>();
        d.feed(Direction::ClientToServer, &c, c.len() as u64, 0);
        assert!(d.buffered() <= 64 * 1024);
    }
    // Many pipelined requests with no response.
    for _ in 0..1000 {
        let r = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        d.feed(Direction::ClientToServer, r, r.len() as u64, 0);
    }
    assert!(d.buffered() <= 64 * 1024);
    // A head that never ends.
    let mut d = ConnectionDecoder::new();
    d.feed(Direction::ClientToServer, b"GET / HTTP/1.1\r\n", 16, 0);
    for _ in 0..1000 {
        d.feed(
            Direction::ClientToServer,
            b"X-A: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n",
            45,
            0,
        );
        assert!(d.buffered() <= 64 * 1024);
    }
}

#[test]
fn vectors_hold_little_state() {
    for v in ALL {
        let mut d = ConnectionDecoder::new();
        for c in chunks(v) {
            d.feed(
                c.dir,
                &c.data[..c.data.len().min(AGENT_CAP)],
                c.total_len,
                0,
            );
            assert!(d.buffered() < 128 * 1024, "{v}: {}", d.buffered());
        }
        let _: Vec<Message> = d.finish(0);
        assert!(
            d.buffered() < 16 * 1024,
            "{v} after finish: {}",
            d.buffered()
        );
    }
}

#[test]
fn mutated_gzip_bodies_never_panic_and_stay_bounded() {
    let gz = file("k8s/podlist.json.gz");
    let mut rng = Rng(99);
    for _ in 0..500 {
        let mut b = gz.clone();
        for _ in 0..1 + rng.below(4) {
            let p = rng.below(b.len());
            b[p] ^= 1 << rng.below(8);
        }
        if rng.below(3) == 0 {
            let n = rng.below(b.len());
            b.truncate(n);
        }
        let mut d = ConnectionDecoder::new();
        let req = b"GET /api/v1/pods HTTP/1.1\r\nHost: a\r\n\r\n";
        d.feed(Direction::ClientToServer, req, req.len() as u64, 0);
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
            gz.len()
        )
        .into_bytes();
        let total = (resp.len() + gz.len()) as u64;
        resp.extend_from_slice(&b);
        let mut out = d.feed(
            Direction::ServerToClient,
            &resp,
            total.max(resp.len() as u64),
            0,
        );
        out.extend(d.finish(0));
        check_output(&out);
    }
}
