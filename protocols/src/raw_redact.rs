//! Redaction of Kubernetes Secret values and command-line credentials in what the agent
//! captures *before* any decoding: raw read/write buffers and Go TLS plaintext chunks (they
//! are stored and shown by `ktrail trace` and `ktrail show --syscalls`), and process command
//! lines (`kubectl create secret generic x --from-literal=password=…`).
//!
//! Buffers are redacted in place and keep their length, so the framing around a value
//! (HTTP/2 frames, gRPC messages, protobuf lengths) stays intact and the collector's
//! decoders still follow the connection. Recognised: the protobuf encoding of a Secret or
//! SecretList (`k8s\0` envelope, also inside etcd values and watch events), JSON with
//! `"kind":"Secret…"` (the `data` and `stringData` values, the last-applied annotation) and
//! YAML with `kind: Secret` (kubectl's `-o yaml`). A value split across two captured
//! buffers, with its marker only in the first, is not recognised in the second.

use std::sync::LazyLock;

use memchr::memmem::Finder;

use crate::pb;
use crate::redact::{is_secret_header, REDACTED};

/// What a redacted value is overwritten with in JSON and YAML text (protobuf values: 0).
const FILL: u8 = b'*';
const PB_MAGIC: &[u8] = b"k8s\0";
const LAST_APPLIED: &[u8] = b"kubectl.kubernetes.io/last-applied-configuration";

/// Redacts Secret values in a captured buffer, in place, keeping its length. Returns true
/// when something was overwritten.
pub fn buffer(buf: &mut [u8]) -> bool {
    // Built once: `memmem::find` builds its searcher on every call, which cost the
    // agent more than the search itself (16 % of its CPU at 100k events/s).
    static SECRET: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"Secret"));
    static ANNOTATION: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(LAST_APPLIED));
    // Fast path: every form recognised names the kind (or the annotation).
    if SECRET.find(buf).is_none() && ANNOTATION.find(buf).is_none() {
        return false;
    }
    let mut changed = protobuf(buf);
    changed |= json(buf);
    changed |= yaml(buf);
    changed |= last_applied(buf);
    changed
}

/// Redacts credentials in a command line (arguments joined by spaces): values of
/// `--from-literal=KEY=VALUE` (every key: they become Secret data with `create secret`),
/// `NAME=VALUE` and `--NAME=VALUE` for credential-like names, and the argument after
/// `--NAME` for those. Returns the line and whether something was redacted.
pub fn cmdline(line: &str) -> (String, bool) {
    let mut changed = false;
    let mut next_is_secret = false;
    let args: Vec<String> = line
        .split(' ')
        .map(|arg| {
            if std::mem::take(&mut next_is_secret) && !arg.is_empty() {
                changed = true;
                return REDACTED.to_string();
            }
            if let Some(rest) = arg.strip_prefix("--from-literal=") {
                if let Some((key, _)) = rest.split_once('=') {
                    changed = true;
                    return format!("--from-literal={key}={REDACTED}");
                }
            }
            match arg.split_once('=') {
                Some((name, value)) if !value.is_empty() && is_secret_header(name) => {
                    changed = true;
                    format!("{name}={REDACTED}")
                }
                None if arg.starts_with('-') && is_secret_header(arg.trim_start_matches('-')) => {
                    next_is_secret = true;
                    arg.to_string()
                }
                _ => arg.to_string(),
            }
        })
        .collect();
    (args.join(" "), changed)
}

/// One protobuf field: number, wire type, and where its value lies (`end` clipped to the
/// buffer when the capture cut it).
struct Field {
    number: u64,
    wire: u64,
    start: usize,
    end: usize,
}

/// The fields of `buf[from..to]`; stops at the first that cannot be read.
fn fields(buf: &[u8], from: usize, to: usize) -> Vec<Field> {
    let mut out = Vec::new();
    let mut pos = from;
    let to = to.min(buf.len());
    let slice = buf.get(..to).unwrap_or_default();
    while pos < to {
        let Some(key) = pb::read_varint(slice, &mut pos) else {
            break;
        };
        let (number, wire) = (key >> 3, key & 7);
        let start;
        match wire {
            0 => {
                start = pos;
                if pb::read_varint(slice, &mut pos).is_none() {
                    break;
                }
            }
            1 => {
                start = pos;
                pos += 8;
            }
            5 => {
                start = pos;
                pos += 4;
            }
            2 => {
                let Some(len) = pb::read_varint(slice, &mut pos) else {
                    break;
                };
                start = pos;
                pos = pos.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
            }
            _ => break,
        }
        if number == 0 {
            break;
        }
        out.push(Field {
            number,
            wire,
            start,
            end: pos.min(to),
        });
    }
    out
}

