//! Assembly of one request or response: headers, body, and what the body
//! decodes to (Kubernetes objects, gRPC messages, etcd and CRI operations),
//! redaction, and streamed events. Shared by HTTP/1.1 and HTTP/2.

use crate::cri;
use crate::etcd;
use crate::grpc::{self, GrpcMessage, GrpcStream};
use crate::infer;
use crate::k8s::{self, WatchStream};
use crate::message::{
    Header, HeaderValue, Message, Part, Protocol, BODY_PREFIX_MAX, MAX_HEADERS, MAX_OBJECTS,
};
use crate::redact;
use crate::util;

/// Most body bytes buffered per message for decoding.
pub const MAX_BODY: usize = 16 * 1024;

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Redact credentials (on by default).
    pub redact: bool,
    /// Longest body prefix kept per message (at most `BODY_PREFIX_MAX`).
    pub body_prefix: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            redact: true,
            body_prefix: BODY_PREFIX_MAX,
        }
    }
}

/// One side (request or response) of an exchange being assembled.
#[derive(Debug)]
pub struct Half {
    pub msg: Message,
    body: Vec<u8>,
    cut: bool,
    grpc: Option<GrpcStream>,
    watch: Option<WatchStream>,
    /// Messages of a streaming call are emitted as events.
    streaming: bool,
    /// The `Message` of this half was already emitted (streaming response).
    pub emitted: bool,
    grpc_msgs: Vec<GrpcMessage>,
    /// Containers this connection's CreateContainer calls returned that no
    /// call has named since: a bare-id request naming one is its start.
    created: Vec<String>,
}

/// Adds a header to a message, redacting credentials.
pub fn add_header(msg: &mut Message, name: Option<&[u8]>, value: Option<&[u8]>, cfg: &Config) {
    let name_s = name.map(util::text);
    let v = match (value, &name_s) {
        (None, _) => {
            msg.unknown = true;
            HeaderValue::Unknown
        }
        (Some(v), Some(n)) if cfg.redact && redact::is_secret_header(n) => {
            msg.note_redacted(&format!("header {}", n.to_ascii_lowercase()));
            let _ = v;
            HeaderValue::Redacted
        }
        (Some(v), _) if cfg.redact && redact::has_bearer(v) => {
            msg.note_redacted("bearer token");
            HeaderValue::Redacted
        }
        (Some(v), _) => HeaderValue::Text(util::text(v)),
    };
    if name_s.is_none() {
        msg.unknown = true;
    }
    let v = match (&name_s, v) {
        (Some(n), HeaderValue::Text(t)) if cfg.redact && n == ":path" => {
            let (p, changed) = redact::query(&t);
            if changed {
                msg.note_redacted("query parameter");
            }
            HeaderValue::Text(p)
        }
        (_, v) => v,
    };
    if let (Some(n), HeaderValue::Text(t)) = (&name_s, &v) {
        match n.to_ascii_lowercase().as_str() {
            ":method" => msg.method = Some(t.clone()),
            ":path" => msg.path = Some(t.clone()),
            ":authority" | "host" => msg.authority = Some(t.clone()),
            ":status" => msg.status = t.parse().ok(),
            "content-type" => msg.content_type = Some(t.clone()),
            "grpc-status" => msg.grpc_status = t.parse().ok(),
            "grpc-message" => msg.grpc_message = Some(grpc::decode_message(t)),
            _ => {}
        }
    }
    if msg.headers.len() < MAX_HEADERS {
        msg.headers.push(Header {
            name: name_s,
            value: v,
        });
    }
}

/// Fills gRPC service/method from the path and sets the protocol.
pub fn classify(msg: &mut Message) {
    let is_grpc = msg
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/grpc"));
    // Mid-connection the content-type may be an unknown HPACK entry while
    // the path is known: the gRPC services decoded here are recognised by
    // their path alone.
    let known_service = msg.content_type.is_none()
        && msg.path.as_deref().is_some_and(|p| {
            let (svc, _) = grpc::split_path(p).unwrap_or_default();
            etcd::is_etcd_service(&svc) || cri::is_cri_service(&svc)
        });
    if is_grpc || known_service {
        msg.protocol = Protocol::Grpc;
        if let Some((s, m)) = msg.path.as_deref().and_then(grpc::split_path) {
            msg.grpc_service = Some(s);
            msg.grpc_method = Some(m);
        }
    }
}

