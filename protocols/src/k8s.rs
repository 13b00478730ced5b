//! Kubernetes objects in JSON and in protobuf (the `k8s\0` envelope), and
//! watch streams in both encodings.

use crate::json::{self, Scalar, Seg};
use crate::message::{ObjectRef, MAX_OBJECTS};
use crate::pb::{self, Fields};
use crate::util;

/// The magic prefix of Kubernetes protobuf bodies.
pub const PROTO_MAGIC: &[u8] = b"k8s\0";
/// Largest watch frame or JSON line buffered for decoding; larger ones are
/// decoded from their first bytes and marked truncated.
pub const MAX_FRAME: usize = 16 * 1024;
/// Most watch events returned by one `WatchStream::feed`.
pub const MAX_EVENTS_PER_FEED: usize = 64;

/// Decodes the objects of a body: a `k8s\0` protobuf envelope, a JSON
/// document (object, list or watch event), or JSON lines. `cut` says the body
/// is a truncated prefix.
pub fn decode_body(body: &[u8], cut: bool) -> Vec<ObjectRef> {
    let b = trim_ws(body);
    if b.starts_with(PROTO_MAGIC) {
        return decode_proto(b, cut).into_iter().collect();
    }
    if b.first() == Some(&b'{') {
        let mut out = Vec::new();
        let mut rest = b;
        while !rest.is_empty() && out.len() < MAX_OBJECTS {
            let (objs, consumed, truncated) = decode_json_doc(rest, cut);
            out.extend(objs);
            if truncated || consumed == 0 {
                break;
            }
            rest = trim_ws(rest.get(consumed..).unwrap_or_default());
        }
        out.truncate(MAX_OBJECTS);
        return out;
    }
    Vec::new()
}

fn trim_ws(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
}

/// Decodes one JSON document: returns its objects, the bytes it took and
/// whether it was cut short.
fn decode_json_doc(src: &[u8], cut: bool) -> (Vec<ObjectRef>, usize, bool) {
    let scan = json::scan(src);
    let truncated = scan.truncated || (cut && scan.consumed >= src.len());
    // Group scalars by object root: "" (the document), "object" (a watch
    // event), "items[i]" (a list) and "object.items[i]".
    let mut roots: Vec<(Vec<Seg>, ObjectRef)> = Vec::new();
    let mut event_type: Option<String> = None;
    for item in &scan.items {
        let p = &item.path;
        if p.len() == 1 && p.first() == Some(&Seg::Key("type".into())) {
            if let Scalar::Str(s) = &item.value {
                event_type = Some(s.clone());
            }
        }
        let (root_len, rel) = split_root(p);
        let root: Vec<Seg> = p.iter().take(root_len).cloned().collect();
        let idx = match roots.iter().position(|(r, _)| *r == root) {
            Some(i) => i,
            None => {
                if roots.len() >= MAX_OBJECTS {
                    continue;
                }
                roots.push((root, ObjectRef::default()));
                roots.len() - 1
            }
        };
        if let Some((_, o)) = roots.get_mut(idx) {
            apply_json_field(o, &rel, &item.value);
        }
    }
    // A watch event's top level only has "type": drop that empty root.
    let has_object = roots
        .iter()
        .any(|(r, _)| r.first() == Some(&Seg::Key("object".into())));
    let list_kind: Option<String> = roots
        .iter()
        .find(|(r, _)| r.is_empty() || *r == [Seg::Key("object".into())])
        .and_then(|(_, o)| o.kind.clone());
    let has_rows = roots
        .iter()
        .any(|(r, _)| r.iter().any(|s| *s == Seg::Key("rows".into())));
    let mut out = Vec::new();
    for (root, mut o) in roots {
        if has_object && root.is_empty() {
            continue;
        }
        // A Table (kubectl get) is only the frame of its rows' objects.
        if has_rows && o.kind.as_deref() == Some("Table") {
            continue;
        }
        if root.iter().any(|s| matches!(s, Seg::Index(_))) && o.kind.is_none() {
            o.kind = list_kind
                .as_deref()
                .and_then(|k| k.strip_suffix("List"))
                .map(str::to_string);
        }
        if root.first() == Some(&Seg::Key("object".into())) {
            o.event_type.clone_from(&event_type);
        }
        o.truncated = truncated;
        if o != ObjectRef::default() {
            out.push(o);
        }
    }
    (out, scan.consumed, truncated)
}

