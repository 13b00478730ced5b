//! Protocol detection and the per-connection decoder the collector calls.

use crate::assemble::Config;
use crate::h2::{self, H2};
use crate::http1::{self, Http1};
use crate::message::{Direction, Message, Part, Protocol};
use crate::redact;
use crate::ttrpc::{self, Ttrpc};

/// Chunks looked at before a connection is declared of unknown protocol.
const DETECT_CHUNKS: u32 = 4;
/// Bytes of an unknown-protocol chunk kept as body prefix.
const UNKNOWN_PREFIX: usize = 64;

#[derive(Debug)]
enum Inner {
    Undetected(u32),
    Http1(Box<Http1>),
    Http2(Box<H2>),
    Ttrpc(Box<Ttrpc>),
    Unknown,
}

/// Decodes both directions of one connection (TCP or unix socket, or the
/// plaintext of a TLS connection).
///
/// Feed every captured read/write in order with [`ConnectionDecoder::feed`];
/// call [`ConnectionDecoder::finish`] when the connection closes. Memory is
/// bounded whatever the input: every buffer and table has a hard cap.
#[derive(Debug)]
pub struct ConnectionDecoder {
    inner: Inner,
    cfg: Config,
    /// The caller's directions were the wrong way round (a request was seen
    /// going "server to client"): they are swapped from then on.
    swapped: bool,
    /// The directions were told by the bytes (a preface, a request or
    /// response line or header block), not only taken from the caller.
    directions_told: bool,
    unknown_bytes: u64,
    /// An unknown-protocol message was emitted for [client, server] side.
    unknown_said: [bool; 2],
}

impl Default for ConnectionDecoder {
    fn default() -> Self {
        ConnectionDecoder::new()
    }
}

impl ConnectionDecoder {
    pub fn new() -> Self {
        ConnectionDecoder::with_config(Config::default())
    }

    /// A decoder with `cfg` (`body_prefix` is capped at
    /// `message::BODY_PREFIX_MAX`).
    pub fn with_config(mut cfg: Config) -> Self {
        cfg.body_prefix = cfg.body_prefix.min(crate::message::BODY_PREFIX_MAX);
        ConnectionDecoder {
            inner: Inner::Undetected(0),
            cfg,
            swapped: false,
            directions_told: false,
            unknown_bytes: 0,
            unknown_said: [false; 2],
        }
    }

    /// The protocol detected so far (`Unknown` until detected; HTTP/2 also
    /// covers gRPC).
    pub fn protocol(&self) -> Protocol {
        match self.inner {
            Inner::Http1(_) => Protocol::Http1,
            Inner::Http2(_) => Protocol::Http2,
            Inner::Ttrpc(_) => Protocol::Ttrpc,
            Inner::Undetected(_) | Inner::Unknown => Protocol::Unknown,
        }
    }

    /// True if the caller's directions were found reversed and are swapped.
    pub fn swapped(&self) -> bool {
        self.swapped
    }

    /// The caller's directions are to be taken the other way round from now
    /// on, while the bytes have not told them (its idea of who is the client
    /// changed): the state kept for each direction follows its bytes.
    /// Nothing changes once they were told.
    pub fn reverse_directions(&mut self) {
        if self.directions_told {
            return;
        }
        self.swapped = !self.swapped;
        if let Inner::Http2(h) = &mut self.inner {
            h.swap_directions();
        }
    }

    /// True once the bytes told which way they went (then [`Self::swapped`]
    /// says whether the caller had it right); false while the caller's
    /// directions are only trusted (a connection joined in its middle that
    /// showed no header block yet).
    pub fn directions_told(&self) -> bool {
        self.directions_told
    }

    /// An estimate of the bytes this decoder holds. It stays below
    /// [`ConnectionDecoder::MAX_BUFFERED`] whatever is fed.
    pub fn buffered(&self) -> usize {
        match &self.inner {
            Inner::Http1(h) => h.buffered(),
            Inner::Http2(h) => h.buffered(),
            Inner::Ttrpc(t) => t.buffered(),
            Inner::Undetected(_) | Inner::Unknown => 0,
        }
    }

    /// The bound on [`ConnectionDecoder::buffered`]: per stream (at most
    /// `h2::MAX_STREAMS`) two halves, each holding at most 16 KiB of body or
    /// of gRPC/watch message being assembled plus a kept first gRPC message
    /// and headers; plus two HPACK tables (64 KiB each) and frame buffers.
    /// A connection with few streams holds far less (tens of KiB).
    pub const MAX_BUFFERED: usize = 20 * 1024 * 1024;

    /// Bytes that could not be decoded (unknown protocol).
    pub fn unknown_bytes(&self) -> u64 {
        self.unknown_bytes
    }

    /// True if the HPACK table of direction `d` is fully known (HTTP/2 only).
    pub fn hpack_table_known(&self, d: Direction) -> Option<bool> {
        match &self.inner {
            Inner::Http2(h) => Some(h.table_known(self.map(d))),
            _ => None,
        }
    }

    fn map(&self, d: Direction) -> Direction {
        if self.swapped {
            d.reverse()
        } else {
            d
        }
    }

