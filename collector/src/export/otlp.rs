//! A flow as an OTLP trace: one trace per flow, one span per hop.
//!
//! - Trace id: the flow id's 16 hex digits, left-padded with zeros to 128
//!   bits (`f-5f3a…` → `00000000000000005f3a…`), so a flow is found in Jaeger
//!   or Tempo by its id. Span ids are the hop ids' 16 hex digits; a hop's
//!   parent (`parent_id`) is its span's parent.
//! - Each span belongs to the resource of the component that handled the hop
//!   (`service.name` = its process name, `host.name` = its node): the server
//!   end, or the client end when no agent saw the server (a registry).
//! - Kind: SERVER when the server end was traced, CLIENT when only the
//!   client was, INTERNAL for program starts (`exec`).
//! - Attributes: OpenTelemetry's semantic conventions where one fits
//!   (`http.request.method`, `url.path`, `http.response.status_code`,
//!   `rpc.service`, `rpc.method`, `k8s.pod.name` …), `ktrail.*` for the rest.
//! - Status ERROR, with the message, for HTTP statuses ≥ 400, gRPC statuses
//!   other than OK and the hop the flow failed at.

use std::collections::{BTreeMap, HashSet};

use ktrail_proto::v1::{Flow, Hop, HopEnd};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};

/// The instrumentation scope of every span.
pub const SCOPE: &str = "ktrail";

