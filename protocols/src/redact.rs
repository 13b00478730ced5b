//! Redaction of credentials inside the decoders' output. The output says
//! what was redacted, never the value.

use crate::json::{self, Seg};
use crate::util::{find, find_ci};

pub const REDACTED: &str = "[redacted]";

/// True for headers whose value is a credential.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-api-key"
    ) || n.contains("token")
        || n.contains("secret")
        || n.contains("password")
        || n.contains("passwd")
        || n.contains("credential")
        || n.contains("api-key")
        || n.contains("apikey")
}

/// Redacts the values of query parameters named like a credential
/// (`?access_token=…`, `&password=…`). Returns the path and whether
/// something was redacted.
pub fn query(path: &str) -> (String, bool) {
    let Some((p, q)) = path.split_once('?') else {
        return (path.to_string(), false);
    };
    let mut changed = false;
    let parts: Vec<String> = q
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !v.is_empty() && is_secret_header(k) => {
                changed = true;
                format!("{k}={REDACTED}")
            }
            _ => kv.to_string(),
        })
        .collect();
    (format!("{p}?{}", parts.join("&")), changed)
}

/// True if a header value carries a bearer token (whatever the header).
pub fn has_bearer(value: &[u8]) -> bool {
    find_ci(value, b"bearer ").is_some()
}

/// Redacts a body prefix. `secret_object` says the body is (or may be) a
/// Kubernetes Secret: then `data`, `stringData` and the last-applied
/// annotation are redacted in JSON, and a protobuf or undecodable body is
/// dropped whole. Bearer tokens and PEM private keys are redacted in any body.
/// Returns what was redacted.
pub fn body(prefix: &mut Vec<u8>, secret_object: bool) -> Vec<&'static str> {
    let mut what = Vec::new();
    if secret_object && redact_secret(prefix) {
        what.push("secret data");
    }
    if redact_pem(prefix) {
        what.push("private key");
    }
    if redact_bearer(prefix) {
        what.push("bearer token");
    }
    what
}

fn redact_secret(b: &mut Vec<u8>) -> bool {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    if b.get(start) != Some(&b'{') {
        if b.is_empty() {
            return false;
        }
        // Protobuf or something else: nothing of it is kept.
        b.clear();
        b.extend_from_slice(b"[redacted: Secret]");
        return true;
    }
    // JSON, possibly several documents (watch lines), possibly cut short.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut pos = start;
    let mut cut_at: Option<usize> = None;
    while pos < b.len() {
        let doc = b.get(pos..).unwrap_or_default();
        let s = json::scan(doc);
        for it in &s.items {
            if is_secret_path(&it.path) {
                spans.push((pos + it.start, pos + it.end));
            }
        }
        if s.truncated {
            // Whatever follows the last complete value may be secret data.
            let last = s.items.last().map_or(0, |i| i.end);
            cut_at = Some(pos + last);
            break;
        }
        if s.consumed == 0 {
            break;
        }
        pos += s.consumed;
        while b.get(pos).is_some_and(|c| c.is_ascii_whitespace()) {
            pos += 1;
        }
    }
    let mut changed = false;
    if let Some(c) = cut_at {
        if c < b.len() {
            b.truncate(c);
            b.extend_from_slice(b"[redacted: rest of a cut Secret]");
            changed = true;
        }
    }
    for (s, e) in spans.into_iter().rev() {
        if e <= b.len() && s < e {
            b.splice(s..e, format!("\"{REDACTED}\"").into_bytes());
            changed = true;
        }
    }
    changed
}

fn is_secret_path(p: &[Seg]) -> bool {
    p.iter().enumerate().any(|(i, s)| match s {
        Seg::Key(k) if k == "data" || k == "stringData" => {
            // data/stringData of the object (top, watch "object", list item)
            i == 0
                || matches!(p.get(i.wrapping_sub(1)), Some(Seg::Key(k)) if k == "object")
                || matches!(p.get(i.wrapping_sub(1)), Some(Seg::Index(_)))
        }
        Seg::Key(k) if k == "kubectl.kubernetes.io/last-applied-configuration" => true,
        _ => false,
    })
}

