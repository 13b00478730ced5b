//! The views of recently seen sockets. Building a [`SocketView`] takes five or six
//! strings (both addresses normalised, the connection key's two endpoints, the
//! local id); the events of one connection carry the same socket again and again,
//! so its view is built once and shared.

use std::hash::BuildHasher;
use std::sync::Arc;

use ktrail_proto::v1::{FdKind, Socket};

use super::endpoint::{socket_view, SocketView};
use crate::fast_hash::FastMap;

/// Sockets remembered; past it the cache starts over (it is only a cache: a
/// forgotten socket's view is built again).
const MAX_SOCKETS: usize = 4096;

/// A socket as an event names it, with the node it was seen on, and its view.
#[derive(Debug)]
struct Seen {
    node: String,
    socket: Socket,
    view: Option<Arc<SocketView>>,
}

#[derive(Debug, Default)]
pub struct ViewCache {
    /// By a hash of the node and the socket's fields; collisions share a slot.
    by_hash: FastMap<u64, Vec<Seen>>,
    len: usize,
    /// Hashes the (node, socket) pairs for `by_hash`.
    hasher: foldhash::fast::RandomState,
}

impl ViewCache {
    /// [`socket_view`], built once per (node, socket).
    pub fn get(&mut self, node: &str, socket: &Socket) -> Option<Arc<SocketView>> {
        if socket.kind != FdKind::Socket as i32 {
            return None;
        }
        let hash = self.hash_of(node, socket);
        if let Some(seen) = self
            .by_hash
            .get(&hash)
            .and_then(|slot| slot.iter().find(|s| s.node == node && s.socket == *socket))
        {
            return seen.view.clone();
        }
        if self.len >= MAX_SOCKETS {
            self.by_hash.clear();
            self.len = 0;
        }
        let view = socket_view(node, socket).map(Arc::new);
        self.by_hash.entry(hash).or_default().push(Seen {
            node: node.to_owned(),
            socket: socket.clone(),
            view: view.clone(),
        });
        self.len += 1;
        view
    }

    fn hash_of(&self, node: &str, socket: &Socket) -> u64 {
        self.hasher.hash_one((
            node,
            socket.family.as_str(),
            socket.local_addr.as_str(),
            socket.local_port,
            socket.remote_addr.as_str(),
            socket.remote_port,
            socket.inode,
            socket.peer_inode,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_the_view_socket_view_builds_and_shares_it() {
        let mut cache = ViewCache::default();
        let socket = Socket::inet(("10.0.0.1", 5000), ("10.0.0.2", 80));
        let first = cache.get("n1", &socket).expect("a connected socket");
        assert_eq!(*first, socket_view("n1", &socket).expect("view"));
        let again = cache.get("n1", &socket).expect("cached");
        assert!(Arc::ptr_eq(&first, &again), "built once");
        // Another node or another socket is another view.
        let loopback = Socket::inet(("127.0.0.1", 5000), ("127.0.0.1", 80));
        let (a, b) = (cache.get("n1", &loopback), cache.get("n2", &loopback));
        assert_ne!(a.expect("n1").key, b.expect("n2").key);
        let other = Socket::inet(("10.0.0.1", 5001), ("10.0.0.2", 80));
        assert_eq!(
            cache.get("n1", &other),
            socket_view("n1", &other).map(Arc::new)
        );
        // Not connected: no view, cached or not.
        let listening = Socket::inet(("0.0.0.0", 8080), ("0.0.0.0", 0));
        assert!(cache.get("n1", &listening).is_none());
        assert!(cache.get("n1", &listening).is_none());
    }

    #[test]
    fn stays_bounded() {
        let mut cache = ViewCache::default();
        for port in 1..=(MAX_SOCKETS as u32 * 2 + 5) {
            let socket = Socket::inet(("10.0.0.1", port), ("10.0.0.2", 80));
            assert!(cache.get("n1", &socket).is_some());
            assert!(cache.len <= MAX_SOCKETS);
        }
        assert_eq!(
            cache.by_hash.values().map(Vec::len).sum::<usize>(),
            cache.len
        );
    }
}
