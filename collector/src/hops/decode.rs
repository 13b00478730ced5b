//! The decoding stage: each side's bytes through a `ktrail_protocols`
//! decoder, and decoded messages turned into a hop's fields.
//!
//! Every side of a connection decodes what it moved (sends as client → server
//! and receives as server → client when it is the client, the other way round
//! when it is the server; the decoder also swaps directions it finds
//! reversed). Hops use the client side's messages when an agent saw the
//! client, else the server side's.

use ktrail_proto::v1::{CriInfo, EtcdInfo, Hop, ObjectRef as PbObjectRef};
use ktrail_protocols::{ConnectionDecoder, Direction as PDir, Message, Part, Protocol};

use super::run::Direction;
use super::side::Role;

/// Objects kept on one hop.
pub const MAX_HOP_OBJECTS: usize = 16;
/// Keys and events kept in a hop's etcd summary.
const MAX_ETCD_KEYS: usize = 16;
/// Redaction notes kept on one hop.
const MAX_REDACTIONS: usize = 16;
/// Stream ids one chunk is attributed to (the frames it starts).
const MAX_FRAMES_SCANNED: usize = 64;

/// A side's decoder and what it found out.
#[derive(Debug, Default)]
pub struct SideDecoder {
    dec: ConnectionDecoder,
    /// The role its directions are given by (the side's role as known when
    /// its first bytes came), kept so that each direction's state in the
    /// decoder follows the same bytes; the decoder's own correction
    /// (`swapped`) and [`SideDecoder::feed`]'s re-mapping say what it is.
    mapped_as: Option<Role>,
}

impl SideDecoder {
    /// Starts over (TLS plaintext replaces the ciphertext decoded so far).
    pub fn reset(&mut self) {
        self.dec = ConnectionDecoder::new();
        self.mapped_as = None;
    }

    /// The role its directions stand for now.
    fn effective(&self) -> Option<Role> {
        self.mapped_as
            .map(|r| if self.dec.swapped() { r.opposite() } else { r })
    }

    /// The side's role as its bytes tell it (a request it sent, a response,
    /// a preface), whatever was assumed: on a connection joined in its
    /// middle the first to send may well be the server (a watch event).
    /// `None` while its bytes told nothing.
    pub fn role(&self) -> Option<Role> {
        self.effective().filter(|_| self.dec.directions_told())
    }

    pub fn protocol(&self) -> Protocol {
        self.dec.protocol()
    }

    /// True while this side's HTTP/2 header tables are known both ways: it saw
    /// the connection from its start and never lost sync (a read cut by the
    /// capture limit or a late attach makes them unknown).
    pub fn h2_tables_known(&self) -> bool {
        [PDir::ClientToServer, PDir::ServerToClient]
            .into_iter()
            .all(|d| self.dec.hpack_table_known(d) == Some(true))
    }

    /// Feeds one transfer. `role` is the side's role as known now (a server's
    /// sends go server → client).
    pub fn feed(
        &mut self,
        role: Option<Role>,
        dir: Direction,
        data: &[u8],
        bytes: u64,
        ts: u64,
    ) -> Vec<Message> {
        let mapped = *self.mapped_as.get_or_insert(role.unwrap_or(Role::Client));
        if let Some(now) = role.filter(|_| !self.dec.directions_told()) {
            if self.effective() != Some(now) {
                // Its role changed before its own bytes told it (another
                // side's did): the decoder's state moves with the bytes.
                self.dec.reverse_directions();
            }
        }
        let role = mapped;
        let client_to_server = match (role, dir) {
            (Role::Client, Direction::Send) | (Role::Server, Direction::Recv) => true,
            (Role::Client, Direction::Recv) | (Role::Server, Direction::Send) => false,
        };
        let d = if client_to_server {
            PDir::ClientToServer
        } else {
            PDir::ServerToClient
        };
        let captured = usize::try_from(bytes).map_or(data.len(), |n| n.min(data.len()));
        self.dec.feed(d, &data[..captured], bytes, ts)
    }

    /// The connection closed: what was still being assembled.
    pub fn finish(&mut self, ts: u64) -> Vec<Message> {
        self.dec.finish(ts)
    }
}