fn fill(buf: &mut [u8], start: usize, end: usize, with: u8) -> bool {
    let end = end.min(buf.len());
    match buf.get_mut(start..end) {
        Some(s) if !s.is_empty() => {
            s.fill(with);
            true
        }
        _ => false,
    }
}

/// Every `k8s\0` envelope whose kind is Secret or SecretList: the values of its data and
/// stringData entries are zeroed.
fn protobuf(buf: &mut [u8]) -> bool {
    let mut changed = false;
    let starts: Vec<usize> = memchr::memmem::find_iter(buf, PB_MAGIC).collect();
    for at in starts {
        let from = at + PB_MAGIC.len();
        let envelope = fields(buf, from, buf.len());
        // runtime.Unknown: 1 typeMeta {1 apiVersion, 2 kind}, 2 raw.
        let kind = envelope
            .iter()
            .find(|f| f.number == 1 && f.wire == 2)
            .and_then(|t| {
                fields(buf, t.start, t.end)
                    .into_iter()
                    .find(|f| f.number == 2 && f.wire == 2)
                    .and_then(|k| buf.get(k.start..k.end))
            })
            .unwrap_or_default();
        let Some(raw) = envelope.iter().find(|f| f.number == 2 && f.wire == 2) else {
            continue;
        };
        let (start, end) = (raw.start, raw.end);
        match kind {
            b"Secret" => changed |= secret_message(buf, start, end),
            b"SecretList" => {
                // 1 ListMeta, 2 items (Secret).
                for item in fields(buf, start, end) {
                    if item.number == 2 && item.wire == 2 {
                        changed |= secret_message(buf, item.start, item.end);
                    }
                }
            }
            _ => {}
        }
    }
    changed
}

/// A Secret message in `buf[start..end]`: 1 metadata, 2 data (map<string, bytes>),
/// 3 type, 4 stringData (map<string, string>), 5 immutable. Map entries: 1 key, 2 value.
/// When the message cannot be read to its end, everything after the metadata is zeroed.
fn secret_message(buf: &mut [u8], start: usize, end: usize) -> bool {
    let mut changed = false;
    let fs = fields(buf, start, end);
    let read_to = fs.last().map_or(start, |f| f.end);
    for f in &fs {
        if (f.number == 2 || f.number == 4) && f.wire == 2 {
            let entry = fields(buf, f.start, f.end);
            let entry_read_to = entry.last().map_or(f.start, |e| e.end);
            for e in &entry {
                if e.number == 2 {
                    changed |= fill(buf, e.start, e.end, 0);
                }
            }
            if entry_read_to < f.end {
                changed |= fill(buf, entry_read_to, f.end, 0);
            }
        }
    }
    if read_to < end.min(buf.len()) {
        let after_meta = fs
            .iter()
            .find(|f| f.number == 1)
            .map_or(start, |m| m.end)
            .max(read_to);
        changed |= fill(buf, after_meta, end, 0);
    }
    changed
}

/// JSON with a Secret kind: the string values of every `"data"` and `"stringData"` object.
fn json(buf: &mut [u8]) -> bool {
    if memchr::memmem::find(buf, b"\"kind\":\"Secret").is_none()
        && memchr::memmem::find(buf, b"\"kind\": \"Secret").is_none()
    {
        return false;
    }
    let mut changed = false;
    for key in [&b"\"data\""[..], b"\"stringData\""] {
        let starts: Vec<usize> = memchr::memmem::find_iter(buf, key).collect();
        for at in starts {
            let mut pos = at + key.len();
            while buf
                .get(pos)
                .is_some_and(|c| c.is_ascii_whitespace() || *c == b':')
            {
                pos += 1;
            }
            if buf.get(pos) == Some(&b'{') {
                changed |= json_object_values(buf, pos + 1);
            }
        }
    }
    changed
}

/// Overwrites the string values of the flat JSON object starting after `{` at `pos`, up
/// to its `}` or the end of the buffer.
fn json_object_values(buf: &mut [u8], mut pos: usize) -> bool {
    let mut changed = false;
    let mut is_value = false;
    while let Some(&c) = buf.get(pos) {
        match c {
            b'}' => break,
            b':' => is_value = true,
            b',' => is_value = false,
            b'"' => {
                let end = string_end(buf, pos + 1);
                if is_value {
                    changed |= fill(buf, pos + 1, end, FILL);
                }
                pos = end;
            }
            _ => {}
        }
        pos += 1;
    }
    changed
}

/// The index of the closing quote of the JSON string whose content starts at `pos` (the
/// buffer's length when it was cut).
fn string_end(buf: &[u8], mut pos: usize) -> usize {
    while let Some(&c) = buf.get(pos) {
        match c {
            b'\\' => pos += 2,
            b'"' => return pos,
            _ => pos += 1,
        }
    }
    buf.len()
}

