//! gRPC over HTTP/2: length-prefixed messages, service/method, status.

use crate::util;

/// Largest gRPC message kept for decoding; larger ones decode from their prefix.
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Most messages kept from one stream direction between two emissions.
pub const MAX_PENDING: usize = 16;

/// One gRPC message (possibly a prefix of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcMessage {
    pub compressed: bool,
    /// Length announced by the prefix.
    pub len: usize,
    /// The bytes (at most `MAX_MESSAGE`).
    pub data: Vec<u8>,
    /// Some bytes are missing (not captured, or past `MAX_MESSAGE`).
    pub cut: bool,
}

/// Splits `/pkg.Service/Method` into (service, method).
pub fn split_path(path: &str) -> Option<(String, String)> {
    let p = path.strip_prefix('/')?;
    let (svc, m) = p.split_once('/')?;
    if svc.is_empty() || m.is_empty() || m.contains('/') {
        return None;
    }
    Some((util::text(svc.as_bytes()), util::text(m.as_bytes())))
}

/// Incremental parser of the 5-byte-prefixed message stream of one direction.
#[derive(Debug, Default)]
pub struct GrpcStream {
    head: Vec<u8>,
    cur: Option<GrpcMessage>,
    /// Message bytes still to come (including ones beyond `MAX_MESSAGE`).
    left: usize,
    /// The current message had a gap: later bytes are counted, not kept.
    frozen: bool,
    lost: bool,
    pending: Vec<GrpcMessage>,
    /// Messages dropped because `pending` was full.
    pub dropped: u64,
}

impl GrpcStream {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.lost {
            match self.cur.as_mut() {
                None => {
                    let need = 5usize.saturating_sub(self.head.len());
                    let take = need.min(data.len());
                    self.head
                        .extend_from_slice(data.get(..take).unwrap_or_default());
                    data = data.get(take..).unwrap_or_default();
                    if self.head.len() == 5 {
                        let flag = self.head.first().copied().unwrap_or(0);
                        let mut l = [0u8; 4];
                        l.copy_from_slice(self.head.get(1..5).unwrap_or(&[0; 4]));
                        self.head.clear();
                        if flag > 1 {
                            // Not a gRPC message prefix.
                            self.lost = true;
                            return;
                        }
                        let len = u32::from_be_bytes(l) as usize;
                        self.cur = Some(GrpcMessage {
                            compressed: flag == 1,
                            len,
                            data: Vec::new(),
                            cut: false,
                        });
                        self.left = len;
                        if len == 0 {
                            self.finish();
                        }
                    }
                }
                Some(m) => {
                    let take = self.left.min(data.len());
                    if !self.frozen {
                        util::push_bounded(
                            &mut m.data,
                            data.get(..take).unwrap_or_default(),
                            MAX_MESSAGE,
                        );
                    }
                    if m.data.len() >= MAX_MESSAGE && take > 0 && m.data.len() < m.len {
                        m.cut = true;
                    }
                    data = data.get(take..).unwrap_or_default();
                    self.left -= take;
                    if self.left == 0 {
                        self.finish();
                    }
                }
            }
        }
    }

    fn finish(&mut self) {
        self.frozen = false;
        if let Some(m) = self.cur.take() {
            if self.pending.len() < MAX_PENDING {
                self.pending.push(m);
            } else {
                self.dropped += 1;
            }
        }
    }

    /// `n` bytes were not captured.
    pub fn gap(&mut self, n: u64) {
        match self.cur.as_mut() {
            Some(m) if n <= self.left as u64 => {
                m.cut = true;
                self.frozen = true;
                self.left -= n as usize;
                if self.left == 0 {
                    self.finish();
                }
            }
            _ => self.lost = true,
        }
    }

    /// The stream ended: a message still being assembled is kept as cut.
    pub fn end(&mut self) {
        if let Some(m) = self.cur.as_mut() {
            m.cut = true;
        }
        self.finish();
    }

    pub fn lost(&self) -> bool {
        self.lost
    }

    /// Bytes held.
    pub fn buffered(&self) -> usize {
        self.head.len()
            + self.cur.as_ref().map_or(0, |m| m.data.len())
            + self.pending.iter().map(|m| m.data.len()).sum::<usize>()
    }

    /// Takes the messages completed so far.
    pub fn take(&mut self) -> Vec<GrpcMessage> {
        std::mem::take(&mut self.pending)
    }
}

/// Percent-decodes a grpc-message value (RFC 3986 style, as gRPC sends it).
pub fn decode_message(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let h = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(x) = h.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    util::text(&out)
}

/// Methods whose calls stream (their messages are emitted as events).
pub fn is_streaming(service: &str, method: &str) -> bool {
    matches!(
        (service, method),
        ("etcdserverpb.Watch", "Watch") | ("etcdserverpb.Lease", "LeaseKeepAlive")
    ) || method.starts_with("Watch")
        || method == "GetContainerEvents"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_across_chunks_and_gaps() {
        let mut s = GrpcStream::default();
        s.feed(&[0, 0, 0, 0, 3, b'a']);
        s.feed(&[b'b', b'c', 0, 0, 0]);
        s.feed(&[0, 2, b'x']);
        s.gap(1);
        let m = s.take();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].data, b"abc");
        assert!(!m[0].cut);
        assert_eq!(m[1].data, b"x");
        assert!(m[1].cut);
    }

    #[test]
    fn paths_and_messages() {
        assert_eq!(
            split_path("/etcdserverpb.KV/Txn"),
            Some(("etcdserverpb.KV".into(), "Txn".into()))
        );
        assert_eq!(split_path("/api/v1/pods"), None);
        assert_eq!(decode_message("not%20found"), "not found");
    }
}
