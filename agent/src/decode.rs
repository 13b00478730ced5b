//! Ring-buffer bytes → typed kernel records. Type tags go through `TryFrom`; a record
//! too short for its kind, or with an unknown tag, is an error the caller counts.

use std::mem::size_of;

use ktrail_agent_common::{
    EventHeader, EventKind, FdKind, ProcessEvent, SocketInfo, Syscall, SyscallEvent, TcpStateEvent,
    UnknownTag, MAX_FILENAME, MAX_PAYLOAD,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {need} its kind needs")]
    Short { len: usize, need: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("unknown syscall number {0}")]
    UnknownSyscall(u32),
    #[error("unknown fd kind {0}")]
    UnknownFdKind(u32),
    #[error("payload length {claimed} exceeds the {present} bytes present")]
    BadPayloadLen { claimed: usize, present: usize },
}

/// A syscall record; its payload is a slice of the ring's bytes (copied once, when
/// the event is encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallRecord<'a> {
    pub header: EventHeader,
    pub syscall: Syscall,
    pub fd: i32,
    pub ret: i64,
    pub duration_ns: u64,
    pub requested: u64,
    pub fd_kind: FdKind,
    pub socket: SocketInfo,
    pub flags: u32,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    pub header: EventHeader,
    pub other_pid: u32,
    pub netns: u32,
    pub group_dead: bool,
    pub filename: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelRecord<'a> {
    Syscall(SyscallRecord<'a>),
    Exec(ProcessRecord),
    Fork(ProcessRecord),
    Exit(ProcessRecord),
    TcpState(TcpStateEvent),
}

impl KernelRecord<'_> {
    pub fn header(&self) -> &EventHeader {
        match self {
            Self::Syscall(s) => &s.header,
            Self::Exec(p) | Self::Fork(p) | Self::Exit(p) => &p.header,
            Self::TcpState(t) => &t.header,
        }
    }
}

/// Copies the first `size_of::<T>()` bytes (or fewer, zero-filling) into a `T`.
///
/// SAFETY of the callers: `T` is one of the `#[repr(C)]` plain-data event structs,
/// for which every bit pattern is valid.
fn read_prefix<T: Copy>(bytes: &[u8], zero: T) -> T {
    let mut value = zero;
    let n = bytes.len().min(size_of::<T>());
    // SAFETY: copies at most size_of::<T>() bytes into a T that is plain old data.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), &mut value as *mut T as *mut u8, n);
    }
    value
}

fn need(bytes: &[u8], n: usize) -> Result<(), DecodeError> {
    if bytes.len() < n {
        return Err(DecodeError::Short {
            len: bytes.len(),
            need: n,
        });
    }
    Ok(())
}

pub fn decode(bytes: &[u8]) -> Result<KernelRecord<'_>, DecodeError> {
    need(bytes, size_of::<EventHeader>())?;
    let header: EventHeader = read_prefix(bytes, EventHeader::default());
    let kind =
        EventKind::try_from(header.kind).map_err(|UnknownTag(t)| DecodeError::UnknownKind(t))?;
    match kind {
        EventKind::Syscall => decode_syscall(bytes).map(KernelRecord::Syscall),
        EventKind::ProcessExec => decode_process(bytes).map(KernelRecord::Exec),
        EventKind::ProcessFork => decode_process(bytes).map(KernelRecord::Fork),
        EventKind::ProcessExit => decode_process(bytes).map(KernelRecord::Exit),
        EventKind::TcpState => {
            need(bytes, size_of::<TcpStateEvent>())?;
            Ok(KernelRecord::TcpState(read_prefix(
                bytes,
                TcpStateEvent::default(),
            )))
        }
    }
}