fn is_watch(req_path: Option<&str>, content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| c.contains("watch"))
        || req_path.is_some_and(|p| {
            p.contains("watch=true") || p.contains("watch=1") || p.contains("/watch/")
        })
}

impl Half {
    /// Starts a half whose headers are in `msg`. `req` is the request of a
    /// response (for method/path and gRPC method).
    pub fn new(mut msg: Message, req: Option<&Message>) -> Self {
        if let Some(r) = req {
            msg.method.clone_from(&r.method);
            msg.path.clone_from(&r.path);
            if msg.authority.is_none() {
                msg.authority.clone_from(&r.authority);
            }
            if msg.protocol == Protocol::Grpc || r.protocol == Protocol::Grpc {
                msg.protocol = Protocol::Grpc;
                msg.grpc_service.clone_from(&r.grpc_service);
                msg.grpc_method.clone_from(&r.grpc_method);
            }
            msg.inferred.clone_from(&r.inferred);
            msg.patches_status = r.patches_status;
        }
        classify(&mut msg);
        let grpc_call = msg.protocol == Protocol::Grpc;
        let streaming = if grpc_call {
            grpc::is_streaming(
                msg.grpc_service.as_deref().unwrap_or(""),
                msg.grpc_method.as_deref().unwrap_or(""),
            )
        } else {
            msg.part == Part::Response
                && (msg.status == Some(200) || msg.status.is_none())
                && is_watch(msg.path.as_deref(), msg.content_type.as_deref())
        };
        let watch = (!grpc_call && streaming).then(|| {
            let ct = msg.content_type.as_deref().unwrap_or("");
            WatchStream::new(if ct.contains("protobuf") {
                Some(true)
            } else if ct.contains("json") {
                Some(false)
            } else {
                None
            })
        });
        Half {
            msg,
            body: Vec::new(),
            cut: false,
            grpc: grpc_call.then(GrpcStream::default),
            watch,
            streaming,
            emitted: false,
            grpc_msgs: Vec::new(),
            created: Vec::new(),
        }
    }

    /// The containers created on this connection and not yet named by a call
    /// (see `infer_grpc_call`).
    pub fn with_created(mut self, created: &[String]) -> Self {
        self.created = created.to_vec();
        self
    }

    pub fn streaming(&self) -> bool {
        self.streaming
    }

    /// Bytes held (bodies, partial messages), for the memory bound.
    pub fn buffered(&self) -> usize {
        self.body.len()
            + self.grpc.as_ref().map_or(0, GrpcStream::buffered)
            + self.watch.as_ref().map_or(0, WatchStream::buffered)
            + self.grpc_msgs.iter().map(|m| m.data.len()).sum::<usize>()
            + self.msg.headers.len() * 64
    }

    /// Body bytes arrived.
    pub fn body(&mut self, data: &[u8], ts: u64, cfg: &Config, out: &mut Vec<Message>) {
        if let Some(head) = self
            .infer_watch(data, cfg)
            .or_else(|| self.infer_etcd_watch(data, cfg))
        {
            out.push(head);
        }
        self.msg.ts_last = ts;
        self.msg.body_len = self.msg.body_len.saturating_add(data.len() as u64);
        // The body buffer is a contiguous prefix: nothing is appended after
        // a gap (decoding spliced bytes could invent values).
        if !self.streaming
            && self.grpc.is_none()
            && !self.cut
            && !util::push_bounded(&mut self.body, data, MAX_BODY)
        {
            self.cut = true;
        }
        if self.streaming && self.body.len() < cfg.body_prefix {
            util::push_bounded(&mut self.body, data, cfg.body_prefix);
        }
        if let Some(g) = self.grpc.as_mut() {
            g.feed(data);
        }
        self.drain_events(ts, cfg, out, data);
    }

