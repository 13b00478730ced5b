//! One stored row of events: a received batch's accepted events, prost-encoded as a
//! [`StoredBatch`] and, by default, zstd-compressed, behind a small header so the
//! row's event count and last sequence number are read without decoding it.
//!
//! Layout: `codec: u8`, `count: u32 LE`, `last_seq: u64 LE`, then the body.

use ktrail_proto::v1::{Event, Hop};
use prost::Message;

use super::tables::{StoredBatch, StoredHops};
use crate::error::StoreError;

const HEADER: usize = 1 + 4 + 8;
const CODEC_PROST: u8 = 0;
const CODEC_ZSTD: u8 = 1;

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

/// A zstd compressor kept across rows (a context is costly to set up).
pub type Compressor = zstd::bulk::Compressor<'static>;

/// A compressor at zstd `level`, or none for level 0 (rows stored as encoded).
pub fn compressor(level: i32) -> Option<Compressor> {
    (level != 0).then(|| Compressor::new(level).ok()).flatten()
}

/// The stored row for an encoded batch, compressed when a compressor is given and
/// that makes it smaller.
pub fn frame(
    encoded: &[u8],
    count: u32,
    last_seq: u64,
    compressor: Option<&mut Compressor>,
) -> Vec<u8> {
    let compressed = compressor
        .and_then(|c| c.compress(encoded).ok())
        .filter(|c| c.len() < encoded.len());
    let (codec, body) = match &compressed {
        Some(c) => (CODEC_ZSTD, c.as_slice()),
        None => (CODEC_PROST, encoded),
    };
    let mut row = Vec::with_capacity(HEADER + body.len() + 4);
    row.push(codec);
    row.extend_from_slice(&count.to_le_bytes());
    row.extend_from_slice(&last_seq.to_le_bytes());
    if codec == CODEC_ZSTD {
        // The decompressed size, so reading allocates once.
        row.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    }
    row.extend_from_slice(body);
    row
}

/// Appends one prost-encoded hop to the encoding of a [`StoredHops`].
pub fn push_hop(group: &mut Vec<u8>, encoded_hop: &[u8]) {
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, group);
    prost::encoding::encode_varint(encoded_hop.len() as u64, group);
    group.extend_from_slice(encoded_hop);
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

fn corrupt_in(table: &'static str, what: &str) -> StoreError {
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

/// Decodes a stored event batch.
pub fn decode(row: &[u8]) -> Result<StoredBatch, StoreError> {
    let raw = body(row, "event_batches")?;
    StoredBatch::decode(raw.as_ref()).map_err(|error| StoreError::Decode {
        table: "event_batches",
        error,
    })
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
    fn hop_groups_are_the_concatenated_hops() {
        let hops: Vec<Hop> = (0..3)
            .map(|i| Hop {
                id: format!("h-{i}"),
                request: vec![b'q'; 1024],
                ..Hop::default()
            })
            .collect();
        let mut group = Vec::new();
        for hop in &hops {
            push_hop(&mut group, &hop.encode_to_vec());
        }
        assert_eq!(group, StoredHops { hops: hops.clone() }.encode_to_vec());
        for level in [0, 1] {
            let row = frame(&group, 3, 0, compressor(level).as_mut());
            assert_eq!(decode_hops(&row).expect("decodes"), hops);
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