const PEM_BEGIN: &[u8] = b"-----BEGIN ";
const PEM_KEY_END: &[u8] = b"PRIVATE KEY-----";

/// Replaces PEM private key blocks (also cut ones, and JSON-escaped ones).
pub fn redact_pem(b: &mut Vec<u8>) -> bool {
    let mut changed = false;
    let mut from = 0;
    while let Some(rel) = b.get(from..).and_then(|s| find(s, PEM_BEGIN)) {
        let s = from + rel;
        // The label must end in PRIVATE KEY----- within the line.
        let line_end = b
            .get(s..)
            .and_then(|r| {
                r.iter()
                    .position(|&c| c == b'\n' || c == b'\\' || c == b'"')
            })
            .map_or(b.len(), |e| s + e);
        let label = b.get(s..line_end).unwrap_or_default();
        if find(label, PEM_KEY_END).is_none() {
            from = s + PEM_BEGIN.len();
            continue;
        }
        let end = b
            .get(line_end..)
            .and_then(|r| find(r, b"-----END "))
            .and_then(|e| {
                let e = line_end + e;
                b.get(e..)
                    .and_then(|r| find(r, PEM_KEY_END))
                    .map(|k| e + k + PEM_KEY_END.len())
            })
            .unwrap_or(b.len());
        let rep = b"[redacted private key]";
        b.splice(s..end, rep.iter().copied());
        changed = true;
        from = s + rep.len();
    }
    changed
}

/// Replaces the token after every "Bearer ".
pub fn redact_bearer(b: &mut Vec<u8>) -> bool {
    let mut changed = false;
    let mut from = 0;
    while let Some(rel) = b.get(from..).and_then(|s| find_ci(s, b"bearer ")) {
        let s = from + rel + b"bearer ".len();
        let end = b
            .get(s..)
            .and_then(|r| {
                r.iter()
                    .position(|&c| !(c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c)))
            })
            .map_or(b.len(), |e| s + e);
        if end > s {
            b.splice(s..end, REDACTED.bytes());
            changed = true;
            from = s + REDACTED.len();
        } else {
            from = s;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert!(is_secret_header("Authorization"));
        assert!(is_secret_header("x-auth-token"));
        assert!(is_secret_header("Set-Cookie"));
        assert!(!is_secret_header("content-type"));
    }

    #[test]
    fn query_parameters() {
        assert_eq!(
            query("/api/v1/x?watch=true&access_token=abc&b=1"),
            (
                "/api/v1/x?watch=true&access_token=[redacted]&b=1".to_string(),
                true
            )
        );
        assert_eq!(
            query("/api/v1/x?watch=true"),
            ("/api/v1/x?watch=true".to_string(), false)
        );
    }

    #[test]
    fn pem_and_bearer() {
        let mut b = b"{\"key\":\"-----BEGIN EC PRIVATE KEY-----\\nMHcCAQ\\n-----END EC PRIVATE KEY-----\\n\",\"a\":\"Bearer abc.def\"}".to_vec();
        let what = body(&mut b, false);
        let s = String::from_utf8(b).unwrap();
        assert!(!s.contains("MHcCAQ"), "{s}");
        assert!(!s.contains("abc.def"), "{s}");
        assert_eq!(what, vec!["private key", "bearer token"]);
        // A certificate is not a key.
        let mut c = b"-----BEGIN CERTIFICATE-----\nMII".to_vec();
        assert!(!redact_pem(&mut c));
    }

    #[test]
    fn cut_secret_json() {
        let mut b = br#"{"kind":"Secret","data":{"password":"aHVudGVy"#.to_vec();
        assert!(redact_secret(&mut b));
        let s = String::from_utf8(b).unwrap();
        assert!(!s.contains("aHVu"), "{s}");
    }
}
