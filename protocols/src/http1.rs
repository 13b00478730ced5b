//! HTTP/1.x: request and status lines, headers, Content-Length and chunked
//! framing, bodies until close; pipelined requests paired with responses.

use std::collections::VecDeque;

use crate::assemble::{add_header, Config, Half};
use crate::message::{Direction, Message, Part, Protocol};

/// Longest message head buffered.
pub const MAX_HEAD: usize = 32 * 1024;
/// Most requests waiting for their response.
pub const MAX_PENDING: usize = 64;
const MAX_PARSED_HEADERS: usize = 128;

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"PATCH ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
];

/// Does `b` start like an HTTP/1 request?
pub fn is_request_start(b: &[u8]) -> bool {
    METHODS.iter().any(|m| b.starts_with(m))
}

/// Does `b` start like an HTTP/1 response?
pub fn is_response_start(b: &[u8]) -> bool {
    b.starts_with(b"HTTP/1.")
}

#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug)]
enum Chunk {
    /// Reading the size line.
    Size(Vec<u8>),
    Data(u64),
    /// The CRLF after chunk data: bytes left.
    DataEnd(u8),
    /// Trailer lines until an empty one; holds the current line.
    Trailer(Vec<u8>),
}

#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    Body(Body, Box<Half>),
    Lost,
}

#[derive(Debug)]
struct Dir {
    state: State,
}

/// The HTTP/1 decoder of one connection.
#[derive(Debug)]
pub struct Http1 {
    dirs: [Dir; 2],
    /// Requests waiting for a response (head of each, for method/path).
    pending: VecDeque<Message>,
    /// A direction lost sync: requests and responses can no longer be
    /// paired by order (an unknown number of either was missed), so
    /// responses stay unpaired from then on rather than risk a wrong pair.
    pairing_lost: bool,
    cfg: Config,
}

fn di(d: Direction) -> usize {
    match d {
        Direction::ClientToServer => 0,
        Direction::ServerToClient => 1,
    }
}

impl Http1 {
    pub fn new(cfg: Config) -> Self {
        Http1 {
            dirs: [
                Dir {
                    state: State::Head(Vec::new()),
                },
                Dir {
                    state: State::Head(Vec::new()),
                },
            ],
            pending: VecDeque::new(),
            pairing_lost: false,
            cfg,
        }
    }

    pub fn feed(
        &mut self,
        d: Direction,
        chunk: &[u8],
        total_len: u64,
        ts: u64,
        out: &mut Vec<Message>,
    ) {
        let i = di(d);
        let mut data = chunk;
        if matches!(self.dirs[i].state, State::Lost) {
            let ok = if d == Direction::ClientToServer {
                is_request_start(data)
            } else {
                is_response_start(data)
            };
            if !ok {
                return;
            }
            self.dirs[i].state = State::Head(Vec::new());
        }
        // Each pass consumes bytes or changes state; bound it anyway.
        let mut guard = 0usize;
        while !data.is_empty() && guard < 100_000 {
            guard += 1;
            let state = std::mem::replace(&mut self.dirs[i].state, State::Lost);
            let (next, rest) = self.step(d, state, data, ts, out);
            self.dirs[i].state = next;
            data = rest;
            if matches!(self.dirs[i].state, State::Lost) {
                break;
            }
        }
        let gap = total_len.saturating_sub(chunk.len() as u64);
        if gap > 0 {
            let state = std::mem::replace(&mut self.dirs[i].state, State::Lost);
            self.dirs[i].state = self.gap(state, gap, ts, out);
        }
        if matches!(self.dirs[i].state, State::Lost) {
            // Requests queued before a request-side loss still pair (they
            // precede it); after a response-side loss none can.
            self.pairing_lost = true;
            if d == Direction::ServerToClient {
                self.pending.clear();
            }
        }
    }

