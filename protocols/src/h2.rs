//! HTTP/2 (RFC 9113): frames, per-direction HPACK state, per-stream
//! request/response assembly.

use std::collections::BTreeMap;

use crate::assemble::{add_header, Config, Half};
use crate::hpack;
use crate::message::{Direction, Message, Part, Protocol};
use crate::util;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Most streams assembled at once per connection; the oldest is given up
/// (emitted as incomplete) when a new one would exceed it.
pub const MAX_STREAMS: usize = 128;
/// Largest non-DATA frame payload or header block buffered.
pub const MAX_BLOCK: usize = 16 * 1024;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    typ: u8,
    flags: u8,
    sid: u32,
}

fn parse_head(b: &[u8]) -> Option<FrameHead> {
    let h = b.get(..9)?;
    Some(FrameHead {
        len: (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]),
        typ: h[3],
        flags: h[4],
        sid: u32::from_be_bytes([h[5] & 0x7f, h[6], h[7], h[8]]),
    })
}

/// Is this a frame header a peer could have sent? (type-specific checks on
/// length and stream id; unknown extension types are not accepted here.)
fn plausible(h: &FrameHead) -> bool {
    match h.typ {
        DATA | HEADERS | CONTINUATION => h.sid != 0 && h.len <= 1 << 20,
        PRIORITY => h.sid != 0 && h.len == 5,
        RST_STREAM => h.sid != 0 && h.len == 4,
        SETTINGS => {
            h.sid == 0 && h.len.is_multiple_of(6) && h.len <= 60 && (h.flags & 1 == 0 || h.len == 0)
        }
        PUSH_PROMISE => h.sid != 0 && h.len >= 4 && h.len <= 1 << 20,
        PING => h.sid == 0 && h.len == 8,
        GOAWAY => h.sid == 0 && h.len >= 8 && h.len <= 1 << 16,
        WINDOW_UPDATE => h.len == 4,
        _ => false,
    }
}

/// True if `b` is a sequence of plausible frames that ends exactly at its
/// end — or, if `cut` (the capture has fewer bytes than the write), whose
/// last frame runs past it. Used to detect HTTP/2 on a connection seen from
/// its middle and to resynchronise after a gap: writes carry whole frames.
pub fn looks_like_frames(b: &[u8], cut: bool) -> bool {
    let mut pos = 0usize;
    let mut n = 0;
    while pos < b.len() {
        let Some(h) = b.get(pos..).and_then(parse_head) else {
            // A partial frame header at the end.
            return cut && n > 0;
        };
        if !plausible(&h) {
            return false;
        }
        n += 1;
        pos = pos.saturating_add(9).saturating_add(h.len);
        if n >= 64 {
            return true;
        }
    }
    n > 0 && (pos == b.len() || cut)
}

/// Whether the first HEADERS frame of a chunk of whole frames carries a
/// request (`Some(true)`) or a response (`Some(false)`), as far as its
/// static pseudo-header references tell ([`hpack::block_is_request`]) — or
/// a DATA frame before it a watch event (`Some(false)`: only a server sends
/// those, and on a watch joined in its middle they are all there is).
pub fn chunk_sends_request(b: &[u8]) -> Option<bool> {
    let mut pos = 0usize;
    while let Some(h) = b.get(pos..).and_then(parse_head) {
        if !plausible(&h) {
            return None;
        }
        let payload = b.get(pos + 9..)?;
        let payload = payload.get(..h.len.min(payload.len()))?;
        if h.typ == DATA {
            let mut body = payload;
            if h.flags & PADDED != 0 {
                let pad = usize::from(*body.first()?);
                body = body.get(1..body.len().saturating_sub(pad))?;
            }
            if crate::infer::watch_event_data(body) {
                return Some(false);
            }
        }
        if h.typ == HEADERS {
            let mut p = payload;
            if h.flags & PADDED != 0 {
                p = p.get(1..)?;
            }
            if h.flags & PRIORITY_FLAG != 0 {
                p = p.get(5..)?;
            }
            return hpack::block_is_request(p);
        }
        pos = pos.checked_add(9 + h.len)?;
    }
    None
}

#[derive(Debug)]
struct Frame {
    head: FrameHead,
    got: usize,
    payload: Vec<u8>,
    cut: bool,
    /// DATA: padding length (once the pad byte is read).
    pad: Option<usize>,
}

