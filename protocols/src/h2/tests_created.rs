//! A kubelet → containerd connection joined mid-way (a DaemonSet's agent):
//! every call's `:path` is an HPACK entry the decoder never saw. CreateContainer
//! is inferred by its shape; the bare-id call that names the container it
//! returned is its StartContainer.

use super::*;

const ID: &str = "59a68ee08f91dc15ebf2e3228cf609dcf1af2ac80b0f30cd3141d59d1acede8b";
const OTHER: &str = "26c56c6006ee768949680fb663458094aadce303b75aaff27b8a073189e354b5";

fn field(tag: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    [&[tag, body.len() as u8][..], body].concat()
}

fn grpc(msg: &[u8]) -> Vec<u8> {
    [&[0][..], &(msg.len() as u32).to_be_bytes(), msg].concat()
}

fn frame(typ: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    [
        &len.to_be_bytes()[1..],
        &[typ, flags],
        &sid.to_be_bytes(),
        payload,
    ]
    .concat()
}

/// A call on stream `sid`: HEADERS of POST, http and two entries never seen
/// (the path, the content-type), its DATA; the response's `:status 200`, its
/// DATA and trailers (`grpc-status: 0` as a literal).
fn call(h2: &mut H2, sid: u32, request: &[u8], response: &[u8], out: &mut Vec<Message>) {
    let c = Direction::ClientToServer;
    let s = Direction::ServerToClient;
    let ts = u64::from(sid) * 1000;
    let mut feed = |d, b: Vec<u8>| h2.feed(d, &b, b.len() as u64, ts, out);
    feed(c, frame(1, 4, sid, &[0x83, 0x86, 0xbe, 0xbf]));
    feed(c, frame(0, 1, sid, &grpc(request)));
    feed(s, frame(1, 4, sid, &[0x88]));
    feed(s, frame(0, 0, sid, &grpc(response)));
    let trailers = [&[0x40, 11][..], b"grpc-status", &[1], b"0"].concat();
    feed(s, frame(1, 5, sid, &trailers));
}

fn create_request() -> Vec<u8> {
    let sandbox_md = [
        field(0x0a, b"mynginx-trace-test"),
        field(0x12, b"4e7c4f86-784a-4707-85d8-5e5ffec5ca0c"),
        field(0x1a, b"default"),
        vec![0x20, 0x00],
    ]
    .concat();
    let container = field(0x0a, &field(0x0a, b"mynginx-trace-test"));
    [
        field(
            0x0a,
            b"d70f586458754f62c5018690dde3dedcb0cb4fe9a8033840c26dbebf40127923",
        ),
        field(0x12, &container),
        field(0x1a, &field(0x0a, &sandbox_md)),
    ]
    .concat()
}

fn cri_methods(out: &[Message]) -> Vec<(Part, String, Option<String>)> {
    out.iter()
        .map(|m| {
            (
                m.part,
                m.grpc_method.clone().unwrap_or_default(),
                m.cri.as_ref().and_then(|c| c.container_id.clone()),
            )
        })
        .collect()
}

#[test]
fn a_bare_id_call_naming_the_created_container_is_its_start() {
    let mut h2 = H2::new(false, Config::default());
    let mut out = Vec::new();
    call(
        &mut h2,
        1,
        &create_request(),
        &field(0x0a, ID.as_bytes()),
        &mut out,
    );
    // ContainerStatus of another container: a bare id too, not created here.
    call(&mut h2, 3, &field(0x0a, OTHER.as_bytes()), &[], &mut out);
    call(&mut h2, 5, &field(0x0a, ID.as_bytes()), &[], &mut out);
    // Once started, the next bare id naming it (a stop, a status) is not a start.
    call(&mut h2, 7, &field(0x0a, ID.as_bytes()), &[], &mut out);
    let got = cri_methods(&out);
    let id = Some(ID.to_owned());
    assert_eq!(got[0], (Part::Request, "CreateContainer".into(), None));
    assert_eq!(
        got[1],
        (Part::Response, "CreateContainer".into(), id.clone())
    );
    assert_eq!(got[2].1, "");
    assert_eq!(got[4], (Part::Request, "StartContainer".into(), id.clone()));
    assert_eq!(got[5].1, "StartContainer");
    assert!(out[4].inferred.iter().any(|i| i == "path"), "{:?}", out[4]);
    assert_eq!(got[6].1, "", "{got:?}");
    assert_eq!(got.len(), 8, "{got:?}");
}