    fn drain_events(&mut self, ts: u64, cfg: &Config, out: &mut Vec<Message>, data: &[u8]) {
        if let Some(w) = self.watch.as_mut() {
            let objs = w.feed(data);
            for o in objs {
                let mut ev = self.event(ts);
                ev.body_len = 0;
                ev.truncated = o.truncated;
                ev.objects.push(o);
                out.push(ev);
            }
        }
        if let Some(g) = self.grpc.as_mut() {
            let msgs = g.take();
            if self.streaming {
                for m in msgs {
                    // The first message of a streaming request is the request itself.
                    if self.msg.part == Part::Request && !self.emitted {
                        self.grpc_msgs.push(m);
                        let mut first = self.msg.clone();
                        self.apply_grpc(&mut first);
                        first.ts_last = ts;
                        finish_redaction(&mut first, &[], cfg);
                        out.push(first);
                        self.emitted = true;
                        self.grpc_msgs.clear();
                        continue;
                    }
                    let mut ev = self.event(ts);
                    ev.body_len = m.len as u64;
                    ev.truncated = m.cut;
                    apply_grpc_message(&mut ev, &m, self.msg.part == Part::Request);
                    finish_redaction(&mut ev, &[], cfg);
                    out.push(ev);
                }
            } else {
                // A unary call has one message: keep the first.
                for m in msgs {
                    if self.grpc_msgs.is_empty() {
                        self.grpc_msgs.push(m);
                    }
                }
            }
        }
    }

    /// A response whose request's path and content-type are unknown (its
    /// headers were never seen, or referred to unknown HPACK entries) is a
    /// watch stream when its body starts with a watch event: its head goes
    /// out now, its events follow, marked inferred.
    fn infer_watch(&mut self, data: &[u8], cfg: &Config) -> Option<Message> {
        let undecided = self.msg.part == Part::Response
            && self.msg.protocol == Protocol::Http2
            && self.msg.unknown
            && self.msg.path.is_none()
            && self.msg.content_type.is_none()
            && self.msg.body_len == 0
            && !self.streaming;
        let proto = infer::watch_stream(data).filter(|_| undecided)?;
        self.streaming = true;
        self.watch = Some(WatchStream::new(Some(proto)));
        self.msg.inferred.push("watch".to_owned());
        self.emit_head(cfg)
    }

    /// A response whose request was never seen that carries etcd
    /// WatchResponses with events is etcd's Watch stream, opened before the
    /// agents (kube-apiserver's watches on the registry): decoded from this
    /// message on, its path marked inferred. Unlike a Kubernetes watch, the
    /// first message seen may be a progress notification, which fits several
    /// shapes: each message is tried until one decides, and what came before
    /// (undecodable alone) is dropped from the body.
    fn infer_etcd_watch(&mut self, data: &[u8], cfg: &Config) -> Option<Message> {
        // Its response headers seen or not: gRPC by its content-type then,
        // but which call stays unknown without the request's.
        let unnamed = match self.msg.protocol {
            Protocol::Http2 => self.msg.content_type.is_none(),
            Protocol::Grpc => self.msg.grpc_method.is_none(),
            _ => false,
        };
        let undecided = self.msg.part == Part::Response
            && unnamed
            && self.msg.path.is_none()
            && !self.streaming;
        if !undecided {
            return None;
        }
        if !infer::etcd_watch_data(data) {
            return None;
        }
        // The message starts this chunk: framing restarts here.
        self.body.clear();
        self.grpc_msgs.clear();
        self.msg.body_len = 0;
        self.streaming = true;
        self.grpc = Some(GrpcStream::default());
        name_call(&mut self.msg, infer::ETCD_WATCH, "Watch");
        self.emit_head(cfg)
    }

    fn event(&self, ts: u64) -> Message {
        let mut ev = Message::new(self.msg.protocol, self.msg.direction, Part::Event, ts);
        ev.stream_id = self.msg.stream_id;
        ev.method.clone_from(&self.msg.method);
        ev.path.clone_from(&self.msg.path);
        ev.authority.clone_from(&self.msg.authority);
        ev.grpc_service.clone_from(&self.msg.grpc_service);
        ev.grpc_method.clone_from(&self.msg.grpc_method);
        ev.content_type.clone_from(&self.msg.content_type);
        ev.status = self.msg.status;
        ev.inferred.clone_from(&self.msg.inferred);
        ev
    }

