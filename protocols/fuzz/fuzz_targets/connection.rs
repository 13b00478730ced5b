//! The whole connection decoder. Input: records of
//! [flags: 1][len: 2 LE][extra: 2 LE][data: len], flags bit 0 = direction
//! (1 = server to client); `extra` bytes were "not captured" (total_len =
//! len + extra). Seeds: the vectors (see seed.py).
#![no_main]
use ktrail_protocols::{ConnectionDecoder, Direction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = ConnectionDecoder::new();
    let mut rest = data;
    let mut ts = 0;
    while rest.len() >= 5 {
        let dir = if rest[0] & 1 == 1 { Direction::ServerToClient } else { Direction::ClientToServer };
        let len = u16::from_le_bytes([rest[1], rest[2]]) as usize;
        let extra = u16::from_le_bytes([rest[3], rest[4]]) as u64;
        rest = &rest[5..];
        let chunk = &rest[..len.min(rest.len())];
        rest = &rest[chunk.len()..];
        ts += 1;
        for m in d.feed(dir, chunk, chunk.len() as u64 + extra, ts) {
            let _ = m.summary();
        }
        assert!(d.buffered() <= ConnectionDecoder::MAX_BUFFERED);
    }
    for m in d.finish(ts + 1) {
        let _ = m.summary();
    }
});
