//! ttrpc, containerd's RPC to its shims over a unix socket: frames of a
//! 10-byte header (length u32 BE, stream id u32 BE, type u8, flags u8) around
//! protobuf `Request {service = 1, method = 2, payload = 3}` and
//! `Response {status = 1 (google.rpc.Status {code = 1, message = 2}),
//! payload = 2}`. The shim's task calls (`containerd.task.v2.Task`) name the
//! task, i.e. the container, in their payload's field 1.

use std::collections::HashMap;

use crate::assemble::Config;
use crate::message::{Direction, Message, Part, Protocol};
use crate::pb::{self, Fields};
use crate::util;

pub const HEADER: usize = 10;
/// ttrpc's own limit on a message.
const MAX_FRAME: usize = 4 << 20;
/// Bytes buffered per direction while a frame completes.
const MAX_BUFFER: usize = 64 * 1024;
/// Requests remembered for their responses.
const MAX_PENDING: usize = 1024;
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;

fn header(b: &[u8]) -> Option<(usize, u32, u8)> {
    let h = b.get(..HEADER)?;
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let stream = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    Some((len, stream, h[8]))
}

/// The first bytes a client writes: a request frame on an odd stream whose
/// payload starts with a dotted service name.
pub fn looks_like_request(chunk: &[u8]) -> bool {
    let Some((len, stream, typ)) = header(chunk) else {
        return false;
    };
    if typ != TYPE_REQUEST || stream % 2 == 0 || len == 0 || len > MAX_FRAME {
        return false;
    }
    let body = &chunk[HEADER..];
    let service = Fields::lenient(body)
        .next()
        .filter(|(n, _)| *n == 1)
        .and_then(|(_, v)| v.bytes());
    service.is_some_and(|s| s.contains(&b'.') && s.iter().all(|c| c.is_ascii_graphic()))
}

#[derive(Debug)]
pub struct Ttrpc {
    cfg: Config,
    /// Per direction: bytes of a frame still incomplete.
    bufs: [Vec<u8>; 2],
    /// A direction lost bytes (a capture cut, a full buffer): it is not
    /// decoded again, never guessed.
    lost: [bool; 2],
    pending: HashMap<u32, (String, String)>,
}

impl Ttrpc {
    pub fn new(cfg: Config) -> Self {
        Ttrpc {
            cfg,
            bufs: [Vec::new(), Vec::new()],
            lost: [false; 2],
            pending: HashMap::new(),
        }
    }

    pub fn buffered(&self) -> usize {
        self.bufs.iter().map(Vec::len).sum()
    }

    pub fn feed(
        &mut self,
        d: Direction,
        chunk: &[u8],
        total_len: u64,
        ts: u64,
        out: &mut Vec<Message>,
    ) {
        let k = usize::from(d == Direction::ServerToClient);
        if self.lost[k] {
            return;
        }
        if total_len > chunk.len() as u64 || self.bufs[k].len() + chunk.len() > MAX_BUFFER {
            self.lost[k] = true;
            self.bufs[k] = Vec::new();
            return;
        }
        self.bufs[k].extend_from_slice(chunk);
        while let Some((len, stream, typ)) = header(&self.bufs[k]) {
            if len > MAX_FRAME {
                self.lost[k] = true;
                self.bufs[k] = Vec::new();
                return;
            }
            if self.bufs[k].len() < HEADER + len {
                break;
            }
            let frame: Vec<u8> = self.bufs[k].drain(..HEADER + len).collect();
            let body = &frame[HEADER..];
            match (d, typ) {
                (Direction::ClientToServer, TYPE_REQUEST) => {
                    out.push(self.request(stream, body, len, ts))
                }
                (Direction::ServerToClient, TYPE_RESPONSE) => {
                    out.push(self.response(stream, body, len, ts))
                }
                // Stream data frames of streaming calls: not shim task calls.
                _ => {}
            }
        }
    }

