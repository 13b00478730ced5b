//! Events are encoded once, as they enter the outbox, and a batch for the collector is
//! the concatenation of their encodings: no clone of a queued event and no second
//! encoding per send (the agent's own CPU per event was most in allocation, copies and
//! protobuf encoding; see BENCHMARKS.md, item 4).
//!
//! This works because protobuf fields may come in any order and a repeated message
//! field is a run of (key, length, bytes) records: an `EventBatch` is its events'
//! records one after the other, and an event's `seq` (field 1), which the outbox
//! assigns, can precede the rest of its fields. What goes on the wire is byte for byte
//! an `AgentMessage`; the collector decodes it as before.

use prost::{
    bytes::{Buf, BufMut},
    encoding::{self, DecodeContext, WireType},
    DecodeError, Message,
};

use ktrail_proto::field::{BATCH_EVENTS, BATCH_PROCESSES, EVENT_SEQ, MESSAGE_BATCH};
use ktrail_proto::v1::{AgentMessage, Event, ProcessInfo};

/// An event's encoding without its `seq` (which must be 0 here: proto3 leaves it out).
pub fn encode_unnumbered(event: &Event) -> Vec<u8> {
    debug_assert_eq!(event.seq, 0);
    event.encode_to_vec()
}

/// Bytes of one `EventBatch.events` record: the event with `seq` in front.
fn event_record_len(seq: u64, unnumbered: &[u8]) -> usize {
    let inner = seq_len(seq) + unnumbered.len();
    encoding::key_len(BATCH_EVENTS) + encoding::encoded_len_varint(inner as u64) + inner
}

fn seq_len(seq: u64) -> usize {
    encoding::key_len(EVENT_SEQ) + encoding::encoded_len_varint(seq)
}

/// An `AgentMessage` carrying an `EventBatch` of the given (seq, unnumbered encoding)
/// events and `processes`, written into one buffer.
pub fn batch_message<'a>(
    events: impl Iterator<Item = (u64, &'a [u8])> + Clone,
    processes: &[ProcessInfo],
) -> RawMessage {
    let batch_len: usize = events
        .clone()
        .map(|(seq, bytes)| event_record_len(seq, bytes))
        .sum::<usize>()
        + encoding::message::encoded_len_repeated(BATCH_PROCESSES, processes);
    let mut buf = Vec::with_capacity(
        encoding::key_len(MESSAGE_BATCH)
            + encoding::encoded_len_varint(batch_len as u64)
            + batch_len,
    );
    encoding::encode_key(MESSAGE_BATCH, WireType::LengthDelimited, &mut buf);
    encoding::encode_varint(batch_len as u64, &mut buf);
    for (seq, bytes) in events {
        encoding::encode_key(BATCH_EVENTS, WireType::LengthDelimited, &mut buf);
        encoding::encode_varint((seq_len(seq) + bytes.len()) as u64, &mut buf);
        encoding::uint64::encode(EVENT_SEQ, &seq, &mut buf);
        buf.extend_from_slice(bytes);
    }
    for p in processes {
        encoding::message::encode(BATCH_PROCESSES, p, &mut buf);
    }
    RawMessage(buf)
}

/// An `AgentMessage` already encoded, for the stream to the collector (tonic's prost
/// codec writes it as it is). Never decoded: the agent only sends these.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RawMessage(pub Vec<u8>);

impl RawMessage {
    pub fn of(message: &AgentMessage) -> Self {
        Self(message.encode_to_vec())
    }
}

impl Message for RawMessage {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktrail_proto::v1::{agent_message::Body, event, EventBatch, SyscallEvent};

    fn event(i: u32) -> Event {
        Event {
            seq: 0,
            timestamp_unix_ns: 1_700_000_000_000_000_000 + i as u64,
            pid: 100 + i,
            tid: 200 + i,
            comm: format!("kubelet-{i}"),
            cpu: i % 2,
            body: Some(event::Body::Syscall(SyscallEvent {
                name: "write".into(),
                fd: 7,
                ret: 256,
                data: vec![i as u8; 256].into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_concatenated_batch_is_the_agent_message_prost_would_encode() {
        let events: Vec<Event> = (0..5).map(event).collect();
        let encoded: Vec<(u64, Vec<u8>)> = events
            .iter()
            .enumerate()
            // Sequence numbers of one to several varint bytes.
            .map(|(i, e)| ((i as u64 + 1) * 1000u64.pow(i as u32), encode_unnumbered(e)))
            .collect();
        let processes = vec![ProcessInfo {
            pid: 100,
            comm: "kubelet".into(),
            ..Default::default()
        }];
        let raw = batch_message(encoded.iter().map(|(s, b)| (*s, b.as_slice())), &processes);
        let expected = AgentMessage {
            body: Some(Body::Batch(EventBatch {
                events: events
                    .into_iter()
                    .zip(&encoded)
                    .map(|(mut e, (seq, _))| {
                        e.seq = *seq;
                        e
                    })
                    .collect(),
                processes,
            })),
        };
        assert_eq!(AgentMessage::decode(raw.0.as_slice()).unwrap(), expected);
        // Byte for byte: prost writes `seq`, field 1, first too.
        assert_eq!(RawMessage::of(&expected), raw);
        assert_eq!(raw.encoded_len(), raw.0.len());
    }

    #[test]
    fn an_empty_batch_still_decodes_as_a_batch() {
        let raw = batch_message(std::iter::empty(), &[]);
        assert_eq!(
            AgentMessage::decode(raw.0.as_slice()).unwrap().body,
            Some(Body::Batch(EventBatch::default()))
        );
    }
}