/// The HTTP/2 stream ids of the frames a chunk starts with (whole frames as
/// Go writes them); empty when the chunk is not a clean frame sequence.
pub fn h2_stream_ids(data: &[u8]) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut p = data;
    if let Some(rest) = p.strip_prefix(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice()) {
        p = rest;
    }
    let mut frames = 0;
    while p.len() >= 9 && frames < MAX_FRAMES_SCANNED {
        frames += 1;
        let len = usize::from(p[0]) << 16 | usize::from(p[1]) << 8 | usize::from(p[2]);
        let sid = u32::from_be_bytes([p[5] & 0x7f, p[6], p[7], p[8]]);
        if p[3] > 9 || len > 1 << 24 {
            return Vec::new();
        }
        if sid != 0 && !ids.contains(&sid) {
            ids.push(sid);
        }
        match p.get(9 + len..) {
            Some(rest) => p = rest,
            None => break,
        }
    }
    ids
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Http1 => "http1",
        Protocol::Http2 => "http2",
        Protocol::Grpc => "grpc",
        Protocol::Ttrpc => "ttrpc",
        Protocol::Unknown => "unknown",
    }
}

fn set_if_empty(field: &mut String, v: Option<&String>) {
    if field.is_empty() {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            field.clone_from(v);
        }
    }
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

fn push_object(hop: &mut Hop, o: PbObjectRef) {
    if hop.objects.len() < MAX_HOP_OBJECTS && !hop.objects.contains(&o) {
        hop.objects.push(o);
    }
}

fn objects_of(m: &Message, hop: &mut Hop) {
    if let Some(r) = &m.resource {
        push_object(
            hop,
            PbObjectRef {
                resource: r.resource.clone(),
                namespace: opt(&r.namespace),
                name: opt(&r.name),
                subresource: opt(&r.subresource),
                api_version: if r.version.is_empty() {
                    String::new()
                } else if r.group.is_empty() {
                    r.version.clone()
                } else {
                    format!("{}/{}", r.group, r.version)
                },
                ..PbObjectRef::default()
            },
        );
    }
    for o in &m.objects {
        // A metav1.Status is an outcome, not an object (its message goes to
        // status_message).
        if o.kind.as_deref() == Some("Status") && o.name.is_none() {
            continue;
        }
        push_object(
            hop,
            PbObjectRef {
                resource: String::new(),
                namespace: opt(&o.namespace),
                name: opt(&o.name),
                uid: opt(&o.uid),
                kind: opt(&o.kind),
                api_version: opt(&o.api_version),
                resource_version: opt(&o.resource_version),
                node_name: o
                    .node_name
                    .clone()
                    .or_else(|| o.target.clone())
                    .unwrap_or_default(),
                phase: opt(&o.phase),
                watch_event_type: opt(&o.event_type),
                subresource: String::new(),
                owner_uid: opt(&o.owner_uid),
                regarding_uid: opt(&o.regarding_uid),
                ..event_fields(o)
            },
        );
    }
}

/// Type, reason and message of a Kubernetes Event (the decoder puts an
/// Event's type where a Status has its status).
fn event_fields(o: &ktrail_protocols::ObjectRef) -> PbObjectRef {
    if o.kind.as_deref() != Some("Event") {
        return PbObjectRef::default();
    }
    PbObjectRef {
        event_type: opt(&o.status),
        reason: opt(&o.reason),
        message: opt(&o.message),
        ..PbObjectRef::default()
    }
}

fn etcd_of(m: &Message, info: &mut EtcdInfo) {
    let Some(e) = &m.etcd else { return };
    let push_key = |keys: &mut Vec<String>, k: &String| {
        if keys.len() < MAX_ETCD_KEYS && !keys.contains(k) {
            keys.push(k.clone());
        }
    };
    if info.op.is_empty() {
        let mut op = e.op.clone();
        for s in e.success.iter().take(4) {
            op.push_str(&format!(" {} {}", s.op, s.key));
        }
        info.op = op;
    }
    for k in &e.keys {
        push_key(&mut info.keys, k);
    }
    for s in &e.success {
        push_key(&mut info.keys, &s.key);
    }
    for ev in &e.events {
        push_key(&mut info.keys, &ev.key);
        if info.events.len() < MAX_ETCD_KEYS {
            info.events.push(format!("{} {}", ev.kind, ev.key));
        }
    }
    if let Some(r) = e
        .revision
        .filter(|_| m.part != Part::Request || info.revision == 0)
    {
        info.revision = r;
    }
    if let Some(ok) = e.succeeded {
        info.txn_result = if ok { "succeeded" } else { "failed" }.to_owned();
    }
}