fn decode_syscall(bytes: &[u8]) -> Result<SyscallRecord<'_>, DecodeError> {
    need(bytes, SyscallEvent::HEADER_LEN)?;
    // The fixed part only: the payload follows in `bytes` and is sliced from there,
    // so no 4 KiB struct is built per event.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Fixed {
        header: EventHeader,
        nr: u32,
        fd: i32,
        ret: i64,
        duration_ns: u64,
        requested: u64,
        socket: SocketInfo,
        payload_len: u32,
        flags: u32,
    }
    const _: () = assert!(size_of::<Fixed>() == SyscallEvent::HEADER_LEN);
    let zero = Fixed {
        header: EventHeader::default(),
        nr: 0,
        fd: 0,
        ret: 0,
        duration_ns: 0,
        requested: 0,
        socket: SocketInfo::default(),
        payload_len: 0,
        flags: 0,
    };
    let f: Fixed = read_prefix(bytes, zero);
    let syscall =
        Syscall::try_from(f.nr).map_err(|UnknownTag(t)| DecodeError::UnknownSyscall(t))?;
    let fd_kind = FdKind::try_from(f.socket.fd_kind)
        .map_err(|UnknownTag(t)| DecodeError::UnknownFdKind(t))?;
    let present = bytes.len() - SyscallEvent::HEADER_LEN;
    let claimed = f.payload_len as usize;
    if claimed > present || claimed > MAX_PAYLOAD {
        return Err(DecodeError::BadPayloadLen { claimed, present });
    }
    Ok(SyscallRecord {
        header: f.header,
        syscall,
        fd: f.fd,
        ret: f.ret,
        duration_ns: f.duration_ns,
        requested: f.requested,
        fd_kind,
        socket: f.socket,
        flags: f.flags,
        payload: &bytes[SyscallEvent::HEADER_LEN..SyscallEvent::HEADER_LEN + claimed],
    })
}

fn decode_process(bytes: &[u8]) -> Result<ProcessRecord, DecodeError> {
    need(bytes, size_of::<ProcessEvent>())?;
    let zero = ProcessEvent {
        header: EventHeader::default(),
        other_pid: 0,
        netns: 0,
        group_dead: 0,
        filename_len: 0,
        filename: [0; MAX_FILENAME],
    };
    let p: ProcessEvent = read_prefix(bytes, zero);
    let len = (p.filename_len as usize).min(MAX_FILENAME);
    let name = &p.filename[..len];
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    Ok(ProcessRecord {
        header: p.header,
        other_pid: p.other_pid,
        netns: p.netns,
        group_dead: p.group_dead != 0,
        filename: String::from_utf8_lossy(name).into_owned(),
    })
}

/// Encodings as the kernel programs produce them, for round-trip tests here and
/// synthetic streams in benchmarks.
#[cfg(test)]
pub mod encode {
    use super::*;

