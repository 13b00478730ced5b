//! The one-line summary of a hop.

/// Longest summary kept.
pub const MAX_SUMMARY: usize = 200;

/// What a hop whose request is a TLS ClientHello is called: the handshake
/// before a connection's first plaintext, a real exchange of its own.
pub const TLS_HANDSHAKE: &str = "TLS handshake";

/// The request's first line when it is printable ASCII ("GET /healthz HTTP/1.1"),
/// [`TLS_HANDSHAKE`] for a TLS ClientHello record, else "".
pub fn summarize(request: &[u8]) -> String {
    // Record type handshake (22), version 3.x, handshake type ClientHello (1).
    if let [0x16, 0x03, 0x00..=0x04, _, _, 0x01, ..] = request {
        return TLS_HANDSHAKE.to_owned();
    }
    // Only the kept part is looked at (and its "\r\n"): scanning a whole capture
    // without a newline for one was 4 % of a saturated collector's CPU.
    let head = &request[..request.len().min(MAX_SUMMARY + 2)];
    let end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let mut line = &head[..end];
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    let line = &line[..line.len().min(MAX_SUMMARY)];
    if line.is_empty() || !line.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return String::new();
    }
    // Printable ASCII: valid UTF-8.
    String::from_utf8_lossy(line).into_owned()
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
    fn a_client_hello_is_a_tls_handshake() {
        assert_eq!(
            summarize(b"\x16\x03\x01\x05\xa8\x01\x00\x05\xa4\x03\x03"),
            TLS_HANDSHAKE
        );
        // A handshake record that is not a ClientHello (a ServerHello is 2).
        assert_eq!(summarize(b"\x16\x03\x03\x00\x7a\x02\x00"), "");
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
        // What lies past the kept part does not matter.
        let mut long = vec![b'a'; 1000];
        long[500] = 0;
        assert_eq!(summarize(&long).len(), MAX_SUMMARY);
    }
}
