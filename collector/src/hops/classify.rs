//! Which syscalls move data, open or close a connection.

use ktrail_proto::v1::{event::Body, Event, FdKind};

/// What a syscall means for hop assembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallClass {
    Send,
    Recv,
    Connect,
    Accept,
    Close,
    Other,
}

/// Classifies a syscall by its strace name.
pub fn classify(name: &str) -> SyscallClass {
    match name {
        "write" | "writev" | "pwrite64" | "pwritev" | "pwritev2" | "send" | "sendto"
        | "sendmsg" | "sendmmsg" | "sendfile" | "sendfile64" | "splice" | "tls_write" => {
            SyscallClass::Send
        }
        "read" | "readv" | "pread64" | "preadv" | "preadv2" | "recv" | "recvfrom" | "recvmsg"
        | "recvmmsg" | "tls_read" => SyscallClass::Recv,
        "connect" => SyscallClass::Connect,
        "accept" | "accept4" => SyscallClass::Accept,
        "close" => SyscallClass::Close,
        _ => SyscallClass::Other,
    }
}

/// Plaintext captured inside a TLS library (e.g. Go's crypto/tls) rather than
/// at the syscall, which carries the same bytes encrypted.
pub fn is_tls_plaintext(name: &str) -> bool {
    name.starts_with("tls_")
}

/// Whether an event can contribute to a hop or a flow: a syscall on an
/// inet/unix socket, a TCP state change, or a process event (flows follow
/// process lineage). Everything else can skip the hop task.
pub fn is_relevant(event: &Event) -> bool {
    match &event.body {
        Some(Body::TcpState(_)) => true,
        Some(Body::Exec(_) | Body::Fork(_) | Body::Exit(_)) => true,
        Some(Body::Syscall(sc)) => {
            classify(&sc.name) != SyscallClass::Other
                && sc.socket.as_ref().is_some_and(|s| {
                    s.kind == FdKind::Socket as i32
                        && matches!(s.family.as_str(), "inet" | "inet6" | "unix")
                })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktrail_proto::v1::{ProcessExit, Socket, SyscallEvent};

    #[test]
    fn names_map_to_classes() {
        assert_eq!(classify("write"), SyscallClass::Send);
        assert_eq!(classify("recvfrom"), SyscallClass::Recv);
        assert_eq!(classify("accept4"), SyscallClass::Accept);
        assert_eq!(classify("openat"), SyscallClass::Other);
    }

    #[test]
    fn only_socket_syscalls_tcp_states_and_process_events_are_relevant() {
        let mut ev = Event {
            body: Some(Body::Syscall(SyscallEvent {
                name: "write".into(),
                socket: Some(Socket {
                    kind: FdKind::Socket as i32,
                    family: "inet".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(is_relevant(&ev));
        if let Some(Body::Syscall(sc)) = &mut ev.body {
            sc.socket = None;
        }
        assert!(!is_relevant(&ev));
        ev.body = Some(Body::Exit(ProcessExit { group_dead: true }));
        assert!(is_relevant(&ev), "process events feed flows");
    }
}
