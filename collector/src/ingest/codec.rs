//! Decoding of what agents send, for the `Ingest` stream: the same
//! `AgentMessage`s as prost's codec gives, plus, for an event batch, its received
//! bytes for its stored row, so storing the batch neither encodes every event again
//! nor copies the batch; and the batch's events decoded into a vector sized for
//! them up front (growing one event at a time reallocated ~600 KB per batch).
//!
//! The message is taken from tonic's buffer as `Bytes` (split off, not copied):
//! the stored row and every event's payload (`SyscallEvent.data`) are slices of it.

use bytes::{Buf, Bytes};
use ktrail_proto::field::{BATCH_EVENTS, BATCH_PROCESSES, MESSAGE_BATCH};
use ktrail_proto::v1::agent_message::Body;
use ktrail_proto::v1::{AgentMessage, EventBatch, IngestAck, ProcessInfo};
use prost::encoding::{decode_key, decode_varint, WireType};
use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, ProstCodec};
use tonic::Status;

use super::event_decode::decode_event;

/// One message from an agent.
#[derive(Debug, Default)]
pub struct Received {
    pub message: AgentMessage,
    /// For a batch: its `EventBatch` encoding as received, for its stored row
    /// ([`crate::store::batch::RowBody::Received`]).
    pub stored: Option<Bytes>,
}

/// The `Ingest` codec: acks encoded by prost; agent messages by [`IngestDecoder`].
#[derive(Debug, Default, Clone, Copy)]
pub struct IngestCodec;

