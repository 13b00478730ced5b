//! One stored row of events: a received batch's accepted events, prost-encoded as a
//! [`StoredBatch`] and, by default, zstd-compressed, behind a small header so the
//! row's event count and last sequence number are read without decoding it.
//!
//! Layout: `codec: u8`, `count: u32 LE`, `last_seq: u64 LE`, then the body.

use std::sync::Arc;

use bytes::Bytes;
use ktrail_proto::v1::{Event, Hop};
use prost::Message;

use super::tables::{StoredBatch, StoredHops};
use crate::error::StoreError;

pub(super) const HEADER: usize = 1 + 4 + 8;
pub(super) const CODEC_PROST: u8 = 0;
pub(super) const CODEC_ZSTD: u8 = 1;

/// The prost encoding of `StoredBatch { node, events }`, written field by field so
/// the events need not be moved or cloned into the wrapper.
pub fn encode(node: &str, events: &[Event]) -> Vec<u8> {
    let len = prost::encoding::string::encoded_len(1, &node.to_owned())
        + prost::encoding::message::encoded_len_repeated(2, events);
    let mut buf = Vec::with_capacity(len);
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut buf);
    prost::encoding::encode_varint(node.len() as u64, &mut buf);
    buf.extend_from_slice(node.as_bytes());
    for event in events {
        prost::encoding::message::encode(2, event, &mut buf);
    }
    buf
}

/// A batch row's body before it is framed.
#[derive(Debug)]
pub enum RowBody {
    /// A `StoredBatch` encoding ([`encode`]).
    Encoded(Vec<u8>),
    /// A received `EventBatch` encoding, as it arrived (a slice of the received
    /// message, not a copy), stored as `StoredBatch { node, batch }`: framed in two
    /// parts (the node with the batch field's key, then the batch) without joining
    /// them first.
    Received { node: Arc<str>, batch: Bytes },
}

impl RowBody {
    /// Bytes of the `StoredBatch` encoding.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Encoded(bytes) => bytes.len(),
            Self::Received { node, batch } => received_head_len(node, batch.len()) + batch.len(),
        }
    }

    /// Frames the body as a stored row into `row` (see [`frame_parts_into`]);
    /// `head` is a scratch buffer for the received batch's leading fields.
    pub fn frame_into(
        &self,
        count: u32,
        last_seq: u64,
        compressor: Option<&mut Compressor>,
        head: &mut Vec<u8>,
        row: &mut Vec<u8>,
    ) {
        match self {
            Self::Encoded(bytes) => frame_into(bytes, count, last_seq, compressor, row),
            Self::Received { node, batch } => {
                head.clear();
                let string = prost::encoding::WireType::LengthDelimited;
                prost::encoding::encode_key(1, string, head);
                prost::encoding::encode_varint(node.len() as u64, head);
                head.extend_from_slice(node.as_bytes());
                prost::encoding::encode_key(3, string, head);
                prost::encoding::encode_varint(batch.len() as u64, head);
                frame_parts_into(&[head, batch], count, last_seq, compressor, row);
            }
        }
    }
}

/// Bytes before the batch in a [`RowBody::Received`]'s encoding.
fn received_head_len(node: &str, batch_len: usize) -> usize {
    let field = |len: usize| 1 + prost::encoding::encoded_len_varint(len as u64) + len;
    field(node.len()) + field(batch_len) - batch_len
}

/// A zstd compressor kept across rows (a context is costly to set up).
pub type Compressor = zstd::bulk::Compressor<'static>;

/// A compressor at zstd `level`, or none for level 0 (rows stored as encoded).
pub fn compressor(level: i32) -> Option<Compressor> {
    (level != 0).then(|| Compressor::new(level).ok()).flatten()
}

/// The stored row for an encoded batch, compressed when a compressor is given and
/// that makes it smaller (the writer uses [`frame_into`] with its kept buffer).
#[cfg(test)]
pub fn frame(
    encoded: &[u8],
    count: u32,
    last_seq: u64,
    compressor: Option<&mut Compressor>,
) -> Vec<u8> {
    let mut row = Vec::new();
    frame_into(encoded, count, last_seq, compressor, &mut row);
    row
}