fn cri_of(m: &Message, info: &mut CriInfo) {
    let Some(c) = &m.cri else { return };
    set_if_empty(&mut info.method, Some(&c.method));
    set_if_empty(&mut info.pod_name, c.pod_name.as_ref());
    set_if_empty(&mut info.pod_namespace, c.pod_namespace.as_ref());
    set_if_empty(&mut info.pod_uid, c.pod_uid.as_ref());
    set_if_empty(&mut info.container_name, c.container_name.as_ref());
    set_if_empty(&mut info.image, c.image.as_ref());
    set_if_empty(&mut info.image_ref, c.image_ref.as_ref());
    set_if_empty(&mut info.pod_sandbox_id, c.pod_sandbox_id.as_ref());
    set_if_empty(&mut info.container_id, c.container_id.as_ref());
}

/// The outcome part of a summary: " → 201", " → NotFound: …".
fn outcome(resp: &Message) -> String {
    let mut s = String::new();
    if let Some(g) = resp.grpc_status {
        s.push_str(" → ");
        s.push_str(&ktrail_protocols::message::grpc_code_name(g));
        if let Some(m) = resp.grpc_message.as_deref().filter(|m| !m.is_empty()) {
            s.push_str(&format!(": {m}"));
        }
    } else if let Some(st) = resp.status.filter(|_| resp.protocol != Protocol::Grpc) {
        s.push_str(&format!(" → {st}"));
    } else if let Some(m) = resp.grpc_message.as_deref().filter(|m| !m.is_empty()) {
        s.push_str(&format!(" → {m}"));
    }
    s
}

fn summary(req: Option<&Message>, resp: Option<&Message>) -> String {
    let special = |m: &Message| m.etcd.is_some() || m.cri.is_some();
    match (req, resp) {
        (Some(q), Some(r)) if special(q) || special(r) => {
            let mut s = if special(q) { q.summary() } else { r.summary() };
            if let Some(e) = r.etcd.as_ref().filter(|_| r.grpc_status.unwrap_or(0) == 0) {
                if let Some(ok) = e.succeeded {
                    s.push_str(if ok { " → succeeded" } else { " → failed" });
                }
                if let Some(c) = e.count.filter(|_| e.op == "Range") {
                    s.push_str(&format!(" → {c} kvs"));
                }
            } else {
                s.push_str(&outcome(r));
            }
            s
        }
        (Some(q), Some(r)) if q.protocol == Protocol::Grpc || r.protocol == Protocol::Grpc => {
            format!(
                "gRPC /{}/{}{}",
                q.grpc_service.as_deref().unwrap_or("?"),
                q.grpc_method.as_deref().unwrap_or("?"),
                outcome(r)
            )
        }
        (_, Some(r)) => r.summary(),
        (Some(q), None) => q.summary(),
        (None, None) => String::new(),
    }
}

