//! A tolerant JSON scanner: walks a (possibly truncated) document and reports
//! every scalar with its path and byte span. No recursion, bounded depth, no
//! allocation beyond the path and the reported values.

use crate::util;

/// Deepest nesting followed; deeper values are skipped.
pub const MAX_DEPTH: usize = 64;
/// Scalars nested deeper than this are not reported (every identity and
/// redaction path is at most 6 levels deep: `object.rows[0].object.metadata.name`).
pub const MAX_REPORTED_DEPTH: usize = 8;
/// Most scalars reported from one document.
pub const MAX_SCALARS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    Str(String),
    /// A number, `true`, `false` or `null`, as written.
    Other(String),
}

#[derive(Debug, Clone)]
pub struct Item {
    pub path: Vec<Seg>,
    pub value: Scalar,
    /// Byte span of the value in the source (for strings: with the quotes).
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub items: Vec<Item>,
    /// The document ended before it was complete.
    pub truncated: bool,
    /// Bytes consumed (the end of the first top-level value).
    pub consumed: usize,
}

enum Frame {
    Obj { key: Option<String> },
    Arr { index: usize },
}

/// Scans the first JSON value in `src`.
pub fn scan(src: &[u8]) -> Scan {
    let mut out = Scan::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut pos = 0usize;
    let mut depth_skipped = 0usize;
    let path = |stack: &[Frame]| -> Vec<Seg> {
        stack
            .iter()
            .filter_map(|f| match f {
                Frame::Obj { key } => key.clone().map(Seg::Key),
                Frame::Arr { index } => Some(Seg::Index(*index)),
            })
            .collect()
    };
    loop {
        // skip whitespace and separators
        while let Some(&c) = src.get(pos) {
            if c == b' ' || c == b'\n' || c == b'\r' || c == b'\t' || c == b',' || c == b':' {
                pos += 1;
            } else {
                break;
            }
        }
        let Some(&c) = src.get(pos) else {
            out.truncated =
                !stack.is_empty() || depth_skipped > 0 || out.items.is_empty() && pos == 0;
            out.consumed = pos;
            return out;
        };
        match c {
            b'{' | b'[' => {
                pos += 1;
                if stack.len() >= MAX_DEPTH {
                    depth_skipped += 1;
                    continue;
                }
                stack.push(if c == b'{' {
                    Frame::Obj { key: None }
                } else {
                    Frame::Arr { index: 0 }
                });
            }
            b'}' | b']' => {
                pos += 1;
                if depth_skipped > 0 {
                    depth_skipped -= 1;
                    continue;
                }
                stack.pop();
                end_value(&mut stack);
                if stack.is_empty() {
                    out.consumed = pos;
                    return out;
                }
            }
            b'"' => {
                let start = pos;
                let (s, next, closed) = read_string(src, pos);
                pos = next;
                if !closed {
                    out.truncated = true;
                    out.consumed = pos;
                    return out;
                }
                if depth_skipped > 0 {
                    continue;
                }
                // A string in key position is a key.
                if let Some(Frame::Obj { key }) = stack.last_mut() {
                    if key.is_none() {
                        *key = Some(s);
                        continue;
                    }
                }
                if out.items.len() < MAX_SCALARS && stack.len() <= MAX_REPORTED_DEPTH {
                    out.items.push(Item {
                        path: path(&stack),
                        value: Scalar::Str(s),
                        start,
                        end: pos,
                    });
                }
                end_value(&mut stack);
                if stack.is_empty() {
                    out.consumed = pos;
                    return out;
                }
            }
            _ => {
                let start = pos;
                while let Some(&c) = src.get(pos) {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t' | b':') {
                        break;
                    }
                    pos += 1;
                }
                if pos == start {
                    // not JSON
                    out.truncated = true;
                    out.consumed = pos;
                    return out;
                }
                if src.get(pos).is_none() && !stack.is_empty() {
                    out.truncated = true;
                    out.consumed = pos;
                    return out;
                }
                if depth_skipped == 0 {
                    if out.items.len() < MAX_SCALARS && stack.len() <= MAX_REPORTED_DEPTH {
                        out.items.push(Item {
                            path: path(&stack),
                            value: Scalar::Other(util::text(
                                src.get(start..pos).unwrap_or_default(),
                            )),
                            start,
                            end: pos,
                        });
                    }
                    end_value(&mut stack);
                    if stack.is_empty() {
                        out.consumed = pos;
                        return out;
                    }
                }
            }
        }
    }
}

fn end_value(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Obj { key }) => *key = None,
        Some(Frame::Arr { index }) => *index += 1,
        None => {}
    }
}

/// Reads a JSON string starting at the quote; returns (decoded text bounded
/// to `util::MAX_TEXT`, position after it, closed).
fn read_string(src: &[u8], start: usize) -> (String, usize, bool) {
    let mut pos = start + 1;
    let mut raw: Vec<u8> = Vec::new();
    let cap = util::MAX_TEXT * 4;
    while let Some(&c) = src.get(pos) {
        match c {
            b'"' => return (util::text(&raw), pos + 1, true),
            b'\\' => {
                let Some(&e) = src.get(pos + 1) else {
                    return (util::text(&raw), src.len(), false);
                };
                let ch: Option<u8> = match e {
                    b'n' => Some(b'\n'),
                    b't' => Some(b'\t'),
                    b'r' => Some(b'\r'),
                    b'b' => Some(8),
                    b'f' => Some(12),
                    b'u' => None,
                    other => Some(other),
                };
                if let Some(ch) = ch {
                    if raw.len() < cap {
                        raw.push(ch);
                    }
                    pos += 2;
                } else {
                    let hex = src.get(pos + 2..pos + 6);
                    let cp = hex
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u32::from_str_radix(h, 16).ok());
                    match cp {
                        Some(cp) => {
                            let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                            if raw.len() < cap {
                                let mut b = [0u8; 4];
                                raw.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                            }
                            pos += 6;
                        }
                        None => return (util::text(&raw), src.len(), false),
                    }
                }
            }
            _ => {
                if raw.len() < cap {
                    raw.push(c);
                }
                pos += 1;
            }
        }
    }
    (util::text(&raw), src.len(), false)
}

/// Path as `a.b[0].c` for matching.
pub fn dotted(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_paths_and_spans() {
        let src = br#"{"kind":"Pod","metadata":{"name":"x","labels":{"a":"b"}},"items":[{"n":1},{"n":"two"}]}"#;
        let s = scan(src);
        assert!(!s.truncated);
        let got: Vec<(String, Scalar)> = s
            .items
            .iter()
            .map(|i| (dotted(&i.path), i.value.clone()))
            .collect();
        assert_eq!(got[0], ("kind".into(), Scalar::Str("Pod".into())));
        assert_eq!(got[1], ("metadata.name".into(), Scalar::Str("x".into())));
        assert_eq!(
            got[2],
            ("metadata.labels.a".into(), Scalar::Str("b".into()))
        );
        assert_eq!(got[3], ("items[0].n".into(), Scalar::Other("1".into())));
        assert_eq!(got[4], ("items[1].n".into(), Scalar::Str("two".into())));
        assert_eq!(&src[s.items[0].start..s.items[0].end], b"\"Pod\"");
        assert_eq!(s.consumed, src.len());
    }

    #[test]
    fn truncated_document_keeps_what_parsed() {
        let s = scan(br#"{"kind":"Pod","metadata":{"name":"x","namesp"#);
        assert!(s.truncated);
        assert_eq!(s.items.len(), 2);
    }
}
