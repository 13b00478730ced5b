//! Issue 8, bad input: a client holding a valid certificate (so past mutual TLS)
//! sends the collector malformed and oversized gRPC messages on its ingest and
//! query services, and raw junk on its port. Each is refused with an error
//! naming the problem, and the collector goes on serving a well-behaved agent
//! and the real `ktrail status`. The rogue client is tonic with a codec that
//! sends whatever bytes it is given as the message.

mod support;

use std::time::Duration;

use ktrail_collector::server::MAX_AGENT_MESSAGE;
use ktrail_proto::v1::agent_message::Body;
use ktrail_proto::v1::ingest_client::IngestClient;
use ktrail_proto::v1::query_client::QueryClient;
use ktrail_proto::v1::{
    AgentMessage, Event, EventBatch, Hello, ListFlowsRequest, LossReport, StatusRequest,
};
use prost::bytes::{Buf, BufMut};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const WAIT: Duration = Duration::from_secs(20);

/// Sends each item's bytes as the message, unchecked; hands back what comes.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

/// Not protobuf: a field tag of wire type 7, which does not exist.
const GARBAGE: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x07, 0x00, 0x13, 0x37];

fn path(p: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(p)
}

/// One unary call of the Query service with `body` as the request message.
async fn raw_unary(channel: &Channel, method: &'static str, body: Vec<u8>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    grpc.unary(Request::new(body), path(method), Raw)
        .await
        .map(|_| ())
}

/// An ingest stream of raw `messages`; the first error the collector answers.
async fn raw_ingest(channel: &Channel, messages: Vec<Vec<u8>>) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("channel ready");
    let outbound = tokio_stream::iter(messages);
    let call = async {
        let mut acks = grpc
            .streaming(
                Request::new(outbound),
                path("/ktrail.v1.Ingest/Stream"),
                Raw,
            )
            .await?
            .into_inner();
        // Acks may come first (for an accepted Hello); the error follows.
        loop {
            if acks.message().await?.is_none() {
                return Err(Status::unknown("the stream ended without an error"));
            }
        }
    };
    match tokio::time::timeout(WAIT, call).await {
        Ok(Err(status)) => status,
        Ok(Ok(())) => unreachable!(),
        Err(_) => panic!("the collector neither refused nor closed the rogue ingest stream"),
    }
}

fn hello(agent_id: &str) -> AgentMessage {
    AgentMessage {
        body: Some(Body::Hello(Hello {
            node: "k8s-worker".into(),
            agent_id: agent_id.into(),
            agent_version: "test".into(),
            kernel: "6.18".into(),
            scope_netns: 0,
        })),
    }
}

