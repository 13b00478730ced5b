//! HPACK: a sequence of header blocks (split at 0xff 0x00) into one decoder,
//! started fresh or mid-connection (first byte).
#![no_main]
use ktrail_protocols::hpack::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut d = if mode & 1 == 0 { Decoder::new() } else { Decoder::mid_connection() };
    for block in rest.split(|&b| b == 0xff) {
        let b = d.decode(block, mode & 2 != 0);
        assert!(b.fields.len() <= ktrail_protocols::hpack::MAX_FIELDS);
        assert!(d.buffered() <= ktrail_protocols::hpack::MAX_TABLE_SIZE + 4096);
    }
});
