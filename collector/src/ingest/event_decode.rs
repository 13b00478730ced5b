//! An agent's event decoded by hand when it is a syscall (nearly all are), exactly as
//! prost decodes it, and by prost otherwise. prost's generic path slices the received
//! `Bytes` for every string field (two atomic reference-count updates each) and goes
//! through its merge machinery per field: decoding was over a quarter of a saturated
//! collector's CPU. Here strings are copied from a plain slice; only the payload is a
//! slice of the received message, as before.
//!
//! Anything outside the common shape (another body, a field repeated that prost would
//! merge, an unknown field, a wrong wire type, bad UTF-8, a truncation) goes to prost,
//! so what prost accepts, rejects or merges stays exactly as it was.

use bytes::Bytes;
use ktrail_proto::v1::{event::Body, Event, Socket, SyscallEvent};
use prost::encoding::{decode_key, decode_varint, WireType};
use prost::Message;

/// Decodes one `Event` from its encoding.
pub fn decode_event(bytes: &Bytes) -> Result<Event, prost::DecodeError> {
    match syscall_event(bytes) {
        Some(event) => Ok(event),
        None => Event::decode(bytes.clone()),
    }
}

/// The event when it is in the shape agents send syscalls in; `None` for anything else.
fn syscall_event(bytes: &Bytes) -> Option<Event> {
    let mut rest: &[u8] = bytes;
    let mut event = Event::default();
    while !rest.is_empty() {
        match decode_key(&mut rest).ok()? {
            (1, WireType::Varint) => event.seq = varint(&mut rest)?,
            (2, WireType::Varint) => event.timestamp_unix_ns = varint(&mut rest)?,
            (3, WireType::Varint) => event.pid = varint(&mut rest)? as u32,
            (4, WireType::Varint) => event.tid = varint(&mut rest)? as u32,
            (5, WireType::LengthDelimited) => event.comm = string(&mut rest)?,
            (6, WireType::Varint) => event.cpu = varint(&mut rest)? as u32,
            // A second body would be merged into the first: prost's job.
            (10, WireType::LengthDelimited) if event.body.is_none() => {
                let body = delimited(&mut rest)?;
                event.body = Some(Body::Syscall(syscall(bytes, body)?));
            }
            _ => return None,
        }
    }
    Some(event)
}

/// `body` lies within `whole`, whose slice the payload becomes.
fn syscall(whole: &Bytes, mut body: &[u8]) -> Option<SyscallEvent> {
    let mut sc = SyscallEvent::default();
    while !body.is_empty() {
        match decode_key(&mut body).ok()? {
            (1, WireType::LengthDelimited) => sc.name = string(&mut body)?,
            (2, WireType::Varint) => sc.fd = varint(&mut body)? as i32,
            (3, WireType::Varint) => sc.ret = varint(&mut body)? as i64,
            (4, WireType::LengthDelimited) => sc.errno = string(&mut body)?,
            (5, WireType::Varint) => sc.duration_ns = varint(&mut body)?,
            (6, WireType::Varint) => sc.requested = varint(&mut body)?,
            (7, WireType::LengthDelimited) if sc.socket.is_none() => {
                sc.socket = Some(socket(delimited(&mut body)?)?);
            }
            // An empty payload gives an empty `Bytes`, as prost's does.
            (8, WireType::LengthDelimited) => sc.data = whole.slice_ref(delimited(&mut body)?),
            (9, WireType::Varint) => sc.truncated = varint(&mut body)? != 0,
            _ => return None,
        }
    }
    Some(sc)
}

fn socket(mut body: &[u8]) -> Option<Socket> {
    let mut s = Socket::default();
    while !body.is_empty() {
        match decode_key(&mut body).ok()? {
            (1, WireType::Varint) => s.kind = varint(&mut body)? as i32,
            (2, WireType::LengthDelimited) => s.family = string(&mut body)?,
            (3, WireType::LengthDelimited) => s.local_addr = string(&mut body)?,
            (4, WireType::Varint) => s.local_port = varint(&mut body)? as u32,
            (5, WireType::LengthDelimited) => s.remote_addr = string(&mut body)?,
            (6, WireType::Varint) => s.remote_port = varint(&mut body)? as u32,
            (7, WireType::Varint) => s.inode = varint(&mut body)?,
            (8, WireType::Varint) => s.peer_inode = varint(&mut body)?,
            _ => return None,
        }
    }
    Some(s)
}

fn varint(rest: &mut &[u8]) -> Option<u64> {
    decode_varint(rest).ok()
}

/// A length-delimited field's bytes.
fn delimited<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(varint(rest)?).ok()?;
    let (field, after) = rest.split_at_checked(len)?;
    *rest = after;
    Some(field)
}