#[derive(Debug)]
struct Block {
    sid: u32,
    end_stream: bool,
    data: Vec<u8>,
    cut: bool,
    /// PUSH_PROMISE blocks are decoded for the table state and dropped.
    push: bool,
}

#[derive(Debug)]
struct Dir {
    hpack: hpack::Decoder,
    head: Vec<u8>,
    cur: Option<Frame>,
    block: Option<Block>,
    lost: bool,
    preface_left: usize,
    /// Bytes seen in this direction.
    seen: u64,
}

impl Dir {
    fn new(from_start: bool, client: bool) -> Self {
        Dir {
            hpack: if from_start {
                hpack::Decoder::new()
            } else {
                hpack::Decoder::mid_connection()
            },
            head: Vec::new(),
            cur: None,
            block: None,
            lost: false,
            preface_left: if from_start && client {
                PREFACE.len()
            } else {
                0
            },
            seen: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Stream {
    req: Option<Half>,
    resp: Option<Half>,
    /// The request message (headers) for responses to copy from.
    req_head: Option<Message>,
    req_done: bool,
    resp_done: bool,
}

/// The HTTP/2 decoder of one connection.
#[derive(Debug)]
pub struct H2 {
    dirs: [Dir; 2],
    streams: BTreeMap<u32, Stream>,
    cfg: Config,
    /// GOAWAY error code and last stream id, if one was seen.
    pub goaway: Option<(u32, u32)>,
    /// A header block was decoded (in either direction).
    headers_seen: bool,
    /// Containers CreateContainer returned here that no call has named since
    /// (newest last, at most `MAX_CREATED`): what tells a StartContainer
    /// whose path this decoder never saw (`Half::infer_start`).
    created: Vec<String>,
}

const MAX_CREATED: usize = 64;

fn di(d: Direction) -> usize {
    match d {
        Direction::ClientToServer => 0,
        Direction::ServerToClient => 1,
    }
}

impl H2 {
    /// `from_start`: the client preface is (about to be) seen, so both HPACK
    /// tables start empty and known.
    pub fn new(from_start: bool, cfg: Config) -> Self {
        H2 {
            dirs: [Dir::new(from_start, true), Dir::new(from_start, false)],
            streams: BTreeMap::new(),
            cfg,
            goaway: None,
            headers_seen: false,
            created: Vec::new(),
        }
    }

    /// Bytes held by this connection's state (an upper-bound estimate).
    pub fn buffered(&self) -> usize {
        let dirs: usize = self
            .dirs
            .iter()
            .map(|d| {
                d.hpack.buffered()
                    + d.head.len()
                    + d.cur.as_ref().map_or(0, |f| f.payload.len())
                    + d.block.as_ref().map_or(0, |b| b.data.len())
            })
            .sum();
        let streams: usize = self
            .streams
            .values()
            .map(|s| {
                s.req.as_ref().map_or(0, Half::buffered)
                    + s.resp.as_ref().map_or(0, Half::buffered)
                    + s.req_head.as_ref().map_or(0, |m| m.headers.len() * 64)
                    + 64
            })
            .sum();
        dirs + streams
    }

    /// The caller's directions were found reversed before anything was
    /// decoded: the state kept for each direction follows its bytes.
    pub fn swap_directions(&mut self) {
        self.dirs.swap(0, 1);
        self.streams.clear();
    }

    /// True if the next bytes of direction `d` start a frame: none is being
    /// read, or sync was lost and `chunk` looks like whole frames (where
    /// [`H2::feed`] resynchronises).
    pub fn at_frame_start(&self, d: Direction, chunk: &[u8], total_len: u64) -> bool {
        let dir = &self.dirs[di(d)];
        if dir.lost {
            looks_like_frames(chunk, total_len > chunk.len() as u64)
        } else {
            dir.cur.is_none() && dir.head.is_empty() && dir.preface_left == 0
        }
    }

    pub fn table_known(&self, d: Direction) -> bool {
        self.dirs[di(d)].hpack.table_known()
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
        if self.dirs[i].seen == 0 && i == 0 && data.len() >= 4 && data.len().min(PREFACE.len()) > 0
        {
            let n = data.len().min(PREFACE.len());
            if data.get(..n) == PREFACE.get(..n) && self.dirs[i].preface_left == 0 {
                // The client preface: the connection is seen from its start
                // (the server may have sent its SETTINGS first).
                self.dirs[i].preface_left = PREFACE.len();
                self.dirs[i].lost = false;
                if !self.headers_seen {
                    self.dirs[0].hpack = hpack::Decoder::new();
                    self.dirs[1].hpack = hpack::Decoder::new();
                }
            }
        }
        self.dirs[i].seen = self.dirs[i].seen.saturating_add(total_len);
        if self.dirs[i].lost {
            if looks_like_frames(data, total_len > data.len() as u64) {
                self.dirs[i].lost = false;
            } else {
                return;
            }
        }
        if self.dirs[i].preface_left > 0 {
            let done = PREFACE.len() - self.dirs[i].preface_left;
            let take = self.dirs[i].preface_left.min(data.len());
            let ok = PREFACE.get(done..done + take) == data.get(..take);
            if !ok {
                self.lose(d, ts, out);
                return;
            }
            self.dirs[i].preface_left -= take;
            data = data.get(take..).unwrap_or_default();
        }
        while !data.is_empty() {
            if self.dirs[i].cur.is_none() {
                let dir = &mut self.dirs[i];
                let need = 9 - dir.head.len();
                let take = need.min(data.len());
                dir.head
                    .extend_from_slice(data.get(..take).unwrap_or_default());
                data = data.get(take..).unwrap_or_default();
                if dir.head.len() < 9 {
                    break;
                }
                let Some(h) = parse_head(&dir.head) else {
                    break;
                };
                dir.head.clear();
                // Unknown (extension) frame types are skipped if small; a
                // large one is more likely garbage than an extension.
                if (!plausible(&h) && h.typ <= CONTINUATION)
                    || (h.typ > CONTINUATION && h.len > 16_384)
                {
                    self.lose(d, ts, out);
                    return;
                }
                self.dirs[i].cur = Some(Frame {
                    head: h,
                    got: 0,
                    payload: Vec::new(),
                    cut: false,
                    pad: None,
                });
                if h.len == 0 {
                    self.complete_frame(d, ts, out);
                }
                continue;
            }
            let Some(f) = self.dirs[i].cur.as_mut() else {
                break;
            };
            let take = (f.head.len - f.got).min(data.len());
            let piece = data.get(..take).unwrap_or_default();
            data = data.get(take..).unwrap_or_default();
            if f.head.typ == DATA {
                let (sid, body) = data_piece(f, piece);
                let body = body.to_vec();
                f.got += take;
                if !body.is_empty() {
                    self.data(d, sid, &body, ts, out);
                }
            } else {
                if !util::push_bounded(&mut f.payload, piece, MAX_BLOCK) {
                    f.cut = true;
                }
                f.got += take;
            }
            if self.dirs[i]
                .cur
                .as_ref()
                .is_some_and(|f| f.got >= f.head.len)
            {
                self.complete_frame(d, ts, out);
            }
        }
        let gap = total_len.saturating_sub(chunk.len() as u64);
        if gap > 0 {
            self.gap(d, gap, ts, out);
        }
    }

    fn gap(&mut self, d: Direction, gap: u64, ts: u64, out: &mut Vec<Message>) {
        let i = di(d);
        let Some(f) = self.dirs[i].cur.as_mut() else {
            self.lose(d, ts, out);
            return;
        };
        let left = (f.head.len - f.got) as u64;
        if gap > left {
            self.lose(d, ts, out);
            return;
        }
        f.cut = true;
        f.got += gap as usize;
        let (typ, sid) = (f.head.typ, f.head.sid);
        if typ == DATA {
            self.stream_gap(d, sid, gap, ts, out);
        }
        if self.dirs[i]
            .cur
            .as_ref()
            .is_some_and(|f| f.got >= f.head.len)
        {
            self.complete_frame(d, ts, out);
        }
    }

    /// Sync lost in direction `d`: the HPACK state of `d` becomes unknown,
    /// its streams' halves are marked truncated; resync at a chunk that
    /// starts with plausible frames.
    fn lose(&mut self, d: Direction, _ts: u64, _out: &mut Vec<Message>) {
        let i = di(d);
        let dir = &mut self.dirs[i];
        dir.lost = true;
        dir.cur = None;
        dir.head.clear();
        dir.block = None;
        dir.preface_left = 0;
        dir.hpack.lose_state();
        for s in self.streams.values_mut() {
            let h = if d == Direction::ClientToServer {
                s.req.as_mut()
            } else {
                s.resp.as_mut()
            };
            if let Some(h) = h {
                h.lost();
            }
        }
    }

    fn complete_frame(&mut self, d: Direction, ts: u64, out: &mut Vec<Message>) {
        let i = di(d);
        let Some(f) = self.dirs[i].cur.take() else {
            return;
        };
        let h = f.head;
        // A header block must be followed by its CONTINUATION frames.
        if self.dirs[i].block.is_some() && h.typ != CONTINUATION {
            self.lose(d, ts, out);
            return;
        }
        match h.typ {
            DATA if h.flags & END_STREAM != 0 => self.end_half(d, h.sid, true, ts, out),
            HEADERS | PUSH_PROMISE => {
                let mut p: &[u8] = &f.payload;
                let mut pad = 0usize;
                if h.flags & PADDED != 0 {
                    pad = usize::from(p.first().copied().unwrap_or(0));
                    p = p.get(1..).unwrap_or_default();
                }
                if h.typ == HEADERS && h.flags & PRIORITY_FLAG != 0 {
                    p = p.get(5..).unwrap_or_default();
                }
                if h.typ == PUSH_PROMISE {
                    p = p.get(4..).unwrap_or_default();
                }
                // Padding is at the end; a cut payload may miss it.
                let keep = if f.cut {
                    p.len()
                } else {
                    p.len().saturating_sub(pad)
                };
                let data = p.get(..keep).unwrap_or_default().to_vec();
                self.dirs[i].block = Some(Block {
                    sid: h.sid,
                    end_stream: h.typ == HEADERS && h.flags & END_STREAM != 0,
                    data,
                    cut: f.cut,
                    push: h.typ == PUSH_PROMISE,
                });
                if h.flags & END_HEADERS != 0 {
                    self.end_block(d, ts, out);
                }
            }
            CONTINUATION => {
                let Some(b) = self.dirs[i].block.as_mut() else {
                    // A continuation of a block we did not see.
                    self.dirs[i].hpack.lose_state();
                    return;
                };
                // A cut block stays cut: later fragments are not contiguous.
                if b.cut || !util::push_bounded(&mut b.data, &f.payload, MAX_BLOCK) || f.cut {
                    b.cut = true;
                }
                if h.flags & END_HEADERS != 0 {
                    self.end_block(d, ts, out);
                }
            }
            RST_STREAM => {
                if let Some(mut s) = self.streams.remove(&h.sid) {
                    let code = f
                        .payload
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    if let Some(r) = s.req.take() {
                        r.finish(false, ts, &self.cfg, out);
                    }
                    if let Some(mut r) = s.resp.take() {
                        if let Some(c) = code {
                            r.msg
                                .grpc_message
                                .get_or_insert_with(|| format!("RST_STREAM {}", h2_error(c)));
                        }
                        r.finish(false, ts, &self.cfg, out);
                    } else if !s.resp_done {
                        // Reset before any response: say so.
                        let mut m = Message::new(
                            Protocol::Http2,
                            Direction::ServerToClient,
                            Part::Response,
                            ts,
                        );
                        m.stream_id = Some(h.sid);
                        if let Some(req) = &s.req_head {
                            m.method.clone_from(&req.method);
                            m.path.clone_from(&req.path);
                            m.protocol = req.protocol;
                            m.grpc_service.clone_from(&req.grpc_service);
                            m.grpc_method.clone_from(&req.grpc_method);
                        }
                        m.grpc_message =
                            code.map(|c| format!("RST_STREAM {} by {}", h2_error(c), side(d)));
                        out.push(m);
                    }
                }
            }
            SETTINGS if h.flags & 1 == 0 => {
                for s in f.payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([s[0], s[1]]);
                    let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
                    if id == 1 {
                        // HEADER_TABLE_SIZE bounds the table of the
                        // headers this peer receives.
                        self.dirs[1 - i].hpack.set_limit(v);
                    }
                }
            }
            GOAWAY => {
                let p = &f.payload;
                if p.len() >= 8 {
                    let last = u32::from_be_bytes([p[0] & 0x7f, p[1], p[2], p[3]]);
                    let code = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                    self.goaway = Some((code, last));
                }
            }
            _ => {}
        }
    }

    fn end_block(&mut self, d: Direction, ts: u64, out: &mut Vec<Message>) {
        let i = di(d);
        let Some(b) = self.dirs[i].block.take() else {
            return;
        };
        let decoded = self.dirs[i].hpack.decode(&b.data, b.cut);
        self.headers_seen = true;
        if b.push {
            return;
        }
        let is_req_dir = d == Direction::ClientToServer;
        let part = if is_req_dir {
            Part::Request
        } else {
            Part::Response
        };
        let mut msg = Message::new(Protocol::Http2, d, part, ts);
        msg.stream_id = Some(b.sid);
        msg.unknown = decoded.unknown || decoded.broken;
        msg.truncated = b.cut;
        // A complete block that does not decode is more likely bytes we
        // misframed than a peer's mistake: none of its fields are reported.
        let trusted = !decoded.broken || b.cut;
        for f in decoded.fields.iter().filter(|_| trusted) {
            add_header(&mut msg, f.name.as_deref(), f.value.as_deref(), &self.cfg);
        }
        if !self.streams.contains_key(&b.sid) {
            if self.streams.len() >= MAX_STREAMS {
                self.evict_oldest(ts, out);
            }
            self.streams.insert(b.sid, Stream::default());
        }
        let cfg = self.cfg;
        let Some(s) = self.streams.get_mut(&b.sid) else {
            return;
        };
        let existing = if is_req_dir {
            s.req.as_mut()
        } else {
            s.resp.as_mut()
        };
        if let Some(half) = existing {
            // Trailers.
            for h in msg.headers {
                if half.msg.headers.len() < crate::message::MAX_HEADERS {
                    if let (Some(n), crate::message::HeaderValue::Text(v)) = (&h.name, &h.value) {
                        match n.as_str() {
                            "grpc-status" => half.msg.grpc_status = v.parse().ok(),
                            "grpc-message" => {
                                half.msg.grpc_message = Some(crate::grpc::decode_message(v))
                            }
                            _ => {}
                        }
                    }
                    half.msg.headers.push(h);
                }
            }
            half.msg.unknown |= msg.unknown;
            half.msg.ts_last = ts;
        } else if is_req_dir {
            if s.req_done {
                return;
            }
            let half = Half::new(msg, None).with_created(&self.created);
            s.req_head = Some(half.msg.clone());
            s.req = Some(half);
        } else {
            // 1xx responses are informational: wait for the final one.
            if msg.status.is_some_and(|st| (100..200).contains(&st)) {
                return;
            }
            // gRPC trailers-only response (no request seen, or error).
            let mut half = Half::new(msg, s.req_head.as_ref());
            if half.streaming() && half.msg.protocol != Protocol::Grpc {
                if let Some(m) = half.emit_head(&cfg) {
                    out.push(m);
                }
            }
            s.resp = Some(half);
        }
        if b.end_stream {
            self.end_half(d, b.sid, true, ts, out);
        }
    }

    fn data(&mut self, d: Direction, sid: u32, body: &[u8], ts: u64, out: &mut Vec<Message>) {
        let cfg = self.cfg;
        if d == Direction::ServerToClient
            && !self.streams.contains_key(&sid)
            && crate::infer::watch_event_data(body)
        {
            // A watch opened before the capture began (Kubernetes' or etcd's):
            // its headers were never seen; the events it delivers still decode.
            if self.streams.len() >= MAX_STREAMS {
                self.evict_oldest(ts, out);
            }
            let mut msg = Message::new(Protocol::Http2, d, Part::Response, ts);
            msg.stream_id = Some(sid);
            msg.unknown = true;
            let stream = Stream {
                resp: Some(Half::new(msg, None)),
                req_done: true,
                ..Stream::default()
            };
            self.streams.insert(sid, stream);
        }
        if let Some(s) = self.streams.get_mut(&sid) {
            let h = if d == Direction::ClientToServer {
                s.req.as_mut()
            } else {
                s.resp.as_mut()
            };
            if let Some(h) = h {
                h.body(body, ts, &cfg, out);
            }
        }
    }

    fn stream_gap(&mut self, d: Direction, sid: u32, n: u64, ts: u64, out: &mut Vec<Message>) {
        let cfg = self.cfg;
        if let Some(s) = self.streams.get_mut(&sid) {
            let h = if d == Direction::ClientToServer {
                s.req.as_mut()
            } else {
                s.resp.as_mut()
            };
            if let Some(h) = h {
                h.gap(n, ts, &cfg, out);
            }
        }
    }

    fn end_half(
        &mut self,
        d: Direction,
        sid: u32,
        complete: bool,
        ts: u64,
        out: &mut Vec<Message>,
    ) {
        let cfg = self.cfg;
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        let first = out.len();
        if d == Direction::ClientToServer {
            if let Some(h) = s.req.take() {
                h.finish(complete, ts, &cfg, out);
                // What its body told of an unknown path, the response decodes by.
                let inferred = out
                    .get(first..)
                    .unwrap_or_default()
                    .iter()
                    .find(|m| m.part == Part::Request && !m.inferred.is_empty());
                let patches_status = out
                    .get(first..)
                    .unwrap_or_default()
                    .iter()
                    .any(|m| m.part == Part::Request && m.patches_status);
                if let Some(head) = s.req_head.as_mut() {
                    head.patches_status |= patches_status;
                }
                if let (Some(head), Some(m)) = (s.req_head.as_mut(), inferred) {
                    head.protocol = m.protocol;
                    head.method.clone_from(&m.method);
                    head.path.clone_from(&m.path);
                    head.grpc_service.clone_from(&m.grpc_service);
                    head.grpc_method.clone_from(&m.grpc_method);
                    head.inferred.clone_from(&m.inferred);
                }
            }
            s.req_done = true;
        } else {
            if let Some(h) = s.resp.take() {
                h.finish(complete, ts, &cfg, out);
            }
            s.resp_done = true;
        }
        if s.req_done && s.resp_done {
            self.streams.remove(&sid);
        }
        self.track_created(out.get(first..).unwrap_or_default());
    }

    /// Keeps the containers CreateContainer returned until a call names them.
    fn track_created(&mut self, msgs: &[Message]) {
        for m in msgs {
            let Some(id) = m.cri.as_ref().and_then(|c| c.container_id.as_ref()) else {
                continue;
            };
            match (m.part, m.grpc_method.as_deref()) {
                (Part::Response, Some("CreateContainer")) => {
                    if self.created.len() >= MAX_CREATED {
                        self.created.remove(0);
                    }
                    self.created.push(id.clone());
                }
                (Part::Request, Some(_)) => self.created.retain(|c| c != id),
                _ => {}
            }
        }
    }

    fn evict_oldest(&mut self, ts: u64, out: &mut Vec<Message>) {
        if let Some((_, mut s)) = self.streams.pop_first() {
            if let Some(h) = s.req.take() {
                h.finish(false, ts, &self.cfg, out);
            }
            if let Some(h) = s.resp.take() {
                h.finish(false, ts, &self.cfg, out);
            }
        }
    }

    /// The connection ended: emits what is still being assembled, incomplete.
    pub fn finish(&mut self, ts: u64, out: &mut Vec<Message>) {
        while !self.streams.is_empty() {
            self.evict_oldest(ts, out);
        }
    }
}

/// Splits a DATA payload piece into the body bytes (without the pad length
/// byte and the padding).
fn data_piece<'a>(f: &mut Frame, piece: &'a [u8]) -> (u32, &'a [u8]) {
    let sid = f.head.sid;
    let mut p = piece;
    let mut start = f.got;
    if f.head.flags & PADDED != 0 {
        if f.pad.is_none() {
            if start == 0 {
                f.pad = p.first().map(|&b| usize::from(b));
                p = p.get(1..).unwrap_or_default();
                start = 1;
            } else {
                f.pad = Some(0);
            }
        }
        let body_end = f.head.len.saturating_sub(f.pad.unwrap_or(0));
        let keep = body_end.saturating_sub(start).min(p.len());
        return (sid, p.get(..keep).unwrap_or_default());
    }
    (sid, p)
}

fn h2_error(c: u32) -> String {
    let n = match c {
        0 => "NO_ERROR",
        1 => "PROTOCOL_ERROR",
        2 => "INTERNAL_ERROR",
        3 => "FLOW_CONTROL_ERROR",
        5 => "STREAM_CLOSED",
        7 => "REFUSED_STREAM",
        8 => "CANCEL",
        11 => "ENHANCE_YOUR_CALM",
        _ => return format!("error {c}"),
    };
    n.to_string()
}

fn side(d: Direction) -> &'static str {
    match d {
        Direction::ClientToServer => "client",
        Direction::ServerToClient => "server",
    }
}

#[cfg(test)]
mod tests_created;
