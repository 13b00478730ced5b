//! The agent's bounded send buffer. Events get consecutive sequence numbers when they
//! enter; they stay until the collector acknowledges them as stored, so a collector
//! restart loses nothing that fits in the bound. The bound is in events and in bytes
//! (an event's payload alone is up to 4 KiB, so a count alone does not bound memory). An event that does not fit is counted
//! (`buffer_full`) and never given a sequence number, so the collector sees no gap and
//! the loss is reported, not silent.
//!
//! Events are kept encoded (wire.rs): encoded once on the way in, a batch is their
//! concatenation, and memory is bounded by the encoded bytes.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard},
};

use ktrail_proto::v1::{Event, ProcessInfo};
use tokio::sync::Notify;

use crate::wire::{self, RawMessage};

/// A queued event: its number and its encoding without the number.
#[derive(Debug)]
struct Queued {
    seq: u64,
    bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Queued>,
    /// Sum of `footprint` over `queue`.
    bytes: usize,
    last_seq: u64,
    acked_seq: u64,
    buffer_full: u64,
    processes: Vec<ProcessInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    pub queued: usize,
    pub queued_bytes: usize,
    pub last_seq: u64,
    pub acked_seq: u64,
    pub buffer_full: u64,
}

pub struct Outbox {
    capacity: usize,
    capacity_bytes: usize,
    inner: Mutex<Inner>,
    pub ready: Notify,
}

/// Processes waiting for the next batch; bounded so a collector outage cannot grow it.
const MAX_PENDING_PROCESSES: usize = 4096;

/// Memory an event holds while queued: its encoding and its queue slot.
fn footprint(bytes: &[u8]) -> usize {
    std::mem::size_of::<Queued>() + bytes.len()
}

/// A batch taken from the outbox: the message to send and the last sequence number in it.
pub struct Batch {
    pub message: RawMessage,
    pub last_seq: u64,
}

/// A queue that held more than this many events gives the memory back once it drains
/// to a quarter of it (a VecDeque keeps the capacity of its largest backlog).
const SHRINK_ABOVE: usize = 4096;

impl Outbox {
    /// At most `capacity` events (and no byte bound).
    #[cfg(test)]
    pub fn new(capacity: usize) -> Self {
        Self::bounded(capacity, usize::MAX)
    }

