//! The decoders on real captured traffic (see tests/vectors/README.md).
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use ktrail_protocols::k8s::{self, WatchStream};
use ktrail_protocols::{ConnectionDecoder, Direction, HeaderValue, Message, Part, Protocol};

mod expected {

    /// The same requests over h2c and over HTTP/1.1 decode to the same summaries.
    pub const KUBECTL_FLOW: &[&str] = &[
        "POST /api/v1/namespaces/default/pods?fieldManager=kubectl-run [Pod default/mynginx-trace-test]",
        "POST /api/v1/namespaces/default/pods?fieldManager=kubectl-run → 201 [Pod default/mynginx-trace-test Pending]",
        "GET /api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dmynginx-trace-test&resourceVersion=1234&watch=true",
        "GET /api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dmynginx-trace-test&resourceVersion=1234&watch=true → 200",
        "GET /api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dmynginx-trace-test&resourceVersion=1234&watch=true: ADDED Pod default/mynginx-trace-test Pending",
        "GET /api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dmynginx-trace-test&resourceVersion=1234&watch=true: MODIFIED Pod default/mynginx-trace-test node=ktrail-worker Pending",
        "POST /api/v1/namespaces/default/pods/mynginx-trace-test/binding [Binding default/mynginx-trace-test → ktrail-worker]",
        "POST /api/v1/namespaces/default/pods/mynginx-trace-test/binding → 201 [Status 201]",
        "GET /api/v1/namespaces/default/pods?resourceVersion=1234&watch=true",
        "GET /api/v1/namespaces/default/pods?resourceVersion=1234&watch=true → 200",
        "GET /api/v1/namespaces/default/pods?resourceVersion=1234&watch=true: ADDED Pod default/mynginx-trace-test Pending",
        "GET /api/v1/namespaces/default/pods?resourceVersion=1234&watch=true: MODIFIED Pod default/mynginx-trace-test node=ktrail-worker Pending",
        "PATCH /api/v1/namespaces/default/pods/mynginx-trace-test/status [object Running]",
        "PATCH /api/v1/namespaces/default/pods/mynginx-trace-test/status → 200 [Pod default/mynginx-trace-test node=ktrail-worker Running]",
        "GET /api/v1/namespaces/default/secrets/db-credentials",
        "GET /api/v1/namespaces/default/secrets/db-credentials → 200 [Secret default/db-credentials]",
        "GET /api/v1/namespaces/default/pods/missing",
        "GET /api/v1/namespaces/default/pods/missing → 404 [Status 404 NotFound]",
];
    pub const ETCD: &[&str] = &[
        "etcd Watch create /registry/pods/ (prefix)",
        "etcd Watch rev 1",
        "etcd Txn put /registry/pods/default/mynginx-trace-test",
        "etcd Txn succeeded rev 2",
        "etcd Watch PUT /registry/pods/default/mynginx-trace-test rev 2",
        "etcd Range /registry/pods/default/mynginx-trace-test",
        "etcd Range /registry/pods/default/mynginx-trace-test rev 2",
        "etcd Txn put /registry/pods/default/mynginx-trace-test",
        "etcd Txn succeeded rev 3",
        "etcd Watch PUT /registry/pods/default/mynginx-trace-test rev 3",
        "etcd Txn put /registry/pods/default/mynginx-trace-test",
        "etcd Txn failed /registry/pods/default/mynginx-trace-test rev 3",
        "etcd Put /registry/events/default/mynginx-trace-test.1",
        "etcd Put rev 4",
        "etcd Range /registry/pods/default/ (prefix)",
        "etcd Range /registry/pods/default/mynginx-trace-test rev 4",
        "etcd DeleteRange /registry/pods/default/mynginx-trace-test",
        "etcd DeleteRange rev 5",
        "etcd Watch DELETE /registry/pods/default/mynginx-trace-test rev 5",
        "etcd Watch",
    ];
    pub const CRI: &[&str] = &[
        "CRI Version",
        "CRI Version → OK",
        "CRI RunPodSandbox default/mynginx-trace-test",
        "CRI RunPodSandbox → Unknown: failed to get sandbox image \"registry.k8s.io/pause:3.10\": failed to pull image \"registry.k8s.io/pause:3.10\": failed to pull and unpack image \"registry.k8s.io/pause:3.10\": failed to resolve reference \"registry.k8s.io/pause:3.10\": failed to do request: Head \"https://registry.k8s.io/v2/pause/manifests/3.10\": dial tcp: lookup registry.k8s.io on 10.255.255.53:53: no such host",
        "CRI ImageStatus image docker.io/library/nginx:latest",
        "CRI ImageStatus → OK",
        "CRI PullImage default/mynginx-trace-test image docker.io/library/nginx:latest",
        "CRI PullImage → Unknown: failed to pull and unpack image \"docker.io/library/nginx:latest\": failed to resolve reference \"docker.io/library/nginx:latest\": failed to do request: Head \"https://registry-1.docker.io/v2/library/nginx/manifests/latest\": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host",
        "CRI CreateContainer default/mynginx-trace-test container mynginx-trace-test image docker.io/library/nginx:latest sandbox id 4c1d3f0a5b6e7",
        "CRI CreateContainer → NotFound: failed to find sandbox id \"4c1d3f0a5b6e7d8c9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6\": not found",
        "CRI StartContainer container id 9e8d7c6b5a4f3",
        "CRI StartContainer → NotFound: an error occurred when try to find container \"9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d\": not found",
        "CRI ListPodSandbox",
        "CRI ListPodSandbox → OK",
        "CRI StopPodSandbox sandbox id 4c1d3f0a5b6e7",
        "CRI StopPodSandbox → NotFound: an error occurred when try to find sandbox \"4c1d3f0a5b6e7d8c9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6\": not found",
        "CRI RemovePodSandbox sandbox id 4c1d3f0a5b6e7",
        "CRI RemovePodSandbox → OK",
];
}

