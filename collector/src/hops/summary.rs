//! The one-line summary of a hop.

/// Longest summary kept.
pub const MAX_SUMMARY: usize = 200;

/// The request's first line when it is printable ASCII ("GET /healthz HTTP/1.1"),
/// else "".
pub fn summarize(request: &[u8]) -> String {
    let end = request
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(request.len());
    let mut line = &request[..end];
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    if line.is_empty() || !line.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return String::new();
    }
    String::from_utf8_lossy(&line[..line.len().min(MAX_SUMMARY)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_printable_line() {
        assert_eq!(
            summarize(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            "GET /healthz HTTP/1.1"
        );
        assert_eq!(summarize(b"PING"), "PING");
    }

    #[test]
    fn binary_or_empty_gives_nothing() {
        assert_eq!(summarize(b"\x16\x03\x01\x02\x00"), "");
        assert_eq!(summarize(b""), "");
        assert_eq!(summarize(b"\r\nabc"), "");
    }

    #[test]
    fn long_lines_are_cut() {
        assert_eq!(summarize(&[b'a'; 1000]).len(), MAX_SUMMARY);
    }
}
