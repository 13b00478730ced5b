//! The decoders' output: one `Message` per request, response or streamed event.

use serde::Serialize;

/// Longest body prefix kept in a `Message`.
pub const BODY_PREFIX_MAX: usize = 1024;
/// Most headers kept in a `Message`.
pub const MAX_HEADERS: usize = 64;
/// Most objects kept in a `Message`.
pub const MAX_OBJECTS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http1,
    Http2,
    Grpc,
    /// containerd's ttrpc to its shims.
    Ttrpc,
    Unknown,
}

/// Which way the bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    pub fn reverse(self) -> Self {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Request,
    Response,
    /// One item of a streamed response (a watch event, one message of a
    /// server-streaming gRPC call), emitted as soon as it is decoded.
    Event,
}

/// A header value as decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderValue {
    Text(String),
    /// A credential: the value is not kept.
    Redacted,
    /// It referenced an HPACK dynamic-table entry whose content is unknown.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    /// `None` if the name referenced an unknown HPACK entry.
    pub name: Option<String>,
    pub value: HeaderValue,
}

/// A Kubernetes object identity found in a body, an etcd value or a watch event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// Pod.spec.nodeName.
    pub node_name: Option<String>,
    /// Pod.status.phase.
    pub phase: Option<String>,
    /// Binding.target.name (the node a pod is bound to).
    pub target: Option<String>,
    /// The controller owner's uid (the first metadata.ownerReferences entry):
    /// a ReplicaSet's Deployment, a Pod's ReplicaSet.
    pub owner_uid: Option<String>,
    /// An Event's subject uid (core/v1 involvedObject, events/v1 regarding).
    pub regarding_uid: Option<String>,
    /// Watch event type (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR).
    pub event_type: Option<String>,
    /// metav1.Status: status, reason, message, code.
    pub status: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub code: Option<i64>,
    /// The object was decoded from a truncated prefix: fields after the cut
    /// are missing (never guessed).
    pub truncated: bool,
}

