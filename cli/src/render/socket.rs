//! What an fd is, the way `strace -yy` annotates it: `3<TCP:a:1->b:2>`.

use ktrail_proto::v1::{FdKind, Socket};

fn inet_endpoint(addr: &str, port: u32) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// `TCP:192.168.56.20:54321->192.168.56.10:8080`, `UNIX:/run/x.sock:12->13`,
/// or `None` when there is nothing to say (not a socket).
pub fn socket_label(s: &Socket) -> Option<String> {
    if s.kind != FdKind::Socket as i32 {
        return None;
    }
    match s.family.as_str() {
        "inet" | "inet6" => {
            let proto = if s.family == "inet6" { "TCPv6" } else { "TCP" };
            let local = inet_endpoint(&s.local_addr, s.local_port);
            if s.remote_port == 0 {
                Some(format!("{proto}:{local}"))
            } else {
                Some(format!(
                    "{proto}:{local}->{}",
                    inet_endpoint(&s.remote_addr, s.remote_port)
                ))
            }
        }
        "unix" => {
            let path = [&s.local_addr, &s.remote_addr]
                .into_iter()
                .find(|p| !p.is_empty())
                .map(|p| format!("{p}:"))
                .unwrap_or_default();
            Some(format!("UNIX:{path}{}->{}", s.inode, s.peer_inode))
        }
        other => Some(format!("socket:{other}")),
    }
}

/// `fd` with its socket, e.g. `3<TCP:…>`.
pub fn fd_text(fd: impl std::fmt::Display, socket: Option<&Socket>) -> String {
    match socket.and_then(socket_label) {
        Some(label) => format!("{fd}<{label}>"),
        None => fd.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let tcp = Socket::inet(("192.168.56.20", 54321), ("192.168.56.10", 8080));
        assert_eq!(
            fd_text(3, Some(&tcp)),
            "3<TCP:192.168.56.20:54321->192.168.56.10:8080>"
        );
        let v6 = Socket {
            family: "inet6".into(),
            local_addr: "::1".into(),
            remote_port: 0,
            ..tcp.clone()
        };
        assert_eq!(socket_label(&v6).as_deref(), Some("TCPv6:[::1]:54321"));
        let unix = Socket {
            kind: FdKind::Socket as i32,
            family: "unix".into(),
            remote_addr: "/run/containerd.sock".into(),
            inode: 12,
            peer_inode: 13,
            ..Socket::default()
        };
        assert_eq!(
            socket_label(&unix).as_deref(),
            Some("UNIX:/run/containerd.sock:12->13")
        );
        let file = Socket {
            kind: FdKind::File as i32,
            ..Socket::default()
        };
        assert_eq!(fd_text(4, Some(&file)), "4");
    }
}
