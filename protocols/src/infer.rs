//! What a body says its HTTP/2 stream was when the headers that named it are
//! unknown. An agent attached to running components sees long-lived
//! connections from their middle: their HPACK tables hold entries it never
//! saw, so a request's `:path` (kube-apiserver → etcd: every call's) can be
//! an index into the unknown part. The body is still there. Where its shape
//! fits exactly one method, that method is inferred; where it fits several,
//! nothing is. The message then says so (`Message::inferred`): a reader can
//! tell an inferred value from a seen one. The same holds for a request
//! method that was an unknown entry (the kubelet's PATCH of a pod's status).

use crate::grpc::GrpcMessage;
use crate::message::ObjectRef;
use crate::pb::{self, Fields, Value};

/// etcd's KV service, whose methods are inferred here.
pub const ETCD_KV: &str = "etcdserverpb.KV";
/// The CRI services whose calls are inferred here.
pub const CRI_RUNTIME: &str = "runtime.v1.RuntimeService";
pub const CRI_IMAGE: &str = "runtime.v1.ImageService";

/// Whether a response body starts like a Kubernetes watch stream — one
/// event per frame, each written whole and flushed: a 4-byte big-endian
/// length and a protobuf `metav1.WatchEvent {type = 1, object = 2}` whose
/// type comes first (`Some(true)`), or a JSON `{"type":"ADDED",…` line
/// (`Some(false)`). Nothing else starts so.
pub fn watch_stream(body: &[u8]) -> Option<bool> {
    let event_type = |t: &[u8]| WATCH_EVENT_TYPES.contains(&t);
    if let (Some(head), Some(&[0x0a, n])) = (body.get(..4), body.get(4..6)) {
        let len = u32::from_be_bytes(head.try_into().ok()?) as usize;
        let t = body.get(6..6 + usize::from(n))?;
        return (event_type(t) && len > 2 + usize::from(n)).then_some(true);
    }
    let rest = body.strip_prefix(b"{\"type\":\"")?;
    let end = rest.iter().position(|&c| c == b'"')?;
    event_type(rest.get(..end)?).then_some(false)
}

const WATCH_EVENT_TYPES: [&[u8]; 5] = [b"ADDED", b"MODIFIED", b"DELETED", b"BOOKMARK", b"ERROR"];

/// The path of a create whose `:path` was an unknown HPACK entry — a client
/// that sent the same path before the agent attached refers to it by its
/// entry (kube-scheduler binding a pod of a name it bound minutes earlier,
/// posting its second Event to a namespace) — told by the object its body
/// holds, for the kinds whose create has one path only: a Binding (its
/// pod's `…/binding`) and an Event (core v1 or `events.k8s.io/v1`: the
/// namespace's `…/events`).
pub fn create_path(objects: &[ObjectRef]) -> Option<String> {
    let o = objects.first()?;
    let ns = o.namespace.as_deref().filter(|n| !n.is_empty())?;
    match (o.api_version.as_deref()?, o.kind.as_deref()?) {
        ("v1", "Binding") => {
            let pod = o.name.as_deref().filter(|n| !n.is_empty())?;
            Some(format!("/api/v1/namespaces/{ns}/pods/{pod}/binding"))
        }
        ("v1", "Event") => Some(format!("/api/v1/namespaces/{ns}/events")),
        ("events.k8s.io/v1", "Event") => {
            Some(format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"))
        }
        _ => None,
    }
}

/// Whether a patch changes an object's status only: a JSON object whose
/// keys are `status` and at most `metadata` (the kubelet sends its pod's uid
/// there, as a precondition). Such a patch goes to the `status` subresource.
pub fn status_only_patch(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body).is_ok_and(|m| {
        m.contains_key("status") && m.keys().all(|k| k == "status" || k == "metadata")
    })
}

/// The path of a status patch whose `:path` was unknown, from the object its
/// response returns: a Pod's or a Node's `…/status`.
pub fn status_path(objects: &[ObjectRef]) -> Option<String> {
    let o = objects.first()?;
    let name = o.name.as_deref().filter(|n| !n.is_empty())?;
    match (o.api_version.as_deref()?, o.kind.as_deref()?) {
        ("v1", "Pod") => {
            let ns = o.namespace.as_deref().filter(|n| !n.is_empty())?;
            Some(format!("/api/v1/namespaces/{ns}/pods/{name}/status"))
        }
        ("v1", "Node") => Some(format!("/api/v1/nodes/{name}/status")),
        _ => None,
    }
}