/// The last-applied annotation holds the whole object as applied, data included: its
/// value is overwritten whatever the kind (JSON string, or protobuf map entry value).
fn last_applied(buf: &mut [u8]) -> bool {
    let mut changed = false;
    let starts: Vec<usize> = memchr::memmem::find_iter(buf, LAST_APPLIED).collect();
    for at in starts {
        let pos = at + LAST_APPLIED.len();
        match buf.get(pos) {
            // JSON: "…configuration":"<escaped JSON>"
            Some(b'"') => {
                let mut p = pos + 1;
                while buf
                    .get(p)
                    .is_some_and(|c| c.is_ascii_whitespace() || *c == b':')
                {
                    p += 1;
                }
                if buf.get(p) == Some(&b'"') {
                    let end = string_end(buf, p + 1);
                    changed |= fill(buf, p + 1, end, FILL);
                }
            }
            // Protobuf map entry: 1 key (this), then 2 value.
            Some(0x12) => {
                let mut p = pos + 1;
                if let Some(len) = pb::read_varint(buf, &mut p) {
                    let end = p.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                    changed |= fill(buf, p, end, 0);
                }
            }
            // YAML: "…configuration: |" and indented lines; the next line on.
            Some(b':') => {
                let line_end = memchr::memchr(b'\n', &buf[pos..]).map_or(buf.len(), |e| pos + e);
                changed |= fill(buf, pos + 1, line_end, FILL);
                changed |= yaml_block(buf, line_end + 1, indent_before(buf, at));
            }
            _ => {}
        }
    }
    changed
}

/// Spaces before the line of `at`.
fn indent_before(buf: &[u8], at: usize) -> usize {
    let line_start = buf
        .get(..at)
        .and_then(|b| memchr::memrchr(b'\n', b))
        .map_or(0, |p| p + 1);
    buf.get(line_start..at)
        .map_or(0, |l| l.iter().take_while(|c| **c == b' ').count())
}

/// YAML with `kind: Secret`: the values under every `data:` and `stringData:` key.
fn yaml(buf: &mut [u8]) -> bool {
    if memchr::memmem::find(buf, b"kind: Secret").is_none() {
        return false;
    }
    let mut changed = false;
    for key in [&b"data:"[..], b"stringData:"] {
        let starts: Vec<usize> = memchr::memmem::find_iter(buf, key).collect();
        for at in starts {
            let indent = indent_before(buf, at);
            let line_start = at - indent;
            let at_line_start = line_start == 0 || buf.get(line_start - 1) == Some(&b'\n');
            let end = at + key.len();
            if !at_line_start || !matches!(buf.get(end), Some(b'\n') | None) {
                continue;
            }
            changed |= yaml_block(buf, end + 1, indent);
        }
    }
    changed
}