fn all_json(msgs: &[Message]) -> String {
    msgs.iter()
        .map(|m| serde_json::to_string(m).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Secrets the generator put into the traffic: none may appear in any output.
const SECRETS: &[&str] = &[
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InZlY3RvciJ9", // bearer token
    "c2lnbmF0dXJl",
    "abcdef0123456789", // Set-Cookie
    "aHVudGVyMg",       // base64("hunter2")
    "hunter2",
    "vectorvectorvector", // PEM key body
    "YWRtaW4",            // base64("admin") stringData
];

fn assert_no_secrets(msgs: &[Message]) {
    let j = all_json(msgs);
    for s in SECRETS {
        assert!(!j.contains(s), "secret {s} leaked");
    }
    // body prefixes too (serde writes bytes as numbers): check raw
    for m in msgs {
        let b = String::from_utf8_lossy(&m.body_prefix);
        for s in SECRETS {
            assert!(
                !b.contains(s),
                "secret {s} leaked in body prefix of {}",
                m.summary()
            );
        }
    }
}

#[test]
fn h2c_kubectl_flow_decodes_fully() {
    let msgs = replay(&chunks("h2c-kubectl.txt"), AGENT_CAP);
    assert_eq!(summaries(&msgs), expected::KUBECTL_FLOW);
    for m in &msgs {
        assert_eq!(m.protocol, Protocol::Http2);
        assert!(m.stream_id.is_some_and(|s| s % 2 == 1));
        assert!(!m.unknown, "{}", m.summary());
        assert!(!m.truncated, "{}", m.summary());
        if m.part != Part::Event && !m.path.as_deref().unwrap_or("").contains("watch=true") {
            assert!(m.complete, "{}", m.summary());
        }
    }
    // Request: method, path, content type, redacted Authorization.
    let post = &msgs[0];
    assert_eq!(post.method.as_deref(), Some("POST"));
    assert_eq!(post.content_type.as_deref(), Some("application/json"));
    assert!(post
        .headers
        .iter()
        .any(|h| h.name.as_deref() == Some("authorization") && h.value == HeaderValue::Redacted));
    assert_eq!(
        post.header("user-agent"),
        Some("kubectl/v1.34.4 (linux/amd64) kubernetes/e2d0fb4")
    );
    // Response: status and the created object's identity.
    let created = &msgs[1];
    assert_eq!(created.status, Some(201));
    let pod = &created.objects[0];
    assert_eq!(pod.api_version.as_deref(), Some("v1"));
    assert_eq!(
        pod.uid.as_deref(),
        Some("6f1c9f9e-2b7e-4c3a-9d55-0c8f5f2a1b11")
    );
    assert_eq!(pod.resource_version.as_deref(), Some("1234"));
    assert!(created.ts_first >= post.ts_last);
    // Protobuf watch events (the scheduler's and kubelet's view).
    let bound = &msgs[11];
    assert_eq!(bound.part, Part::Event);
    assert_eq!(
        bound.content_type.as_deref(),
        Some("application/vnd.kubernetes.protobuf;stream=watch")
    );
    let o = &bound.objects[0];
    assert_eq!(o.event_type.as_deref(), Some("MODIFIED"));
    assert_eq!(o.node_name.as_deref(), Some("ktrail-worker"));
    assert_eq!(o.resource_version.as_deref(), Some("1235"));
    // The 404 Status body.
    let nf = msgs.last().unwrap();
    assert_eq!(nf.objects[0].reason.as_deref(), Some("NotFound"));
    assert_eq!(
        nf.objects[0].message.as_deref(),
        Some("pods \"missing\" not found")
    );
    assert_no_secrets(&msgs);
    let secret = &msgs[15];
    assert!(secret.redacted.contains(&"secret data".to_string()));
    assert!(secret.redacted.contains(&"header set-cookie".to_string()));
    assert!(String::from_utf8_lossy(&secret.body_prefix)
        .contains("\"data\":{\"password\":\"[redacted]\""));
}

#[test]
fn http1_kubectl_flow_decodes_fully() {
    let msgs = replay(&chunks("http1-kubectl.txt"), AGENT_CAP);
    assert_eq!(summaries(&msgs), expected::KUBECTL_FLOW);
    assert!(msgs
        .iter()
        .all(|m| m.protocol == Protocol::Http1 && !m.unknown));
    // The watch response is chunked: events come out as each line completes.
    let events: Vec<&Message> = msgs.iter().filter(|m| m.part == Part::Event).collect();
    assert_eq!(events.len(), 4);
    assert_no_secrets(&msgs);
}

#[test]
fn etcd_apiserver_flow_decodes_keys_revisions_and_objects() {
    let msgs = replay(&chunks("etcd-apiserver.txt"), AGENT_CAP);
    // Watch events and responses of concurrent streams interleave as they
    // happened: compare as a multiset, find messages by what they say.
    let mut got = summaries(&msgs);
    let mut want: Vec<String> = expected::ETCD.iter().map(|s| s.to_string()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(msgs.iter().all(|m| m.protocol == Protocol::Grpc));
    let txns: Vec<&Message> = msgs
        .iter()
        .filter(|m| m.part == Part::Request && m.grpc_method.as_deref() == Some("Txn"))
        .collect();
    // The create Txn: compare mod_revision = 0, put, and the Pod in the value.
    let txn = txns[0];
    assert_eq!(txn.grpc_service.as_deref(), Some("etcdserverpb.KV"));
    let e = txn.etcd.as_ref().unwrap();
    assert_eq!(e.compares.len(), 1);
    assert_eq!(
        e.compares[0].key,
        "/registry/pods/default/mynginx-trace-test"
    );
    assert_eq!(e.compares[0].target, "mod");
    assert_eq!(e.compares[0].number, Some(0));
    assert_eq!(e.success[0].op, "put");
    assert!(e.failure.is_empty());
    assert_eq!(
        txn.objects[0].label(),
        "Pod default/mynginx-trace-test Pending"
    );
    assert_eq!(txn.objects[0].api_version.as_deref(), Some("v1"));
    // Its response (same stream): header revision, succeeded, gRPC OK.
    let r = msgs
        .iter()
        .find(|m| m.part == Part::Response && m.stream_id == txn.stream_id)
        .unwrap();
    assert_eq!(r.grpc_status, Some(0));
    assert_eq!(r.status, Some(200));
    assert_eq!(r.etcd.as_ref().unwrap().revision, Some(2));
    assert_eq!(r.etcd.as_ref().unwrap().succeeded, Some(true));
    // The update Txn carries nodeName in the value; its compare names the read revision.
    let upd = txns[1].etcd.as_ref().unwrap();
    assert_eq!(upd.compares[0].number, Some(2));
    assert_eq!(upd.failure[0].op, "range");
    assert_eq!(
        txns[1].objects[0].node_name.as_deref(),
        Some("ktrail-worker")
    );
    // Watch: events with keys and revisions, the Pod from the event's kv.
    let w = find(
        &msgs,
        Part::Event,
        "etcd Watch PUT /registry/pods/default/mynginx-trace-test rev 2",
    );
    let we = w.etcd.as_ref().unwrap();
    assert_eq!(we.events[0].kind, "PUT");
    assert_eq!(we.events[0].mod_revision, Some(2));
    assert_eq!(w.objects[0].name.as_deref(), Some("mynginx-trace-test"));
    // Watch create request: prefix and range end.
    let wc = find(&msgs, Part::Request, "etcd Watch create")
        .etcd
        .as_ref()
        .unwrap();
    assert_eq!(wc.range_end.as_deref(), Some("/registry/pods0"));
    // Prefix Range response: the key and count.
    let rr = find(
        &msgs,
        Part::Response,
        "etcd Range /registry/pods/default/mynginx-trace-test rev 4",
    );
    assert_eq!(rr.etcd.as_ref().unwrap().count, Some(1));
}

#[test]
fn cri_kubelet_calls_decode_metadata_ids_and_errors() {
    let msgs = replay(&chunks("cri-kubelet.txt"), AGENT_CAP);
    assert_eq!(summaries(&msgs), expected::CRI);
    let run = msgs[2].cri.as_ref().unwrap();
    assert_eq!(run.service, "RuntimeService");
    assert_eq!(run.pod_name.as_deref(), Some("mynginx-trace-test"));
    assert_eq!(run.pod_namespace.as_deref(), Some("default"));
    assert_eq!(
        run.pod_uid.as_deref(),
        Some("6f1c9f9e-2b7e-4c3a-9d55-0c8f5f2a1b11")
    );
    assert_eq!(run.attempt, Some(0));
    let err = &msgs[3];
    assert_eq!(err.grpc_status, Some(2));
    assert!(err
        .grpc_message
        .as_deref()
        .unwrap()
        .starts_with("failed to get sandbox image"));
    let pull = &msgs[6];
    assert_eq!(
        pull.cri.as_ref().unwrap().image.as_deref(),
        Some("docker.io/library/nginx:latest")
    );
    assert_eq!(pull.redacted, vec!["cri request body".to_string()]);
    let create = msgs[8].cri.as_ref().unwrap();
    assert_eq!(create.container_name.as_deref(), Some("mynginx-trace-test"));
    assert_eq!(msgs[9].grpc_status, Some(5));
}

#[test]
fn cri_successful_run_decodes_ids_and_image_refs() {
    let msgs = replay(&chunks("cri-kubelet-run.txt"), AGENT_CAP);
    let s = summaries(&msgs);
    let image_id = "sha256:3b8b7c17ddc14900d16ff5fd880127b4c8489eb6bd9c32b699e5fac16a5c2091";
    assert_eq!(s.len(), 22);
    assert!(msgs
        .iter()
        .all(|m| m.complete && !m.unknown && !m.truncated));
    assert!(msgs
        .iter()
        .filter(|m| m.part == Part::Response)
        .all(|m| m.grpc_status == Some(0)));
    // PullImage: the reference asked for and the image ref returned.
    let pull = msgs[2].cri.as_ref().unwrap();
    assert_eq!(pull.service, "ImageService");
    assert!(pull
        .image
        .as_deref()
        .unwrap()
        .ends_with("/library/nginx:1.22.1"));
    assert_eq!(
        msgs[3].cri.as_ref().unwrap().image_ref.as_deref(),
        Some(image_id)
    );
    // RunPodSandbox: metadata in, sandbox id out; CreateContainer refers to it.
    assert_eq!(s[6], "CRI RunPodSandbox default/mynginx-trace-test");
    let sandbox = msgs[7]
        .cri
        .as_ref()
        .unwrap()
        .pod_sandbox_id
        .clone()
        .unwrap();
    assert_eq!(sandbox.len(), 64);
    let create = msgs[8].cri.as_ref().unwrap();
    assert_eq!(create.pod_sandbox_id.as_deref(), Some(sandbox.as_str()));
    assert_eq!(create.container_name.as_deref(), Some("mynginx-trace-test"));
    assert_eq!(create.image.as_deref(), Some(image_id));
    assert_eq!(
        create.pod_uid.as_deref(),
        Some("6f1c9f9e-2b7e-4c3a-9d55-0c8f5f2a1b11")
    );
    // The container id returned is the one started, stopped and removed.
    let ctr = msgs[9].cri.as_ref().unwrap().container_id.clone().unwrap();
    for i in [10, 12, 14, 16] {
        assert_eq!(
            msgs[i].cri.as_ref().unwrap().container_id.as_deref(),
            Some(ctr.as_str()),
            "{}",
            s[i]
        );
    }
    assert_eq!(msgs[10].cri.as_ref().unwrap().method, "StartContainer");
    assert_eq!(s[11], "CRI StartContainer → OK");
    assert_eq!(
        msgs[18].cri.as_ref().unwrap().pod_sandbox_id.as_deref(),
        Some(sandbox.as_str())
    );
    // CreateContainer carries the environment: its bytes are not kept.
    assert!(msgs[8].body_prefix.starts_with(b"[redacted"));
}

const API_TOKEN: &str = "ktrail-gen-token-0123456789abcdef";

fn assert_no_token(msgs: &[Message]) {
    let j = all_json(msgs);
    assert!(!j.contains(API_TOKEN));
    for m in msgs {
        assert!(!String::from_utf8_lossy(&m.body_prefix).contains(API_TOKEN));
    }
}

fn find<'a>(msgs: &'a [Message], part: Part, summary_prefix: &str) -> &'a Message {
    msgs.iter()
        .find(|m| m.part == part && m.summary().starts_with(summary_prefix))
        .unwrap_or_else(|| panic!("no {part:?} {summary_prefix}"))
}

/// Hop 1 of the reference flow: the real kubectl 1.32 against the real
/// kube-apiserver 1.34, TLS plaintext (HTTP/2).
#[test]
fn real_kubectl_run_against_kube_apiserver() {
    let msgs = replay(&chunks("kubectl-run.txt"), AGENT_CAP);
    assert!(msgs.iter().all(|m| m.protocol == Protocol::Http2));
    let post = find(
        &msgs,
        Part::Request,
        "POST /api/v1/namespaces/default/pods?fieldManager=kubectl-run",
    );
    assert!(post.header("user-agent").unwrap().starts_with("kubectl"));
    assert!(post
        .headers
        .iter()
        .any(|h| h.name.as_deref() == Some("authorization") && h.value == HeaderValue::Redacted));
    let created = find(
        &msgs,
        Part::Response,
        "POST /api/v1/namespaces/default/pods?fieldManager=kubectl-run → 201",
    );
    assert_eq!(created.stream_id, post.stream_id);
    let pod = &created.objects[0];
    assert_eq!(pod.label(), "Pod default/mynginx-trace-test Pending");
    assert_eq!(pod.uid.as_ref().map(String::len), Some(36));
    assert!(pod.resource_version.is_some());
    assert!(created.complete && !created.unknown);
    // Object identity from the path, for stitching.
    assert_eq!(post.resource.as_ref().unwrap().label(), "pods in default");
    assert_eq!(created.resource, post.resource);
    assert_no_token(&msgs);
}

/// Hops 3 and 4: kube-scheduler (protobuf) sees the pod in its watch and binds it.
#[test]
fn real_kube_scheduler_watch_and_binding() {
    let msgs = replay(&chunks("kube-scheduler.txt"), AGENT_CAP);
    let bind = find(
        &msgs,
        Part::Request,
        "POST /api/v1/namespaces/default/pods/mynginx-trace-test/binding",
    );
    assert_eq!(
        bind.content_type.as_deref(),
        Some("application/vnd.kubernetes.protobuf")
    );
    assert_eq!(bind.objects[0].target.as_deref(), Some("ktrail-worker"));
    assert_eq!(
        bind.resource.as_ref().unwrap().label(),
        "pods default/mynginx-trace-test (binding)"
    );
    let bound = find(
        &msgs,
        Part::Response,
        "POST /api/v1/namespaces/default/pods/mynginx-trace-test/binding → 201",
    );
    assert_eq!(bound.objects[0].kind.as_deref(), Some("Status"));
    let ev = msgs
        .iter()
        .find(|m| {
            m.part == Part::Event
                && m.objects
                    .iter()
                    .any(|o| o.node_name.as_deref() == Some("ktrail-worker"))
        })
        .unwrap();
    assert!(ev.path.as_deref().unwrap().starts_with("/api/v1/pods?"));
    assert_eq!(ev.objects[0].event_type.as_deref(), Some("MODIFIED"));
    // The scheduler's "Scheduled" event (hop 11).
    find(
        &msgs,
        Part::Response,
        "POST /apis/events.k8s.io/v1/namespaces/default/events → 201",
    );
    assert_no_token(&msgs);
}

/// Hops 2 and 5: kube-apiserver's Txn writes of the pod to etcd, and the
/// watch that fans them out.
#[test]
fn real_kube_apiserver_etcd_traffic() {
    let msgs = replay(&chunks("apiserver-etcd-pods.txt"), AGENT_CAP);
    let puts: Vec<&Message> = msgs
        .iter()
        .filter(|m| {
            m.part == Part::Request
                && m.summary() == "etcd Txn put /registry/pods/default/mynginx-trace-test"
        })
        .collect();
    assert!(puts.len() >= 2);
    // Create: guarded by mod_revision = 0, value is the Pod without a node.
    let create = puts[0].etcd.as_ref().unwrap();
    assert_eq!(
        (
            create.compares[0].target.as_str(),
            create.compares[0].number
        ),
        ("mod", Some(0))
    );
    assert_eq!(
        puts[0].objects[0].label(),
        "Pod default/mynginx-trace-test Pending"
    );
    // The binding's write: the same key, nodeName set.
    assert_eq!(
        puts[1].objects[0].node_name.as_deref(),
        Some("ktrail-worker")
    );
    assert!(puts[1].etcd.as_ref().unwrap().compares[0].number.unwrap() > 0);
    let watch_puts = msgs
        .iter()
        .filter(|m| {
            m.part == Part::Event
                && m.etcd
                    .as_ref()
                    .is_some_and(|e| e.events.iter().any(|ev| ev.kind == "PUT"))
        })
        .count();
    assert!(watch_puts >= 2);
}

/// Hop 10 (the kubelet's status PATCH, sent here by kubectl) and hop 12 (a
/// `kubectl get pods -w` watching).
#[test]
fn real_status_patch_and_table_watch() {
    let msgs = replay(&chunks("kubectl-patch-status.txt"), AGENT_CAP);
    let r = find(
        &msgs,
        Part::Response,
        "PATCH /api/v1/namespaces/default/pods/mynginx-trace-test/status",
    );
    assert_eq!(r.status, Some(200));
    assert_eq!(r.objects[0].phase.as_deref(), Some("Running"));
    assert_no_token(&msgs);
    let msgs = replay(&chunks("kubectl-get-watch.txt"), AGENT_CAP);
    let events: Vec<String> = msgs
        .iter()
        .filter(|m| m.part == Part::Event)
        .flat_map(|m| {
            m.objects
                .iter()
                .map(|o| format!("{} {}", o.event_type.as_deref().unwrap_or("?"), o.label()))
        })
        .collect();
    assert!(events.len() >= 3, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.ends_with("PartialObjectMetadata default/mynginx-trace-test")),
        "{events:?}"
    );
    assert!(events[0].starts_with("ADDED"));
    let msgs = replay(&chunks("kubectl-delete.txt"), AGENT_CAP);
    find(
        &msgs,
        Part::Response,
        "DELETE /api/v1/namespaces/default/pods/mynginx-trace-test → 200",
    );
}