/// Splits a path into its object root and the path inside the object.
fn split_root(p: &[Seg]) -> (usize, Vec<String>) {
    let mut i = 0;
    if p.first() == Some(&Seg::Key("object".into())) {
        i = 1;
    }
    match (p.get(i), p.get(i + 1), p.get(i + 2)) {
        // A list's items.
        (Some(Seg::Key(k)), Some(Seg::Index(_)), _) if k == "items" => i += 2,
        // A Table's rows (kubectl get): the object of each row.
        (Some(Seg::Key(k)), Some(Seg::Index(_)), Some(Seg::Key(o)))
            if k == "rows" && o == "object" =>
        {
            i += 3
        }
        _ => {}
    }
    let rel = p
        .iter()
        .skip(i)
        .map(|s| match s {
            Seg::Key(k) => k.clone(),
            Seg::Index(n) => format!("[{n}]"),
        })
        .collect();
    (i, rel)
}

fn apply_json_field(o: &mut ObjectRef, rel: &[String], v: &Scalar) {
    let s = match v {
        Scalar::Str(s) => s.clone(),
        Scalar::Other(s) => s.clone(),
    };
    let r: Vec<&str> = rel.iter().map(String::as_str).collect();
    match r.as_slice() {
        ["apiVersion"] => o.api_version = Some(s),
        ["kind"] => o.kind = Some(s),
        ["metadata", "name"] => o.name = Some(s),
        ["metadata", "namespace"] => o.namespace = Some(s),
        ["metadata", "uid"] => o.uid = Some(s),
        ["metadata", "resourceVersion"] => o.resource_version = Some(s),
        ["spec", "nodeName"] => o.node_name = Some(s),
        ["status", "phase"] => o.phase = Some(s),
        ["target", "name"] => o.target = Some(s),
        ["metadata", "ownerReferences", "[0]", "uid"] => o.owner_uid = Some(s),
        ["involvedObject" | "regarding", "uid"] => o.regarding_uid = Some(s),
        // An Event's type (Normal, Warning) and its events/v1 message.
        ["type"] if o.kind.as_deref() == Some("Event") => o.status = Some(s),
        ["note"] => o.message = Some(s),
        ["status"] if matches!(v, Scalar::Str(_)) => o.status = Some(s),
        ["reason"] => o.reason = Some(s),
        ["message"] => o.message = Some(s),
        ["code"] => o.code = s.parse().ok(),
        _ => {}
    }
}

/// Decodes a `k8s\0` protobuf envelope (runtime.Unknown).
pub fn decode_proto(b: &[u8], cut: bool) -> Option<ObjectRef> {
    let env = b.strip_prefix(PROTO_MAGIC)?;
    let mut o = ObjectRef::default();
    let mut fields = Fields::lenient(env);
    let mut raw: Option<&[u8]> = None;
    for (n, v) in fields.by_ref() {
        match (n, v.msg()) {
            (1, Some(tm)) => {
                // runtime.TypeMeta {apiVersion = 1, kind = 2}
                o.api_version = pb::get_str(tm, 1);
                o.kind = pb::get_str(tm, 2);
            }
            (2, Some(r)) => raw = Some(r),
            _ => {}
        }
    }
    o.truncated = cut || fields.truncated();
    if let Some(raw) = raw {
        decode_raw_object(&mut o, raw);
    }
    Some(o)
}

