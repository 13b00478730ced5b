//! ttrpc between containerd and its shims, from the real capture of the
//! local cluster (collector/tests/fixtures, see flows::tests::capture): the
//! bytes containerd wrote to a shim decode as the shim's task calls.

use std::io::Read;

use ktrail_proto::v1::Hop;
use ktrail_protocols::{ConnectionDecoder, Direction, Protocol};
use prost::Message;

#[test]
fn containerd_to_shim_bytes_decode_as_task_calls() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cluster-capture.hops.pb.gz"
    );
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("fixture"))
        .read_to_end(&mut raw)
        .expect("gunzip");
    let mut buf = &raw[..];
    let mut methods = std::collections::BTreeSet::new();
    let mut shim_hops = 0;
    while !buf.is_empty() {
        let hop = Hop::decode_length_delimited(&mut buf).expect("hop");
        let (c, s) = (
            hop.client.unwrap_or_default(),
            hop.server.unwrap_or_default(),
        );
        if c.comm != "containerd"
            || !s.comm.starts_with("containerd-shim")
            || hop.request.is_empty()
        {
            continue;
        }
        shim_hops += 1;
        let mut d = ConnectionDecoder::new();
        let msgs = d.feed(
            Direction::ClientToServer,
            &hop.request,
            hop.request.len() as u64,
            1,
        );
        assert_eq!(d.protocol(), Protocol::Ttrpc, "{:?}", hop.request);
        for m in msgs {
            methods.insert(format!(
                "{}/{}",
                m.grpc_service.unwrap_or_default(),
                m.grpc_method.unwrap_or_default()
            ));
        }
    }
    assert!(shim_hops > 10, "{shim_hops} containerd → shim hops");
    // (Create requests are longer than the 256 bytes the fixture keeps.)
    for want in [
        "containerd.task.v2.Task/Connect",
        "containerd.task.v2.Task/Start",
        "containerd.task.v2.Task/Wait",
    ] {
        assert!(methods.contains(want), "{want} not among {methods:?}");
    }
}
