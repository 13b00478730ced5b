//! `ktrail-bench-ingest`: records real agent streams and replays them as fake agents.
//!
//! - `record`: a stand-in collector speaking the `Ingest` protocol
//!   (proto/proto/ktrail/v1/ktrail.proto). It acknowledges every batch at once and
//!   appends each message the agent sends (Hello, batches, loss reports) to `--out` as
//!   length-delimited protobuf `AgentMessage`s. Stops on SIGTERM/SIGINT.
//! - `replay`: `--agents` concurrent fake agents, each a gRPC stream to a real collector
//!   with its own Hello (node `replay-<i>`), sending the recorded batches renumbered
//!   1, 2, 3 …, with timestamps moved to now and addresses rewritten per agent and per
//!   loop (`10.<agent>.<loop/256>.<loop%256>`) so every replayed connection is distinct
//!   and pairs only with itself. Unpaced (`--rate 0`) or at `--rate` events/s per agent,
//!   for `--loops` passes or `--duration-s`. Prints progress lines and a final JSON
//!   line: events sent, acknowledged, and the time from the first send to the last ack.

use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures::Stream;
use ktrail_proto::v1::agent_message::Body;
use ktrail_proto::v1::event::Body as EventBody;
use ktrail_proto::v1::ingest_client::IngestClient;
use ktrail_proto::v1::ingest_server::{Ingest, IngestServer};
use ktrail_proto::v1::{AgentMessage, EventBatch, Hello, IngestAck};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

/// Largest message either side accepts (the agent's batches stay far below).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