/// 64 bits from an id of ours (`f-`/`h-` and 16 hex digits); any other
/// string is hashed (FNV-1a), so every id maps to a stable, non-zero value.
fn id_bits(id: &str) -> u64 {
    let hex = id.split_once('-').map_or(id, |(_, h)| h);
    if let Ok(v) = u64::from_str_radix(hex, 16) {
        if hex.len() == 16 && v != 0 {
            return v;
        }
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// The trace id of a flow (16 bytes).
pub fn trace_id(flow_id: &str) -> Vec<u8> {
    let mut id = vec![0u8; 8];
    id.extend_from_slice(&id_bits(flow_id).to_be_bytes());
    id
}

/// The trace id as Jaeger shows it (32 hex digits).
pub fn trace_id_hex(flow_id: &str) -> String {
    format!("{:032x}", id_bits(flow_id))
}

/// The span id of a hop (8 bytes).
pub fn span_id(hop_id: &str) -> Vec<u8> {
    id_bits(hop_id).to_be_bytes().to_vec()
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

/// Attributes of one span, leaving out empty strings.
#[derive(Default)]
struct Attrs(Vec<KeyValue>);

impl Attrs {
    fn str(&mut self, key: &str, v: &str) {
        if !v.is_empty() {
            self.0
                .push(kv(key, any_value::Value::StringValue(v.to_string())));
        }
    }
    fn int(&mut self, key: &str, v: i64) {
        self.0.push(kv(key, any_value::Value::IntValue(v)));
    }
    fn strs(&mut self, key: &str, v: &[String]) {
        if !v.is_empty() {
            let values = v
                .iter()
                .map(|s| AnyValue {
                    value: Some(any_value::Value::StringValue(s.clone())),
                })
                .collect();
            self.0
                .push(kv(key, any_value::Value::ArrayValue(ArrayValue { values })));
        }
    }
    fn end(&mut self, side: &str, e: Option<&HopEnd>) {
        let Some(e) = e else { return };
        self.str(&format!("ktrail.{side}.node"), node_of(e));
        self.str(&format!("ktrail.{side}.comm"), &e.comm);
        if e.pid != 0 {
            self.int(&format!("ktrail.{side}.pid"), i64::from(e.pid));
        }
        if !e.addr.is_empty() {
            self.str(&format!("ktrail.{side}.address"), &e.addr);
            self.int(&format!("ktrail.{side}.port"), i64::from(e.port));
        }
        self.str(&format!("ktrail.{side}.pod"), &e.pod);
        self.str(&format!("ktrail.{side}.namespace"), &e.namespace);
    }
}

fn node_of(e: &HopEnd) -> &str {
    if e.node.is_empty() {
        &e.k8s_node
    } else {
        &e.node
    }
}

/// The end whose component the span belongs to.
fn handler(hop: &Hop) -> HopEnd {
    match (&hop.server, &hop.client) {
        (Some(s), _) if s.observed => s.clone(),
        (_, Some(c)) if c.observed => c.clone(),
        (Some(s), _) => s.clone(),
        (None, c) => c.clone().unwrap_or_default(),
    }
}

fn service_name(e: &HopEnd) -> String {
    if !e.comm.is_empty() {
        e.comm.clone()
    } else if !e.pod.is_empty() {
        e.pod.clone()
    } else if !e.addr.is_empty() {
        format!("{}:{}", e.addr, e.port)
    } else {
        "unknown".to_string()
    }
}

/// A short, low-cardinality span name: the method and path, the gRPC or CRI
/// method, or the hop's kind.
fn span_name(hop: &Hop) -> String {
    if !hop.grpc_method.is_empty() {
        format!("{}/{}", hop.grpc_service, hop.grpc_method)
    } else if !hop.method.is_empty() {
        format!("{} {}", hop.method, hop.path)
    } else if hop.kind == "exec" && !hop.summary.is_empty() {
        format!("exec {}", hop.summary.chars().take(80).collect::<String>())
    } else if !hop.summary.is_empty() {
        hop.summary.chars().take(120).collect()
    } else {
        hop.kind.clone()
    }
}

/// Why a hop failed, if it did.
fn error_message(hop: &Hop, flow: &Flow) -> Option<String> {
    let flow_failure = flow.failure.as_ref().filter(|f| f.hop_id == hop.id);
    let http = hop.status_code >= 400;
    let grpc = hop.has_grpc_status && hop.grpc_status != 0;
    if !(http || grpc || flow_failure.is_some()) {
        return None;
    }
    if let Some(f) = flow_failure {
        if !f.message.is_empty() {
            return Some(f.message.clone());
        }
    }
    if !hop.status_message.is_empty() {
        return Some(hop.status_message.clone());
    }
    Some(if grpc {
        format!("gRPC status {}", hop.grpc_status)
    } else {
        format!("HTTP {}", hop.status_code)
    })
}

/// "k8s-worker: 58932 events lost (ring buffer full)", "k8s-worker: agent gone (…)".
fn gap_text(g: &ktrail_proto::v1::FlowGap) -> String {
    if g.agent_gone {
        format!("{}: {}", g.node, g.reason)
    } else {
        format!("{}: {} events lost ({})", g.node, g.events_lost, g.reason)
    }
}

fn span(flow: &Flow, hop: &Hop, in_flow: &HashSet<&str>) -> Span {
    let mut a = Attrs::default();
    let h = handler(hop);
    a.str("ktrail.node", node_of(&h));
    a.str("ktrail.flow.id", &flow.id);
    a.str("ktrail.hop.id", &hop.id);
    a.str("ktrail.hop.kind", &hop.kind);
    a.str("ktrail.summary", &hop.summary);
    a.str("ktrail.joined_by", &hop.joined_by);
    a.str("network.transport", &hop.protocol);
    a.str("network.protocol.name", &hop.app_protocol);
    a.end("client", hop.client.as_ref());
    a.end("server", hop.server.as_ref());
    a.str("http.request.method", &hop.method);
    a.str("url.path", &hop.path);
    if hop.status_code != 0 {
        a.int("http.response.status_code", i64::from(hop.status_code));
    }
    if !hop.grpc_method.is_empty() {
        a.str("rpc.system", "grpc");
        a.str("rpc.service", &hop.grpc_service);
        a.str("rpc.method", &hop.grpc_method);
    }
    if hop.has_grpc_status {
        a.int("rpc.grpc.status_code", i64::from(hop.grpc_status));
    }
    a.str("ktrail.status_message", &hop.status_message);
    if let Some(etcd) = &hop.etcd {
        a.str("db.system", "etcd");
        a.str("ktrail.etcd.op", &etcd.op);
        a.strs("ktrail.etcd.keys", &etcd.keys);
        a.strs("ktrail.etcd.events", &etcd.events);
    }
    let (mut pod, mut namespace) = (String::new(), String::new());
    if let Some(cri) = &hop.cri {
        a.str("ktrail.cri.method", &cri.method);
        a.str("container.image.name", &cri.image);
        a.str("k8s.pod.uid", &cri.pod_uid);
        a.str("k8s.container.name", &cri.container_name);
        a.str("ktrail.cri.pod_sandbox_id", &cri.pod_sandbox_id);
        a.str("container.id", &cri.container_id);
        pod.clone_from(&cri.pod_name);
        namespace.clone_from(&cri.pod_namespace);
    }
    if pod.is_empty() {
        if let Some(o) = hop.objects.iter().find(|o| o.resource == "pods") {
            pod.clone_from(&o.name);
            namespace.clone_from(&o.namespace);
        }
    }
    a.str("k8s.pod.name", &pod);
    a.str("k8s.namespace.name", &namespace);
    let objects: Vec<String> = hop
        .objects
        .iter()
        .map(|o| format!("{} {}/{}", o.resource, o.namespace, o.name))
        .collect();
    a.strs("ktrail.objects", &objects);
    if hop.id == flow.root_hop_id {
        a.str("ktrail.flow.title", &flow.title);
        a.str("ktrail.flow.state", &flow.state);
        a.str("ktrail.flow.state_reason", &flow.state_reason);
        // Loss travels with the trace: a backend shows that hops may be missing.
        if !flow.gaps.is_empty() || flow.events_lost > 0 {
            a.int(
                "ktrail.flow.events_lost",
                i64::try_from(flow.events_lost).unwrap_or(i64::MAX),
            );
            let gaps: Vec<String> = flow.gaps.iter().map(gap_text).collect();
            a.strs("ktrail.flow.gaps", &gaps);
        }
    }

    let kind = if hop.kind == "exec" {
        SpanKind::Internal
    } else if hop.server.as_ref().is_some_and(|s| s.observed) {
        SpanKind::Server
    } else {
        SpanKind::Client
    };
    let status = match error_message(hop, flow) {
        Some(message) => Status {
            message,
            code: StatusCode::Error as i32,
        },
        None => Status::default(),
    };
    Span {
        trace_id: trace_id(&flow.id),
        span_id: span_id(&hop.id),
        parent_span_id: if in_flow.contains(hop.parent_id.as_str()) {
            span_id(&hop.parent_id)
        } else {
            Vec::new()
        },
        name: span_name(hop),
        kind: kind as i32,
        start_time_unix_nano: hop.start_unix_ns,
        end_time_unix_nano: hop.start_unix_ns.saturating_add(hop.duration_ns),
        attributes: a.0,
        status: Some(status),
        ..Span::default()
    }
}

/// The export request carrying `flow` as one trace.
pub fn trace_request(flow: &Flow, hops: &[Hop]) -> ExportTraceServiceRequest {
    let in_flow: HashSet<&str> = hops.iter().map(|h| h.id.as_str()).collect();
    // (service.name, node) → its spans; sorted for a stable request.
    let mut by_resource: BTreeMap<(String, String), Vec<Span>> = BTreeMap::new();
    for hop in hops {
        let h = handler(hop);
        by_resource
            .entry((service_name(&h), node_of(&h).to_string()))
            .or_default()
            .push(span(flow, hop, &in_flow));
    }
    let resource_spans = by_resource
        .into_iter()
        .map(|((service, node), spans)| {
            let mut a = Attrs::default();
            a.str("service.name", &service);
            a.str("host.name", &node);
            a.str("k8s.node.name", &node);
            ResourceSpans {
                resource: Some(Resource {
                    attributes: a.0,
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: SCOPE.to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::flows::StitchConfig;
    use crate::replay::{self, KUBECTL_RUN, KUBECTL_RUN_BAD};

    fn captured(title: &str) -> (Flow, Vec<Hop>) {
        let r =
            replay::replay(&replay::cluster_capture(), StitchConfig::default()).expect("replay");
        r.flow_titled(title).expect("flow")
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        s.attributes
            .iter()
            .find(|k| k.key == key)
            .and_then(|k| k.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn str_attr<'a>(s: &'a Span, key: &str) -> Option<&'a str> {
        match attr(s, key) {
            Some(any_value::Value::StringValue(v)) => Some(v),
            _ => None,
        }
    }

    #[test]
    fn ids_come_from_the_flow_and_hop_ids() {
        assert_eq!(
            trace_id_hex("f-00000000000000bb"),
            "000000000000000000000000000000bb"
        );
        assert_eq!(
            trace_id("f-5f3a000000000001")[8..],
            [0x5f, 0x3a, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(span_id("h-00000000000000aa"), [0, 0, 0, 0, 0, 0, 0, 0xaa]);
        // Not one of ours: hashed, stable, never zero.
        assert_eq!(span_id("other"), span_id("other"));
        assert_ne!(span_id("other"), vec![0; 8]);
    }

    #[test]
    fn the_kubectl_run_flow_is_one_trace_with_a_span_per_hop() {
        let (flow, hops) = captured(KUBECTL_RUN);
        let req = trace_request(&flow, &hops);
        let mut spans: HashMap<Vec<u8>, (&str, &Span)> = HashMap::new();
        for rs in &req.resource_spans {
            let res = rs.resource.as_ref().expect("resource");
            let service = res
                .attributes
                .iter()
                .find(|k| k.key == "service.name")
                .and_then(|k| k.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                })
                .expect("service.name");
            for s in &rs.scope_spans[0].spans {
                assert_eq!(s.trace_id, trace_id(&flow.id));
                assert!(spans.insert(s.span_id.clone(), (service, s)).is_none());
            }
        }
        assert_eq!(spans.len(), hops.len());

        // Every parent link of the flow is a span parent, and only those.
        for hop in &hops {
            let (_, s) = spans[&span_id(&hop.id)];
            if hops.iter().any(|p| p.id == hop.parent_id) {
                assert_eq!(s.parent_span_id, span_id(&hop.parent_id));
                assert!(s.start_time_unix_nano <= s.end_time_unix_nano);
            } else {
                assert!(s.parent_span_id.is_empty(), "{}", hop.id);
            }
        }

        let (service, root) = spans[&span_id(&flow.root_hop_id)];
        assert_eq!(service, "kube-apiserver");
        assert_eq!(root.kind, SpanKind::Server as i32);
        assert_eq!(str_attr(root, "http.request.method"), Some("POST"));
        assert_eq!(
            attr(root, "http.response.status_code"),
            Some(&any_value::Value::IntValue(201))
        );
        assert!(str_attr(root, "ktrail.client.comm").is_some_and(|c| c.starts_with("kubectl")));
        assert_eq!(str_attr(root, "ktrail.flow.title"), Some(KUBECTL_RUN));
        assert_eq!(root.status.as_ref().map(|s| s.code), Some(0));

        // An etcd put and a CRI call naming the pod, by etcd and containerd.
        assert!(spans.values().any(|(svc, s)| svc.starts_with("etcd")
            && matches!(attr(s, "ktrail.etcd.keys"), Some(any_value::Value::ArrayValue(a))
                if a.values.iter().any(|v| v.value == Some(any_value::Value::StringValue(
                    "/registry/pods/default/mynginx-trace-test".into()))))));
        assert!(spans.values().any(|(svc, s)| *svc == "containerd"
            && str_attr(s, "rpc.method") == Some("RunPodSandbox")
            && str_attr(s, "k8s.pod.name") == Some("mynginx-trace-test")
            && str_attr(s, "k8s.namespace.name") == Some("default")));
        // Both nodes.
        for node in ["k8s-control", "k8s-worker"] {
            assert!(spans
                .values()
                .any(|(_, s)| str_attr(s, "ktrail.node") == Some(node)));
        }
    }

    #[test]
    fn the_root_span_carries_the_flows_gaps() {
        let (mut flow, hops) = captured(KUBECTL_RUN);
        let root_of = |req: &ExportTraceServiceRequest, id: &str| {
            req.resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .find(|s| s.span_id == span_id(id))
                .cloned()
                .expect("root span")
        };
        let clean = root_of(&trace_request(&flow, &hops), &flow.root_hop_id);
        assert_eq!(attr(&clean, "ktrail.flow.events_lost"), None);
        flow.events_lost = 12;
        flow.gaps = vec![ktrail_proto::v1::FlowGap {
            node: "k8s-worker".into(),
            events_lost: 12,
            reason: "ring buffer full".into(),
            ..Default::default()
        }];
        let lossy = root_of(&trace_request(&flow, &hops), &flow.root_hop_id);
        assert_eq!(
            attr(&lossy, "ktrail.flow.events_lost"),
            Some(&any_value::Value::IntValue(12))
        );
        let Some(any_value::Value::ArrayValue(gaps)) = attr(&lossy, "ktrail.flow.gaps") else {
            panic!("no ktrail.flow.gaps: {:?}", lossy.attributes);
        };
        assert_eq!(
            gaps.values[0].value,
            Some(any_value::Value::StringValue(
                "k8s-worker: 12 events lost (ring buffer full)".into()
            ))
        );
    }

    #[test]
    fn the_failed_pull_is_an_error_span_with_the_runtimes_message() {
        let (flow, hops) = captured(KUBECTL_RUN_BAD);
        let failure = flow.failure.clone().expect("failure");
        let req = trace_request(&flow, &hops);
        let spans: Vec<&Span> = req
            .resource_spans
            .iter()
            .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter()))
            .collect();
        let failed = spans
            .iter()
            .find(|s| s.span_id == span_id(&failure.hop_id))
            .expect("the failed hop's span");
        let status = failed.status.as_ref().expect("status");
        assert_eq!(status.code, StatusCode::Error as i32);
        assert_eq!(status.message, failure.message);
        // The registry's 404 is an error too.
        assert!(spans.iter().any(|s| {
            attr(s, "http.response.status_code") == Some(&any_value::Value::IntValue(404))
                && s.status
                    .as_ref()
                    .is_some_and(|st| st.code == StatusCode::Error as i32)
        }));
    }
}