    /// `n` body bytes were not captured.
    pub fn gap(&mut self, n: u64, ts: u64, cfg: &Config, out: &mut Vec<Message>) {
        if n == 0 {
            return;
        }
        self.msg.truncated = true;
        self.cut = true;
        self.msg.body_len = self.msg.body_len.saturating_add(n);
        if let Some(g) = self.grpc.as_mut() {
            g.gap(n);
        }
        if let Some(w) = self.watch.as_mut() {
            for o in w.gap(n) {
                let mut ev = self.event(ts);
                ev.truncated = true;
                ev.objects.push(o);
                out.push(ev);
            }
        }
        self.drain_events(ts, cfg, out, &[]);
    }

    /// Marks the half as missing bytes whose count is unknown (lost sync).
    pub fn lost(&mut self) {
        self.msg.truncated = true;
        self.cut = true;
    }

    /// Emits the response message of a streaming response at its headers.
    pub fn emit_head(&mut self, cfg: &Config) -> Option<Message> {
        if self.emitted {
            return None;
        }
        self.emitted = true;
        let mut m = self.msg.clone();
        finish_redaction(&mut m, &[], cfg);
        Some(m)
    }

    /// Completes the half: decodes the body, redacts and emits the message
    /// (unless it was already emitted: a streamed gRPC request, or a watch
    /// response emitted at its headers). `complete` says the protocol marked
    /// its end.
    pub fn finish(mut self, complete: bool, ts: u64, cfg: &Config, out: &mut Vec<Message>) {
        if !complete {
            if let Some(g) = self.grpc.as_mut() {
                g.end();
            }
        }
        self.drain_events(ts, cfg, out, &[]);
        if self.emitted {
            return;
        }
        let mut msg = self.msg.clone();
        msg.ts_last = msg.ts_last.max(ts);
        msg.complete = complete && !self.cut;
        msg.truncated |= self.cut;
        if self.grpc.is_some() {
            if self.streaming {
                // The messages went out as events: name the operation only.
                let req = msg.part == Part::Request;
                apply_grpc_message(&mut msg, &GrpcMessage::default(), req);
            } else {
                // Known as gRPC by its content-type, its path unknown: the
                // message may tell the method.
                if let Some(first) = self
                    .grpc_msgs
                    .first()
                    .filter(|_| msg.path.is_none() && msg.grpc_service.is_none() && msg.unknown)
                {
                    infer_method(&mut msg, first);
                }
                self.apply_grpc(&mut msg);
            }
            if self.grpc.as_ref().is_some_and(GrpcStream::lost) {
                msg.truncated = true;
            }
        } else if !self.streaming && self.infer_grpc_call(&mut msg) {
            // An etcd or CRI call whose path was an unknown HPACK entry.
        } else if !self.streaming && !self.body.is_empty() {
            if msg
                .header("content-encoding")
                .is_some_and(|e| e.eq_ignore_ascii_case("gzip"))
            {
                // Decompress what was captured; a cut body gives the prefix
                // it encodes.
                let (plain, complete) = gunzip_prefix(&self.body, MAX_BODY);
                if !complete {
                    self.cut = true;
                    msg.truncated = true;
                }
                self.body = plain;
            }
            if msg.method.is_none()
                && msg.unknown
                && msg.part == Part::Request
                && infer::strategic_merge_patch(&self.body)
            {
                msg.method = Some("PATCH".to_owned());
                msg.inferred.push("method".to_owned());
            }
            if msg.part == Part::Request {
                msg.patches_status = msg.path.is_none()
                    && msg.method.as_deref() == Some("PATCH")
                    && infer::status_only_patch(&self.body);
            }
            let objs = k8s::decode_body(&self.body, self.cut);
            msg.objects.extend(objs.into_iter().take(MAX_OBJECTS));
            // A create's `:path` that was an unknown entry, told by the object
            // it creates (the response decodes by it too).
            if let (Part::Request, None, true, Some("POST")) =
                (msg.part, &msg.path, msg.unknown, msg.method.as_deref())
            {
                if let Some(path) = infer::create_path(&msg.objects) {
                    msg.path = Some(path);
                    msg.inferred.push("path".to_owned());
                }
            }
            // A status patch's unknown `:path`, told by the object it returns.
            if let (Part::Response, None, true) = (msg.part, &msg.path, msg.patches_status) {
                if let Some(path) = infer::status_path(&msg.objects) {
                    msg.path = Some(path);
                    msg.inferred.push("path".to_owned());
                }
            }
            // A `:status` that was an unknown entry, answered by a metav1.Status
            // that carries its code (a binding's 201).
            let code = msg
                .objects
                .iter()
                .find(|o| o.kind.as_deref() == Some("Status"))
                .and_then(|o| o.code)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (100..600).contains(c));
            if let (Part::Response, None, true, Some(c)) = (msg.part, msg.status, msg.unknown, code)
            {
                msg.status = Some(c);
                msg.inferred.push("status".to_owned());
            }
        }
        let body = if self.streaming || self.grpc.is_some() {
            Vec::new()
        } else {
            std::mem::take(&mut self.body)
        };
        finish_redaction(&mut msg, &body, cfg);
        out.push(msg);
    }

    /// An HTTP/2 message whose path is unknown and whose body is one gRPC
    /// message shaped like one etcd KV or CRI method's only: decoded as that
    /// call, its path marked inferred.
    fn infer_grpc_call(&self, msg: &mut Message) -> bool {
        if msg.protocol != Protocol::Http2 || msg.path.is_some() || !msg.unknown {
            return false;
        }
        let Some(g) = infer::grpc_message(&self.body, self.cut) else {
            return false;
        };
        if !infer_method(msg, &g) && !self.infer_start(msg, &g) {
            return false;
        }
        apply_grpc_message(msg, &g, msg.part == Part::Request);
        msg.truncated |= g.cut;
        true
    }

    /// A request of a bare container id that this connection's CreateContainer
    /// returned, before any other call named it: the kubelet starts a
    /// container right after creating it (kuberuntime's startContainer), so
    /// this is its StartContainer. Alone, a bare id fits StopContainer,
    /// RemoveContainer and ContainerStatus too; only the sequence tells.
    fn infer_start(&self, msg: &mut Message, g: &GrpcMessage) -> bool {
        if msg.part != Part::Request || g.compressed || g.cut {
            return false;
        }
        let Some(id) = infer::bare_id(&g.data) else {
            return false;
        };
        if !self.created.iter().any(|c| c == id) {
            return false;
        }
        name_call(msg, infer::CRI_RUNTIME, "StartContainer");
        true
    }

    fn apply_grpc(&self, m: &mut Message) {
        let req = m.part == Part::Request;
        match self.grpc_msgs.first() {
            Some(first) => {
                apply_grpc_message(m, first, req);
                m.truncated |= first.cut;
            }
            // No message (e.g. an error with trailers only): still name the operation.
            None => apply_grpc_message(m, &GrpcMessage::default(), req),
        }
    }
}