    /// At most `capacity` events and `capacity_bytes` bytes (by [`footprint`]).
    pub fn bounded(capacity: usize, capacity_bytes: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            capacity_bytes: capacity_bytes.max(1),
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (no partial updates).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an event (its `seq` is assigned here); returns false (and counts it) when
    /// the buffer is full.
    pub fn push(&self, mut event: Event) -> bool {
        event.seq = 0;
        // Encoded before taking the lock: the sender's batches wait for it.
        self.push_encoded(wire::encode_unnumbered(&event))
    }

    /// [`Self::push`] for an event already encoded without its `seq` (as
    /// [`wire::encode_unnumbered`] encodes it).
    pub fn push_encoded(&self, bytes: Vec<u8>) -> bool {
        let size = footprint(&bytes);
        let mut inner = self.lock();
        if inner.queue.len() >= self.capacity || inner.bytes + size > self.capacity_bytes {
            inner.buffer_full += 1;
            return false;
        }
        inner.last_seq += 1;
        let seq = inner.last_seq;
        inner.bytes += size;
        inner.queue.push_back(Queued { seq, bytes });
        true
    }

    /// Tells the sender that events are waiting. Called once per drain of the ring, not
    /// per event: a sender woken at every push sends batches of one or two events while
    /// the reader is still draining, and each batch costs the collector a store row, a
    /// commit share and an ack.
    pub fn wake_sender(&self) {
        self.ready.notify_one();
    }

    pub fn push_process(&self, info: ProcessInfo) {
        let mut inner = self.lock();
        if inner.processes.len() < MAX_PENDING_PROCESSES {
            inner.processes.push(info);
        }
    }

    /// A batch message of up to `max` queued events with a sequence number above
    /// `after`, in order, and the pending process metadata; None when no event is due.
    pub fn batch_after(&self, after: u64, max: usize) -> Option<Batch> {
        let mut inner = self.lock();
        let first = inner.queue.front()?.seq;
        let start = after.saturating_add(1).saturating_sub(first) as usize;
        let end = start.saturating_add(max).min(inner.queue.len());
        if start >= end {
            return None;
        }
        let last_seq = inner.queue[end - 1].seq;
        let processes = std::mem::take(&mut inner.processes);
        let events = inner
            .queue
            .range(start..end)
            .map(|q| (q.seq, q.bytes.as_slice()));
        Some(Batch {
            message: wire::batch_message(events, &processes),
            last_seq,
        })
    }

    /// The collector stored everything up to `seq`: free it.
    pub fn ack(&self, seq: u64) {
        let mut inner = self.lock();
        while inner.queue.front().is_some_and(|e| e.seq <= seq) {
            if let Some(e) = inner.queue.pop_front() {
                inner.bytes -= footprint(&e.bytes);
            }
        }
        inner.acked_seq = inner.acked_seq.max(seq);
        let cap = inner.queue.capacity();
        if cap > SHRINK_ABOVE && inner.queue.len() < cap / 4 {
            let keep = (inner.queue.len() * 2).max(SHRINK_ABOVE);
            inner.queue.shrink_to(keep);
        }
    }

    pub fn acked(&self) -> u64 {
        self.lock().acked_seq
    }

    pub fn stats(&self) -> OutboxStats {
        let inner = self.lock();
        OutboxStats {
            queued: inner.queue.len(),
            queued_bytes: inner.bytes,
            last_seq: inner.last_seq,
            acked_seq: inner.acked_seq,
            buffer_full: inner.buffer_full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktrail_proto::v1::{agent_message::Body, AgentMessage};
    use prost::Message;

    fn ev() -> Event {
        Event::default()
    }

    /// The events of a batch message, decoded as the collector decodes them.
    fn events(batch: Option<Batch>) -> Vec<Event> {
        let Some(batch) = batch else {
            return Vec::new();
        };
        match AgentMessage::decode(batch.message.0.as_slice())
            .unwrap()
            .body
        {
            Some(Body::Batch(b)) => {
                assert_eq!(b.events.last().map(|e| e.seq), Some(batch.last_seq));
                b.events
            }
            other => panic!("not a batch: {other:?}"),
        }
    }

    fn seqs(batch: Option<Batch>) -> Vec<u64> {
        events(batch).iter().map(|e| e.seq).collect()
    }

    #[test]
    fn numbers_batches_and_acks() {
        let ob = Outbox::new(10);
        for _ in 0..5 {
            assert!(ob.push(ev()));
        }
        assert_eq!(seqs(ob.batch_after(0, 3)), vec![1, 2, 3]);
        assert_eq!(seqs(ob.batch_after(3, 10)), vec![4, 5]);
        ob.ack(3);
        // After a reconnect the sender restarts from the acked point.
        assert_eq!(seqs(ob.batch_after(ob.acked(), 10)), vec![4, 5]);
        assert_eq!(ob.stats().queued, 2);
        assert!(ob.batch_after(5, 10).is_none());
    }

    #[test]
    fn batches_carry_the_events_and_the_pending_processes_once() {
        let ob = Outbox::new(10);
        let event = |pid| Event {
            pid,
            comm: "kubelet".into(),
            body: Some(ktrail_proto::v1::event::Body::Syscall(
                ktrail_proto::v1::SyscallEvent {
                    name: "write".into(),
                    data: vec![7; 256].into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        ob.push_process(ProcessInfo {
            pid: 42,
            ..Default::default()
        });
        assert!(ob.push(event(42)));
        assert!(ob.push(event(43)));
        let batch = ob.batch_after(0, 10).unwrap();
        let decoded = AgentMessage::decode(batch.message.0.as_slice()).unwrap();
        let Some(Body::Batch(b)) = decoded.body else {
            panic!("not a batch")
        };
        assert_eq!(b.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [42]);
        let mut want = event(42);
        want.seq = 1;
        assert_eq!(b.events[0], want);
        assert_eq!(b.events[1].seq, 2);
        // The processes went with that batch.
        assert!(events(ob.batch_after(0, 10)).len() == 2);
        let again = AgentMessage::decode(ob.batch_after(0, 10).unwrap().message.0.as_slice());
        assert!(matches!(again.unwrap().body, Some(Body::Batch(b)) if b.processes.is_empty()));
    }

    #[test]
    fn the_byte_bound_counts_drops_and_frees_on_ack() {
        let big = || {
            let mut e = ev();
            e.body = Some(ktrail_proto::v1::event::Body::Syscall(
                ktrail_proto::v1::SyscallEvent {
                    data: vec![0; 4096].into(),
                    ..Default::default()
                },
            ));
            e
        };
        let one = footprint(&wire::encode_unnumbered(&big()));
        assert!(one > 4096);
        let ob = Outbox::bounded(1000, 3 * one);
        let accepted = (0..10).filter(|_| ob.push(big())).count();
        assert_eq!(
            accepted, 3,
            "the byte bound, not the event count, stops the queue"
        );
        let s = ob.stats();
        assert_eq!((s.queued, s.queued_bytes, s.buffer_full), (3, 3 * one, 7));
        ob.ack(2);
        assert_eq!(ob.stats().queued_bytes, one);
        assert!(ob.push(big()));
        assert_eq!(seqs(ob.batch_after(2, 10)), vec![3, 4]);
    }

    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        let ob = Outbox::new(1 << 20);
        for _ in 0..100_000 {
            ob.push(ev());
        }
        ob.ack(100_000);
        assert_eq!(ob.stats().queued_bytes, 0);
        assert!(ob.lock().queue.capacity() <= 2 * SHRINK_ABOVE);
    }

    #[test]
    fn full_buffer_counts_drops_without_gaps() {
        let ob = Outbox::new(3);
        let accepted = (0..10).filter(|_| ob.push(ev())).count();
        assert_eq!(accepted, 3);
        let s = ob.stats();
        assert_eq!((s.last_seq, s.buffer_full, s.queued), (3, 7, 3));
        ob.ack(3);
        assert!(ob.push(ev()));
        assert_eq!(
            seqs(ob.batch_after(3, 10)),
            vec![4],
            "numbering continues with no gap"
        );
    }
}