/// A well-behaved agent: Hello, one batch, acked; then `ktrail status` lists it.
async fn a_good_agent_is_still_served(s: &support::Setup, channel: &Channel) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello("good-1")).await.expect("queue");
    let event = Event {
        seq: 1,
        timestamp_unix_ns: 1,
        pid: 1,
        tid: 1,
        comm: "kubelet".into(),
        ..Event::default()
    };
    tx.send(AgentMessage {
        body: Some(Body::Batch(EventBatch {
            events: vec![event],
            processes: Vec::new(),
        })),
    })
    .await
    .expect("queue");
    let mut acks = IngestClient::new(channel.clone())
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("a good agent's stream is accepted")
        .into_inner();
    let acked = tokio::time::timeout(WAIT, async {
        loop {
            let ack = acks
                .message()
                .await
                .expect("acks")
                .expect("ack stream open");
            if ack.acked_seq >= 1 {
                return ack.acked_seq;
            }
        }
    })
    .await
    .expect("the good agent's batch acked in time");
    assert_eq!(acked, 1);

    let status = QueryClient::new(channel.clone())
        .status(StatusRequest {})
        .await
        .expect("status still served")
        .into_inner();
    let good = status
        .agents
        .iter()
        .find(|a| a.agent_id == "good-1")
        .expect("the good agent listed");
    assert!(good.connected && good.contiguous_seq == 1, "{good:?}");

    let (cert, key) = s
        .ours
        .leaf("cli", &[], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let out = Command::new(env!("CARGO_BIN_EXE_ktrail"))
        .args(["--collector", &s.url, "--tls-cert"])
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .arg("--tls-ca")
        .arg(s.ours.ca())
        .args(["status", "--output", "json"])
        .env_remove("KTRAIL_INSECURE")
        .output()
        .await
        .expect("run ktrail");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("good-1"),
        "ktrail status after the rogue client: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_are_refused_and_the_collector_serves_on() {
    let s = support::start().await;
    let rogue = s.client("rogue").await;

    // Query: a request that is not protobuf.
    let err = raw_unary(&rogue, "/ktrail.v1.Query/ListFlows", GARBAGE.to_vec())
        .await
        .expect_err("garbage refused");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("failed to decode"), "{err:?}");

    // Query: a valid message over the 4 MiB a query may be.
    // (The size is checked from the frame's length prefix, before decoding.)
    let mut big = ListFlowsRequest { limit: 1 }.encode_to_vec();
    big.resize(5 << 20, 0);
    let err = raw_unary(&rogue, "/ktrail.v1.Query/ListFlows", big)
        .await
        .expect_err("oversized query refused");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(
        err.message().contains("message length too large"),
        "{err:?}"
    );

    // Ingest: garbage where the Hello should be.
    let err = raw_ingest(&rogue, vec![GARBAGE.to_vec()]).await;
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("failed to decode"), "{err:?}");

    // Ingest: a Hello, then garbage as a batch.
    let err = raw_ingest(
        &rogue,
        vec![hello("rogue-1").encode_to_vec(), GARBAGE.to_vec()],
    )
    .await;
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("failed to decode"), "{err:?}");

    // Ingest: a Hello, then one message past the limit for agents' batches.
    let oversized = vec![0u8; MAX_AGENT_MESSAGE + 1];
    let err = raw_ingest(&rogue, vec![hello("rogue-2").encode_to_vec(), oversized]).await;
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(
        err.message().contains("message length too large"),
        "{err:?}"
    );

    // Not even HTTP/2: junk straight onto the TLS port is cut off.
    let mut tcp = tokio::net::TcpStream::connect(s.collector.local_addr())
        .await
        .expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03\x01\xff\xff garbage")
        .await
        .expect("write junk");
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(WAIT, async {
        let mut total = 0;
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the collector must close a connection that is not TLS"
    );

    // A well-formed report with absurd counts: sums saturate, nothing panics
    // (in the collector's hop task, which every agent shares, or in the CLI).
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello("rogue-3")).await.expect("queue");
    tx.send(AgentMessage {
        body: Some(Body::Loss(LossReport {
            ringbuf_full_per_cpu: vec![u64::MAX, u64::MAX],
            buffer_full: u64::MAX,
            last_seq: u64::MAX,
            sent_unix_ns: u64::MAX,
            ..LossReport::default()
        })),
    })
    .await
    .expect("queue");
    let _rogue_stream = IngestClient::new(rogue.clone())
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("a well-formed stream is accepted");
    let listed = tokio::time::timeout(WAIT, async {
        loop {
            let status = QueryClient::new(rogue.clone())
                .status(StatusRequest {})
                .await
                .expect("status")
                .into_inner();
            if let Some(a) = status.agents.into_iter().find(|a| a.agent_id == "rogue-3") {
                if a.loss.is_some() {
                    return a;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the absurd report recorded");
    assert_eq!(listed.loss.map(|l| l.buffer_full), Some(u64::MAX));

    a_good_agent_is_still_served(&s, &rogue).await;
    s.collector
        .shutdown()
        .await
        .expect("clean shutdown after the rogue client");
}