    fn request(&mut self, stream: u32, body: &[u8], len: usize, ts: u64) -> Message {
        let service = pb::get_str(body, 1).unwrap_or_default();
        let method = pb::get_str(body, 2).unwrap_or_default();
        let payload = Fields::lenient(body)
            .find(|(n, _)| *n == 3)
            .and_then(|(_, v)| v.bytes())
            .unwrap_or_default();
        // Task calls name the task (the container) first.
        let task = pb::get_str(payload, 1).filter(|id| {
            !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic())
        });
        if self.pending.len() >= MAX_PENDING {
            self.pending.clear();
        }
        self.pending
            .insert(stream, (service.clone(), method.clone()));
        let mut m = self.message(Part::Request, Direction::ClientToServer, stream, len, ts);
        m.path = Some(format!("/{service}/{method}"));
        m.grpc_service = Some(service);
        m.grpc_method = Some(method);
        m.task_id = task;
        m.body_prefix = payload
            .get(..self.cfg.body_prefix.min(payload.len()))
            .unwrap_or_default()
            .to_vec();
        m
    }

    fn response(&mut self, stream: u32, body: &[u8], len: usize, ts: u64) -> Message {
        let status = Fields::lenient(body)
            .find(|(n, _)| *n == 1)
            .and_then(|(_, v)| v.bytes());
        let mut m = self.message(Part::Response, Direction::ServerToClient, stream, len, ts);
        m.grpc_status = Some(status.and_then(|s| pb::get_varint(s, 1)).unwrap_or(0) as u32);
        m.grpc_message = status
            .and_then(|s| pb::get_str(s, 2))
            .filter(|s| !s.is_empty())
            .map(|s| util::text(s.as_bytes()));
        if let Some((service, method)) = self.pending.remove(&stream) {
            m.path = Some(format!("/{service}/{method}"));
            m.grpc_service = Some(service);
            m.grpc_method = Some(method);
        }
        m
    }

    fn message(&self, part: Part, d: Direction, stream: u32, len: usize, ts: u64) -> Message {
        let mut m = Message::new(Protocol::Ttrpc, d, part, ts);
        m.stream_id = Some(stream);
        m.body_len = len as u64;
        m.complete = true;
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(buf: &mut Vec<u8>, n: u8, b: &[u8]) {
        buf.push(n << 3 | 2);
        buf.push(b.len() as u8);
        buf.extend_from_slice(b);
    }

    fn frame(stream: u32, typ: u8, body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(&[typ, 0]);
        f.extend_from_slice(body);
        f
    }

    /// containerd asking a shim to start a task, and the shim's answer (the
    /// shapes of containerd's ttrpc: service, method, StartRequest {id = 1}).
    fn start_call(id: &str) -> (Vec<u8>, Vec<u8>) {
        let mut payload = Vec::new();
        field(&mut payload, 1, id.as_bytes());
        let mut req = Vec::new();
        field(&mut req, 1, b"containerd.task.v2.Task");
        field(&mut req, 2, b"Start");
        field(&mut req, 3, &payload);
        let mut resp = Vec::new();
        field(&mut resp, 1, &[]);
        field(&mut resp, 2, &[8, 0x92, 0x03]);
        (frame(3, TYPE_REQUEST, &req), frame(3, TYPE_RESPONSE, &resp))
    }

    #[test]
    fn a_task_call_decodes_with_its_task_and_status() {
        let (req, resp) = start_call("5f9dbf640485");
        assert!(looks_like_request(&req));
        let mut t = Ttrpc::new(Config::default());
        let mut out = Vec::new();
        // Split across reads, as a socket may deliver it.
        t.feed(Direction::ClientToServer, &req[..7], 7, 1, &mut out);
        assert!(out.is_empty());
        t.feed(
            Direction::ClientToServer,
            &req[7..],
            (req.len() - 7) as u64,
            2,
            &mut out,
        );
        t.feed(
            Direction::ServerToClient,
            &resp,
            resp.len() as u64,
            3,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].summary(),
            "ttrpc /containerd.task.v2.Task/Start 5f9dbf640485"
        );
        assert_eq!(
            out[1].summary(),
            "ttrpc /containerd.task.v2.Task/Start → OK"
        );
        assert_eq!(t.buffered(), 0);
    }

    #[test]
    fn a_cut_capture_stops_decoding_that_direction() {
        let (req, _) = start_call("x");
        let mut t = Ttrpc::new(Config::default());
        let mut out = Vec::new();
        t.feed(Direction::ClientToServer, &req[..12], 4096, 1, &mut out);
        t.feed(
            Direction::ClientToServer,
            &req,
            req.len() as u64,
            2,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn other_bytes_are_not_ttrpc() {
        assert!(!looks_like_request(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!looks_like_request(&[
            0, 0, 0, 4, 0, 0, 0, 2, 1, 0, 1, 2, 3, 4
        ]));
        assert!(!looks_like_request(&[]));
    }
}
