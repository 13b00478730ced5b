//! Typed kernel records → protocol events, with node time and names filled in.

use std::{borrow::Cow, net::Ipv6Addr};

use ktrail_agent_common::{FdKind, SocketInfo, AF_INET, AF_INET6, AF_UNIX, FLAG_PAYLOAD_TRUNCATED};
use ktrail_proto::v1::{self as pb, event::Body};

use crate::{clock::WallClock, decode::KernelRecord};

pub fn comm_str(comm: &[u8; 16]) -> String {
    comm_text(comm).into_owned()
}

/// The task name up to its NUL, borrowed when it is UTF-8 (it nearly always is).
pub fn comm_text(comm: &[u8; 16]) -> Cow<'_, str> {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end])
}

pub fn addr_string(family: u16, raw: &[u8; 16]) -> String {
    AddrText::of(family, raw).as_str().to_owned()
}

/// An address's text on the stack: the direct encoder (syscall_wire.rs) writes it
/// without allocating a `String` per address.
pub struct AddrText {
    buf: [u8; 46],
    len: usize,
}

impl AddrText {
    pub fn of(family: u16, raw: &[u8; 16]) -> Self {
        let mut text = Self {
            buf: [0; 46],
            len: 0,
        };
        match family {
            AF_INET => text.ipv4([raw[0], raw[1], raw[2], raw[3]]),
            AF_INET6 => {
                use std::io::Write as _;
                let mut cursor = std::io::Cursor::new(&mut text.buf[..]);
                // 45 bytes at most (an IPv4-mapped address in full): always fits.
                let _ = write!(cursor, "{}", Ipv6Addr::from(*raw));
                text.len = cursor.position() as usize;
            }
            _ => {}
        }
        text
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits, dots, colons and hex letters are written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }

    /// Dotted quad, as `Ipv4Addr`'s `Display` writes it, without the formatting
    /// machinery (two addresses per socket event: 10 % of the agent's CPU through `fmt`).
    fn ipv4(&mut self, octets: [u8; 4]) {
        for (i, octet) in octets.into_iter().enumerate() {
            if i > 0 {
                self.push(b'.');
            }
            if octet >= 100 {
                self.push(b'0' + octet / 100);
            }
            if octet >= 10 {
                self.push(b'0' + octet / 10 % 10);
            }
            self.push(b'0' + octet % 10);
        }
    }

    fn push(&mut self, byte: u8) {
        self.buf[self.len] = byte;
        self.len += 1;
    }
}

pub fn family_name(family: u16) -> &'static str {
    match family {
        AF_INET => "inet",
        AF_INET6 => "inet6",
        AF_UNIX => "unix",
        _ => "",
    }
}

/// The protocol's kind of an fd that has a socket message; none for `FdKind::None`.
pub fn socket_kind(kind: FdKind) -> Option<pb::FdKind> {
    match kind {
        FdKind::None => None,
        FdKind::Socket => Some(pb::FdKind::Socket),
        FdKind::File => Some(pb::FdKind::File),
    }
}

fn socket(kind: FdKind, s: &SocketInfo) -> Option<pb::Socket> {
    Some(pb::Socket {
        kind: socket_kind(kind)? as i32,
        family: family_name(s.family).into(),
        local_addr: addr_string(s.family, &s.local_addr),
        local_port: s.local_port as u32,
        remote_addr: addr_string(s.family, &s.remote_addr),
        remote_port: s.remote_port as u32,
        inode: s.inode,
        peer_inode: s.peer_inode,
    })
}

/// The errno's symbolic name; the number after an `E` for one not listed.
pub fn errno_name(errno: i64) -> Cow<'static, str> {
    let name = match errno as i32 {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::EPIPE => "EPIPE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::ENOEXEC => "ENOEXEC",
        libc::ECHILD => "ECHILD",
        _ => return Cow::Owned(format!("E{errno}")),
    };
    Cow::Borrowed(name)
}

/// TCP state names as the kernel's `tcp_states.h` has them.
pub fn tcp_state_name(state: i32) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

pub fn to_proto(record: KernelRecord<'_>, clock: &WallClock) -> pb::Event {
    let h = *record.header();
    let body = match record {
        KernelRecord::Syscall(s) => Body::Syscall(pb::SyscallEvent {
            name: s.syscall.name().into(),
            fd: s.fd,
            ret: s.ret,
            errno: if s.ret < 0 {
                errno_name(-s.ret).into_owned()
            } else {
                String::new()
            },
            duration_ns: s.duration_ns,
            requested: s.requested,
            socket: socket(s.fd_kind, &s.socket),
            truncated: s.flags & FLAG_PAYLOAD_TRUNCATED != 0,
            // Secret values never leave the node: raw buffers and TLS plaintext are stored
            // and shown as captured (`ktrail trace`, `ktrail show --syscalls`).
            data: {
                let mut data = s.payload.to_vec();
                ktrail_protocols::raw_redact::buffer(&mut data);
                data.into()
            },
        }),
        KernelRecord::Exec(p) => Body::Exec(pb::ProcessExec {
            filename: p.filename,
            old_pid: p.other_pid,
            process: None,
        }),
        KernelRecord::Fork(p) => Body::Fork(pb::ProcessFork {
            child_pid: p.other_pid,
        }),
        KernelRecord::Exit(p) => Body::Exit(pb::ProcessExit {
            group_dead: p.group_dead,
        }),
        KernelRecord::TcpState(t) => Body::TcpState(pb::TcpStateChange {
            sock_id: t.skaddr,
            old_state: tcp_state_name(t.old_state).into(),
            new_state: tcp_state_name(t.new_state).into(),
            local_addr: addr_string(t.family, &t.local_addr),
            local_port: t.local_port as u32,
            remote_addr: addr_string(t.family, &t.remote_addr),
            remote_port: t.remote_port as u32,
        }),
    };
    pb::Event {
        seq: 0,
        timestamp_unix_ns: clock.to_unix_ns(h.ktime_ns),
        pid: h.tgid,
        tid: h.tid,
        comm: comm_str(&h.comm),
        cpu: h.cpu,
        body: Some(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        assert_eq!(
            addr_string(AF_INET, &[127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            "127.0.0.1"
        );
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(addr_string(AF_INET6, &v6), "::1");
        // Every octet width and value, against the standard library's text.
        for octets in [[0, 9, 10, 99], [100, 199, 200, 255], [1, 20, 250, 5]] {
            let mut raw = [0u8; 16];
            raw[..4].copy_from_slice(&octets);
            assert_eq!(
                addr_string(AF_INET, &raw),
                std::net::Ipv4Addr::from(octets).to_string()
            );
        }
        for n in 0..=255u8 {
            assert_eq!(
                addr_string(AF_INET, &[n, n, n, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                std::net::Ipv4Addr::from([n; 4]).to_string()
            );
        }
        assert_eq!(errno_name(111), "ECONNREFUSED");
        assert_eq!(errno_name(4095), "E4095");
        assert_eq!(tcp_state_name(1), "ESTABLISHED");
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"kubelet");
        assert_eq!(comm_str(&comm), "kubelet");
    }
}