/// Reads identity fields of a protobuf-encoded object by its kind.
fn decode_raw_object(o: &mut ObjectRef, raw: &[u8]) {
    let kind = o.kind.clone().unwrap_or_default();
    let mut f = Fields::lenient(raw);
    for (n, v) in f.by_ref() {
        let Some(b) = v.msg() else {
            if kind == "Status" && n == 6 {
                o.code = v.varint().map(|c| c as i64);
            }
            continue;
        };
        match (kind.as_str(), n) {
            ("Status", 2..=4) if v.is_partial() => {}
            ("Status", 2) => o.status = Some(util::text(b)),
            ("Status", 3) => o.message = Some(util::text(b)),
            ("Status", 4) => o.reason = Some(util::text(b)),
            (k, 1) if k == "Status" || k.ends_with("List") => {
                // metav1.ListMeta {resourceVersion = 2}
                o.resource_version = pb::get_str(b, 2);
            }
            (_, 1) => object_meta(o, b),
            ("Pod", 2) => {
                // PodSpec {nodeName = 10}
                if let Some(nn) = lenient_str(b, 10) {
                    o.node_name = Some(nn);
                }
            }
            ("Pod", 3) => {
                // PodStatus {phase = 1}
                o.phase = lenient_str(b, 1);
            }
            ("Binding", 2) => {
                // ObjectReference {kind = 1, namespace = 2, name = 3}
                o.target = lenient_str(b, 3);
            }
            ("Event", n) if !v.is_partial() => event_field(o, n, b),
            _ => {}
        }
    }
    if f.truncated() {
        o.truncated = true;
    }
}

/// A field of an Event: core/v1 {involvedObject = 2, reason = 3, message = 4,
/// type = 9} or events.k8s.io/v1 {reason = 7, regarding = 8, note = 10,
/// type = 11}; ObjectReference {uid = 4}.
fn event_field(o: &mut ObjectRef, n: u32, b: &[u8]) {
    let events_v1 = o.api_version.as_deref() == Some("events.k8s.io/v1");
    match (events_v1, n) {
        (false, 2) | (true, 8) => o.regarding_uid = lenient_str(b, 4),
        (false, 3) | (true, 7) => o.reason = Some(util::text(b)),
        (false, 4) | (true, 10) => o.message = Some(util::text(b)),
        (false, 9) | (true, 11) => o.status = Some(util::text(b)),
        _ => {}
    }
}

fn lenient_str(b: &[u8], n: u32) -> Option<String> {
    Fields::lenient(b)
        .find(|(f, _)| *f == n)
        .and_then(|(_, v)| v.bytes())
        .map(util::text)
}

/// metav1.ObjectMeta {name = 1, generateName = 2, namespace = 3, uid = 5, resourceVersion = 6}
fn object_meta(o: &mut ObjectRef, b: &[u8]) {
    for (n, v) in Fields::lenient(b) {
        let Some(s) = v.bytes() else { continue };
        match n {
            1 => o.name = Some(util::text(s)),
            3 => o.namespace = Some(util::text(s)),
            5 => o.uid = Some(util::text(s)),
            6 => o.resource_version = Some(util::text(s)),
            // ownerReferences: OwnerReference {uid = 4}; the first one, as
            // controllers put themselves first.
            13 if o.owner_uid.is_none() => o.owner_uid = lenient_str(s, 4),
            2 if o.name.is_none() => {}
            _ => {}
        }
    }
}

/// Decodes one protobuf watch event (metav1.WatchEvent {type = 1, object = 2
/// (runtime.RawExtension {raw = 1})}) without its length prefix.
pub fn decode_proto_watch_event(b: &[u8], cut: bool) -> Option<ObjectRef> {
    let mut typ = None;
    let mut obj = None;
    let mut f = Fields::lenient(b);
    for (n, v) in f.by_ref() {
        match (n, v.msg()) {
            (1, Some(t)) if !v.is_partial() => typ = Some(util::text(t)),
            (2, Some(ext)) => {
                let raw = Fields::lenient(ext)
                    .find(|(n, _)| *n == 1)
                    .and_then(|(_, v)| v.msg());
                obj = raw.and_then(|r| decode_proto(r, cut));
            }
            _ => {}
        }
    }
    typ.as_ref()?;
    let mut o = obj.unwrap_or_default();
    o.event_type = typ;
    o.truncated |= cut || f.truncated();
    Some(o)
}

