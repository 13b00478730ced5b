//! Drains the kernel ring buffer: decode, enrich with process metadata, queue.

use std::{collections::HashMap, sync::Arc, time::Duration};

use ktrail_agent_common::maps::{BUSY_DRAIN_BYTES, BUSY_DRAIN_EVERY_MS, DRAIN_EVERY_MS};
use ktrail_proto::v1::{event::Body, Event};
use tracing::debug;

use crate::{
    clock::WallClock,
    convert,
    decode::{decode, KernelRecord, SyscallRecord},
    metrics::Metrics,
    outbox::Outbox,
    procfs,
    ring::EventRing,
    syscall_wire,
};

/// Events read between two wakeups of the sender: its batch size.
const WAKE_SENDER_EVERY: usize = crate::sender::MAX_BATCH;

/// Processes whose metadata was sent; bounded, forgotten at exit.
const MAX_KNOWN_PROCESSES: usize = 65_536;

pub struct Reader {
    clock: WallClock,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    /// pid → comm, for events raised in softirq context without a name.
    known: HashMap<u32, String>,
    /// Binaries of newly exec'd tracked processes, for the Go TLS attacher.
    exec_binaries: std::sync::mpsc::Sender<Option<std::path::PathBuf>>,
}

impl Reader {
    pub fn new(
        clock: WallClock,
        outbox: Arc<Outbox>,
        metrics: Arc<Metrics>,
        exec_binaries: std::sync::mpsc::Sender<Option<std::path::PathBuf>>,
    ) -> Self {
        Self {
            clock,
            outbox,
            metrics,
            known: HashMap::new(),
            exec_binaries,
        }
    }

    /// Polls the ring: the kernel programs never wake the reader (see
    /// `DRAIN_EVERY_MS`). Runs until the task is dropped.
    pub async fn run(mut self, mut ring: EventRing) {
        loop {
            let started = tokio::time::Instant::now();
            let read = self.drain(&mut ring);
            let every = if read >= BUSY_DRAIN_BYTES {
                BUSY_DRAIN_EVERY_MS
            } else {
                DRAIN_EVERY_MS
            };
            tokio::time::sleep_until(started + Duration::from_millis(every)).await;
        }
    }

    /// Reads every record waiting; returns their bytes.
    fn drain(&mut self, ring: &mut EventRing) -> u64 {
        let mut unannounced = 0;
        let read = ring.drain(|record| {
            self.handle(record);
            unannounced += 1;
            // Once per batch's worth, not per event: the sender then takes full batches
            // (outbox.rs), and a ring that never runs dry still feeds it.
            if unannounced == WAKE_SENDER_EVERY {
                self.outbox.wake_sender();
                unannounced = 0;
            }
        });
        if unannounced > 0 {
            self.outbox.wake_sender();
        }
        read
    }

    fn handle(&mut self, bytes: &[u8]) {
        self.metrics.count_event();
        let record = match decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, len = bytes.len(), "undecodable record");
                self.metrics.count_undecodable();
                return;
            }
        };
        match record {
            KernelRecord::Syscall(syscall) => self.handle_syscall(&syscall),
            other => self.handle_other(other),
        }
    }

    /// Syscalls, nearly all events, are encoded straight from the ring's bytes
    /// (syscall_wire.rs), without a `pb::Event` built first.
    fn handle_syscall(&mut self, record: &SyscallRecord<'_>) {
        let pid = record.header.tgid;
        let own = convert::comm_text(&record.header.comm);
        self.remember(pid, &own);
        // Raised in softirq context: no name of its own.
        let comm = match own.is_empty() {
            true => self.known.get(&pid).map_or("", String::as_str),
            false => &own,
        };
        tracing::trace!(?record, comm, "event");
        let timestamp = self.clock.to_unix_ns(record.header.ktime_ns);
        let bytes = syscall_wire::encode_syscall_event(record, comm, timestamp);
        self.outbox.push_encoded(bytes);
    }

    fn handle_other(&mut self, record: KernelRecord<'_>) {
        let pid = record.header().tgid;
        let exiting = matches!(&record, KernelRecord::Exit(_));
        let execed = matches!(&record, KernelRecord::Exec(_));
        let mut event: Event = convert::to_proto(record, &self.clock);
        if execed {
            // The magic link reaches the file even inside a container's mount namespace.
            let _ = self
                .exec_binaries
                .send(Some(format!("/proc/{pid}/exe").into()));
            // Exec replaces name, exe and command line: send them fresh.
            let info = procfs::process_info(pid);
            if let Some(i) = &info {
                self.known.insert(pid, i.comm.clone());
            }
            if let Some(Body::Exec(exec)) = event.body.as_mut() {
                exec.process = info;
            }
        } else {
            self.remember(pid, &event.comm);
        }
        if event.comm.is_empty() {
            if let Some(comm) = self.known.get(&pid) {
                event.comm = comm.clone();
            }
        }
        if exiting {
            self.known.remove(&pid);
        }
        tracing::trace!(?event, "event");
        self.outbox.push(event);
    }

    /// A process seen for the first time: its metadata goes to the collector once, and
    /// its name is kept for its events raised without one.
    fn remember(&mut self, pid: u32, comm: &str) {
        if self.known.contains_key(&pid) {
            return;
        }
        if self.known.len() >= MAX_KNOWN_PROCESSES {
            self.known.clear();
        }
        let comm = match procfs::process_info(pid) {
            Some(info) => {
                let comm = info.comm.clone();
                self.outbox.push_process(info);
                comm
            }
            None => comm.to_owned(),
        };
        self.known.insert(pid, comm);
    }
}
