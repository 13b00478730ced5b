//! HPACK (RFC 7541) decoding with a dynamic table whose state may be
//! partly unknown.
//!
//! A capture can start in the middle of a connection, or lose a header block
//! to truncation. The entries inserted before that are unknown. The decoder
//! keeps the entries it saw inserted (newest first) and a flag saying whether
//! they are the whole table. An index into the known entries decodes
//! exactly — index order depends only on the insertion sequence, not on
//! sizes — and an index past them decodes to "unknown", never to a guess.

use std::collections::VecDeque;

use crate::huffman;

/// Hard cap on the dynamic table size we model, whatever the peer says.
pub const MAX_TABLE_SIZE: usize = 64 * 1024;
/// Most header fields decoded from one block.
pub const MAX_FIELDS: usize = 256;
/// Longest name or value decoded.
pub const MAX_STRING: usize = 16 * 1024;

const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// One decoded header field; `None` marks a part that referenced an unknown
/// dynamic-table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// Result of decoding one header block.
#[derive(Debug, Default)]
pub struct Block {
    pub fields: Vec<Field>,
    /// Some field referenced an unknown entry.
    pub unknown: bool,
    /// The block was malformed or cut short; what follows it is not decoded.
    pub broken: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    name: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

impl Entry {
    fn size(&self) -> usize {
        // RFC 7541 §4.1; an unknown part counts as empty (an under-estimate).
        self.name.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + ENTRY_OVERHEAD
    }
}

/// RFC 7541 §4.1: an entry's size is its name and value plus 32 bytes.
const ENTRY_OVERHEAD: usize = 32;

/// The decoder of one direction of one connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// The known entries are the whole table.
    complete: bool,
    /// Sizes are exact (no entry with an unknown part was inserted).
    exact: bool,
}

impl Decoder {
    /// A decoder that saw the connection from its start.
    pub fn new() -> Self {
        Decoder {
            entries: VecDeque::new(),
            size: 0,
            max_size: 4096,
            complete: true,
            exact: true,
        }
    }

    /// A decoder for a connection seen from its middle: the table is unknown.
    pub fn mid_connection() -> Self {
        Decoder {
            complete: false,
            ..Decoder::new()
        }
    }

    /// Bytes held by the modelled table.
    pub fn buffered(&self) -> usize {
        self.entries.iter().map(Entry::size).sum()
    }

    /// True if the whole dynamic table is known.
    pub fn table_known(&self) -> bool {
        self.complete
    }

    /// Forget everything: called when a header block was lost. The lost
    /// block may have inserted entries, so no index can be trusted until
    /// new insertions are seen.
    pub fn lose_state(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.complete = false;
    }

