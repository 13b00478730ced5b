//! The index keys of a stored hop group's hops, for retention. A group is one
//! commit's hops and compresses 10x and more (replayed or repetitive payloads), so
//! decompressing it whole to delete its index entries made a transient of its own:
//! the 10-agent bench's RSS rose by ~200 MiB while retention caught up with a lowered
//! budget. The group is read as a stream instead, one hop at a time, and each hop is
//! decoded for its key only (prost skips the other fields).

use std::io::{BufReader, Read};

use prost::Message;

use super::batch::{corrupt_in, CODEC_PROST, CODEC_ZSTD, HEADER};
use crate::error::StoreError;

const TABLE: &str = "hop_groups";
/// `StoredHops.hops`: field 1, length-delimited.
const HOPS_FIELD_KEY: u64 = (1 << 3) | 2;

/// The fields of `Hop` that make its index key (same tags).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HopKey {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(uint64, tag = "6")]
    pub start_unix_ns: u64,
}

/// Calls `f` with the key of each hop in the framed hop group `row`, in order.
pub fn for_each(
    row: &[u8],
    mut f: impl FnMut(HopKey) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    if row.len() < HEADER {
        return Err(corrupt_in(TABLE, "row shorter than its header"));
    }
    let body = &row[HEADER..];
    match row[0] {
        CODEC_PROST => each(body, &mut f),
        CODEC_ZSTD => {
            let (_, compressed) = body
                .split_first_chunk::<4>()
                .ok_or_else(|| corrupt_in(TABLE, "compressed row without its size"))?;
            let decoder = zstd::stream::read::Decoder::with_buffer(compressed)
                .map_err(|e| corrupt_in(TABLE, &format!("zstd: {e}")))?;
            each(BufReader::with_capacity(64 << 10, decoder), &mut f)
        }
        other => Err(corrupt_in(TABLE, &format!("unknown codec {other}"))),
    }
}

fn each(
    mut r: impl Read,
    f: &mut impl FnMut(HopKey) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut hop = Vec::new();
    while let Some(key) = varint(&mut r)? {
        if key != HOPS_FIELD_KEY {
            return Err(corrupt_in(TABLE, &format!("unexpected field key {key}")));
        }
        let len = varint(&mut r)?.ok_or_else(|| corrupt_in(TABLE, "hop without its length"))?;
        let len = usize::try_from(len).map_err(|_| corrupt_in(TABLE, "hop length"))?;
        hop.resize(len, 0);
        r.read_exact(&mut hop)
            .map_err(|e| corrupt_in(TABLE, &format!("truncated hop: {e}")))?;
        let key = HopKey::decode(hop.as_slice()).map_err(|error| StoreError::Decode {
            table: TABLE,
            error,
        })?;
        f(key)?;
    }
    Ok(())
}

/// A protobuf varint, or None at the end of the stream.
fn varint(r: &mut impl Read) -> Result<Option<u64>, StoreError> {
    let mut value = 0u64;
    for i in 0..10 {
        let mut byte = [0u8];
        let n = r
            .read(&mut byte)
            .map_err(|e| corrupt_in(TABLE, &format!("zstd: {e}")))?;
        if n == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(corrupt_in(TABLE, "truncated varint"))
            };
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(corrupt_in(TABLE, "varint longer than 10 bytes"))
}

#[cfg(test)]
mod tests {
    use ktrail_proto::v1::Hop;

    use super::*;
    use crate::store::batch::{compressor, frame, push_hop};

    #[test]
    fn a_damaged_group_is_an_error_not_a_panic() {
        let mut group = Vec::new();
        for i in 0..50 {
            let hop = Hop {
                id: format!("h-{i}"),
                start_unix_ns: i,
                request: vec![b'q'; 300],
                ..Hop::default()
            };
            push_hop(&mut group, &hop);
        }
        let row = frame(&group, 50, 0, compressor(1).as_mut());
        assert_eq!(row[0], CODEC_ZSTD);
        let mut n = 0;
        for_each(&row, |_| {
            n += 1;
            Ok(())
        })
        .expect("whole row");
        assert_eq!(n, 50);
        for cut in [0, HEADER - 1, HEADER + 2, row.len() / 2, row.len() - 1] {
            assert!(for_each(&row[..cut], |_| Ok(())).is_err(), "cut at {cut}");
        }
        let mut plain = row[..HEADER].to_vec();
        plain[0] = CODEC_PROST;
        plain.extend_from_slice(&group[..group.len() - 7]);
        assert!(for_each(&plain, |_| Ok(())).is_err(), "a hop cut short");
    }
}