    fn as_bytes<T>(v: &T) -> &[u8] {
        // SAFETY: the event structs are repr(C) plain data without implicit padding.
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }
    }

    pub fn syscall(r: &SyscallRecord) -> Vec<u8> {
        let mut ev = Box::new(SyscallEvent {
            header: r.header,
            nr: r.syscall as u32,
            fd: r.fd,
            ret: r.ret,
            duration_ns: r.duration_ns,
            requested: r.requested,
            socket: SocketInfo {
                fd_kind: r.fd_kind as u16,
                ..r.socket
            },
            payload_len: r.payload.len() as u32,
            flags: r.flags,
            payload: [0; MAX_PAYLOAD],
        });
        ev.payload[..r.payload.len()].copy_from_slice(r.payload);
        as_bytes(&*ev)[..ev.wire_len()].to_vec()
    }

    pub fn process(r: &ProcessRecord, kind: EventKind) -> Vec<u8> {
        let mut ev = ProcessEvent {
            header: EventHeader {
                kind: kind as u32,
                ..r.header
            },
            other_pid: r.other_pid,
            netns: r.netns,
            group_dead: r.group_dead as u32,
            filename_len: r.filename.len() as u32,
            filename: [0; MAX_FILENAME],
        };
        ev.filename[..r.filename.len()].copy_from_slice(r.filename.as_bytes());
        as_bytes(&ev).to_vec()
    }

    pub fn tcp_state(ev: &TcpStateEvent) -> Vec<u8> {
        as_bytes(ev).to_vec()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn header(kind: EventKind) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"kubelet");
        EventHeader {
            kind: kind as u32,
            cpu: 1,
            ktime_ns: 123_456_789,
            tgid: 42,
            tid: 43,
            comm,
        }
    }

    /// A socket write of a short HTTP request (also the fixture of syscall_wire.rs).
    pub(crate) fn syscall_record() -> SyscallRecord<'static> {
        SyscallRecord {
            header: header(EventKind::Syscall),
            syscall: Syscall::Write,
            fd: 7,
            ret: 18,
            duration_ns: 1500,
            requested: 18,
            fd_kind: FdKind::Socket,
            socket: SocketInfo {
                fd_kind: FdKind::Socket as u16,
                family: ktrail_agent_common::AF_INET,
                local_port: 54321,
                remote_port: 6443,
                local_addr: [192, 168, 56, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                remote_addr: [192, 168, 56, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                inode: 99,
                peer_inode: 0,
            },
            flags: 0,
            payload: b"GET / HTTP/1.1\r\n\r\n",
        }
    }

    #[test]
    fn syscall_round_trip() {
        let r = syscall_record();
        let bytes = encode::syscall(&r);
        assert_eq!(bytes.len(), SyscallEvent::HEADER_LEN + r.payload.len());
        assert_eq!(decode(&bytes), Ok(KernelRecord::Syscall(r)));
    }

    #[test]
    fn syscall_with_full_payload_round_trips() {
        let mut r = syscall_record();
        let full = [0xab; MAX_PAYLOAD];
        r.payload = &full;
        assert_eq!(decode(&encode::syscall(&r)), Ok(KernelRecord::Syscall(r)));
    }

    #[test]
    fn process_round_trips() {
        for (kind, wrap) in [
            (
                EventKind::ProcessExec,
                KernelRecord::Exec as fn(ProcessRecord) -> KernelRecord<'static>,
            ),
            (EventKind::ProcessFork, KernelRecord::Fork),
            (EventKind::ProcessExit, KernelRecord::Exit),
        ] {
            let r = ProcessRecord {
                header: header(kind),
                other_pid: 77,
                netns: 4026531840,
                group_dead: kind == EventKind::ProcessExit,
                filename: "/usr/bin/kubelet".into(),
            };
            assert_eq!(decode(&encode::process(&r, kind)), Ok(wrap(r)));
        }
    }

    #[test]
    fn tcp_state_round_trips() {
        let ev = TcpStateEvent {
            header: header(EventKind::TcpState),
            skaddr: 0xffff_8880_0000_1000,
            old_state: 2,
            new_state: 1,
            family: 2,
            local_port: 40000,
            remote_port: 6443,
            _pad: 0,
            local_addr: [10; 16],
            remote_addr: [20; 16],
        };
        assert_eq!(
            decode(&encode::tcp_state(&ev)),
            Ok(KernelRecord::TcpState(ev))
        );
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        assert!(matches!(decode(&[]), Err(DecodeError::Short { .. })));
        let mut bytes = encode::syscall(&syscall_record());
        bytes[0] = 99;
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownKind(99)));
        let mut bytes = encode::syscall(&syscall_record());
        bytes.truncate(bytes.len() - 1);
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::BadPayloadLen { .. })
        ));
        let mut r = syscall_record();
        r.syscall = Syscall::Read;
        let mut bytes = encode::syscall(&r);
        bytes[40..44].copy_from_slice(&12345u32.to_le_bytes());
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownSyscall(12345)));
        // Every prefix of a valid record decodes or fails cleanly.
        let full = encode::syscall(&syscall_record());
        for n in 0..full.len() {
            let _ = decode(&full[..n]);
        }
    }
}