/// [`frame`] into `row` (cleared first), compressing straight into it: the writer
/// reuses one row buffer (a fresh multi-megabyte one per row cost page faults).
pub fn frame_into(
    encoded: &[u8],
    count: u32,
    last_seq: u64,
    compressor: Option<&mut Compressor>,
    row: &mut Vec<u8>,
) {
    frame_parts_into(&[encoded], count, last_seq, compressor, row);
}

/// [`frame_into`] for an encoding given in parts, as if they were joined. Each
/// part is compressed as a zstd frame of its own, one after the other (zstd
/// decompresses concatenated frames as one), so the parts are never copied into
/// one buffer first.
pub fn frame_parts_into(
    parts: &[&[u8]],
    count: u32,
    last_seq: u64,
    compressor: Option<&mut Compressor>,
    row: &mut Vec<u8>,
) {
    // Codec, count and last seq, then for zstd the decompressed size, so reading
    // allocates once.
    const ZSTD_HEADER: usize = HEADER + 4;
    let len: usize = parts.iter().map(|p| p.len()).sum();
    row.clear();
    if let Some(c) = compressor {
        row.resize(ZSTD_HEADER, 0);
        let bound: usize = parts
            .iter()
            .map(|p| zstd::zstd_safe::compress_bound(p.len()))
            .sum();
        row.reserve(bound);
        let mut compressed = Some(0);
        for part in parts.iter().filter(|p| !p.is_empty()) {
            let mut body = std::io::Cursor::new(&mut *row);
            body.set_position(body.get_ref().len() as u64);
            compressed = compressed
                .zip(c.compress_to_buffer(part, &mut body).ok())
                .map(|(a, b)| a + b);
        }
        if compressed.is_some_and(|n| n < len) {
            row[0] = CODEC_ZSTD;
            row[1..5].copy_from_slice(&count.to_le_bytes());
            row[5..13].copy_from_slice(&last_seq.to_le_bytes());
            row[13..17].copy_from_slice(&(len as u32).to_le_bytes());
            return;
        }
        row.clear();
    }
    row.reserve(HEADER + len);
    row.push(CODEC_PROST);
    row.extend_from_slice(&count.to_le_bytes());
    row.extend_from_slice(&last_seq.to_le_bytes());
    for part in parts {
        row.extend_from_slice(part);
    }
}

/// Appends one hop to the encoding of a [`StoredHops`].
pub fn push_hop(group: &mut Vec<u8>, hop: &Hop) {
    prost::encoding::message::encode(1, hop, group);
}

/// Decodes a stored hop group.
pub fn decode_hops(row: &[u8]) -> Result<Vec<Hop>, StoreError> {
    let raw = body(row, "hop_groups")?;
    StoredHops::decode(raw.as_ref())
        .map(|h| h.hops)
        .map_err(|error| StoreError::Decode {
            table: "hop_groups",
            error,
        })
}

/// The decompressed body of a framed row.
fn body<'a>(row: &'a [u8], table: &'static str) -> Result<std::borrow::Cow<'a, [u8]>, StoreError> {
    if row.len() < HEADER {
        return Err(corrupt_in(table, "row shorter than its header"));
    }
    let body = &row[HEADER..];
    match row[0] {
        CODEC_PROST => Ok(std::borrow::Cow::Borrowed(body)),
        CODEC_ZSTD => {
            let (size, body) = body
                .split_first_chunk::<4>()
                .ok_or_else(|| corrupt_in(table, "compressed row without its size"))?;
            zstd::bulk::decompress(body, u32::from_le_bytes(*size) as usize)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| corrupt_in(table, &format!("zstd: {e}")))
        }
        other => Err(corrupt_in(table, &format!("unknown codec {other}"))),
    }
}