/// Whether a request body is a strategic merge patch — the kubelet's status
/// updates are: their directives (`"$setElementOrder/conditions"`, `"$patch"`,
/// `"$retainKeys"`, `"$deleteFromPrimitiveList/…"`) appear in no object a
/// POST or PUT sends, so the method is PATCH.
pub fn strategic_merge_patch(body: &[u8]) -> bool {
    const DIRECTIVES: [&[u8]; 4] = [
        b"\"$setElementOrder/",
        b"\"$patch\":",
        b"\"$retainKeys\":",
        b"\"$deleteFromPrimitiveList/",
    ];
    body.first() == Some(&b'{')
        && DIRECTIVES
            .iter()
            .any(|d| body.windows(d.len()).any(|w| w == *d))
}

/// The one gRPC message a unary body holds: a 5-byte prefix (not compressed)
/// announcing exactly the bytes that follow (or more, when `cut`).
pub fn grpc_message(body: &[u8], cut: bool) -> Option<GrpcMessage> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let data = rest.get(4..)?;
    let whole = data.len() == len;
    if flag != 0 || !(whole || (cut && data.len() < len)) {
        return None;
    }
    Some(GrpcMessage {
        compressed: false,
        len,
        data: data.to_vec(),
        cut: !whole,
    })
}

/// The top-level fields of a message, all of them or none (a message that
/// does not parse is not any method's).
fn fields(msg: &[u8]) -> Option<Vec<(u32, Value<'_>)>> {
    let mut it = Fields::new(msg);
    let all: Vec<_> = it.by_ref().collect();
    (!it.truncated()).then_some(all)
}

/// The top-level fields of a message that may be a cut prefix: its last
/// field may be partial then (a nested message is still read from it).
fn fields_cut(msg: &[u8], cut: bool) -> Option<Vec<(u32, Value<'_>)>> {
    if !cut {
        return fields(msg);
    }
    let mut it = Fields::lenient(msg);
    let all: Vec<_> = it.by_ref().collect();
    let whole = !it.truncated() || all.last().is_some_and(|(_, v)| v.is_partial());
    whole.then_some(all)
}

/// A string field: valid UTF-8, printable.
fn is_text(v: &Value<'_>) -> bool {
    v.bytes()
        .and_then(|b| std::str::from_utf8(b).ok())
        .is_some_and(|t| !t.chars().any(char::is_control))
}

/// CRI PodSandboxConfig {metadata = 1 PodSandboxMetadata {name = 1, uid = 2,
/// namespace = 3, attempt = 4}, hostname = 2 … windows = 9}, with its
/// metadata's name, uid and namespace (what no other CRI message has).
fn is_sandbox_config(b: &[u8], cut: bool) -> bool {
    let Some(f) = fields_cut(b, cut) else {
        return false;
    };
    let metadata = f
        .iter()
        .find_map(|(n, v)| (*n == 1).then(|| v.msg()).flatten());
    f.iter().all(|(n, _)| (1..=9).contains(n))
        && metadata.and_then(fields).is_some_and(|m| {
            m.iter().all(|(n, v)| match n {
                1..=3 => is_text(v),
                4 => v.varint().is_some(),
                _ => false,
            }) && [1, 2, 3].iter().all(|k| m.iter().any(|(n, _)| n == k))
        })
}