/// Incremental decoder of a watch response body: JSON lines or 4-byte
/// length-prefixed protobuf frames. Buffers at most `MAX_FRAME` bytes.
#[derive(Debug, Default)]
pub struct WatchStream {
    buf: Vec<u8>,
    /// Protobuf frame: bytes of the current frame still to come.
    want: Option<usize>,
    /// Bytes to drop (rest of an oversized or lost frame/line).
    skip: usize,
    cut: bool,
    /// Lost sync for good (a gap across protobuf frames).
    lost: bool,
    proto: Option<bool>,
    dropped: u64,
    /// Bytes of the current protobuf frame after a gap: counted, not kept.
    frozen: usize,
}

impl WatchStream {
    pub fn new(protobuf: Option<bool>) -> Self {
        WatchStream {
            proto: protobuf,
            ..WatchStream::default()
        }
    }

    /// True once a gap made the stream undecodable.
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// Bytes held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds body bytes; returns the events completed.
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<ObjectRef> {
        let mut out = Vec::new();
        while !data.is_empty() && !self.lost {
            if self.skip > 0 {
                if self.proto == Some(true) {
                    let n = self.skip.min(data.len());
                    self.skip -= n;
                    data = data.get(n..).unwrap_or_default();
                } else {
                    // JSON: drop up to the end of the line.
                    match data.iter().position(|&c| c == b'\n') {
                        Some(i) => {
                            self.skip = 0;
                            data = data.get(i + 1..).unwrap_or_default();
                        }
                        None => return out,
                    }
                }
                continue;
            }
            if self.proto.is_none() {
                let first = data.first().copied().unwrap_or(b' ');
                if first.is_ascii_whitespace() {
                    data = data.get(1..).unwrap_or_default();
                    continue;
                }
                self.proto = Some(first != b'{');
            }
            if self.proto == Some(true) {
                self.feed_proto(&mut data, &mut out);
            } else {
                self.feed_json(&mut data, &mut out);
            }
        }
        if out.len() > MAX_EVENTS_PER_FEED {
            // Parsing went on (to stay in sync); the excess is counted.
            self.dropped += (out.len() - MAX_EVENTS_PER_FEED) as u64;
            out.truncate(MAX_EVENTS_PER_FEED);
        }
        out
    }