/// Lines from `pos` indented deeper than `indent`: everything after their `key: ` (the
/// whole line for block scalar lines) is overwritten.
fn yaml_block(buf: &mut [u8], mut pos: usize, indent: usize) -> bool {
    let mut changed = false;
    while pos < buf.len() {
        let line_end = memchr::memchr(b'\n', &buf[pos..]).map_or(buf.len(), |e| pos + e);
        let line = &buf[pos..line_end];
        let spaces = line.iter().take_while(|c| **c == b' ').count();
        if spaces <= indent && spaces < line.len() {
            break;
        }
        let value_from = memchr::memmem::find(line, b": ").map_or(pos + spaces, |c| pos + c + 2);
        changed |= fill(buf, value_from, line_end, FILL);
        pos = line_end + 1;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &[u8] = b"4fcd13b73763072b0b1898517957a8e0";
    const B64: &[u8] = b"NGZjZDEzYjczNzYzMDcyYjBiMTg5ODUxNzk1N2E4ZTA=";

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        memchr::memmem::find(hay, needle).is_some()
    }

    /// The bytes kubectl 1.34 wrote inside TLS for `create secret generic faults-secret
    /// --from-literal=password=…` (an HTTP/2 DATA frame: protobuf), as the agent captured them.
    fn kubectl_create_frame() -> Vec<u8> {
        let mut b = b"\x00\x00g\x00\x01\x00\x00\x00\x03k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12O\n\x1d\n\rfaults-secret\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12,\n\x08password\x12 ".to_vec();
        b.extend_from_slice(VALUE);
        b.extend_from_slice(b"\x1a\x00\x1a\x00\"\x00");
        b
    }

    #[test]
    fn protobuf_secret_values_are_zeroed_and_framing_kept() {
        let mut b = kubectl_create_frame();
        let len = b.len();
        assert!(buffer(&mut b));
        assert_eq!(b.len(), len);
        assert!(!contains(&b, VALUE));
        assert!(contains(&b, b"faults-secret"), "metadata kept");
        assert!(contains(&b, b"password"), "keys kept");
        // A capture cut inside the value: the rest is zeroed too.
        let mut cut = kubectl_create_frame();
        cut.truncate(cut.len() - 20);
        assert!(buffer(&mut cut));
        assert!(!contains(&cut, &VALUE[..12]));
    }

    #[test]
    fn protobuf_secret_inside_an_etcd_put_and_a_watch_event() {
        // The envelope nested in other messages (etcd Txn put value, watch event object).
        let mut inner = kubectl_create_frame()[9..].to_vec();
        let mut b = b"\x12\x8a\x01\n'/registry/secrets/default/faults-secret\x12".to_vec();
        b.push(inner.len() as u8);
        b.append(&mut inner);
        assert!(buffer(&mut b));
        assert!(!contains(&b, VALUE));
        assert!(contains(&b, b"/registry/secrets/default/faults-secret"));
    }

    #[test]
    fn other_kinds_are_untouched() {
        let mut b =
            b"k8s\0\n\x0f\n\x02v1\x12\tConfigMap\x12\x0c\x12\n\n\x01k\x12\x05value".to_vec();
        let before = b.clone();
        assert!(!buffer(&mut b));
        assert_eq!(b, before);
        let mut j = br#"{"kind":"ConfigMap","data":{"k":"value"}}"#.to_vec();
        assert!(!buffer(&mut j));
    }

    #[test]
    fn json_secret_values_and_last_applied() {
        let mut b = br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"password\":\"NGZjZDEzYjczNzYzMDcyYjBiMTg5ODUxNzk1N2E4ZTA=\"}}"},"managedFields":[{"fieldsV1":{"f:data":{".":{},"f:password":{}}}}]},"data":{"password":"NGZjZDEzYjczNzYzMDcyYjBiMTg5ODUxNzk1N2E4ZTA=","b":"eA=="},"type":"Opaque"}"#.to_vec();
        let len = b.len();
        assert!(buffer(&mut b));
        assert_eq!(b.len(), len);
        let s = String::from_utf8(b).unwrap();
        assert!(!s.contains(std::str::from_utf8(B64).unwrap()), "{s}");
        assert!(!s.contains("eA=="), "{s}");
        assert!(s.contains(r#""type":"Opaque""#), "{s}");
        assert!(s.contains(r#""f:password":{}"#), "{s}");
    }

    #[test]
    fn yaml_from_kubectl_get_o_yaml() {
        let mut b = b"apiVersion: v1\ndata:\n  password: NGZjZDEzYjczNzYzMDcyYjBiMTg5ODUxNzk1N2E4ZTA=\n  other: eA==\nkind: Secret\nmetadata:\n  name: faults-secret\ntype: Opaque\n".to_vec();
        assert!(buffer(&mut b));
        let s = String::from_utf8(b).unwrap();
        assert!(!s.contains("NGZj") && !s.contains("eA=="), "{s}");
        assert!(s.contains("  name: faults-secret\n"), "{s}");
        assert!(s.contains("kind: Secret\n"), "{s}");
    }

    #[test]
    fn mutated_and_cut_buffers_never_panic_and_keep_their_length() {
        // The agent runs this on every captured buffer: any bytes at all.
        let seeds: [Vec<u8>; 3] = [
            kubectl_create_frame(),
            br#"{"kind":"Secret","data":{"a":"eA==","b":"\"x"},"stringData":{"c":"d"}}"#.to_vec(),
            b"kind: Secret\ndata:\n  a: eA==\nkubectl.kubernetes.io/last-applied-configuration: |\n  x\n"
                .to_vec(),
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for seed in &seeds {
            for _ in 0..20_000 {
                let mut b = seed.clone();
                for _ in 0..(next() % 4) {
                    let i = (next() as usize) % b.len();
                    b[i] = next() as u8;
                }
                b.truncate(1 + (next() as usize) % b.len());
                let len = b.len();
                buffer(&mut b);
                assert_eq!(b.len(), len);
            }
        }
    }

    #[test]
    fn command_lines() {
        let (l, c) = cmdline(
            "kubectl --kubeconfig /a.conf create secret generic s --from-literal=password=4fcd --from-literal=user=bob",
        );
        assert!(c);
        assert!(!l.contains("4fcd") && !l.contains("bob"), "{l}");
        assert!(l.contains("--from-literal=password=[redacted]"), "{l}");
        let (l, c) = cmdline("curl --token abc https://x DB_PASSWORD=hunter2 --password=x");
        assert!(c);
        assert!(
            !l.contains("abc") && !l.contains("hunter2") && !l.contains("=x"),
            "{l}"
        );
        let (l, c) = cmdline("kubectl get pods --kubeconfig /etc/k.conf");
        assert!(!c);
        assert_eq!(l, "kubectl get pods --kubeconfig /etc/k.conf");
    }
}