impl ObjectRef {
    /// `Kind ns/name` as far as known, with the node and phase of a pod
    /// and the target of a binding.
    pub fn label(&self) -> String {
        let kind = self.kind.as_deref().unwrap_or("object");
        let ns = self.namespace.as_deref().filter(|s| !s.is_empty());
        let name = self.name.as_deref().filter(|s| !s.is_empty());
        let mut s = match (ns, name) {
            (Some(ns), Some(n)) => format!("{kind} {ns}/{n}"),
            (None, Some(n)) => format!("{kind} {n}"),
            _ => kind.to_string(),
        };
        if let Some(n) = self.node_name.as_deref().filter(|n| !n.is_empty()) {
            s.push_str(&format!(" node={n}"));
        }
        if let Some(t) = &self.target {
            s.push_str(&format!(" → {t}"));
        }
        if let Some(p) = &self.phase {
            s.push_str(&format!(" {p}"));
        }
        if let Some(c) = self.code {
            s.push_str(&format!(" {c}"));
        }
        if let Some(r) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            s.push_str(&format!(" {r}"));
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdKeyOp {
    /// "range", "put", "delete_range", "txn".
    pub op: String,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdCompare {
    pub key: String,
    /// "version", "create", "mod", "value", "lease".
    pub target: String,
    /// "=", ">", "<", "!=".
    pub result: String,
    /// The compared number (revision/version/lease); values are not shown.
    pub number: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdEvent {
    /// "PUT" or "DELETE".
    pub kind: String,
    pub key: String,
    pub mod_revision: Option<i64>,
}

/// An etcd v3 request or response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EtcdOp {
    /// gRPC method: Range, Put, DeleteRange, Txn, Watch, Compact, LeaseGrant …
    pub op: String,
    /// Keys a request names (Range/Put/DeleteRange key, Watch key), or the
    /// keys a response returns (Range kvs).
    pub keys: Vec<String>,
    pub range_end: Option<String>,
    /// Request: RangeRequest.revision or WatchCreateRequest.start_revision.
    /// Response: ResponseHeader.revision.
    pub revision: Option<i64>,
    pub compares: Vec<EtcdCompare>,
    pub success: Vec<EtcdKeyOp>,
    pub failure: Vec<EtcdKeyOp>,
    /// TxnResponse.succeeded.
    pub succeeded: Option<bool>,
    /// Range count / DeleteRange deleted.
    pub count: Option<i64>,
    /// Watch responses.
    pub watch_id: Option<i64>,
    pub events: Vec<EtcdEvent>,
    /// Some field could not be decoded (cut short or malformed).
    pub truncated: bool,
}

/// A CRI (k8s.io/cri-api runtime.v1) request or response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CriOp {
    /// RuntimeService or ImageService.
    pub service: String,
    /// gRPC method: RunPodSandbox, CreateContainer, PullImage …
    pub method: String,
    /// PodSandboxMetadata (RunPodSandbox, and the sandbox config of
    /// CreateContainer/PullImage).
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
    pub attempt: Option<u32>,
    pub pod_sandbox_id: Option<String>,
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    pub image: Option<String>,
    /// PullImageResponse.image_ref.
    pub image_ref: Option<String>,
    pub runtime_handler: Option<String>,
    pub truncated: bool,
}

/// One decoded request, response or streamed event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub protocol: Protocol,
    pub direction: Direction,
    pub part: Part,
    /// HTTP/2 stream id.
    pub stream_id: Option<u32>,
    /// Timestamp of the first and of the last chunk that carried the message.
    pub ts_first: u64,
    pub ts_last: u64,
    /// Request method and path; a response or event carries its request's.
    pub method: Option<String>,
    pub path: Option<String>,
    pub authority: Option<String>,
    pub grpc_service: Option<String>,
    pub grpc_method: Option<String>,
    /// HTTP status.
    pub status: Option<u16>,
    pub grpc_status: Option<u32>,
    pub grpc_message: Option<String>,
    pub content_type: Option<String>,
    pub headers: Vec<Header>,
    /// Bytes of body the message had (as far as known, including bytes that
    /// were not captured).
    pub body_len: u64,
    /// The first bytes of the body, redacted, at most `BODY_PREFIX_MAX`.
    /// Serialized as text: UTF-8 as is, other bytes as `\xNN`.
    #[serde(serialize_with = "bytes_as_text")]
    pub body_prefix: Vec<u8>,
    pub objects: Vec<ObjectRef>,
    /// The resource the request path names (Kubernetes API paths), or the
    /// first key of an etcd operation.
    pub resource: Option<crate::resource::ResourceRef>,
    pub etcd: Option<EtcdOp>,
    pub cri: Option<CriOp>,
    /// ttrpc: the task (container) a shim call names.
    pub task_id: Option<String>,
    /// The message ended as the protocol says (END_STREAM, full length …).
    pub complete: bool,
    /// Some of its bytes were not captured (truncated read/write, gap).
    pub truncated: bool,
    /// Some headers or fields could not be decoded (unknown HPACK state …).
    pub unknown: bool,
    /// What was redacted (never the value): e.g. "header authorization".
    pub redacted: Vec<String>,
    /// Fields inferred from the body, not seen (their headers referred to
    /// HPACK entries never seen): "path" (with the gRPC service and method
    /// it names). See `infer`.
    pub inferred: Vec<String>,
    /// A request whose body patches an object's status only (a strategic
    /// merge patch of `status`, as the kubelet's status updates are): when
    /// its `:path` was unknown, the object its response returns names it.
    #[serde(skip)]
    pub patches_status: bool,
}

impl Message {
    pub fn new(protocol: Protocol, direction: Direction, part: Part, ts: u64) -> Self {
        Message {
            protocol,
            direction,
            part,
            stream_id: None,
            ts_first: ts,
            ts_last: ts,
            method: None,
            path: None,
            authority: None,
            grpc_service: None,
            grpc_method: None,
            status: None,
            grpc_status: None,
            grpc_message: None,
            content_type: None,
            headers: Vec::new(),
            body_len: 0,
            body_prefix: Vec::new(),
            objects: Vec::new(),
            resource: None,
            etcd: None,
            cri: None,
            task_id: None,
            complete: false,
            truncated: false,
            unknown: false,
            redacted: Vec::new(),
            inferred: Vec::new(),
            patches_status: false,
        }
    }

