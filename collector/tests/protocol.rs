//! Ingest protocol rules and live tracing, against the real server.

mod common;

use common::*;
use ktrail_proto::v1::agent_message::Body;
use ktrail_proto::v1::event::Body as EventBody;
use ktrail_proto::v1::ingest_client::IngestClient;
use ktrail_proto::v1::{trace_update, AgentMessage, EventBatch, TraceRequest};
use tokio_stream::StreamExt;

#[tokio::test]
async fn a_stream_not_starting_with_hello_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector = start_collector(dir.path()).await;
    let mut client = IngestClient::connect(url(&collector))
        .await
        .expect("client");
    let batch = AgentMessage {
        body: Some(Body::Batch(EventBatch::default())),
    };
    let err = client
        .stream(tokio_stream::iter(vec![batch]))
        .await
        .expect_err("rejected");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("Hello"), "{err}");
    collector.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn trace_streams_matching_syscalls_and_process_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector = start_collector(dir.path()).await;
    let mut trace = query(&collector)
        .await
        .trace(TraceRequest {
            node: "k8s-worker".into(),
            comm: "kube*".into(),
            pid: 0,
        })
        .await
        .expect("trace")
        .into_inner();
    let worker = FakeAgent::connect(&collector, "k8s-worker", "w").await;
    let cp = FakeAgent::connect(&collector, "k8s-cp", "c").await;
    cp.send_batch(server_events()).await;
    worker.send_batch(client_events()).await;
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let update = tokio::time::timeout(WAIT, trace.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok");
        let Some(trace_update::Body::Event(traced)) = update.body else {
            panic!("unexpected {update:?}");
        };
        assert_eq!(traced.node, "k8s-worker", "only the chosen node");
        seen.push(traced.event.expect("event"));
    }
    assert!(matches!(seen[0].body, Some(EventBody::Exec(_))));
    assert!(seen.iter().all(|e| e.comm == "kubelet"));
    assert_eq!(
        seen.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    drop((worker, cp));
    collector.shutdown().await.expect("shutdown");
}