fn string(rest: &mut &[u8]) -> Option<String> {
    std::str::from_utf8(delimited(rest)?)
        .ok()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktrail_proto::v1::{ProcessExec, ProcessInfo, TcpStateChange};
    use prost::encoding::{encode_key, encode_varint};

    fn syscall_events() -> Vec<Event> {
        let full = Event {
            seq: u64::MAX,
            timestamp_unix_ns: 1_700_000_000_123_456_789,
            pid: u32::MAX,
            tid: 4343,
            comm: "kube-apiserver".into(),
            cpu: 1,
            body: Some(Body::Syscall(SyscallEvent {
                name: "write".into(),
                fd: -1,
                ret: -111,
                errno: "ECONNREFUSED".into(),
                duration_ns: 1500,
                requested: 4096,
                socket: Some(Socket {
                    kind: 1,
                    family: "inet6".into(),
                    local_addr: "fe80::1".into(),
                    local_port: 6443,
                    remote_addr: "2001:db8::ff".into(),
                    remote_port: 65535,
                    inode: u64::MAX,
                    peer_inode: 7,
                }),
                data: Bytes::from(vec![0xab; 4096]),
                truncated: true,
            })),
        };
        let mut events = vec![full.clone()];
        // Defaults everywhere a field can be left out, a socket without fields, no
        // payload, a name in UTF-8 beyond ASCII, a negative enum value.
        events.push(Event {
            body: Some(Body::Syscall(SyscallEvent::default())),
            ..Event::default()
        });
        events.push(Event {
            comm: "kübelet-✓".into(),
            body: Some(Body::Syscall(SyscallEvent {
                socket: Some(Socket {
                    kind: -3,
                    ..Socket::default()
                }),
                ..SyscallEvent::default()
            })),
            ..full.clone()
        });
        events.push(Event {
            seq: 1,
            ..Event::default()
        });
        events
    }

    fn other_events() -> Vec<Event> {
        vec![
            Event {
                seq: 9,
                body: Some(Body::Exec(ProcessExec {
                    filename: "/usr/bin/kubelet".into(),
                    old_pid: 3,
                    process: Some(ProcessInfo {
                        pid: 3,
                        ..ProcessInfo::default()
                    }),
                })),
                ..Event::default()
            },
            Event {
                seq: 10,
                body: Some(Body::TcpState(TcpStateChange {
                    new_state: "ESTABLISHED".into(),
                    ..TcpStateChange::default()
                })),
                ..Event::default()
            },
        ]
    }

    /// Both decoders on `bytes`: equal events, or both an error.
    fn assert_as_prost(bytes: &[u8]) {
        let bytes = Bytes::copy_from_slice(bytes);
        let ours = decode_event(&bytes);
        match Event::decode(bytes.clone()) {
            Ok(expected) => assert_eq!(ours.expect("prost decodes it"), expected),
            Err(_) => assert!(ours.is_err(), "prost rejects {bytes:?}, we gave {ours:?}"),
        }
    }

    #[test]
    fn syscalls_take_the_hand_decoder_and_decode_as_prost_does() {
        for event in syscall_events() {
            let bytes = Bytes::from(event.encode_to_vec());
            assert!(syscall_event(&bytes).is_some(), "hand-decoded: {event:?}");
            assert_eq!(decode_event(&bytes).expect("decodes"), event);
        }
    }

    #[test]
    fn the_payload_is_a_slice_of_the_received_bytes() {
        let bytes = Bytes::from(syscall_events()[0].encode_to_vec());
        let Some(Body::Syscall(sc)) = decode_event(&bytes).expect("decodes").body else {
            panic!("a syscall");
        };
        assert!(bytes.as_ptr_range().contains(&sc.data.as_ptr()), "copied");
    }

    #[test]
    fn other_shapes_go_to_prost_with_the_same_result() {
        for event in other_events() {
            let bytes = Bytes::from(event.encode_to_vec());
            assert!(syscall_event(&bytes).is_none());
            assert_eq!(decode_event(&bytes).expect("decodes"), event);
        }
        let sc = syscall_events()[0].encode_to_vec();
        let field = |tag: u32, wire: WireType, payload: &[u8]| {
            let mut b = Vec::new();
            encode_key(tag, wire, &mut b);
            if wire == WireType::LengthDelimited {
                encode_varint(payload.len() as u64, &mut b);
            }
            b.extend_from_slice(payload);
            b
        };
        let socket = Socket {
            local_port: 1,
            ..Socket::default()
        }
        .encode_to_vec();
        let second_body = SyscallEvent {
            name: "read".into(),
            socket: Some(Socket {
                remote_port: 2,
                ..Socket::default()
            }),
            ..SyscallEvent::default()
        }
        .encode_to_vec();
        let cases: Vec<Vec<u8>> = vec![
            // A second syscall body and a second socket: prost merges them.
            [
                sc.clone(),
                field(10, WireType::LengthDelimited, &second_body),
            ]
            .concat(),
            field(
                10,
                WireType::LengthDelimited,
                &[
                    field(7, WireType::LengthDelimited, &socket),
                    field(7, WireType::LengthDelimited, &second_body[..0]),
                ]
                .concat(),
            ),
            // Unknown fields, skipped by prost.
            [sc.clone(), field(99, WireType::Varint, &[5])].concat(),
            [sc.clone(), field(20, WireType::LengthDelimited, b"x")].concat(),
            // A known tag with the wrong wire type, and invalid UTF-8: prost errors.
            [sc.clone(), field(5, WireType::Varint, &[1])].concat(),
            [
                sc.clone(),
                field(5, WireType::LengthDelimited, &[0xff, 0xfe]),
            ]
            .concat(),
            // Scalars and strings repeated: the last one wins.
            [sc.clone(), field(5, WireType::LengthDelimited, b"kubelet")].concat(),
            [sc.clone(), field(2, WireType::Varint, &[0x7f])].concat(),
        ];
        for case in &cases {
            assert_as_prost(case);
        }
    }

    #[test]
    fn every_truncation_decodes_or_fails_as_with_prost() {
        for event in syscall_events().into_iter().chain(other_events()) {
            let bytes = event.encode_to_vec();
            for cut in 0..bytes.len() {
                assert_as_prost(&bytes[..cut]);
            }
        }
    }
}
