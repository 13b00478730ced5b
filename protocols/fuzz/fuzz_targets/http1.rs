//! The http1 decoder alone, input split into chunks at 0xff 0x00 markers,
//! alternating directions.
#![no_main]
use ktrail_protocols::{http1, Config, Direction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = http1::Http1::new(Config::default());
    let mut out = Vec::new();
    let mut dir = Direction::ClientToServer;
    let mut start = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        if data[i] == 0xff && data[i + 1] == 0x00 {
            let chunk = &data[start..i];
            d.feed(dir, chunk, chunk.len() as u64 + u64::from(data[i + 1..].get(1).copied().unwrap_or(0) & 3), 0, &mut out);
            dir = dir.reverse();
            start = i + 2;
            i += 2;
            continue;
        }
        i += 1;
    }
    d.feed(dir, &data[start..], (data.len() - start) as u64, 0, &mut out);
    d.finish(0, &mut out);
    for m in &out {
        let _ = m.summary();
    }
});
