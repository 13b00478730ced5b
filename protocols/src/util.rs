//! Small helpers shared by the decoders.

/// Longest string a decoder copies out of the input (keys, names, messages).
pub const MAX_TEXT: usize = 512;

/// Bytes as text: UTF-8 where valid, other bytes as `\xNN`, cut at
/// `MAX_TEXT` characters (with a trailing `…`).
pub fn text(b: &[u8]) -> String {
    let mut s = String::new();
    let mut n = 0;
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if n >= MAX_TEXT {
                s.push('…');
                return s;
            }
            s.push(c);
            n += 1;
        }
        for byte in chunk.invalid() {
            if n >= MAX_TEXT {
                s.push('…');
                return s;
            }
            s.push_str(&format!("\\x{byte:02x}"));
            n += 1;
        }
    }
    s
}

/// Bytes as text without a length cap: UTF-8 where valid, other bytes as `\xNN`.
pub fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        s.push_str(chunk.valid());
        for byte in chunk.invalid() {
            s.push_str(&format!("\\x{byte:02x}"));
        }
    }
    s
}

/// Appends at most `room` bytes of `src` to `dst` so that `dst` never exceeds `cap`.
pub fn push_bounded(dst: &mut Vec<u8>, src: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(dst.len());
    let take = room.min(src.len());
    dst.extend_from_slice(src.get(..take).unwrap_or_default());
    take == src.len()
}

/// ASCII case-insensitive search of `needle` in `hay`.
pub fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).find(|&i| {
        hay.get(i..i + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    })
}

/// Plain byte search.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