/// The CRI call a request message is, when its shape fits one method only:
/// RunPodSandboxRequest {config = 1 PodSandboxConfig, runtime_handler = 2},
/// PullImageRequest {image = 1 ImageSpec, auth = 2, sandbox_config = 3} (the
/// sandbox config tells it from ImageStatus and RemoveImage),
/// CreateContainerRequest {pod_sandbox_id = 1, config = 2, sandbox_config = 3}.
/// A bare id (StartContainer, StopContainer, RemoveContainer, the sandbox
/// calls …) fits many: not inferred.
pub fn cri_request_method(msg: &[u8], cut: bool) -> Option<(&'static str, &'static str)> {
    let f = fields_cut(msg, cut)?;
    let field = |k: u32| f.iter().find(|(n, _)| *n == k).map(|(_, v)| v);
    let only = |ns: &[u32]| !f.is_empty() && f.iter().all(|(n, _)| ns.contains(n));
    let sandbox = |k: u32| {
        let last = f.last().map(|(n, _)| *n) == Some(k);
        field(k)
            .and_then(Value::msg)
            .is_some_and(|b| is_sandbox_config(b, cut && last))
    };
    if only(&[1, 2]) && sandbox(1) && field(2).is_none_or(is_text) {
        return Some((CRI_RUNTIME, "RunPodSandbox"));
    }
    let image_spec = field(1)
        .and_then(Value::bytes)
        .and_then(fields)
        .is_some_and(|s| {
            s.iter().all(|(n, _)| [1, 2, 18, 19].contains(n))
                && s.iter().any(|(n, v)| *n == 1 && is_text(v))
        });
    if only(&[1, 2, 3]) && image_spec && sandbox(3) {
        return Some((CRI_IMAGE, "PullImage"));
    }
    let container_config = field(2).and_then(Value::msg).is_some_and(|c| {
        Fields::lenient(c)
            .next()
            .is_some_and(|(n, v)| n == 1 && v.bytes().is_some_and(|m| fields(m).is_some()))
    });
    if only(&[1, 2, 3]) && field(1).is_some_and(is_text) && container_config && sandbox(3) {
        return Some((CRI_RUNTIME, "CreateContainer"));
    }
    None
}

/// etcd Compare {result = 1, target = 2, key = 3, version = 4,
/// create_revision = 5, mod_revision = 6, value = 7, lease = 8, range_end = 64},
/// with its key.
fn is_compare(b: &[u8]) -> bool {
    fields(b).is_some_and(|f| {
        f.iter().all(|(n, v)| match n {
            1 | 2 | 4 | 5 | 6 | 8 => v.varint().is_some(),
            3 | 7 | 64 => v.bytes().is_some(),
            _ => false,
        }) && f.iter().any(|(n, v)| *n == 3 && v.bytes().is_some())
    })
}

/// etcd ResponseHeader {cluster_id = 1, member_id = 2, revision = 3, raft_term = 4}.
fn is_response_header(b: &[u8]) -> bool {
    fields(b).is_some_and(|f| {
        f.iter()
            .all(|(n, v)| (1..=4).contains(n) && v.varint().is_some())
            && f.iter().any(|(n, _)| *n == 3)
    })
}

/// The fields after an etcd response's ResponseHeader (field 1, first), or
/// `None` when the message does not start with one.
fn after_response_header<'f, 'a>(f: &'f [(u32, Value<'a>)]) -> Option<&'f [(u32, Value<'a>)]> {
    match f.split_first()? {
        ((1, Value::Bytes(h)), rest) if is_response_header(h) => Some(rest),
        _ => None,
    }
}

/// etcd RequestOp / ResponseOp: a oneof of four messages (fields 1–4).
fn is_op(b: &[u8]) -> bool {
    fields(b).is_some_and(|f| {
        matches!(f.as_slice(), [(n, v)] if (1..=4).contains(n) && v.bytes().is_some_and(pb::parses_fully))
    })
}

/// The etcd KV method a request message is, when only one fits: a
/// TxnRequest {compare = 1, success = 2, failure = 3} is told by its
/// Compare and RequestOp messages; a RangeRequest by a field only it has
/// (revision = 4 … max_create_revision = 13). A bare key fits Range, Put
/// and DeleteRange alike: not inferred.
pub fn etcd_request_method(msg: &[u8]) -> Option<&'static str> {
    let f = fields(msg)?;
    let only = |ns: &[u32]| !f.is_empty() && f.iter().all(|(n, _)| ns.contains(n));
    let txn = only(&[1, 2, 3])
        && f.iter().all(|(n, v)| match (n, v.bytes()) {
            (1, Some(b)) => is_compare(b),
            (2 | 3, Some(b)) => is_op(b),
            _ => false,
        });
    if txn {
        return Some("Txn");
    }
    let key = matches!(f.first(), Some((1, Value::Bytes(k))) if !is_compare(k));
    let range_only = f.iter().any(|(n, _)| (4..=13).contains(n));
    let typed = f.iter().all(|(n, v)| match n {
        1 | 2 => v.bytes().is_some(),
        3..=13 => v.varint().is_some(),
        _ => false,
    });
    (key && typed && range_only).then_some("Range")
}