/// Fills a hop's decoded fields from its request and response messages.
/// Returns false (the hop untouched) when there is nothing decoded.
pub fn annotate(hop: &mut Hop, req: Option<&Message>, resp: Option<&Message>) -> bool {
    let msgs: Vec<&Message> = req.into_iter().chain(resp).collect();
    let Some(first) = msgs.first() else {
        return false;
    };
    let proto = if msgs.iter().any(|m| m.protocol == Protocol::Grpc) {
        Protocol::Grpc
    } else {
        first.protocol
    };
    hop.app_protocol = protocol_name(proto).to_owned();
    if proto == Protocol::Unknown {
        // Nothing decoded: a printable first line stays the summary, else
        // what the bytes look like ("TLS handshake (ciphertext), 517 bytes").
        if hop.summary.is_empty() {
            hop.summary = first.summary();
        }
        return true;
    }
    for m in &msgs {
        set_if_empty(&mut hop.method, m.method.as_ref());
        set_if_empty(&mut hop.path, m.path.as_ref());
        set_if_empty(&mut hop.grpc_service, m.grpc_service.as_ref());
        set_if_empty(&mut hop.grpc_method, m.grpc_method.as_ref());
        if hop.stream_id == 0 {
            hop.stream_id = m.stream_id.unwrap_or(0);
        }
        objects_of(m, hop);
        hop.incomplete |= m.truncated || m.unknown;
        for i in &m.inferred {
            if !hop.inferred.contains(i) {
                hop.inferred.push(i.clone());
            }
        }
        for r in &m.redacted {
            hop.redacted = true;
            if hop.redactions.len() < MAX_REDACTIONS && !hop.redactions.contains(r) {
                hop.redactions.push(r.clone());
            }
        }
    }
    if let Some(r) = resp {
        hop.status_code = r.status.map_or(0, u32::from);
        if let Some(g) = r.grpc_status {
            hop.grpc_status = g;
            hop.has_grpc_status = true;
        }
        hop.status_message = r
            .grpc_message
            .clone()
            .or_else(|| {
                r.objects
                    .iter()
                    .find(|o| o.kind.as_deref() == Some("Status"))
                    .and_then(|o| o.message.clone().or_else(|| o.reason.clone()))
            })
            .unwrap_or_default();
    }
    let mut etcd = EtcdInfo::default();
    let mut cri = CriInfo::default();
    for m in &msgs {
        etcd_of(m, &mut etcd);
        cri_of(m, &mut cri);
    }
    if !etcd.op.is_empty() {
        hop.etcd = Some(etcd);
    }
    if !cri.method.is_empty() {
        hop.cri = Some(cri);
    }
    let mut s = summary(req, resp);
    if !s.is_empty() {
        // Never shown as if seen (a watch's summary names no path).
        let inferred: Vec<&str> = hop
            .inferred
            .iter()
            .map(String::as_str)
            .filter(|i| *i != "watch")
            .collect();
        if !inferred.is_empty() {
            s.push_str(&format!(" ({} inferred)", inferred.join(", ")));
        }
        hop.summary = s;
    }
    true
}

/// Whether a message is an item of a watch stream rather than one of a
/// gRPC call's other streamed messages.
pub fn is_watch_event(m: &Message) -> bool {
    m.part == Part::Event
        && m.direction == PDir::ServerToClient
        && (m.objects.iter().any(|o| o.event_type.is_some())
            || m.etcd.as_ref().is_some_and(|e| !e.events.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_scan_names_streams_and_refuses_non_frames() {
        // HEADERS on stream 1, DATA on stream 3, SETTINGS on 0.
        let mut b = vec![0, 0, 1, 1, 4, 0, 0, 0, 1, 0x82];
        b.extend_from_slice(&[0, 0, 2, 0, 1, 0, 0, 0, 3, 1, 2]);
        b.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(h2_stream_ids(&b), vec![1, 3]);
        assert!(h2_stream_ids(b"GET / HTTP/1.1\r\n\r\n").is_empty());
    }

    #[test]
    fn http1_exchange_annotates_method_path_status() {
        let mut d = SideDecoder::default();
        let req = b"POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\nContent-Length: 0\r\n\r\n";
        let resp = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        let q = d.feed(
            Some(Role::Client),
            Direction::Send,
            req,
            req.len() as u64,
            1,
        );
        let r = d.feed(
            Some(Role::Client),
            Direction::Recv,
            resp,
            resp.len() as u64,
            2,
        );
        let mut hop = Hop::default();
        assert!(annotate(&mut hop, q.first(), r.first()));
        assert_eq!(hop.app_protocol, "http1");
        assert_eq!(
            (hop.method.as_str(), hop.path.as_str(), hop.status_code),
            ("POST", "/api/v1/namespaces/default/pods", 201)
        );
        assert_eq!(hop.summary, "POST /api/v1/namespaces/default/pods → 201");
        assert!(hop.redacted);
        assert_eq!(hop.objects[0].resource, "pods");
        assert_eq!(hop.objects[0].namespace, "default");
    }
}
