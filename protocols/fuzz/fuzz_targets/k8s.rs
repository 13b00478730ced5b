//! Kubernetes bodies (JSON, k8s\0 protobuf) and watch streams.
#![no_main]
use ktrail_protocols::k8s;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = k8s::decode_body(data, data.len() % 2 == 0);
    let _ = k8s::decode_proto_watch_event(data, false);
    let mut w = k8s::WatchStream::new(None);
    for piece in data.chunks(1 + data.first().copied().unwrap_or(0) as usize) {
        let _ = w.feed(piece);
        assert!(w.buffered() <= k8s::MAX_FRAME);
    }
    let _ = w.gap(5);
});