impl Codec for IngestCodec {
    type Encode = IngestAck;
    type Decode = Received;
    type Encoder = <ProstCodec<IngestAck, AgentMessage> as Codec>::Encoder;
    type Decoder = IngestDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<IngestAck, AgentMessage>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        IngestDecoder
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct IngestDecoder;

impl Decoder for IngestDecoder {
    type Item = Received;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Received>, Status> {
        // The buffer holds exactly one message, contiguous in tonic's `BytesMut`:
        // split off as `Bytes`, without a copy.
        let len = buf.remaining();
        decode_message(buf.copy_to_bytes(len))
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// Decodes an `AgentMessage`; a message that is exactly one event batch takes the
/// fast path, anything else prost's generic one.
pub fn decode_message(bytes: Bytes) -> Result<Received, prost::DecodeError> {
    if let Some(start) = sole_batch(&bytes) {
        let batch = bytes.slice(start..);
        if let Some(events) = decode_batch(&batch)? {
            return Ok(Received {
                message: AgentMessage {
                    body: Some(Body::Batch(events)),
                },
                stored: Some(batch),
            });
        }
    }
    Ok(Received {
        message: AgentMessage::decode(bytes)?,
        stored: None,
    })
}

/// Where the batch starts when `bytes` is one `batch` field and nothing else.
fn sole_batch(bytes: &[u8]) -> Option<usize> {
    let mut rest = bytes;
    let (tag, wire) = decode_key(&mut rest).ok()?;
    if tag != MESSAGE_BATCH || wire != WireType::LengthDelimited {
        return None;
    }
    let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
    (rest.len() == len).then(|| bytes.len() - len)
}

/// Decodes an `EventBatch` whose fields are only events and processes (as agents
/// send it), with its vectors allocated once; `None` for anything else. Events are
/// decoded from slices of `bytes`, so their payloads are too.
fn decode_batch(bytes: &Bytes) -> Result<Option<EventBatch>, prost::DecodeError> {
    let Some((events, processes)) = count_fields(bytes) else {
        return Ok(None);
    };
    let mut batch = EventBatch {
        events: Vec::with_capacity(events),
        processes: Vec::with_capacity(processes),
    };
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let (tag, _) = decode_key(&mut rest)?;
        let len = decode_varint(&mut rest)? as usize;
        let start = bytes.len() - rest.len();
        rest = &rest[len..];
        let field = bytes.slice(start..start + len);
        match tag {
            BATCH_EVENTS => batch.events.push(decode_event(&field)?),
            _ => batch.processes.push(ProcessInfo::decode(field)?),
        }
    }
    Ok(Some(batch))
}

/// Events and processes in an encoded batch; `None` when it holds anything else
/// or is malformed (prost's decoder then says how).
fn count_fields(bytes: &[u8]) -> Option<(usize, usize)> {
    let (mut events, mut processes) = (0, 0);
    let mut rest = bytes;
    while !rest.is_empty() {
        let (tag, wire) = decode_key(&mut rest).ok()?;
        if wire != WireType::LengthDelimited {
            return None;
        }
        let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
        rest = rest.get(len..)?;
        match tag {
            BATCH_EVENTS => events += 1,
            BATCH_PROCESSES => processes += 1,
            _ => return None,
        }
    }
    Some((events, processes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::batch::{self, RowBody};
    use ktrail_proto::v1::event::Body as EventBody;
    use ktrail_proto::v1::{Event, Hello, LossReport, SyscallEvent};

    fn batch_message() -> AgentMessage {
        let events = (1..=5)
            .map(|seq| Event {
                seq,
                comm: "kubelet".into(),
                body: Some(EventBody::Syscall(SyscallEvent {
                    name: "write".into(),
                    data: vec![seq as u8; 100].into(),
                    ..SyscallEvent::default()
                })),
                ..Event::default()
            })
            .collect();
        AgentMessage {
            body: Some(Body::Batch(EventBatch {
                events,
                processes: vec![ProcessInfo {
                    pid: 7,
                    comm: "kubelet".into(),
                    ..ProcessInfo::default()
                }],
            })),
        }
    }

    #[test]
    fn a_batch_decodes_as_prost_does_and_keeps_its_bytes_for_the_store() {
        let message = batch_message();
        let received = decode_message(message.encode_to_vec().into()).expect("decodes");
        assert_eq!(received.message, message);
        let Some(Body::Batch(sent)) = &message.body else {
            unreachable!("built as a batch")
        };
        let body = RowBody::Received {
            node: "n1".into(),
            batch: received.stored.expect("a batch keeps its bytes"),
        };
        for level in [0, 1] {
            let mut row = Vec::new();
            let mut compressor = batch::compressor(level);
            body.frame_into(5, 5, compressor.as_mut(), &mut Vec::new(), &mut row);
            let stored = batch::decode(&row).expect("stored row decodes");
            assert_eq!((stored.node.as_str(), &stored.events), ("n1", &sent.events));
        }
        // The payloads are slices of the received batch, not copies.
        let RowBody::Received { batch: kept, .. } = &body else {
            unreachable!("built as received")
        };
        let Some(Body::Batch(decoded)) = &received.message.body else {
            unreachable!("decoded as a batch")
        };
        let within = kept.as_ptr_range();
        for event in &decoded.events {
            let Some(EventBody::Syscall(sc)) = &event.body else {
                unreachable!("built as syscalls")
            };
            assert!(within.contains(&sc.data.as_ptr()), "payload copied");
        }
    }

    #[test]
    fn other_messages_decode_as_prost_does() {
        for message in [
            AgentMessage {
                body: Some(Body::Hello(Hello {
                    node: "n1".into(),
                    agent_id: "a1".into(),
                    ..Hello::default()
                })),
            },
            AgentMessage {
                body: Some(Body::Loss(LossReport {
                    buffer_full: 3,
                    ..LossReport::default()
                })),
            },
            AgentMessage::default(),
        ] {
            let received = decode_message(message.encode_to_vec().into()).expect("decodes");
            assert_eq!(received.message, message);
            assert!(received.stored.is_none());
        }
        // A batch followed by another field: prost's generic path, same result.
        let mut bytes = batch_message().encode_to_vec();
        let hello = AgentMessage {
            body: Some(Body::Hello(Hello::default())),
        };
        bytes.extend(hello.encode_to_vec());
        let received = decode_message(bytes.clone().into()).expect("decodes");
        assert_eq!(
            received.message,
            AgentMessage::decode(&bytes[..]).expect("prost")
        );
        assert!(received.stored.is_none());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let bytes = Bytes::from(batch_message().encode_to_vec());
        for cut in [1, 3, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode_message(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}
