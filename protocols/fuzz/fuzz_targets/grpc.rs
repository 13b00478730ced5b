//! gRPC length-prefixed message stream with gaps.
#![no_main]
use ktrail_protocols::grpc::GrpcStream;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut s = GrpcStream::default();
    for piece in data.split(|&b| b == 0xfe) {
        s.feed(piece);
        if piece.len() % 7 == 3 {
            s.gap(piece.len() as u64 * 31);
        }
        let _ = s.take();
        assert!(s.buffered() <= ktrail_protocols::grpc::MAX_MESSAGE + data.len());
    }
    s.end();
    let _ = s.take();
});