#[test]
fn directions_given_the_wrong_way_round_are_swapped() {
    let mut c = chunks("http1-kubectl.txt");
    for ch in &mut c {
        ch.dir = ch.dir.reverse();
    }
    let mut d = ConnectionDecoder::new();
    let mut msgs = Vec::new();
    for ch in &c {
        msgs.extend(d.feed(ch.dir, &ch.data, ch.total_len, 0));
    }
    assert!(d.swapped());
    assert_eq!(summaries(&msgs)[..2], expected::KUBECTL_FLOW[..2]);
    assert_eq!(msgs[0].direction, Direction::ClientToServer);
}

/// Every value a degraded decode reports must be one the full decode reports:
/// a cut or mid-connection capture loses information, it never invents it.
fn assert_subset(degraded: &[Message], full: &[Message]) {
    let paths: Vec<Option<&str>> = full.iter().map(|m| m.path.as_deref()).collect();
    let keys: Vec<String> = full
        .iter()
        .flat_map(|m| m.etcd.iter().flat_map(|e| e.keys.clone()))
        .collect();
    let names: Vec<Option<&str>> = full
        .iter()
        .flat_map(|m| m.objects.iter().map(|o| o.name.as_deref()))
        .collect();
    for m in degraded {
        if let Some(p) = m.path.as_deref() {
            assert!(paths.contains(&Some(p)), "invented path {p}");
        }
        for k in m.etcd.iter().flat_map(|e| e.keys.iter()) {
            assert!(keys.contains(k) || k.is_empty(), "invented key {k}");
        }
        for o in &m.objects {
            if let Some(n) = o.name.as_deref() {
                assert!(names.contains(&Some(n)), "invented name {n}");
            }
        }
    }
}

