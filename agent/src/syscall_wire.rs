//! A syscall record's `Event` encoding, written straight from the ring's bytes: byte
//! for byte what prost writes for [`convert::to_proto`]'s event (tested below), without
//! building that event first. Syscalls are nearly all of the agent's events, and the
//! intermediate event cost six allocations (name, errno, comm, family, addresses), a
//! copy of the payload and their frees per event: together with prost's encoding, the
//! largest share of the agent's CPU at high rates (BENCHMARKS.md, item 4).
//!
//! Fields go in tag order and a field at its default value is left out, as prost does.

use ktrail_agent_common::{FdKind, SocketInfo, FLAG_PAYLOAD_TRUNCATED};
use ktrail_proto::v1 as pb;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

use crate::convert::{errno_name, family_name, socket_kind, AddrText};
use crate::decode::SyscallRecord;

/// The encoding of the `Event` for `record` without its `seq` (as
/// [`crate::wire::encode_unnumbered`] gives it), named `comm` and stamped
/// `timestamp_unix_ns`. Secret values in the payload are redacted, as in
/// [`convert::to_proto`].
pub fn encode_syscall_event(
    record: &SyscallRecord<'_>,
    comm: &str,
    timestamp_unix_ns: u64,
) -> Vec<u8> {
    let h = &record.header;
    let errno = (record.ret < 0).then(|| errno_name(-record.ret));
    let errno = errno.as_deref().unwrap_or("");
    let socket = SocketFields::of(record.fd_kind, &record.socket);
    let socket_len = socket.as_ref().map(SocketFields::len);
    let syscall_len = text_len(1, record.syscall.name())
        + varint_len(2, record.fd as u64)
        + varint_len(3, record.ret as u64)
        + text_len(4, errno)
        + varint_len(5, record.duration_ns)
        + varint_len(6, record.requested)
        + socket_len.map_or(0, |len| message_len(7, len))
        + text_len(8, record.payload)
        + varint_len(9, u64::from(truncated(record)));
    let event_len = varint_len(2, timestamp_unix_ns)
        + varint_len(3, u64::from(h.tgid))
        + varint_len(4, u64::from(h.tid))
        + text_len(5, comm)
        + varint_len(6, u64::from(h.cpu))
        + message_len(10, syscall_len);

    let mut out = Vec::with_capacity(event_len);
    varint(2, timestamp_unix_ns, &mut out);
    varint(3, u64::from(h.tgid), &mut out);
    varint(4, u64::from(h.tid), &mut out);
    text(5, comm, &mut out);
    varint(6, u64::from(h.cpu), &mut out);
    message_head(10, syscall_len, &mut out);
    text(1, record.syscall.name(), &mut out);
    varint(2, record.fd as u64, &mut out);
    varint(3, record.ret as u64, &mut out);
    text(4, errno, &mut out);
    varint(5, record.duration_ns, &mut out);
    varint(6, record.requested, &mut out);
    if let (Some(socket), Some(len)) = (&socket, socket_len) {
        message_head(7, len, &mut out);
        socket.write(&mut out);
    }
    text(8, record.payload, &mut out);
    // Secret values never leave the node; redaction keeps the length, so the copy is
    // redacted where it lies.
    let payload = out.len() - record.payload.len();
    ktrail_protocols::raw_redact::buffer(&mut out[payload..]);
    varint(9, u64::from(truncated(record)), &mut out);
    debug_assert_eq!(out.len(), event_len);
    out
}

fn truncated(record: &SyscallRecord<'_>) -> bool {
    record.flags & FLAG_PAYLOAD_TRUNCATED != 0
}

/// A `Socket` message's fields, its addresses as text on the stack.
struct SocketFields {
    kind: pb::FdKind,
    family: &'static str,
    local_addr: AddrText,
    local_port: u32,
    remote_addr: AddrText,
    remote_port: u32,
    inode: u64,
    peer_inode: u64,
}

impl SocketFields {
    fn of(kind: FdKind, s: &SocketInfo) -> Option<Self> {
        Some(Self {
            kind: socket_kind(kind)?,
            family: family_name(s.family),
            local_addr: AddrText::of(s.family, &s.local_addr),
            local_port: u32::from(s.local_port),
            remote_addr: AddrText::of(s.family, &s.remote_addr),
            remote_port: u32::from(s.remote_port),
            inode: s.inode,
            peer_inode: s.peer_inode,
        })
    }

    fn len(&self) -> usize {
        varint_len(1, self.kind as u64)
            + text_len(2, self.family)
            + text_len(3, self.local_addr.as_str())
            + varint_len(4, u64::from(self.local_port))
            + text_len(5, self.remote_addr.as_str())
            + varint_len(6, u64::from(self.remote_port))
            + varint_len(7, self.inode)
            + varint_len(8, self.peer_inode)
    }

    fn write(&self, out: &mut Vec<u8>) {
        varint(1, self.kind as u64, out);
        text(2, self.family, out);
        text(3, self.local_addr.as_str(), out);
        varint(4, u64::from(self.local_port), out);
        text(5, self.remote_addr.as_str(), out);
        varint(6, u64::from(self.remote_port), out);
        varint(7, self.inode, out);
        varint(8, self.peer_inode, out);
    }
}