/// Names the etcd or CRI call whose message `g` is, when its shape fits one
/// method only; the path is marked inferred.
fn infer_method(msg: &mut Message, g: &GrpcMessage) -> bool {
    if g.compressed {
        return false;
    }
    let call = if msg.part == Part::Request {
        infer::cri_request_method(&g.data, g.cut)
            .or_else(|| infer::etcd_request_method(&g.data).map(|m| (infer::ETCD_KV, m)))
    } else {
        infer::etcd_response_method(&g.data).map(|m| (infer::ETCD_KV, m))
    };
    let Some((service, method)) = call else {
        return false;
    };
    name_call(msg, service, method);
    true
}

/// Names the gRPC call of a message whose path was unknown, marked inferred.
fn name_call(msg: &mut Message, service: &str, method: &str) {
    msg.protocol = Protocol::Grpc;
    msg.grpc_service = Some(service.to_owned());
    msg.grpc_method = Some(method.to_owned());
    msg.path = Some(format!("/{service}/{method}"));
    msg.inferred.push("path".to_owned());
}

/// Gunzips at most `max` bytes of `data` (which may be a cut prefix of a gzip
/// stream). Returns the bytes produced and whether the stream ended cleanly.
pub fn gunzip_prefix(data: &[u8], max: usize) -> (Vec<u8>, bool) {
    use std::io::Read;
    let mut out = Vec::new();
    let mut dec = flate2::read::GzDecoder::new(data);
    let mut buf = [0u8; 4096];
    loop {
        match dec.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => {
                if !util::push_bounded(&mut out, buf.get(..n).unwrap_or_default(), max) {
                    return (out, false);
                }
            }
            Err(_) => return (out, false),
        }
    }
}