#[test]
fn truncated_captures_mark_what_is_missing_and_never_guess() {
    for v in ALL {
        let c = chunks(v);
        let full = replay(&c, usize::MAX);
        for cap in [0, 1, 9, 16, 40, 100, 300, 700] {
            let cut = replay(&c, cap);
            assert_subset(&cut, &full);
            if cap <= 16 {
                assert!(cut.iter().all(|m| m.path.is_none()
                    || m.protocol == Protocol::Http1
                    || m.unknown
                    || m.truncated
                    || m.complete));
            }
        }
    }
    // A cut of 300 bytes per write: HTTP/2 header blocks survive (they are
    // small), bodies are cut and say so.
    let msgs = replay(&chunks("h2c-kubectl.txt"), 300);
    let created = msgs
        .iter()
        .find(|m| {
            m.status == Some(201) && m.objects.iter().any(|o| o.kind.as_deref() == Some("Pod"))
        })
        .unwrap();
    assert!(created.truncated && !created.complete);
    assert!(created.objects[0].truncated);
    assert_eq!(
        created.objects[0].name.as_deref(),
        Some("mynginx-trace-test")
    );
}

#[test]
fn mid_connection_h2_decodes_static_and_literal_headers_and_marks_unknown() {
    let c = chunks("h2c-kubectl.txt");
    let full = replay(&c, usize::MAX);
    // Start after the first exchange: the dynamic tables are unknown.
    for skip in 3..c.len() {
        let msgs = replay(&c[skip..], AGENT_CAP);
        assert_subset(&msgs, &full);
    }
    // The same on real kubectl ↔ kube-apiserver traffic.
    let k = chunks("kubectl-run.txt");
    let kfull = replay(&k, usize::MAX);
    for skip in 1..k.len() {
        assert_subset(&replay(&k[skip..], AGENT_CAP), &kfull);
    }
    // kube-apiserver ↔ etcd connections are long-lived: the agent usually
    // sees them from their middle. The gRPC services are recognised by path
    // when content-type is an unknown entry, and the Txn bodies decode.
    let e = chunks("apiserver-etcd-pods.txt");
    let efull = replay(&e, usize::MAX);
    for skip in 1..e.len() {
        assert_subset(&replay(&e[skip..], AGENT_CAP), &efull);
    }
    let mid = replay(&e[12..], AGENT_CAP);
    let puts = mid
        .iter()
        .filter(|m| m.summary() == "etcd Txn put /registry/pods/default/mynginx-trace-test")
        .count();
    assert!(puts >= 2, "{:?}", summaries(&mid));
    assert!(mid.iter().any(|m| m.unknown));
    let msgs = replay(&c[4..], AGENT_CAP);
    assert!(!msgs.is_empty());
    // Some headers referenced entries inserted before the capture began.
    assert!(msgs.iter().any(|m| m.unknown));
    // :status comes from the static table or a literal: still decoded.
    assert!(msgs
        .iter()
        .any(|m| m.status == Some(201) || m.status == Some(200)));
    // Later requests learn the entries they insert: not everything is unknown.
    assert!(msgs.iter().any(|m| m.path.is_some()));
}