    /// Value of the first header `name` (lowercase), if known.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| match (&h.name, &h.value) {
            (Some(n), HeaderValue::Text(v)) if n.eq_ignore_ascii_case(name) => Some(v.as_str()),
            _ => None,
        })
    }

    pub(crate) fn note_redacted(&mut self, what: &str) {
        if self.redacted.len() < 16 && !self.redacted.iter().any(|r| r == what) {
            self.redacted.push(what.to_string());
        }
    }

    /// A one-line description, e.g. `POST /api/v1/namespaces/default/pods → 201`,
    /// `etcd Txn put /registry/pods/default/x`, `CRI RunPodSandbox default/x`.
    pub fn summary(&self) -> String {
        let mut s = if let Some(e) = &self.etcd {
            etcd_summary(self, e)
        } else if let Some(c) = &self.cri {
            cri_summary(self, c)
        } else if self.protocol == Protocol::Grpc {
            format!(
                "gRPC /{}/{}",
                self.grpc_service.as_deref().unwrap_or("?"),
                self.grpc_method.as_deref().unwrap_or("?")
            )
        } else if self.protocol == Protocol::Ttrpc {
            let mut s = format!(
                "ttrpc /{}/{}",
                self.grpc_service.as_deref().unwrap_or("?"),
                self.grpc_method.as_deref().unwrap_or("?")
            );
            if let Some(id) = &self.task_id {
                s.push_str(&format!(" {}", id.get(..12).unwrap_or(id)));
            }
            s
        } else if self.protocol == Protocol::Unknown {
            let what = match self.body_prefix.as_slice() {
                [0x16, 0x03, ..] => "TLS handshake (ciphertext)",
                [0x17, 0x03, ..] => "TLS application data (ciphertext)",
                [0x15, 0x03, ..] => "TLS alert (ciphertext)",
                _ => "unknown protocol",
            };
            format!("{what}, {} bytes", self.body_len)
        } else if self.path.is_none() && self.inferred.iter().any(|i| i == "watch") {
            "watch".to_owned()
        } else {
            format!(
                "{} {}",
                self.method.as_deref().unwrap_or("?"),
                self.path.as_deref().unwrap_or("?")
            )
        };
        match self.part {
            Part::Request => {}
            Part::Response if self.etcd.is_some() || self.cri.is_some() => {}
            Part::Response => {
                if let Some(st) = self.status.filter(|_| {
                    self.protocol == Protocol::Http1 || self.protocol == Protocol::Http2
                }) {
                    s.push_str(&format!(" → {st}"));
                }
                if let Some(g) = self.grpc_status {
                    s.push_str(&format!(" → {}", grpc_code_name(g)));
                    if let Some(m) = self.grpc_message.as_deref().filter(|m| !m.is_empty()) {
                        s.push_str(&format!(": {m}"));
                    }
                } else if self.protocol == Protocol::Grpc && self.status.is_none() {
                    s.push_str(" → ?");
                }
                if self.status.is_none()
                    && self.grpc_status.is_none()
                    && self.protocol != Protocol::Grpc
                {
                    s.push_str(" → ?");
                }
            }
            Part::Event => {}
        }
        if self.etcd.is_none() && self.cri.is_none() {
            let objs: Vec<String> = self
                .objects
                .iter()
                .take(3)
                .map(|o| match &o.event_type {
                    Some(t) => format!("{t} {}", o.label()),
                    None => o.label(),
                })
                .collect();
            if !objs.is_empty() {
                let sep = if self.part == Part::Event { ": " } else { " [" };
                s.push_str(sep);
                s.push_str(&objs.join(", "));
                if self.part != Part::Event {
                    s.push(']');
                }
            }
        }
        if self.truncated {
            s.push_str(" (truncated)");
        }
        s
    }
}

fn etcd_summary(m: &Message, e: &EtcdOp) -> String {
    let mut s = format!("etcd {}", e.op);
    match m.part {
        Part::Request => {
            for op in e.success.iter().take(4) {
                s.push_str(&format!(" {} {}", op.op, op.key));
            }
            if e.success.is_empty() {
                for k in e.keys.iter().take(2) {
                    s.push_str(&format!(" {k}"));
                }
                if e.range_end.is_some() {
                    s.push_str(" (prefix)");
                }
            }
        }
        Part::Response | Part::Event => {
            if let Some(g) = m.grpc_status.filter(|g| *g != 0) {
                s.push_str(&format!(" → {}", grpc_code_name(g)));
                if let Some(msg) = m.grpc_message.as_deref().filter(|m| !m.is_empty()) {
                    s.push_str(&format!(": {msg}"));
                }
                return s;
            }
            if let Some(ok) = e.succeeded {
                s.push_str(if ok { " succeeded" } else { " failed" });
            }
            for ev in e.events.iter().take(4) {
                s.push_str(&format!(" {} {}", ev.kind, ev.key));
            }
            if e.events.is_empty() {
                for k in e.keys.iter().take(2) {
                    s.push_str(&format!(" {k}"));
                }
            }
            if let Some(r) = e.revision {
                s.push_str(&format!(" rev {r}"));
            }
        }
    }
    s
}

fn cri_summary(m: &Message, c: &CriOp) -> String {
    let mut s = format!("CRI {}", c.method);
    let pod = match (&c.pod_namespace, &c.pod_name) {
        (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
        (None, Some(n)) => Some(n.clone()),
        _ => None,
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(p) = pod {
        parts.push(p);
    }
    if let Some(n) = &c.container_name {
        parts.push(format!("container {n}"));
    }
    if let Some(i) = &c.image {
        parts.push(format!("image {i}"));
    }
    if let Some(i) = &c.image_ref {
        parts.push(format!("ref {i}"));
    }
    if let Some(id) = &c.container_id {
        parts.push(format!("container id {}", short_id(id)));
    } else if let Some(id) = &c.pod_sandbox_id {
        parts.push(format!("sandbox id {}", short_id(id)));
    }
    if !parts.is_empty() {
        s.push(' ');
        s.push_str(&parts.join(" "));
    }
    if m.part == Part::Response {
        match m.grpc_status {
            Some(g) => {
                s.push_str(&format!(" → {}", grpc_code_name(g)));
                if let Some(msg) = m.grpc_message.as_deref().filter(|m| !m.is_empty()) {
                    s.push_str(&format!(": {msg}"));
                }
            }
            None => s.push_str(" → ?"),
        }
    }
    s
}

fn short_id(id: &str) -> &str {
    id.get(..13).unwrap_or(id)
}

fn bytes_as_text<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::util::escape(b))
}

/// gRPC status code name (google.rpc.Code).
pub fn grpc_code_name(code: u32) -> String {
    let n = match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => return format!("code {code}"),
    };
    n.to_string()
}
