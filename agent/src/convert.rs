//! Typed kernel records → protocol events, with node time and names filled in.

use std::net::Ipv6Addr;

use ktrail_agent_common::{FdKind, SocketInfo, AF_INET, AF_INET6, AF_UNIX, FLAG_PAYLOAD_TRUNCATED};
use ktrail_proto::v1::{self as pb, event::Body};

use crate::{clock::WallClock, decode::KernelRecord};

pub fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

pub fn addr_string(family: u16, raw: &[u8; 16]) -> String {
    match family {
        AF_INET => ipv4_string([raw[0], raw[1], raw[2], raw[3]]),
        AF_INET6 => Ipv6Addr::from(*raw).to_string(),
        _ => String::new(),
    }
}

/// Dotted quad, as `Ipv4Addr`'s `Display` writes it, without the formatting machinery
/// (two addresses per socket event: 10 % of the agent's CPU through `fmt`).
fn ipv4_string(octets: [u8; 4]) -> String {
    let mut out = String::with_capacity(15);
    for (i, octet) in octets.into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

fn family_name(family: u16) -> &'static str {
    match family {
        AF_INET => "inet",
        AF_INET6 => "inet6",
        AF_UNIX => "unix",
        _ => "",
    }
}

fn socket(kind: FdKind, s: &SocketInfo) -> Option<pb::Socket> {
    if kind == FdKind::None {
        return None;
    }
    Some(pb::Socket {
        kind: match kind {
            FdKind::Socket => pb::FdKind::Socket,
            FdKind::File => pb::FdKind::File,
            FdKind::None => pb::FdKind::None,
        } as i32,
        family: family_name(s.family).into(),
        local_addr: addr_string(s.family, &s.local_addr),
        local_port: s.local_port as u32,
        remote_addr: addr_string(s.family, &s.remote_addr),
        remote_port: s.remote_port as u32,
        inode: s.inode,
        peer_inode: s.peer_inode,
    })
}

pub fn errno_name(errno: i64) -> String {
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
        _ => return format!("E{errno}"),
    };
    name.to_string()
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

pub fn to_proto(record: KernelRecord, clock: &WallClock) -> pb::Event {
    let h = *record.header();
    let body = match record {
        KernelRecord::Syscall(mut s) => Body::Syscall(pb::SyscallEvent {
            name: s.syscall.name().into(),
            fd: s.fd,
            ret: s.ret,
            errno: if s.ret < 0 {
                errno_name(-s.ret)
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
                ktrail_protocols::raw_redact::buffer(&mut s.payload);
                s.payload.into()
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
                ipv4_string([n, n, n, n]),
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