/// What a late agent's capture still tells, inferred from the bodies where
/// the headers were HPACK entries it never saw — and said to be inferred.
#[test]
fn late_attach_infers_etcd_calls_watches_and_patches_hidden_by_unknown_headers() {
    let inferred = |m: &Message, what: &str| m.inferred.iter().any(|i| i == what);
    // kube-apiserver → etcd from chunk 18: every Txn's :path is an unknown entry.
    let e = chunks("apiserver-etcd-pods.txt");
    let late = replay(&e[18..], AGENT_CAP);
    assert_subset(&late, &replay(&e, usize::MAX));
    let puts: Vec<&Message> = late
        .iter()
        .filter(|m| m.summary() == "etcd Txn put /registry/pods/default/mynginx-trace-test")
        .collect();
    assert!(puts.len() >= 3, "{:#?}", summaries(&late));
    for m in &puts {
        assert!(inferred(m, "path") && m.unknown, "{m:?}");
        assert_eq!(m.path.as_deref(), Some("/etcdserverpb.KV/Txn"));
    }
    // Their responses decode by the inferred method.
    assert!(late.iter().any(|m| m.part == Part::Response
        && inferred(m, "path")
        && m.summary().starts_with("etcd Txn succeeded rev")));
    // A Range request is a bare key (it could be a Put or a DeleteRange): not
    // inferred; its response, with the count only a RangeResponse has, is.
    assert!(late
        .iter()
        .any(|m| m.part == Part::Request && m.path.is_none()));
    assert!(late.iter().any(|m| m.part == Part::Response
        && m.summary() == "etcd Range /registry/pods/default/mynginx-trace-test rev 61"));

    // kube-scheduler's pod watch, opened before the capture (from chunk 95 its
    // headers were never seen; from 90 only the response's, unknown entries).
    let k = chunks("kube-scheduler.txt");
    for skip in [90, 95] {
        let late = replay(&k[skip..], AGENT_CAP);
        assert_subset(&late, &replay(&k, usize::MAX));
        let ev = late
            .iter()
            .find(|m| m.part == Part::Event)
            .unwrap_or_else(|| panic!("no watch event from chunk {skip}: {:#?}", summaries(&late)));
        assert_eq!(ev.stream_id, Some(69));
        assert!(inferred(ev, "watch") && ev.path.is_none());
        assert_eq!(
            ev.summary(),
            "watch: MODIFIED Pod default/mynginx-trace-test node=ktrail-worker Pending"
        );
    }

    // The real thing: the kubelet's connection as an agent attached to the
    // running cluster saw it. The pod's watch event to the kubelet decodes;
    // the status PATCH's method was an unknown entry, its body a strategic
    // merge patch.
    let msgs = replay(&chunks("late-kubelet-apiserver.txt"), AGENT_CAP);
    assert!(msgs.iter().any(|m| m.part == Part::Event
        && inferred(m, "watch")
        && m.summary() == "watch: ADDED Pod default/mynginx-trace-test node=k8s-worker Pending"));
    let patches: Vec<&Message> = msgs
        .iter()
        .filter(|m| {
            m.path.as_deref() == Some("/api/v1/namespaces/default/pods/mynginx-trace-test/status")
        })
        .collect();
    assert!(patches.len() >= 4, "{:#?}", summaries(&msgs));
    for m in &patches {
        assert_eq!(m.method.as_deref(), Some("PATCH"), "{}", m.summary());
        assert!(inferred(m, "method"), "{}", m.summary());
    }
    assert!(patches.iter().any(|m| m.part == Part::Response
        && m.summary()
            .ends_with("→ 200 [Pod default/mynginx-trace-test node=k8s-worker Running]")));
    // Requests whose method was seen say nothing was inferred.
    assert!(msgs
        .iter()
        .any(|m| m.method.as_deref() == Some("GET") && m.inferred.is_empty()));
}