    fn gap(&mut self, state: State, gap: u64, ts: u64, out: &mut Vec<Message>) -> State {
        let cfg = self.cfg;
        match state {
            State::Body(Body::Length(left), mut half) if gap <= left => {
                half.gap(gap, ts, &cfg, out);
                if gap == left {
                    half.finish(true, ts, &cfg, out);
                    State::Head(Vec::new())
                } else {
                    State::Body(Body::Length(left - gap), half)
                }
            }
            State::Body(Body::Chunked(Chunk::Data(left)), mut half) if gap <= left => {
                half.gap(gap, ts, &cfg, out);
                if gap == left {
                    State::Body(Body::Chunked(Chunk::DataEnd(2)), half)
                } else {
                    State::Body(Body::Chunked(Chunk::Data(left - gap)), half)
                }
            }
            State::Body(Body::UntilClose, mut half) => {
                half.gap(gap, ts, &cfg, out);
                State::Body(Body::UntilClose, half)
            }
            State::Body(_, mut half) => {
                half.lost();
                half.finish(false, ts, &cfg, out);
                State::Lost
            }
            State::Head(_) | State::Lost => State::Lost,
        }
    }

    fn step<'a>(
        &mut self,
        d: Direction,
        state: State,
        data: &'a [u8],
        ts: u64,
        out: &mut Vec<Message>,
    ) -> (State, &'a [u8]) {
        let cfg = self.cfg;
        match state {
            State::Lost => (State::Lost, data),
            State::Head(mut buf) => {
                let before = buf.len();
                let room = MAX_HEAD.saturating_sub(before);
                let take = room.min(data.len());
                buf.extend_from_slice(data.get(..take).unwrap_or_default());
                match self.parse_head(d, &buf, ts) {
                    Ok(Some((head_len, half, body))) => {
                        let used = head_len.saturating_sub(before).min(data.len());
                        let rest = data.get(used..).unwrap_or_default();
                        self.start_body(half, body, rest, ts, out)
                    }
                    Ok(None) if buf.len() < MAX_HEAD => {
                        (State::Head(buf), data.get(take..).unwrap_or_default())
                    }
                    _ => (State::Lost, &[]),
                }
            }
            State::Body(body, mut half) => match body {
                Body::Length(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    half.body(data.get(..take).unwrap_or_default(), ts, &cfg, out);
                    let left = left - take as u64;
                    let rest = data.get(take..).unwrap_or_default();
                    if left == 0 {
                        half.finish(true, ts, &cfg, out);
                        (State::Head(Vec::new()), rest)
                    } else {
                        (State::Body(Body::Length(left), half), rest)
                    }
                }
                Body::UntilClose => {
                    half.body(data, ts, &cfg, out);
                    (State::Body(Body::UntilClose, half), &[])
                }
                Body::Chunked(c) => self.chunked(c, half, data, ts, out),
            },
        }
    }

    fn chunked<'a>(
        &mut self,
        c: Chunk,
        mut half: Box<Half>,
        data: &'a [u8],
        ts: u64,
        out: &mut Vec<Message>,
    ) -> (State, &'a [u8]) {
        let cfg = self.cfg;
        match c {
            Chunk::Size(mut line) => match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    line.extend_from_slice(data.get(..nl).unwrap_or_default());
                    let rest = data.get(nl + 1..).unwrap_or_default();
                    let s = String::from_utf8_lossy(&line);
                    let hex = s.trim().split(';').next().unwrap_or("").trim().to_string();
                    match u64::from_str_radix(&hex, 16) {
                        Ok(0) => (
                            State::Body(Body::Chunked(Chunk::Trailer(Vec::new())), half),
                            rest,
                        ),
                        Ok(n) => (State::Body(Body::Chunked(Chunk::Data(n)), half), rest),
                        Err(_) => {
                            half.lost();
                            half.finish(false, ts, &cfg, out);
                            (State::Lost, &[])
                        }
                    }
                }
                None => {
                    if line.len() + data.len() > 64 {
                        half.lost();
                        half.finish(false, ts, &cfg, out);
                        return (State::Lost, &[]);
                    }
                    line.extend_from_slice(data);
                    (State::Body(Body::Chunked(Chunk::Size(line)), half), &[])
                }
            },
            Chunk::Data(left) => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                half.body(data.get(..take).unwrap_or_default(), ts, &cfg, out);
                let left = left - take as u64;
                let rest = data.get(take..).unwrap_or_default();
                let next = if left == 0 {
                    Chunk::DataEnd(2)
                } else {
                    Chunk::Data(left)
                };
                (State::Body(Body::Chunked(next), half), rest)
            }
            Chunk::DataEnd(n) => {
                // Skip CRLF (tolerate a bare LF).
                let mut rest = data;
                let mut n = n;
                while n > 0 {
                    match rest.first() {
                        Some(b'\r') if n == 2 => {}
                        Some(b'\n') => n = 1,
                        Some(_) | None => break,
                    }
                    rest = rest.get(1..).unwrap_or_default();
                    n -= 1;
                }
                if n == 0 {
                    (
                        State::Body(Body::Chunked(Chunk::Size(Vec::new())), half),
                        rest,
                    )
                } else if rest.is_empty() {
                    (State::Body(Body::Chunked(Chunk::DataEnd(n)), half), rest)
                } else {
                    half.lost();
                    half.finish(false, ts, &cfg, out);
                    (State::Lost, &[])
                }
            }
            Chunk::Trailer(mut line) => match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    line.extend_from_slice(data.get(..nl).unwrap_or_default());
                    let rest = data.get(nl + 1..).unwrap_or_default();
                    if line.iter().all(|b| *b == b'\r') {
                        half.finish(true, ts, &cfg, out);
                        (State::Head(Vec::new()), rest)
                    } else {
                        (
                            State::Body(Body::Chunked(Chunk::Trailer(Vec::new())), half),
                            rest,
                        )
                    }
                }
                None => {
                    if line.len() + data.len() > MAX_HEAD {
                        half.finish(false, ts, &cfg, out);
                        return (State::Lost, &[]);
                    }
                    line.extend_from_slice(data);
                    (State::Body(Body::Chunked(Chunk::Trailer(line)), half), &[])
                }
            },
        }
    }

    fn start_body<'a>(
        &mut self,
        mut half: Box<Half>,
        body: Body,
        rest: &'a [u8],
        ts: u64,
        out: &mut Vec<Message>,
    ) -> (State, &'a [u8]) {
        if half.streaming() && half.msg.part == Part::Response {
            if let Some(m) = half.emit_head(&self.cfg) {
                out.push(m);
            }
        }
        match body {
            Body::Length(0) => {
                half.finish(true, ts, &self.cfg, out);
                (State::Head(Vec::new()), rest)
            }
            b => (State::Body(b, half), rest),
        }
    }

    /// Parses a message head. Ok(None): incomplete; Err: not HTTP/1.
    #[allow(clippy::type_complexity)]
    fn parse_head(
        &mut self,
        d: Direction,
        buf: &[u8],
        ts: u64,
    ) -> Result<Option<(usize, Box<Half>, Body)>, ()> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_PARSED_HEADERS];
        let cfg = self.cfg;
        if d == Direction::ClientToServer {
            let mut req = httparse::Request::new(&mut headers);
            let n = match req.parse(buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(()),
            };
            let mut msg = Message::new(Protocol::Http1, d, Part::Request, ts);
            msg.method = req.method.map(str::to_string);
            msg.path = req.path.map(|p| {
                let p = crate::util::text(p.as_bytes());
                if !cfg.redact {
                    return p;
                }
                let (p, changed) = crate::redact::query(&p);
                if changed {
                    msg.note_redacted("query parameter");
                }
                p
            });
            for h in req.headers.iter() {
                add_header(&mut msg, Some(h.name.as_bytes()), Some(h.value), &cfg);
            }
            let body = framing(&msg, true, false);
            if self.pending.len() >= MAX_PENDING {
                // Too many unanswered requests: order pairing is given up.
                self.pending.clear();
                self.pairing_lost = true;
            }
            if !self.pairing_lost {
                self.pending.push_back(msg.clone());
            }
            Ok(Some((n, Box::new(Half::new(msg, None)), body)))
        } else {
            let mut resp = httparse::Response::new(&mut headers);
            let n = match resp.parse(buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(()),
            };
            let mut msg = Message::new(Protocol::Http1, d, Part::Response, ts);
            msg.status = resp.code;
            for h in resp.headers.iter() {
                add_header(&mut msg, Some(h.name.as_bytes()), Some(h.value), &cfg);
            }
            let informational = msg
                .status
                .is_some_and(|s| (100..200).contains(&s) && s != 101);
            let req = if informational {
                self.pending.front().cloned()
            } else {
                self.pending.pop_front()
            };
            if req.is_none() && self.pairing_lost {
                msg.unknown = true;
            }
            let head_req = req
                .as_ref()
                .is_some_and(|r| r.method.as_deref() == Some("HEAD"));
            let body = if informational {
                Body::Length(0)
            } else {
                framing(&msg, false, head_req)
            };
            Ok(Some((n, Box::new(Half::new(msg, req.as_ref())), body)))
        }
    }

    /// Bytes held by this connection's state.
    pub fn buffered(&self) -> usize {
        let dirs: usize = self
            .dirs
            .iter()
            .map(|d| match &d.state {
                State::Head(b) => b.len(),
                State::Body(Body::Chunked(Chunk::Size(l) | Chunk::Trailer(l)), h) => {
                    l.len() + h.buffered()
                }
                State::Body(_, h) => h.buffered(),
                State::Lost => 0,
            })
            .sum();
        dirs + self
            .pending
            .iter()
            .map(|m| m.headers.len() * 64 + 64)
            .sum::<usize>()
    }

    /// The connection ended: a body until close completes, others are cut.
    pub fn finish(&mut self, ts: u64, out: &mut Vec<Message>) {
        let cfg = self.cfg;
        for dir in self.dirs.iter_mut() {
            let state = std::mem::replace(&mut dir.state, State::Lost);
            if let State::Body(b, half) = state {
                let complete = matches!(b, Body::UntilClose);
                half.finish(complete, ts, &cfg, out);
            }
        }
    }
}