    /// Events decoded but not returned (more than `MAX_EVENTS_PER_FEED` in
    /// one call).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn feed_json(&mut self, data: &mut &[u8], out: &mut Vec<ObjectRef>) {
        match data.iter().position(|&c| c == b'\n') {
            Some(i) => {
                let line = data.get(..i).unwrap_or_default();
                *data = data.get(i + 1..).unwrap_or_default();
                let full = util::push_bounded(&mut self.buf, line, MAX_FRAME);
                let cut = self.cut || !full;
                out.extend(decode_body(&self.buf, cut));
                self.buf.clear();
                self.cut = false;
            }
            None => {
                if !util::push_bounded(&mut self.buf, data, MAX_FRAME) {
                    out.extend(decode_body(&self.buf, true));
                    self.buf.clear();
                    self.skip = 1;
                }
                *data = &[];
            }
        }
    }

    fn feed_proto(&mut self, data: &mut &[u8], out: &mut Vec<ObjectRef>) {
        let want = match self.want {
            Some(w) => w,
            None => {
                let need = 4usize.saturating_sub(self.buf.len());
                let take = need.min(data.len());
                self.buf
                    .extend_from_slice(data.get(..take).unwrap_or_default());
                *data = data.get(take..).unwrap_or_default();
                if self.buf.len() < 4 {
                    return;
                }
                let mut l = [0u8; 4];
                l.copy_from_slice(self.buf.get(..4).unwrap_or(&[0; 4]));
                self.buf.clear();
                let len = u32::from_be_bytes(l) as usize;
                self.want = Some(len);
                len
            }
        };
        let room = want.saturating_sub(self.buf.len() + self.frozen);
        let take = room.min(data.len());
        if self.cut {
            // After a gap the frame's later bytes are not contiguous with
            // what we have: count them only.
            self.frozen += take;
        } else {
            util::push_bounded(
                &mut self.buf,
                data.get(..take).unwrap_or_default(),
                MAX_FRAME,
            );
        }
        *data = data.get(take..).unwrap_or_default();
        let have = self.buf.len() + self.frozen;
        if have >= want || have >= MAX_FRAME {
            let cut = self.cut || have < want;
            out.extend(decode_proto_watch_event(&self.buf, cut));
            self.skip = want.saturating_sub(have);
            self.buf.clear();
            self.want = None;
            self.cut = false;
            self.frozen = 0;
        }
    }

    /// `n` body bytes were not captured. Returns the event that was being
    /// assembled, decoded from what was there.
    pub fn gap(&mut self, n: u64) -> Vec<ObjectRef> {
        let mut out = Vec::new();
        if n == 0 {
            return out;
        }
        if self.proto == Some(true) {
            match self.want {
                Some(w) if n <= w.saturating_sub(self.buf.len() + self.frozen) as u64 => {
                    // The gap is inside this frame: the missing bytes are
                    // accounted, not stored, and the frame decodes as cut.
                    self.cut = true;
                    self.want = Some(w.saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)));
                }
                _ if self.skip as u64 >= n => self.skip -= n as usize,
                _ => self.lost = true,
            }
        } else {
            // JSON: the current line is cut; the next newline resyncs.
            if !self.buf.is_empty() {
                out = decode_body(&self.buf, true);
                self.buf.clear();
            }
            self.cut = false;
            self.skip = 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_and_event_subjects_link_objects() {
        let rs = br#"{"kind":"ReplicaSet","apiVersion":"apps/v1","metadata":{"name":"web-1","namespace":"default","uid":"rs","ownerReferences":[{"apiVersion":"apps/v1","kind":"Deployment","name":"web","uid":"dep","controller":true}]}}"#;
        let o = &decode_body(rs, false)[0];
        assert_eq!(o.owner_uid.as_deref(), Some("dep"));
        let ev = br#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"x.1","namespace":"default"},"involvedObject":{"kind":"Pod","name":"x","uid":"pod"},"reason":"Failed","message":"Failed to pull image","type":"Warning"}"#;
        let o = &decode_body(ev, false)[0];
        assert_eq!(o.regarding_uid.as_deref(), Some("pod"));
        assert_eq!(o.reason.as_deref(), Some("Failed"));
        assert_eq!(o.message.as_deref(), Some("Failed to pull image"));
        assert_eq!(o.status.as_deref(), Some("Warning"));
        // The same Event in protobuf (core/v1), as the kubelet sends it.
        let mut raw = Vec::new();
        let field = |buf: &mut Vec<u8>, n: u8, b: &[u8]| {
            buf.push(n << 3 | 2);
            buf.push(b.len() as u8);
            buf.extend_from_slice(b);
        };
        let mut involved = Vec::new();
        field(&mut involved, 4, b"pod");
        let mut meta = Vec::new();
        field(&mut meta, 1, b"x.1");
        field(&mut raw, 1, &meta);
        field(&mut raw, 2, &involved);
        field(&mut raw, 3, b"Pulling");
        field(&mut raw, 4, b"Pulling image");
        field(&mut raw, 9, b"Normal");
        let mut type_meta = Vec::new();
        field(&mut type_meta, 1, b"v1");
        field(&mut type_meta, 2, b"Event");
        let mut env = PROTO_MAGIC.to_vec();
        field(&mut env, 1, &type_meta);
        field(&mut env, 2, &raw);
        let o = decode_proto(&env, false).expect("decodes");
        assert_eq!(o.regarding_uid.as_deref(), Some("pod"));
        assert_eq!(o.reason.as_deref(), Some("Pulling"));
        assert_eq!(o.message.as_deref(), Some("Pulling image"));
        assert_eq!(o.status.as_deref(), Some("Normal"));
    }

    #[test]
    fn json_watch_event_line() {
        let line = br#"{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"x","namespace":"default","uid":"u","resourceVersion":"5"},"spec":{"nodeName":"n1"},"status":{"phase":"Pending"}}}"#;
        let objs = decode_body(line, false);
        assert_eq!(objs.len(), 1);
        let o = &objs[0];
        assert_eq!(o.event_type.as_deref(), Some("ADDED"));
        assert_eq!(o.kind.as_deref(), Some("Pod"));
        assert_eq!(o.node_name.as_deref(), Some("n1"));
        assert_eq!(o.phase.as_deref(), Some("Pending"));
        assert!(!o.truncated);
    }
}