/// The client's DATA of each HTTP/2 stream of a capture, concatenated.
fn request_bodies(
    chunks: &[ktrail_protocols::capture::Chunk],
) -> std::collections::BTreeMap<u32, Vec<u8>> {
    let mut wire = Vec::new();
    for c in chunks.iter().filter(|c| c.dir == Direction::ClientToServer) {
        wire.extend_from_slice(&c.data);
    }
    let mut p = wire
        .strip_prefix(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice())
        .unwrap();
    let mut bodies = std::collections::BTreeMap::new();
    while p.len() >= 9 {
        let len = usize::from(p[0]) << 16 | usize::from(p[1]) << 8 | usize::from(p[2]);
        let sid = u32::from_be_bytes([p[5] & 0x7f, p[6], p[7], p[8]]);
        let payload = &p[9..9 + len];
        if p[3] == 0 {
            let padded = p[4] & 0x8 != 0;
            let body = if padded {
                &payload[1..len - usize::from(payload[0])]
            } else {
                payload
            };
            bodies
                .entry(sid)
                .or_insert_with(Vec::new)
                .extend_from_slice(body);
        }
        p = &p[9 + len..];
    }
    bodies
}

/// Every CRI request of the real captures, its headers set aside: the shape
/// of its message names the method its headers named, or nothing.
#[test]
fn cri_requests_are_inferred_by_shape_only_when_one_method_fits() {
    use ktrail_protocols::infer;
    let mut inferred = std::collections::BTreeSet::new();
    for v in ["cri-kubelet.txt", "cri-kubelet-run.txt"] {
        let c = chunks(v);
        let named: std::collections::BTreeMap<u32, String> = replay(&c, usize::MAX)
            .into_iter()
            .filter(|m| m.part == Part::Request)
            .filter_map(|m| Some((m.stream_id?, m.grpc_method?)))
            .collect();
        for (sid, body) in request_bodies(&c) {
            let g = infer::grpc_message(&body, false).unwrap();
            // (A PodSandboxConfig once passed for an etcd Compare.)
            assert_eq!(
                infer::etcd_request_method(&g.data),
                None,
                "{v} stream {sid}"
            );
            for cut in [false, true] {
                let data = if cut {
                    &g.data[..g.data.len().min(AGENT_CAP - 200)]
                } else {
                    &g.data[..]
                };
                if let Some((service, method)) = infer::cri_request_method(data, cut) {
                    assert_eq!(
                        Some(&method.to_string()),
                        named.get(&sid),
                        "{v} stream {sid}"
                    );
                    assert!(service.starts_with("runtime.v1."));
                    inferred.insert(method);
                }
            }
        }
    }
    assert_eq!(
        inferred.into_iter().collect::<Vec<_>>(),
        ["CreateContainer", "PullImage", "RunPodSandbox"]
    );
    // And no etcd request passes for a CRI one.
    for v in ["etcd-apiserver.txt", "apiserver-etcd-pods.txt"] {
        for body in request_bodies(&chunks(v)).into_values() {
            if let Some(g) = infer::grpc_message(&body, false) {
                assert_eq!(infer::cri_request_method(&g.data, false), None, "{v}");
            }
        }
    }
}

/// A gRPC call whose `content-type` was seen but whose `:path` is an unknown
/// entry: the real create Txn of kube-apiserver still decodes, path inferred.
#[test]
fn a_grpc_call_of_unknown_path_is_named_by_its_message() {
    let txn = request_bodies(&chunks("apiserver-etcd-pods.txt"))
        .into_values()
        .find(|b| {
            ktrail_protocols::infer::grpc_message(b, false).is_some_and(|g| {
                ktrail_protocols::infer::etcd_request_method(&g.data) == Some("Txn")
            })
        })
        .unwrap();
    let frame = |typ: u8, flags: u8, payload: &[u8]| {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[typ, flags, 0, 0, 0, 5]);
        f.extend_from_slice(payload);
        f
    };
    // :method POST, :scheme http, :path an unknown dynamic entry (index 70),
    // content-type: application/grpc as a literal of static name 31.
    let mut block = vec![0x83, 0x86, 0xc6, 0x0f, 0x10, 16];
    block.extend_from_slice(b"application/grpc");
    let mut req = frame(1, 4, &block);
    req.extend(frame(0, 1, &txn));
    let msgs = ConnectionDecoder::new().feed(Direction::ClientToServer, &req, req.len() as u64, 1);
    let m = msgs.iter().find(|m| m.part == Part::Request).unwrap();
    assert_eq!(m.protocol, Protocol::Grpc);
    assert_eq!(m.inferred, vec!["path".to_string()]);
    assert_eq!(
        m.summary(),
        "etcd Txn put /registry/pods/default/mynginx-trace-test"
    );
}

/// A response joined mid-connection whose `:status` is an unknown HPACK entry
/// (kube-scheduler's binding answered after many 201s): the metav1.Status it
/// carries (here the real serializer's bytes) gives the code, marked inferred.
#[test]
fn an_unknown_status_is_inferred_from_a_status_body() {
    let status = file("k8s/status-201.pb");
    let mut d = ConnectionDecoder::new();
    let frame = |typ: u8, flags: u8, payload: &[u8]| {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[typ, flags, 0, 0, 0, 3]);
        f.extend_from_slice(payload);
        f
    };
    // Request: :method POST, :scheme https, :path literal (static name), all
    // seen; response: :status as dynamic index 70 (unknown), then the body.
    let mut req = frame(1, 4, b"\x83\x87\x04\x04/x/y");
    req.extend(frame(0, 1, b"{}"));
    let mut resp = frame(1, 4, &[0xc6]);
    resp.extend(frame(0, 1, &status));
    let mut msgs = d.feed(Direction::ClientToServer, &req, req.len() as u64, 1);
    msgs.extend(d.feed(Direction::ServerToClient, &resp, resp.len() as u64, 2));
    let r = msgs.iter().find(|m| m.part == Part::Response).unwrap();
    assert_eq!(r.status, Some(201), "{:?}", summaries(&msgs));
    assert_eq!(r.inferred, vec!["status".to_string()]);
    assert_eq!(r.summary(), "POST /x/y → 201 [Status 201]");
}