fn framing(msg: &Message, request: bool, head_req: bool) -> Body {
    let status = msg.status.unwrap_or(200);
    if !request && (head_req || status == 204 || status == 304 || (100..200).contains(&status)) {
        return Body::Length(0);
    }
    let te = msg.header("transfer-encoding").map(str::to_ascii_lowercase);
    if te.as_deref().is_some_and(|t| t.contains("chunked")) {
        return Body::Chunked(Chunk::Size(Vec::new()));
    }
    if let Some(cl) = msg.header("content-length") {
        return match cl.trim().parse::<u64>() {
            Ok(n) => Body::Length(n),
            Err(_) if request => Body::Length(0),
            Err(_) => Body::UntilClose,
        };
    }
    if request {
        Body::Length(0)
    } else {
        Body::UntilClose
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(h: &mut Http1, d: Direction, b: &[u8], total: u64) -> Vec<Message> {
        let mut out = Vec::new();
        h.feed(d, b, total, 0, &mut out);
        out
    }

    #[test]
    fn a_lost_request_unpairs_later_responses_instead_of_misplacing_them() {
        let mut h = Http1::new(Config::default());
        let c = Direction::ClientToServer;
        let s = Direction::ServerToClient;
        let a = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(feed(&mut h, c, a, a.len() as u64).len(), 1);
        // Request /b is cut in its head: its end was not captured.
        let b = b"GET /b HTTP/1.1\r\nHo";
        feed(&mut h, c, b, 200);
        let cc = b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            feed(&mut h, c, cc, cc.len() as u64)[0].path.as_deref(),
            Some("/c")
        );
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        // /a was queued before the loss: its response still pairs.
        let r = feed(&mut h, s, ok, ok.len() as u64);
        assert_eq!(r[0].path.as_deref(), Some("/a"));
        // After it, how many requests were missed is unknown: no guess.
        for _ in 0..2 {
            let r = feed(&mut h, s, ok, ok.len() as u64);
            assert_eq!(r[0].path, None);
            assert!(r[0].unknown);
        }
    }

    #[test]
    fn pipelined_requests_pair_in_order() {
        let mut h = Http1::new(Config::default());
        let reqs = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            feed(&mut h, Direction::ClientToServer, reqs, reqs.len() as u64).len(),
            2
        );
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
        let r = feed(&mut h, Direction::ServerToClient, resp, resp.len() as u64);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].summary(), "GET /a → 200");
        // HEAD: no body despite Content-Length.
        assert_eq!(r[1].summary(), "HEAD /b → 200");
        assert!(r[1].complete);
    }
}