/// Decodes one gRPC message into the message's etcd/CRI fields.
pub fn apply_grpc_message(m: &mut Message, g: &GrpcMessage, request: bool) {
    let svc = m.grpc_service.clone().unwrap_or_default();
    let method = m.grpc_method.clone().unwrap_or_default();
    if g.compressed {
        m.unknown = true;
        return;
    }
    if etcd::is_etcd_service(&svc) {
        let mut objs = Vec::new();
        m.etcd = Some(etcd::decode(&method, &g.data, request, g.cut, &mut objs));
        m.objects.extend(objs);
        m.objects.truncate(MAX_OBJECTS);
    } else if cri::is_cri_service(&svc) {
        m.cri = Some(cri::decode(&svc, &method, &g.data, request, g.cut));
    }
    if m.body_prefix.is_empty() && !g.data.is_empty() {
        m.body_prefix = g
            .data
            .get(..BODY_PREFIX_MAX.min(g.data.len()))
            .unwrap_or_default()
            .to_vec();
        m.body_len = m.body_len.max(g.len as u64);
    }
}

/// Sets the body prefix from `body` (if any) and redacts it.
pub fn finish_redaction(m: &mut Message, body: &[u8], cfg: &Config) {
    if m.resource.is_none() {
        m.resource = match &m.etcd {
            Some(e) => e
                .keys
                .first()
                .or(e.events.first().map(|ev| &ev.key))
                .and_then(|k| crate::resource::parse_etcd_key(k)),
            None if m.protocol != Protocol::Grpc => {
                m.path.as_deref().and_then(crate::resource::parse_api_path)
            }
            None => None,
        };
    }
    if !body.is_empty() {
        m.body_prefix = body
            .get(..cfg.body_prefix.min(body.len()))
            .unwrap_or_default()
            .to_vec();
    }
    m.body_prefix.truncate(cfg.body_prefix);
    if !cfg.redact || m.body_prefix.is_empty() {
        return;
    }
    let secret = m.objects.iter().any(|o| {
        o.kind
            .as_deref()
            .is_some_and(|k| k == "Secret" || k == "SecretList")
    }) || m.path.as_deref().is_some_and(|p| p.contains("/secrets"))
        || m.etcd.as_ref().is_some_and(|e| {
            e.keys.iter().any(|k| k.contains("/secrets/"))
                || e.events.iter().any(|ev| ev.key.contains("/secrets/"))
                || e.success.iter().any(|o| o.key.contains("/secrets/"))
        });
    let cri_creds = m
        .cri
        .as_ref()
        .is_some_and(|c| m.part == Part::Request && cri::carries_credentials(&c.method));
    if cri_creds {
        m.body_prefix.clear();
        m.body_prefix
            .extend_from_slice(b"[redacted: CRI request may carry credentials]");
        m.note_redacted("cri request body");
        return;
    }
    let is_grpc = m.protocol == Protocol::Grpc;
    // A binary etcd value of a Secret is dropped whole (not JSON).
    let what = redact::body(&mut m.body_prefix, secret && (!is_grpc || m.etcd.is_some()));
    for w in what {
        m.note_redacted(w);
    }
}
