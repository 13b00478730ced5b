//! Showing captured bytes: strace-style escapes, and byte counts.

/// Escapes like strace: `\t \n \v \f \r \" \\`, other non-printables in octal
/// (three digits when a digit follows, so the escape stays unambiguous).
pub fn strace_escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            0x0b => out.push_str("\\v"),
            0x0c => out.push_str("\\f"),
            b'\r' => out.push_str("\\r"),
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let next_is_digit = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
                if next_is_digit {
                    out.push_str(&format!("\\{b:03o}"));
                } else {
                    out.push_str(&format!("\\{b:o}"));
                }
            }
        }
    }
    out
}

/// `"escaped"` plus `...` when there was more than shown.
pub fn quoted(bytes: &[u8], limit: usize, more: bool) -> String {
    let shown = &bytes[..bytes.len().min(limit)];
    let ellipsis = if more || bytes.len() > limit {
        "..."
    } else {
        ""
    };
    format!("\"{}\"{ellipsis}", strace_escape(shown))
}

/// `512 B`, `1.5 KiB`, `2.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_strace() {
        assert_eq!(strace_escape(b"GET / HTTP/1.1\r\n"), "GET / HTTP/1.1\\r\\n");
        assert_eq!(strace_escape(b"a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(strace_escape(b"\x00\x16\x03"), "\\0\\26\\3");
        assert_eq!(strace_escape(b"\x001"), "\\0001");
        assert_eq!(strace_escape(&[0xff]), "\\377");
    }

    #[test]
    fn quotes_with_ellipsis() {
        assert_eq!(quoted(b"abcdef", 3, false), "\"abc\"...");
        assert_eq!(quoted(b"abc", 3, false), "\"abc\"");
        assert_eq!(quoted(b"abc", 8, true), "\"abc\"...");
    }

    #[test]
    fn byte_counts() {
        assert_eq!(human_bytes(78), "78 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