    /// Applies the peer's SETTINGS_HEADER_TABLE_SIZE (an upper bound only: the
    /// encoder announces its real size with a size update).
    pub fn set_limit(&mut self, limit: u32) {
        let limit = (limit as usize).min(MAX_TABLE_SIZE);
        if limit < self.max_size {
            self.max_size = limit;
            self.evict();
        }
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            match self.entries.pop_back() {
                Some(e) => {
                    self.size = self.size.saturating_sub(e.size());
                    // Entries leave oldest first: with exact sizes, any older
                    // entry the capture never saw has left before this one.
                    self.complete = self.exact;
                }
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }

    fn insert(&mut self, e: Entry) {
        if e.name.is_none() || e.value.is_none() {
            self.exact = false;
        }
        let sz = e.size();
        if sz > self.max_size {
            // RFC 7541 §4.4: an entry larger than the table empties it.
            self.entries.clear();
            self.size = 0;
            if self.exact {
                self.complete = true;
            }
            return;
        }
        self.entries.push_front(e);
        self.size += sz;
        self.evict();
        // The encoder's table is the entries seen since the capture began plus
        // older ones it never showed. Once the seen ones leave no room for even
        // the smallest entry, there are no others: a capture that began
        // mid-connection (an agent attached to running components) knows the
        // whole table again after a table's worth of insertions.
        if !self.complete && self.exact && self.size + ENTRY_OVERHEAD > self.max_size {
            self.complete = true;
        }
    }

    fn lookup(&self, index: u64) -> Option<Entry> {
        let i = usize::try_from(index).ok()?;
        if (1..=61).contains(&i) {
            let (n, v) = STATIC.get(i - 1)?;
            return Some(Entry {
                name: Some(n.as_bytes().to_vec()),
                value: Some(v.as_bytes().to_vec()),
            });
        }
        self.entries.get(i.checked_sub(62)?).cloned()
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION payloads).
    /// `cut` says the block's bytes are a truncated prefix: the table state
    /// after it is then unknown.
    pub fn decode(&mut self, block: &[u8], cut: bool) -> Block {
        let mut out = Block::default();
        let mut pos = 0usize;
        while pos < block.len() {
            if out.fields.len() >= MAX_FIELDS {
                // Stop decoding: the rest could still insert entries.
                out.broken = true;
                break;
            }
            match self.one(block, &mut pos, &mut out) {
                Some(()) => {}
                None => {
                    out.broken = true;
                    break;
                }
            }
        }
        if out.broken || cut {
            // The undecoded rest may have inserted entries.
            self.lose_state();
        }
        out
    }

    fn one(&mut self, b: &[u8], pos: &mut usize, out: &mut Block) -> Option<()> {
        let first = *b.get(*pos)?;
        if first & 0x80 != 0 {
            // Indexed header field.
            let idx = read_int(b, pos, 7)?;
            if idx == 0 {
                return None;
            }
            match self.lookup(idx) {
                Some(e) => {
                    out.unknown |= e.name.is_none() || e.value.is_none();
                    out.fields.push(Field {
                        name: e.name,
                        value: e.value,
                    });
                }
                None => {
                    // Past the known entries: unknown if the table is not
                    // fully known, otherwise a protocol error (still unknown).
                    out.unknown = true;
                    out.fields.push(Field {
                        name: None,
                        value: None,
                    });
                    if self.complete {
                        return None;
                    }
                }
            }
            return Some(());
        }
        if first & 0xe0 == 0x20 {
            // Dynamic table size update.
            let size = read_int(b, pos, 5)?;
            self.max_size = usize::try_from(size)
                .unwrap_or(usize::MAX)
                .min(MAX_TABLE_SIZE);
            if size > MAX_TABLE_SIZE as u64 && self.exact {
                // We keep less than the peer may: what we drop is unknown.
                self.exact = false;
            }
            self.evict();
            if self.max_size == 0 && self.exact {
                self.complete = true;
            }
            return Some(());
        }
        let (prefix, index_it) = if first & 0xc0 == 0x40 {
            (6, true)
        } else {
            // 0000xxxx without indexing, 0001xxxx never indexed
            (4, false)
        };
        let idx = read_int(b, pos, prefix)?;
        let name = if idx == 0 {
            Some(read_string(b, pos)?)
        } else {
            match self.lookup(idx) {
                Some(e) => e.name,
                None if !self.complete => None,
                None => return None,
            }
        };
        let value = read_string(b, pos)?;
        out.unknown |= name.is_none();
        if index_it {
            self.insert(Entry {
                name: name.clone(),
                value: Some(value.clone()),
            });
        }
        out.fields.push(Field {
            name,
            value: Some(value),
        });
        Some(())
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

/// Whether a header block is a request's (`Some(true)`) or a response's
/// (`Some(false)`), by the pseudo-header fields it names through the static
/// table — `:authority`, `:method`, `:path`, `:scheme` (indices 1–7) or
/// `:status` (8–14). HPACK's syntax needs no table, so this reads a block of
/// a connection seen from its middle, whose dynamic entries are unknown;
/// `None` when only dynamic entries (or nothing parseable) name them.
pub fn block_is_request(block: &[u8]) -> Option<bool> {
    let mut pos = 0usize;
    while pos < block.len() {
        let first = *block.get(pos)?;
        let (idx, literal) = if first & 0x80 != 0 {
            (read_int(block, &mut pos, 7)?, false)
        } else if first & 0xe0 == 0x20 {
            read_int(block, &mut pos, 5)?;
            continue;
        } else if first & 0xc0 == 0x40 {
            (read_int(block, &mut pos, 6)?, true)
        } else {
            (read_int(block, &mut pos, 4)?, true)
        };
        if literal {
            if idx == 0 {
                skip_string(block, &mut pos)?;
            }
            skip_string(block, &mut pos)?;
        }
        match idx {
            1..=7 => return Some(true),
            8..=14 => return Some(false),
            _ => {}
        }
    }
    None
}

fn skip_string(b: &[u8], pos: &mut usize) -> Option<()> {
    let len = usize::try_from(read_int(b, pos, 7)?).ok()?;
    *pos = pos.checked_add(len).filter(|&end| end <= b.len())?;
    Some(())
}

/// RFC 7541 §5.1 integer with an N-bit prefix; values past 2^32 are refused.
fn read_int(b: &[u8], pos: &mut usize, n: u32) -> Option<u64> {
    let mask: u8 = ((1u16 << n) - 1) as u8;
    let mut v = u64::from(*b.get(*pos)? & mask);
    *pos += 1;
    if v < u64::from(mask) {
        return Some(v);
    }
    let mut shift = 0u32;
    loop {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v = v.checked_add(u64::from(byte & 0x7f) << shift)?;
        if v > u64::from(u32::MAX) {
            return None;
        }
        if byte & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
}

fn read_string(b: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
    let huff = *b.get(*pos)? & 0x80 != 0;
    let len = usize::try_from(read_int(b, pos, 7)?).ok()?;
    let end = pos.checked_add(len)?;
    let raw = b.get(*pos..end)?;
    *pos = end;
    if huff {
        huffman::decode(raw, MAX_STRING)
    } else if raw.len() > MAX_STRING {
        None
    } else {
        Some(raw.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pairs(b: &Block) -> Vec<(String, String)> {
        b.fields
            .iter()
            .map(|f| {
                (
                    f.name
                        .as_ref()
                        .map_or("?".into(), |n| String::from_utf8_lossy(n).into()),
                    f.value
                        .as_ref()
                        .map_or("?".into(), |v| String::from_utf8_lossy(v).into()),
                )
            })
            .collect()
    }

    // RFC 7541 C.4: requests with Huffman coding, sharing one dynamic table.
    #[test]
    fn rfc7541_c4_requests() {
        let mut d = Decoder::new();
        let b1 = d.decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"), false);
        assert_eq!(
            pairs(&b1)[3],
            (":authority".into(), "www.example.com".into())
        );
        let b2 = d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf"), false);
        assert_eq!(
            pairs(&b2)[3],
            (":authority".into(), "www.example.com".into())
        );
        assert_eq!(pairs(&b2)[4], ("cache-control".into(), "no-cache".into()));
        let b3 = d.decode(
            &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
            false,
        );
        assert_eq!(pairs(&b3)[4], ("custom-key".into(), "custom-value".into()));
        assert!(!b3.unknown);
        assert_eq!(d.size, 164);
    }

    #[test]
    fn mid_connection_marks_unknown_entries_and_learns_new_ones() {
        let mut d = Decoder::mid_connection();
        // Second request of C.4 alone: index 62 (":authority") is unknown.
        let b = d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf"), false);
        assert!(b.unknown);
        assert_eq!(pairs(&b)[3], ("?".into(), "?".into()));
        assert_eq!(pairs(&b)[4], ("cache-control".into(), "no-cache".into()));
        // The entry it inserted is known now: index 62 is cache-control.
        let b = d.decode(&hex("be"), false);
        assert_eq!(pairs(&b)[0], ("cache-control".into(), "no-cache".into()));
        // Index 63 is still unknown.
        let b = d.decode(&hex("bf"), false);
        assert!(b.unknown);
    }

    /// An agent attached to a running component: the table is unknown until
    /// a table's worth of new entries has pushed out whatever it held.
    #[test]
    fn mid_connection_table_is_known_after_a_tables_worth_of_insertions() {
        let mut d = Decoder::mid_connection();
        // Literal with incremental indexing, new name "x-pad", 1000-byte value:
        // an entry of 5 + 1000 + 32 = 1037 bytes.
        let mut block = vec![0x40, 0x05];
        block.extend_from_slice(b"x-pad");
        block.extend_from_slice(&[0x7f, 0xe9, 0x06]); // 127 + 873 = 1000
        block.extend_from_slice(&[b'a'; 1000]);
        for n in 1..=3 {
            let b = d.decode(&block, false);
            assert!(!b.unknown, "insertion {n}");
            assert!(
                !d.table_known(),
                "{n} × 1037 bytes leave room for older entries"
            );
        }
        // The fourth cannot fit beside the other three and anything older: the
        // encoder evicted every entry the capture never saw.
        d.decode(&block, false);
        assert!(d.table_known());
        // Index 62..64 are the three newest; 65 is past the table — unknown,
        // never guessed.
        let b = d.decode(&hex("be bf c0"), false);
        assert!(!b.unknown);
        assert_eq!(pairs(&b).len(), 3);
        assert!(d.decode(&hex("c1"), false).unknown);
    }

    #[test]
    fn requests_and_responses_are_told_by_static_pseudo_headers_alone() {
        // RFC 7541 C.4.2 (a request: unknown dynamic :authority first, then :method GET).
        assert_eq!(
            block_is_request(&hex("be 8286 84 5886 a8eb 1064 9cbf")),
            Some(true)
        );
        // C.6.2 (a response: :status 307 as a dynamic-table reference, then
        // a literal with static name :status is not there — "4803 333037" is).
        assert_eq!(block_is_request(&hex("4803 333037 c1 c0 bf")), Some(false));
        assert_eq!(block_is_request(&hex("88")), Some(false));
        // Only dynamic entries: nothing told.
        assert_eq!(block_is_request(&hex("be bf c0")), None);
    }

    #[test]
    fn size_update_to_zero_makes_table_known() {
        let mut d = Decoder::mid_connection();
        let b = d.decode(&hex("20 82"), false);
        assert!(!b.unknown);
        assert!(d.table_known());
    }
}