pub(super) fn corrupt_in(table: &'static str, what: &str) -> StoreError {
    StoreError::Decode {
        table,
        error: prost::DecodeError::new(what.to_string()),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Decode {
        table: "event_batches",
        error: prost::DecodeError::new(what.to_string()),
    }
}

/// Event count and last sequence number of a stored row.
pub fn header(row: &[u8]) -> Result<(u32, u64), StoreError> {
    if row.len() < HEADER {
        return Err(corrupt("batch row shorter than its header"));
    }
    let count = u32::from_le_bytes(row[1..5].try_into().map_err(|_| corrupt("count"))?);
    let last = u64::from_le_bytes(row[5..13].try_into().map_err(|_| corrupt("last seq"))?);
    Ok((count, last))
}

/// Decodes a stored event batch (its events in `events`, however stored).
pub fn decode(row: &[u8]) -> Result<StoredBatch, StoreError> {
    let raw = body(row, "event_batches")?;
    let mut stored = StoredBatch::decode(raw.as_ref()).map_err(|error| StoreError::Decode {
        table: "event_batches",
        error,
    })?;
    if let Some(received) = stored.batch.take() {
        stored.events.extend(received.events);
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<Event> {
        seqs.map(|seq| Event {
            seq,
            comm: "kubelet".into(),
            ..Event::default()
        })
        .collect()
    }

    #[test]
    fn encodes_as_the_wrapper_message_and_round_trips_both_codecs() {
        let evs = events(3..=7);
        let encoded = encode("n1", &evs);
        let wrapper = StoredBatch {
            node: "n1".into(),
            events: evs.clone(),
            batch: None,
        };
        assert_eq!(encoded, wrapper.encode_to_vec());
        for level in [0, 1] {
            let row = frame(&encoded, 5, 7, compressor(level).as_mut());
            assert_eq!(header(&row).expect("header"), (5, 7));
            assert_eq!(decode(&row).expect("decodes"), wrapper);
        }
        let row = frame(&encoded, 5, 7, compressor(1).as_mut());
        assert_eq!(row[0], CODEC_ZSTD, "repetitive: compressed");
    }

    #[test]
    fn a_received_batch_is_stored_as_the_wrapper_message_in_parts() {
        let evs = events(1..=200);
        let received = ktrail_proto::v1::EventBatch {
            events: evs.clone(),
            processes: Vec::new(),
        };
        let body = RowBody::Received {
            node: "n1".into(),
            batch: received.encode_to_vec().into(),
        };
        let wrapper = StoredBatch {
            node: "n1".into(),
            events: Vec::new(),
            batch: Some(received),
        };
        assert_eq!(body.encoded_len(), wrapper.encoded_len());
        for level in [0, 1] {
            let mut row = Vec::new();
            body.frame_into(
                200,
                200,
                compressor(level).as_mut(),
                &mut Vec::new(),
                &mut row,
            );
            assert_eq!(row[0], [CODEC_PROST, CODEC_ZSTD][level as usize]);
            assert_eq!(header(&row).expect("header"), (200, 200));
            let stored = decode(&row).expect("decodes");
            assert_eq!((stored.node.as_str(), stored.events), ("n1", evs.clone()));
        }
    }

    #[test]
    fn hop_groups_are_the_concatenated_hops() {
        let hops: Vec<Hop> = (0..3)
            .map(|i| Hop {
                id: format!("h-{i}"),
                start_unix_ns: 1_000 + i,
                request: vec![b'q'; 1024],
                client: Some(Default::default()),
                ..Hop::default()
            })
            .collect();
        let mut group = Vec::new();
        for hop in &hops {
            push_hop(&mut group, hop);
        }
        assert_eq!(group, StoredHops { hops: hops.clone() }.encode_to_vec());
        for level in [0, 1] {
            let row = frame(&group, 3, 0, compressor(level).as_mut());
            assert_eq!(decode_hops(&row).expect("decodes"), hops);
            let mut keys = Vec::new();
            super::super::hop_keys::for_each(&row, |k| {
                keys.push((k.id, k.start_unix_ns));
                Ok(())
            })
            .expect("keys decode");
            let expected: Vec<(String, u64)> = hops
                .iter()
                .map(|h| (h.id.clone(), h.start_unix_ns))
                .collect();
            assert_eq!(keys, expected);
        }
    }

    #[test]
    fn a_damaged_row_is_an_error_not_a_panic() {
        assert!(decode(&[1, 2]).is_err());
        let mut row = frame(
            &encode("n", &events(1..=50)),
            50,
            50,
            compressor(1).as_mut(),
        );
        row.truncate(row.len() / 2);
        assert!(decode(&row).is_err());
        row[0] = 9;
        assert!(decode(&row).is_err());
    }
}