#[test]
fn k8s_objects_from_real_serializers() {
    let objs = k8s::decode_body(&file("k8s/pod-pending.json"), false);
    assert_eq!(objs[0].label(), "Pod default/mynginx-trace-test Pending");
    let objs = k8s::decode_body(&file("k8s/pod-bound.pb"), false);
    let o = &objs[0];
    assert_eq!(
        (
            o.api_version.as_deref(),
            o.kind.as_deref(),
            o.namespace.as_deref(),
            o.name.as_deref()
        ),
        (
            Some("v1"),
            Some("Pod"),
            Some("default"),
            Some("mynginx-trace-test")
        )
    );
    assert_eq!(
        o.uid.as_deref(),
        Some("6f1c9f9e-2b7e-4c3a-9d55-0c8f5f2a1b11")
    );
    assert_eq!(o.resource_version.as_deref(), Some("1235"));
    assert_eq!(o.node_name.as_deref(), Some("ktrail-worker"));
    assert_eq!(o.phase.as_deref(), Some("Pending"));
    assert!(!o.truncated);
    for f in ["k8s/binding.pb", "k8s/binding.json"] {
        let b = &k8s::decode_body(&file(f), false)[0];
        assert_eq!(
            b.label(),
            "Binding default/mynginx-trace-test → ktrail-worker",
            "{f}"
        );
    }
    let s = &k8s::decode_body(&file("k8s/status-201.pb"), false)[0];
    assert_eq!(
        (s.kind.as_deref(), s.status.as_deref(), s.code),
        (Some("Status"), Some("Success"), Some(201))
    );
    let list = k8s::decode_body(&file("k8s/podlist.json"), false);
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].kind.as_deref(), Some("PodList"));
    assert_eq!(list[0].resource_version.as_deref(), Some("1300"));
    assert_eq!(
        list[2].label(),
        "Pod default/mynginx-trace-test node=ktrail-worker Running"
    );
    for f in ["k8s/secret.json", "k8s/secret.pb"] {
        let s = &k8s::decode_body(&file(f), false)[0];
        assert_eq!(s.label(), "Secret default/db-credentials", "{f}");
    }
}

#[test]
fn k8s_watch_streams_in_any_chunking() {
    for (f, proto) in [("k8s/watch-pods.jsonl", false), ("k8s/watch-pods.pb", true)] {
        let b = file(f);
        for step in [1, 3, 7, 64, 4096] {
            let mut w = WatchStream::new(None);
            let mut evs = Vec::new();
            for piece in b.chunks(step) {
                evs.extend(w.feed(piece));
            }
            let got: Vec<String> = evs
                .iter()
                .map(|o| format!("{} {}", o.event_type.as_deref().unwrap_or("?"), o.label()))
                .collect();
            assert_eq!(
                got,
                [
                    "ADDED Pod default/mynginx-trace-test Pending",
                    "MODIFIED Pod default/mynginx-trace-test node=ktrail-worker Pending"
                ],
                "{f} step {step} proto {proto}"
            );
        }
    }
}

#[test]
fn truncated_objects_keep_exact_prefix_fields() {
    for f in [
        "k8s/pod-running.json",
        "k8s/pod-bound.pb",
        "k8s/binding.pb",
        "k8s/podlist.json",
    ] {
        let b = file(f);
        let full = k8s::decode_body(&b, false);
        for cut in 0..b.len() {
            for o in k8s::decode_body(&b[..cut], true) {
                // Every field it has is exactly the full object's: a cut
                // string is dropped, never returned as a shorter value.
                let same = full.iter().any(|f| {
                    let eq = |a: &Option<String>, b: &Option<String>| a.is_none() || a == b;
                    eq(&o.name, &f.name)
                        && eq(&o.namespace, &f.namespace)
                        && eq(&o.uid, &f.uid)
                        && eq(&o.resource_version, &f.resource_version)
                        && eq(&o.node_name, &f.node_name)
                        && eq(&o.phase, &f.phase)
                        && eq(&o.kind, &f.kind)
                        && eq(&o.target, &f.target)
                });
                assert!(same, "{f} cut at {cut}: {o:?}");
                assert!(o.truncated, "{f} cut at {cut} not marked truncated");
            }
        }
    }
}

/// Large responses come gzip-compressed (kube-apiserver, level 1, when the
/// client accepts gzip): the objects are decoded from what decompresses,
/// also from a cut capture.
#[test]
fn gzip_bodies_decode_also_when_cut() {
    let gz = file("k8s/podlist.json.gz");
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    );
    let req =
        b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n";
    for keep in [gz.len(), 200, 120] {
        let mut d = ConnectionDecoder::new();
        d.feed(Direction::ClientToServer, req, req.len() as u64, 1);
        let mut resp = head.clone().into_bytes();
        let total = (resp.len() + gz.len()) as u64;
        resp.extend_from_slice(&gz[..keep]);
        let mut msgs = d.feed(Direction::ServerToClient, &resp, total, 2);
        msgs.extend(d.finish(3));
        let r = &msgs[0];
        let labels: Vec<String> = r.objects.iter().map(|o| o.label()).collect();
        if keep == gz.len() {
            assert!(r.complete && !r.truncated);
            assert_eq!(
                labels,
                [
                    "PodList",
                    "Pod default/mynginx-trace-test Pending",
                    "Pod default/mynginx-trace-test node=ktrail-worker Running"
                ]
            );
            assert!(String::from_utf8_lossy(&r.body_prefix).starts_with("{\"kind\":\"PodList\""));
        } else {
            // A prefix: what decompressed, marked truncated, nothing invented.
            assert!(r.truncated && !r.complete, "{keep}");
            assert!(r.objects.iter().all(|o| o.truncated));
            assert!(
                labels.first().is_some_and(|l| l.starts_with("PodList")),
                "{keep}: {labels:?}"
            );
        }
    }
}

/// kube-apiserver's etcd watch, opened before a late agent: its WatchResponses
/// still decode as watch events, from the first one with an event on, the
/// path said to be inferred.
#[test]
fn late_attach_infers_an_etcd_watch_stream_from_its_events() {
    let e = chunks("etcd-apiserver.txt");
    // From chunk 3 the Watch call's request headers are past (its response's
    // still come), from chunk 7 its response's too, as for a DaemonSet's agent.
    for skip in [3, 7, 8] {
        let late = replay(&e[skip..], AGENT_CAP);
        let puts: Vec<&Message> = late
            .iter()
            .filter(|m| m.part == Part::Event && m.summary().starts_with("etcd Watch PUT "))
            .collect();
        assert_eq!(puts.len(), 2, "from chunk {skip}: {:#?}", summaries(&late));
        for m in puts {
            assert!(m.inferred.iter().any(|i| i == "path"), "{m:?}");
            assert_eq!(m.path.as_deref(), Some("/etcdserverpb.Watch/Watch"));
        }
    }
}