    /// Feeds one captured read or write. Messages carry the true direction
    /// (a request is always `ClientToServer`), also when the caller's were
    /// swapped. `chunk` is what was captured,
    /// `total_len` the real size of the read/write (larger when the capture
    /// was cut: the rest is unknown and never guessed), `ts` a timestamp
    /// (any unit; messages carry it back). Returns the messages completed.
    pub fn feed(&mut self, dir: Direction, chunk: &[u8], total_len: u64, ts: u64) -> Vec<Message> {
        let mut out = Vec::new();
        let total_len = total_len.max(chunk.len() as u64);
        if let Inner::Undetected(n) = self.inner {
            self.detect(dir, chunk, total_len, n);
        }
        let d = self.map(dir);
        if let (Inner::Http2(h), false) = (&mut self.inner, self.directions_told) {
            // Joined in its middle: the first header block that names its
            // pseudo-headers tells who sent it, before it is decoded. Only
            // read from a chunk that starts where a frame does: a read that
            // goes on with a frame's payload (a client's buffered reads cut
            // frames anywhere) parses as garbage frames, and a byte there
            // can name `:method` or `:status` as well as not.
            let aligned = h.at_frame_start(d, chunk, total_len);
            if let Some(request) = aligned.then(|| h2::chunk_sends_request(chunk)).flatten() {
                self.directions_told = true;
                if request != ((dir == Direction::ClientToServer) != self.swapped) {
                    self.swapped = !self.swapped;
                    h.swap_directions();
                }
            }
        }
        let d = self.map(dir);
        match &mut self.inner {
            Inner::Http1(h) => h.feed(d, chunk, total_len, ts, &mut out),
            Inner::Http2(h) => h.feed(d, chunk, total_len, ts, &mut out),
            Inner::Ttrpc(t) => t.feed(d, chunk, total_len, ts, &mut out),
            Inner::Undetected(_) | Inner::Unknown => {
                self.unknown_bytes = self.unknown_bytes.saturating_add(total_len);
                // One message per direction says what the bytes look like;
                // later chunks are only counted (`unknown_bytes`).
                let k = usize::from(d == Direction::ServerToClient);
                if !chunk.is_empty() && !self.unknown_said[k] {
                    self.unknown_said[k] = true;
                    let mut m = Message::new(Protocol::Unknown, d, Part::Event, ts);
                    m.body_len = total_len;
                    m.truncated = total_len > chunk.len() as u64;
                    m.body_prefix = chunk
                        .get(..UNKNOWN_PREFIX.min(chunk.len()))
                        .unwrap_or_default()
                        .to_vec();
                    if self.cfg.redact {
                        for w in redact::body(&mut m.body_prefix, false) {
                            m.note_redacted(w);
                        }
                    }
                    out.push(m);
                }
            }
        }
        out
    }

    fn detect(&mut self, dir: Direction, chunk: &[u8], total_len: u64, seen: u32) {
        let client_side = dir == Direction::ClientToServer;
        if chunk.starts_with(h2::PREFACE)
            || (chunk.len() < h2::PREFACE.len()
                && !chunk.is_empty()
                && h2::PREFACE.starts_with(chunk)
                && chunk.len() >= 4)
        {
            self.swapped = !client_side;
            self.directions_told = true;
            self.inner = Inner::Http2(Box::new(H2::new(true, self.cfg)));
        } else if http1::is_request_start(chunk) {
            self.swapped = !client_side;
            self.directions_told = true;
            self.inner = Inner::Http1(Box::new(Http1::new(self.cfg)));
        } else if http1::is_response_start(chunk) {
            self.swapped = client_side;
            self.directions_told = true;
            self.inner = Inner::Http1(Box::new(Http1::new(self.cfg)));
        } else if ttrpc::looks_like_request(chunk) {
            self.swapped = !client_side;
            self.directions_told = true;
            self.inner = Inner::Ttrpc(Box::new(Ttrpc::new(self.cfg)));
        } else if h2::looks_like_frames(chunk, total_len > chunk.len() as u64) {
            // Mid-connection HTTP/2: the caller's direction is trusted and
            // both HPACK tables are unknown.
            self.inner = Inner::Http2(Box::new(H2::new(false, self.cfg)));
        } else if chunk.is_empty() || seen + 1 < DETECT_CHUNKS {
            self.inner = Inner::Undetected(seen + 1);
        } else {
            self.inner = Inner::Unknown;
        }
    }

    /// The connection closed: emits what was still being assembled
    /// (incomplete, except HTTP/1 bodies delimited by the close).
    pub fn finish(&mut self, ts: u64) -> Vec<Message> {
        let mut out = Vec::new();
        match &mut self.inner {
            Inner::Http1(h) => h.finish(ts, &mut out),
            Inner::Http2(h) => h.finish(ts, &mut out),
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_ciphertext_is_unknown_said_once_per_direction() {
        let mut d = ConnectionDecoder::new();
        let hello = [
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        let m = d.feed(Direction::ClientToServer, &hello, 517, 1);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0].summary(),
            "TLS handshake (ciphertext), 517 bytes (truncated)"
        );
        assert!(m[0].truncated);
        for _ in 0..5 {
            assert!(d
                .feed(
                    Direction::ClientToServer,
                    &[0x17, 0x03, 0x03, 0, 5, 1, 2, 3, 4, 5],
                    10,
                    2
                )
                .is_empty());
        }
        let m = d.feed(
            Direction::ServerToClient,
            &[0x16, 0x03, 0x03, 0, 1, 2],
            6,
            3,
        );
        assert_eq!(m.len(), 1);
        assert_eq!(d.protocol(), Protocol::Unknown);
        assert_eq!(d.unknown_bytes(), 517 + 50 + 6);
    }

    #[test]
    fn a_response_first_swaps_directions() {
        let mut d = ConnectionDecoder::new();
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let m = d.feed(Direction::ClientToServer, r, r.len() as u64, 1);
        assert!(d.swapped());
        assert_eq!(m[0].direction, Direction::ServerToClient);
        assert_eq!(m[0].status, Some(200));
        assert!(m[0].complete);
    }
}