#[derive(Parser)]
#[command(
    name = "ktrail-bench-ingest",
    about = "record agent streams; replay them as fake agents"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// A stand-in collector that writes what agents send to a file.
    Record {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        #[arg(long)]
        out: PathBuf,
    },
    /// Fake agents replaying a recording to a collector.
    Replay {
        #[arg(long, default_value = "http://127.0.0.1:7700")]
        collector: String,
        #[arg(long)]
        input: PathBuf,
        #[arg(long, default_value_t = 10)]
        agents: usize,
        /// Events per second per agent; 0 = as fast as the collector takes them.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Passes over the recording per agent (when --duration-s is 0).
        #[arg(long, default_value_t = 1)]
        loops: u64,
        /// Send for this long instead of a number of passes.
        #[arg(long, default_value_t = 0.0)]
        duration_s: f64,
        /// Build every message before connecting, so the measured time is the
        /// collector's, not the rewriting's (unpaced runs).
        #[arg(long)]
        prebuild: bool,
        /// Progress line every this many milliseconds (0 = none).
        #[arg(long, default_value_t = 0)]
        progress_ms: u64,
    },
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting tokio")?;
    match Cli::parse().mode {
        Mode::Record { listen, out } => rt.block_on(record(listen, out)),
        Mode::Replay {
            collector,
            input,
            agents,
            rate,
            loops,
            duration_s,
            prebuild,
            progress_ms,
        } => rt.block_on(replay(ReplayConfig {
            collector,
            input,
            agents,
            rate,
            loops,
            duration: (duration_s > 0.0).then(|| Duration::from_secs_f64(duration_s)),
            prebuild,
            progress: (progress_ms > 0).then(|| Duration::from_millis(progress_ms)),
        })),
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

// ------------------------------------------------------------------ record

struct Recorder {
    out: Arc<Mutex<std::io::BufWriter<std::fs::File>>>,
    events: Arc<AtomicU64>,
}

type AckStream = Pin<Box<dyn Stream<Item = Result<IngestAck, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for Recorder {
    type StreamStream = AckStream;

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<AckStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let out = Arc::clone(&self.out);
        let events = Arc::clone(&self.events);
        tokio::spawn(async move {
            while let Some(Ok(message)) = inbound.next().await {
                let ack = match &message.body {
                    Some(Body::Batch(b)) => {
                        events.fetch_add(b.events.len() as u64, Relaxed);
                        b.events.iter().map(|e| e.seq).max()
                    }
                    _ => None,
                };
                let bytes = message.encode_length_delimited_to_vec();
                // Flushed per message: the recorder may be stopped at any time.
                let written = out
                    .lock()
                    .map_err(|_| ())
                    .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.flush()).map_err(|_| ()));
                if written.is_err() {
                    break;
                }
                if let Some(acked_seq) = ack {
                    if tx.send(Ok(IngestAck { acked_seq })).await.is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn record(listen: std::net::SocketAddr, out: PathBuf) -> Result<()> {
    let file =
        std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
    let writer = Arc::new(Mutex::new(std::io::BufWriter::new(file)));
    let events = Arc::new(AtomicU64::new(0));
    let recorder = Recorder {
        out: Arc::clone(&writer),
        events: Arc::clone(&events),
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let stop = async {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    };
    // Stop at the signal without waiting for open streams to end (an agent may still
    // be connected); everything received is already written.
    let server = tonic::transport::Server::builder()
        .add_service(IngestServer::new(recorder).max_decoding_message_size(MAX_MESSAGE))
        .serve_with_incoming(incoming);
    tokio::select! {
        r = server => r?,
        () = stop => {}
    }
    writer
        .lock()
        .map_err(|_| anyhow::anyhow!("recorder poisoned"))?
        .flush()?;
    println!(
        "{}",
        serde_json::json!({"type": "recorded", "events": events.load(Relaxed)})
    );
    Ok(())
}

// ------------------------------------------------------------------ replay

struct ReplayConfig {
    collector: String,
    input: PathBuf,
    agents: usize,
    rate: u64,
    loops: u64,
    duration: Option<Duration>,
    prebuild: bool,
    progress: Option<Duration>,
}

/// The recorded batches and the time span they cover.
struct Recording {
    batches: Vec<EventBatch>,
    first_ns: u64,
    span_ns: u64,
    events: u64,
}

fn load(path: &PathBuf) -> Result<Recording> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut buf = &bytes[..];
    let mut batches = Vec::new();
    while !buf.is_empty() {
        let message =
            AgentMessage::decode_length_delimited(&mut buf).context("decoding the recording")?;
        if let Some(Body::Batch(batch)) = message.body {
            if !batch.events.is_empty() {
                batches.push(batch);
            }
        }
    }
    let times = batches
        .iter()
        .flat_map(|b| b.events.iter().map(|e| e.timestamp_unix_ns));
    let (first, last) = times.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let events = batches.iter().map(|b| b.events.len() as u64).sum();
    if events == 0 {
        bail!("{} holds no events", path.display());
    }
    Ok(Recording {
        batches,
        first_ns: first,
        span_ns: last.saturating_sub(first) + 1_000_000,
        events,
    })
}

/// One fake agent's rewriting of the recording.
struct Rewriter {
    agent: usize,
    next_seq: u64,
    base_ns: u64,
}

impl Rewriter {
    fn batch(&mut self, rec: &Recording, pass: u64, original: &EventBatch) -> EventBatch {
        let mut batch = original.clone();
        let addr = format!(
            "10.{}.{}.{}",
            self.agent % 256,
            (pass >> 8) & 255,
            pass & 255
        );
        let shift = self.base_ns + pass * rec.span_ns;
        let sock_salt = ((self.agent as u64) << 56) | ((pass & 0xffff) << 40);
        for event in &mut batch.events {
            self.next_seq += 1;
            event.seq = self.next_seq;
            event.timestamp_unix_ns = event.timestamp_unix_ns - rec.first_ns + shift;
            match event.body.as_mut() {
                Some(EventBody::Syscall(s)) => {
                    if let Some(sock) = s.socket.as_mut() {
                        if sock.family == "inet" || sock.family == "inet6" {
                            sock.local_addr.clone_from(&addr);
                            sock.remote_addr.clone_from(&addr);
                            sock.family = "inet".into();
                        }
                    }
                }
                Some(EventBody::TcpState(t)) => {
                    t.sock_id ^= sock_salt;
                    if !t.local_addr.is_empty() {
                        t.local_addr.clone_from(&addr);
                    }
                    if !t.remote_addr.is_empty() {
                        t.remote_addr.clone_from(&addr);
                    }
                }
                _ => {}
            }
        }
        batch
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
}

async fn replay(cfg: ReplayConfig) -> Result<()> {
    let rec = Arc::new(load(&cfg.input)?);
    let nonce = now_ns();
    let base_ns = now_ns();
    let counters: Arc<Vec<Counters>> =
        Arc::new((0..cfg.agents).map(|_| Counters::default()).collect());

    // Unpaced runs: every message built up front.
    let mut prebuilt: Vec<Option<Vec<AgentMessage>>> = (0..cfg.agents).map(|_| None).collect();
    if cfg.prebuild {
        for (agent, slot) in prebuilt.iter_mut().enumerate() {
            let mut rw = Rewriter {
                agent,
                next_seq: 0,
                base_ns,
            };
            let mut messages = Vec::new();
            for pass in 0..cfg.loops {
                for b in &rec.batches {
                    messages.push(AgentMessage {
                        body: Some(Body::Batch(rw.batch(&rec, pass, b))),
                    });
                }
            }
            *slot = Some(messages);
        }
    }

    let start = Instant::now();
    let deadline = cfg.duration.map(|d| start + d);
    let mut tasks = Vec::new();
    for (agent, prebuilt) in prebuilt.into_iter().enumerate() {
        let mut client = IngestClient::connect(cfg.collector.clone())
            .await
            .with_context(|| format!("connecting to {}", cfg.collector))?
            .max_encoding_message_size(MAX_MESSAGE)
            .max_decoding_message_size(MAX_MESSAGE);
        let (tx, rx) = mpsc::channel::<AgentMessage>(8);
        let hello = Hello {
            node: format!("replay-{agent}"),
            agent_id: format!("replay-{agent}-{nonce}"),
            agent_version: "replay".into(),
            kernel: String::new(),
            scope_netns: 0,
        };
        tx.send(AgentMessage {
            body: Some(Body::Hello(hello)),
        })
        .await
        .context("queueing Hello")?;
        let mut acks = client
            .stream(ReceiverStream::new(rx))
            .await
            .context("opening the ingest stream")?
            .into_inner();
        let c = Arc::clone(&counters);
        let ack_task = tokio::spawn(async move {
            while let Some(Ok(ack)) = acks.next().await {
                c[agent].acked.fetch_max(ack.acked_seq, Relaxed);
            }
        });
        let rec = Arc::clone(&rec);
        let c = Arc::clone(&counters);
        let (rate, loops) = (cfg.rate, cfg.loops);
        let send_task = tokio::spawn(async move {
            let sent = |n: u64| c[agent].sent.fetch_add(n, Relaxed) + n;
            let pace = |total: u64| async move {
                if let Some(due_ns) = total.saturating_mul(1_000_000_000).checked_div(rate) {
                    let due = start + Duration::from_nanos(due_ns);
                    tokio::time::sleep_until(due.into()).await;
                }
            };
            if let Some(messages) = prebuilt {
                for m in messages {
                    let n = match &m.body {
                        Some(Body::Batch(b)) => b.events.len() as u64,
                        _ => 0,
                    };
                    if tx.send(m).await.is_err() {
                        break;
                    }
                    pace(sent(n)).await;
                }
                return tx;
            }
            let mut rw = Rewriter {
                agent,
                next_seq: 0,
                base_ns,
            };
            let mut pass = 0;
            'passes: loop {
                if deadline.is_none() && pass >= loops {
                    break;
                }
                for b in &rec.batches {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break 'passes;
                    }
                    let batch = rw.batch(&rec, pass, b);
                    let n = batch.events.len() as u64;
                    let m = AgentMessage {
                        body: Some(Body::Batch(batch)),
                    };
                    if tx.send(m).await.is_err() {
                        break 'passes;
                    }
                    pace(sent(n)).await;
                }
                pass += 1;
            }
            tx
        });
        tasks.push((send_task, ack_task));
    }

    // Progress while sending.
    let progress = cfg.progress.map(|every| {
        let c = Arc::clone(&counters);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let sent: u64 = c.iter().map(|a| a.sent.load(Relaxed)).sum();
                let acked: u64 = c.iter().map(|a| a.acked.load(Relaxed)).sum();
                println!(
                    "{}",
                    serde_json::json!({"type": "progress", "t_s": start.elapsed().as_secs_f64(),
                                       "sent": sent, "acked": acked})
                );
                let _ = std::io::stdout().flush();
            }
        })
    });

    let mut senders = Vec::new();
    for (send, ack) in tasks {
        senders.push((send.await.context("sender task")?, ack));
    }
    let sent_done = start.elapsed();
    // Wait for every agent's last event to be acknowledged (stored).
    let wait_until = Instant::now() + Duration::from_secs(300);
    loop {
        let done = counters
            .iter()
            .all(|a| a.acked.load(Relaxed) >= a.sent.load(Relaxed));
        if done || Instant::now() >= wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let acked_done = start.elapsed();
    if let Some(p) = progress {
        p.abort();
    }
    for (tx, ack) in senders {
        drop(tx);
        ack.abort();
    }
    let sent: u64 = counters.iter().map(|a| a.sent.load(Relaxed)).sum();
    let acked: u64 = counters.iter().map(|a| a.acked.load(Relaxed)).sum();
    println!(
        "{}",
        serde_json::json!({
            "type": "done",
            "agents": cfg.agents,
            "recording_events": rec.events,
            "sent": sent,
            "acked": acked,
            "send_s": sent_done.as_secs_f64(),
            "acked_s": acked_done.as_secs_f64(),
            "events_per_s": acked as f64 / acked_done.as_secs_f64(),
        })
    );
    std::io::stdout().flush()?;
    Ok(())
}