/// A client's reads cut the server's frames anywhere (Go's transport reads
/// through a 4 KiB buffer): a read that goes on with a frame's payload must
/// not be taken for a header block. Here a read of kube-scheduler's that
/// starts 682 bytes into a watch event reads, from there, as a HEADERS frame
/// naming `:method` — a request going server → client, had the decoder
/// believed it, and every direction after it swapped.
#[test]
fn late_attach_directions_are_told_only_by_a_frame_where_one_starts() {
    let k = chunks("kube-scheduler.txt");
    let mut d = ConnectionDecoder::new();
    let mut out = Vec::new();
    let mut feed = |d: &mut ConnectionDecoder, dir: Direction, b: &[u8]| {
        out.extend(d.feed(dir, b, b.len() as u64, 1));
    };
    // The scheduler's binding body (a DATA frame, no headers): HTTP/2, joined
    // in its middle, directions not told.
    assert_eq!(k[98].dir, Direction::ClientToServer);
    feed(&mut d, Direction::ClientToServer, &k[98].data);
    // The watch event, read in three (cut inside its DATA frame's payload;
    // the first read too short to tell it is a watch event).
    assert_eq!(k[99].dir, Direction::ServerToClient);
    for (from, to) in [(0, 13), (13, 682), (682, k[99].data.len())] {
        feed(&mut d, Direction::ServerToClient, &k[99].data[from..to]);
    }
    assert!(!d.directions_told() && !d.swapped());
    // The binding's response headers (`:status` by its static name) tell.
    for c in &k[100..106] {
        feed(&mut d, c.dir, &c.data);
    }
    assert!(d.directions_told() && !d.swapped());
    let event = out
        .iter()
        .find(|m| m.part == Part::Request && m.stream_id == Some(77))
        .unwrap_or_else(|| panic!("{:#?}", summaries(&out)));
    assert_eq!(event.direction, Direction::ClientToServer);
    assert_eq!(event.method.as_deref(), Some("POST"));
    assert_eq!(
        event.path.as_deref(),
        Some("/apis/events.k8s.io/v1/namespaces/default/events")
    );
}

/// Only a server sends watch events: on a watch joined in its middle, where
/// the events are all that goes by, the first one tells the directions —
/// here the caller took its sender, the first seen, for the client.
#[test]
fn late_attach_a_watch_event_tells_who_is_the_server() {
    let k = chunks("kube-scheduler.txt");
    let mut d = ConnectionDecoder::new();
    let event = &k[99].data;
    let out = d.feed(Direction::ClientToServer, event, event.len() as u64, 1);
    assert!(d.directions_told() && d.swapped());
    assert!(
        out.iter().any(|m| m.direction == Direction::ServerToClient
            && m.summary()
                .contains("MODIFIED Pod default/mynginx-trace-test")),
        "{:#?}",
        summaries(&out)
    );
}

/// A HEADERS frame whose block's third field, a `:path` literal (its name
/// by the static table), becomes a reference to a dynamic entry the decoder
/// never saw — as a client that sent the same path before sends it.
fn path_by_an_unseen_entry(frame: &[u8]) -> Vec<u8> {
    let mut headers = frame.to_vec();
    assert_eq!(headers[11], 0x45, "a :path literal, indexed");
    let literal = 2 + usize::from(headers[12] & 0x7f);
    headers.splice(11..11 + literal, [0xc1]);
    let payload = u32::try_from(headers.len() - 9).unwrap().to_be_bytes();
    headers[..3].copy_from_slice(&payload[1..]);
    headers
}

/// kube-scheduler binding a pod of a name it bound before the agent attached
/// refers to the binding's `:path` by its HPACK entry (here the capture's
/// literal is replaced by such a reference): the Binding it sends names the
/// path, for its response too.
#[test]
fn late_attach_infers_a_create_path_from_the_object_it_creates() {
    let k = chunks("kube-scheduler.txt");
    // :authority by an entry, POST, :path as a literal with the static name.
    assert_eq!(k[97].data[9..12], [0xc6, 0x83, 0x45]);
    let headers = path_by_an_unseen_entry(&k[97].data);
    let mut d = ConnectionDecoder::new();
    let mut out = d.feed(Direction::ClientToServer, &headers, headers.len() as u64, 1);
    for c in &k[98..102] {
        out.extend(d.feed(c.dir, &c.data, c.total_len, 1));
    }
    for part in [Part::Request, Part::Response] {
        let m = out
            .iter()
            .find(|m| m.part == part && m.stream_id == Some(75))
            .unwrap_or_else(|| panic!("{:#?}", summaries(&out)));
        assert_eq!(
            m.path.as_deref(),
            Some("/api/v1/namespaces/default/pods/mynginx-trace-test/binding"),
            "{m:?}"
        );
        assert!(m.inferred.iter().any(|i| i == "path"), "{m:?}");
    }
}

/// The kubelet updating the status of a pod of a name it updated before the
/// agent attached refers to both `:method` and `:path` by HPACK entries (the
/// recording's `:path` literal is replaced by such a reference here): its
/// body, a strategic merge patch of `status` only, says PATCH of a status
/// subresource, and the Pod the response returns says whose.
#[test]
fn late_attach_infers_a_status_patch_path_from_the_object_it_returns() {
    let k = chunks("late-kubelet-apiserver.txt");
    // kube-apiserver's reads: the HEADERS frame's header, then its block.
    let frame = [k[38].data.clone(), k[39].data.clone()].concat();
    // :authority and :method by entries, :path as a literal with the static name.
    assert_eq!(frame[9..12], [0xc5, 0xdd, 0x45]);
    let headers = path_by_an_unseen_entry(&frame);
    let mut d = ConnectionDecoder::new();
    let mut out = d.feed(Direction::ClientToServer, &headers, headers.len() as u64, 1);
    for c in &k[40..47] {
        out.extend(d.feed(c.dir, &c.data, c.total_len, 1));
    }
    let response = out
        .iter()
        .find(|m| m.part == Part::Response && m.stream_id == Some(0x89))
        .unwrap_or_else(|| panic!("{:#?}", summaries(&out)));
    assert_eq!(
        response.summary(),
        "PATCH /api/v1/namespaces/default/pods/mynginx-trace-test/status → 200 [Pod default/mynginx-trace-test node=k8s-worker Pending]"
    );
    assert_eq!(response.inferred, ["method", "path"]);
}