/// The etcd KV method a response message is, when only one fits: a
/// TxnResponse {header = 1, succeeded = 2, responses = 3} by its ResponseOp
/// messages; a RangeResponse {header = 1, kvs = 2, more = 3, count = 4} by
/// its count, which no other KV response has.
pub fn etcd_response_method(msg: &[u8]) -> Option<&'static str> {
    let f = fields(msg)?;
    let rest = after_response_header(&f)?;
    let txn = rest.iter().any(|(n, _)| *n == 3)
        && rest.iter().all(|(n, v)| match n {
            2 => v.varint().is_some(),
            3 => v.bytes().is_some_and(is_op),
            _ => false,
        });
    if txn {
        return Some("Txn");
    }
    let range = rest.iter().any(|(n, v)| *n == 4 && v.varint().is_some())
        && rest.iter().all(|(n, v)| match n {
            2 => v.bytes().is_some(),
            3 | 4 => v.varint().is_some(),
            _ => false,
        });
    range.then_some("Range")
}

/// The container id of a message that is nothing but one (field 1: 64 hex
/// digits, as containerd makes them): StartContainerRequest's shape, and
/// StopContainer's, RemoveContainer's, ContainerStatus's alike.
pub fn bare_id(msg: &[u8]) -> Option<&str> {
    match fields(msg)?.as_slice() {
        [(1, v)] => {
            let id = std::str::from_utf8(v.bytes()?).ok()?;
            (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
        }
        _ => None,
    }
}

/// etcd's Watch service: a stream opened before the agents is inferred here.
pub const ETCD_WATCH: &str = "etcdserverpb.Watch";

/// Whether a gRPC message is an etcd WatchResponse carrying events: a
/// ResponseHeader first, then only WatchResponse's fields (watch_id = 2,
/// created = 3, canceled = 4, compact_revision = 5 as varints,
/// cancel_reason = 6, fragment = 7, events = 11) and at least one Event
/// {type = 1, kv = 2 KeyValue {key = 1 …}, prev_kv = 3} with its key. No
/// KV response has field 11, and a message of the header alone (a progress
/// notification, an empty Range) is not taken: it fits several.
pub fn etcd_watch_response(msg: &[u8]) -> bool {
    let Some(f) = fields(msg) else {
        return false;
    };
    let Some(rest) = after_response_header(&f) else {
        return false;
    };
    let shaped = rest.iter().all(|(n, v)| match n {
        2..=5 | 7 => v.varint().is_some(),
        6 => is_text(v),
        11 => v.bytes().is_some_and(is_watch_event),
        _ => false,
    });
    shaped && rest.iter().any(|(n, _)| *n == 11)
}

/// Whether a DATA frame's bytes are one whole gRPC message that is an etcd
/// WatchResponse with events (see `etcd_watch_response`).
pub fn etcd_watch_data(body: &[u8]) -> bool {
    grpc_message(body, false).is_some_and(|g| !g.compressed && etcd_watch_response(&g.data))
}

/// Whether a DATA frame's bytes are a watch's event, Kubernetes' ([`watch_stream`])
/// or etcd's ([`etcd_watch_data`]): only a server sends those.
pub fn watch_event_data(body: &[u8]) -> bool {
    watch_stream(body).is_some() || etcd_watch_data(body)
}

/// etcd mvccpb.Event {type = 1, kv = 2, prev_kv = 3} whose kv has a key.
fn is_watch_event(b: &[u8]) -> bool {
    let Some(f) = fields(b) else {
        return false;
    };
    let kv_key = |kv: &[u8]| {
        fields(kv).is_some_and(|k| {
            k.iter()
                .any(|(n, v)| *n == 1 && v.bytes().is_some_and(|key| key.first() == Some(&b'/')))
        })
    };
    f.iter().all(|(n, v)| match n {
        1 => v.varint().is_some(),
        2 | 3 => v.bytes().is_some(),
        _ => false,
    }) && f
        .iter()
        .any(|(n, v)| *n == 2 && v.bytes().is_some_and(kv_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut b = vec![0];
        b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        b.extend_from_slice(msg);
        b
    }

    #[test]
    fn grpc_framing_must_announce_the_bytes_that_follow() {
        let b = framed(b"\x0a\x01x");
        assert_eq!(
            grpc_message(&b, false).map(|m| m.data),
            Some(b"\x0a\x01x".to_vec())
        );
        // A length past the body is a cut message only when the body was cut.
        assert!(grpc_message(&b[..6], false).is_none());
        assert!(grpc_message(&b[..6], true).is_some_and(|m| m.cut));
        // Compressed, or more bytes than announced, or JSON: not inferred.
        let mut c = b.clone();
        c[0] = 1;
        assert!(grpc_message(&c, false).is_none());
        let mut d = b.clone();
        d.push(0);
        assert!(grpc_message(&d, false).is_none());
        assert!(grpc_message(b"{\"kind\":\"Binding\"}", false).is_none());
    }

    #[test]
    fn watch_streams_are_told_by_their_first_frame() {
        let mut pb = 120u32.to_be_bytes().to_vec();
        pb.extend_from_slice(b"\x0a\x05ADDED\x12\x70\x0a\x6ek8s\0");
        assert_eq!(watch_stream(&pb), Some(true));
        assert_eq!(
            watch_stream(b"{\"type\":\"MODIFIED\",\"object\":{}}\n"),
            Some(false)
        );
        // A bare object, a List, a Status: not a watch.
        assert_eq!(watch_stream(b"k8s\0\x0a\x0d\x0a\x02v1"), None);
        assert_eq!(watch_stream(b"{\"kind\":\"PodList\"}"), None);
        assert_eq!(watch_stream(b"{\"type\":\"Other\"}"), None);
    }

    #[test]
    fn strategic_merge_patches_are_told_by_their_directives() {
        let status = br#"{"metadata":{"uid":"e5"},"status":{"$setElementOrder/conditions":[{"type":"Ready"}],"phase":"Running"}}"#;
        assert!(strategic_merge_patch(status));
        // An object (POST, PUT) or a merge patch without directives: not told.
        assert!(!strategic_merge_patch(
            br#"{"kind":"Pod","status":{"phase":"Running"}}"#
        ));
        assert!(!strategic_merge_patch(b"k8s\0\"$patch\":"));
    }

    #[test]
    fn a_bare_key_fits_several_methods_and_is_not_inferred() {
        // RangeRequest {key}, PutRequest {key} and DeleteRangeRequest {key} are the same bytes.
        let key_only = b"\x0a\x05/a/b1";
        assert_eq!(etcd_request_method(key_only), None);
        // With a limit (3) it could still be a Put's lease or a DeleteRange's prev_kv.
        assert_eq!(etcd_request_method(b"\x0a\x05/a/b1\x18\x01"), None);
        // A revision (4) only a Range has.
        assert_eq!(
            etcd_request_method(b"\x0a\x05/a/b1\x18\x01\x20\x07"),
            Some("Range")
        );
        // A response with nothing but its header fits Put, DeleteRange, a failed Txn.
        assert_eq!(etcd_response_method(b"\x0a\x02\x18\x05"), None);
    }

    /// etcd's own encoding of a WatchResponse with one PUT of a pod key, as
    /// etcd sends it to kube-apiserver (header: cluster_id, member_id,
    /// revision 314, raft_term).
    fn watch_put() -> Vec<u8> {
        let field = |tag: u8, body: &[u8]| [&[tag, body.len() as u8][..], body].concat();
        let kv = [
            field(0x0a, b"/registry/pods/default/mynginx-trace-test"),
            vec![0x10, 0xb9, 0x02, 0x18, 0xba, 0x02, 0x20, 0x02],
            field(0x2a, b"k8s"),
        ]
        .concat();
        [
            field(0x0a, &HEADER),
            vec![0x10, 0x05],
            field(0x5a, &field(0x12, &kv)),
        ]
        .concat()
    }

    const HEADER: [u8; 9] = [0x08, 0x01, 0x10, 0x02, 0x18, 0xba, 0x02, 0x20, 0x03];

    #[test]
    fn an_etcd_watch_response_with_an_event_is_one() {
        assert!(etcd_watch_response(&watch_put()));
    }

    #[test]
    fn kv_responses_and_bare_headers_are_not_watch_responses() {
        let header = [&[0x0a, HEADER.len() as u8][..], &HEADER].concat();
        // A progress notification and an empty Range response look alike.
        assert!(!etcd_watch_response(&header));
        // A Range response: header, kvs = 2 (a KeyValue), count = 4.
        let mut range = header.to_vec();
        range.extend_from_slice(&[0x12, 0x04, 0x0a, 0x02, b'/', b'a', 0x20, 0x01]);
        assert!(!etcd_watch_response(&range));
        // A Txn response: header, succeeded = 2, responses = 3.
        let mut txn = header.to_vec();
        txn.extend_from_slice(&[0x10, 0x01, 0x1a, 0x02, 0x12, 0x00]);
        assert!(!etcd_watch_response(&txn));
    }
}