/// A varint-typed field (uint, int32/int64 as prost casts them, enum, bool).
fn varint(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(value, out);
    }
}

fn varint_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

/// A string or bytes field.
fn text(tag: u32, value: impl AsRef<[u8]>, out: &mut Vec<u8>) {
    let value = value.as_ref();
    if !value.is_empty() {
        message_head(tag, value.len(), out);
        out.extend_from_slice(value);
    }
}

fn text_len(tag: u32, value: impl AsRef<[u8]>) -> usize {
    match value.as_ref().len() {
        0 => 0,
        len => message_len(tag, len),
    }
}

/// A message field's key and length (a present message is written even when empty).
fn message_head(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn message_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
    use ktrail_agent_common::{Syscall, AF_INET6, AF_UNIX, MAX_PAYLOAD};
    use prost::Message;

    use super::*;
    use crate::{clock::WallClock, convert, decode::KernelRecord};

    fn record(payload: &[u8]) -> SyscallRecord<'_> {
        SyscallRecord {
            ret: payload.len() as i64,
            requested: payload.len() as u64,
            payload,
            ..crate::decode::tests::syscall_record()
        }
    }

    /// What the reference path (build the event, let prost encode it) gives.
    fn via_prost(record: &SyscallRecord<'_>, clock: &WallClock) -> (Vec<u8>, pb::Event) {
        let event = convert::to_proto(KernelRecord::Syscall(record.clone()), clock);
        (event.encode_to_vec(), event)
    }

    fn assert_same(record: &SyscallRecord<'_>) {
        let clock = WallClock::new(0);
        let (expected, event) = via_prost(record, &clock);
        let direct = encode_syscall_event(record, &event.comm, event.timestamp_unix_ns);
        assert_eq!(
            pb::Event::decode(direct.as_slice()).expect("decodes"),
            event
        );
        assert_eq!(direct, expected, "byte for byte prost's encoding");
    }

    #[test]
    fn a_socket_write_encodes_as_prost_encodes_its_event() {
        assert_same(&record(b"GET /api/v1/pods HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn every_field_at_its_extremes_and_defaults_encodes_as_prost_does() {
        let full = [0x5a; MAX_PAYLOAD];
        let mut r = record(&full);
        r.flags = FLAG_PAYLOAD_TRUNCATED;
        r.socket.inode = u64::MAX;
        r.socket.peer_inode = 1;
        assert_same(&r);
        // A failed call: negative return (int64 as ten varint bytes), errno named.
        let mut r = record(b"");
        r.ret = -i64::from(libc::ECONNREFUSED);
        r.fd = -1;
        assert_same(&r);
        // An errno without a name, and one past any name.
        r.ret = -4095;
        assert_same(&r);
        // Zero everywhere a field can be left out: pid, tid, cpu, ports, fd.
        let mut r = record(b"x");
        r.header.tgid = 0;
        r.header.tid = 0;
        r.header.cpu = 0;
        r.fd = 0;
        r.ret = 0;
        r.duration_ns = 0;
        r.requested = 0;
        r.socket = SocketInfo::default();
        assert_same(&r);
        // No socket at all, and file and unix kinds.
        for (kind, family) in [
            (FdKind::None, 0),
            (FdKind::File, 0),
            (FdKind::Socket, AF_UNIX),
            (FdKind::Socket, AF_INET6),
        ] {
            let mut r = record(b"payload");
            r.fd_kind = kind;
            r.socket.family = family;
            r.socket.local_addr = [0xfe; 16];
            assert_same(&r);
        }
        // Every syscall's name.
        for nr in 0..64 {
            if let Ok(syscall) = Syscall::try_from(nr) {
                let mut r = record(b"y");
                r.syscall = syscall;
                assert_same(&r);
            }
        }
    }

    #[test]
    fn a_secret_in_the_payload_is_redacted_as_on_the_reference_path() {
        let body = br#"{"kind":"Secret","apiVersion":"v1","data":{"password":"aHVudGVyMg=="}}"#;
        let r = record(body);
        assert_same(&r);
        let clock = WallClock::new(0);
        let (_, event) = via_prost(&r, &clock);
        let direct = encode_syscall_event(&r, "kube-apiserver", 1);
        let decoded = pb::Event::decode(direct.as_slice()).expect("decodes");
        let Some(pb::event::Body::Syscall(sc)) = decoded.body else {
            panic!("a syscall event");
        };
        assert!(
            !sc.data.windows(12).any(|w| w == b"aHVudGVyMg=="),
            "value redacted"
        );
        assert_eq!(sc.data.len(), body.len());
        assert_eq!(Some(pb::event::Body::Syscall(sc)), event.body);
    }

    #[test]
    fn the_comm_given_is_the_one_encoded() {
        let r = record(b"z");
        let direct = encode_syscall_event(&r, "kubelet", 7);
        let decoded = pb::Event::decode(direct.as_slice()).expect("decodes");
        assert_eq!(
            (decoded.comm.as_str(), decoded.timestamp_unix_ns),
            ("kubelet", 7)
        );
        let nameless = encode_syscall_event(&r, "", 7);
        assert_eq!(
            pb::Event::decode(nameless.as_slice())
                .expect("decodes")
                .comm,
            ""
        );
    }
}
