//! Connection identity: endpoints, the canonical [`ConnectionKey`] both ends of a
//! connection share, and the per-node view of one socket.

use ktrail_proto::v1::{FdKind, Socket, TcpStateChange};

/// One end of an inet connection (`addr` normalised), or a unix socket's path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: String,
    pub port: u32,
}

impl Endpoint {
    pub fn new(addr: impl Into<String>, port: u32) -> Self {
        Self {
            addr: addr.into(),
            port,
        }
    }
}

/// The same value on both agents that see a connection.
///
/// Inet: the two endpoints in sorted order, so client and server views agree.
/// Loopback connections never leave their node, so the node is part of the key
/// (`scope`): two nodes' `127.0.0.1:5000 ↔ 127.0.0.1:40000` are different
/// connections. Unix: the node plus the two socket inodes, sorted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionKey {
    Inet {
        scope: Option<String>,
        a: Endpoint,
        b: Endpoint,
    },
    Unix {
        node: String,
        a: u64,
        b: u64,
    },
}

impl ConnectionKey {
    /// Builds the key of an inet connection from either end's point of view.
    pub fn inet(node: &str, local: &Endpoint, remote: &Endpoint) -> Self {
        let scope =
            (is_loopback(&local.addr) || is_loopback(&remote.addr)).then(|| node.to_owned());
        let (a, b) = if local <= remote {
            (local.clone(), remote.clone())
        } else {
            (remote.clone(), local.clone())
        };
        Self::Inet { scope, a, b }
    }

    pub fn unix(node: &str, inode: u64, peer_inode: u64) -> Self {
        Self::Unix {
            node: node.to_owned(),
            a: inode.min(peer_inode),
            b: inode.max(peer_inode),
        }
    }

    /// `Hop.protocol` for connections with this key.
    pub fn protocol(&self) -> &'static str {
        match self {
            Self::Inet { .. } => "tcp",
            Self::Unix { .. } => "unix",
        }
    }
}

/// What identifies a socket's local end on its node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LocalId {
    Inet(Endpoint),
    Unix(u64),
}

/// One node's view of a connected socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketView {
    pub key: ConnectionKey,
    pub local_id: LocalId,
    pub local: Endpoint,
    pub remote: Endpoint,
}

/// `::ffff:10.0.0.1` and `10.0.0.1` are the same peer; IPv6 text is lower-cased.
pub fn normalize_addr(addr: &str) -> String {
    let lower = addr.trim().to_ascii_lowercase();
    match lower.strip_prefix("::ffff:") {
        Some(v4) if v4.contains('.') => v4.to_owned(),
        _ => lower,
    }
}

fn is_loopback(addr: &str) -> bool {
    addr.starts_with("127.") || addr == "::1"
}

fn is_unspecified(addr: &str) -> bool {
    addr.is_empty() || addr == "0.0.0.0" || addr == "::"
}

/// The connection a syscall's socket belongs to, or `None` when the fd is not a
/// connected inet/unix socket (files, listening or unconnected sockets).
pub fn socket_view(node: &str, socket: &Socket) -> Option<SocketView> {
    if socket.kind != FdKind::Socket as i32 {
        return None;
    }
    match socket.family.as_str() {
        "inet" | "inet6" => inet_view(
            node,
            &socket.local_addr,
            socket.local_port,
            &socket.remote_addr,
            socket.remote_port,
        ),
        "unix" => {
            if socket.inode == 0 || socket.peer_inode == 0 {
                return None;
            }
            Some(SocketView {
                key: ConnectionKey::unix(node, socket.inode, socket.peer_inode),
                local_id: LocalId::Unix(socket.inode),
                local: Endpoint::new(socket.local_addr.clone(), 0),
                remote: Endpoint::new(socket.remote_addr.clone(), 0),
            })
        }
        _ => None,
    }
}

/// The connection a TCP state change is about.
pub fn tcp_state_view(node: &str, change: &TcpStateChange) -> Option<SocketView> {
    inet_view(
        node,
        &change.local_addr,
        change.local_port,
        &change.remote_addr,
        change.remote_port,
    )
}

fn inet_view(
    node: &str,
    local_addr: &str,
    local_port: u32,
    remote_addr: &str,
    remote_port: u32,
) -> Option<SocketView> {
    let local = Endpoint::new(normalize_addr(local_addr), local_port);
    let remote = Endpoint::new(normalize_addr(remote_addr), remote_port);
    if local.port == 0 || remote.port == 0 || is_unspecified(&remote.addr) {
        return None;
    }
    Some(SocketView {
        key: ConnectionKey::inet(node, &local, &remote),
        local_id: LocalId::Inet(local.clone()),
        local,
        remote,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_of_a_tcp_connection_share_a_key() {
        let client = socket_view(
            "w1",
            &Socket::inet(("192.168.56.20", 54321), ("192.168.56.10", 8080)),
        );
        let server = socket_view(
            "cp",
            &Socket::inet(("192.168.56.10", 8080), ("192.168.56.20", 54321)),
        );
        let (client, server) = (client.expect("client view"), server.expect("server view"));
        assert_eq!(client.key, server.key);
        assert_ne!(client.local_id, server.local_id);
    }

    #[test]
    fn mapped_ipv4_matches_plain_ipv4() {
        let mut s = Socket::inet(("::ffff:10.0.0.1", 80), ("::FFFF:10.0.0.2", 4000));
        s.family = "inet6".into();
        let v6 = socket_view("n", &s).expect("view");
        let v4 =
            socket_view("m", &Socket::inet(("10.0.0.2", 4000), ("10.0.0.1", 80))).expect("view");
        assert_eq!(v6.key, v4.key);
    }

    #[test]
    fn loopback_connections_are_scoped_to_their_node() {
        let a = socket_view(
            "n1",
            &Socket::inet(("127.0.0.1", 5000), ("127.0.0.1", 40000)),
        );
        let b = socket_view(
            "n2",
            &Socket::inet(("127.0.0.1", 40000), ("127.0.0.1", 5000)),
        );
        assert_ne!(a.expect("a").key, b.expect("b").key);
    }

    #[test]
    fn unconnected_and_non_sockets_are_ignored() {
        assert!(socket_view("n", &Socket::inet(("0.0.0.0", 8080), ("0.0.0.0", 0))).is_none());
        let mut file = Socket::inet(("1.1.1.1", 1), ("2.2.2.2", 2));
        file.kind = FdKind::File as i32;
        assert!(socket_view("n", &file).is_none());
        let unix = Socket {
            kind: FdKind::Socket as i32,
            family: "unix".into(),
            inode: 7,
            ..Default::default()
        };
        assert!(socket_view("n", &unix).is_none());
    }

    #[test]
    fn unix_pairs_on_sorted_inodes() {
        let sock = |inode, peer| Socket {
            kind: FdKind::Socket as i32,
            family: "unix".into(),
            inode,
            peer_inode: peer,
            ..Default::default()
        };
        let a = socket_view("n", &sock(10, 11)).expect("a");
        let b = socket_view("n", &sock(11, 10)).expect("b");
        assert_eq!(a.key, b.key);
        assert_eq!(a.key.protocol(), "unix");
    }
}
