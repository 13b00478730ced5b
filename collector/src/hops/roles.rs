//! Deciding which side of a connection is the client.
//!
//! In order of strength: what the side's decoded bytes tell (it sent a request or
//! a response: on a connection joined in its middle the first to send may be a
//! server delivering a watch event, so this overrides a role locked by that
//! guess), or else what another side's bytes told (the opposite for the other
//! endpoint); a role already used in a hop; a hint for the side's own endpoint
//! (`connect` → client, `accept` → server, TCP `SYN_SENT`/`SYN_RECV` →
//! `ESTABLISHED`); the opposite of a hint for another endpoint; the ports (a
//! listening port against an ephemeral one); and last, data: the endpoint seen
//! sending first is the client, every other one the server (a lone side that
//! only received so far is a server: its unseen peer spoke first).

use super::endpoint::LocalId;
use super::run::Direction;
use super::side::{Role, Side};

/// A role learnt for an endpoint (node + local end) of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleHint {
    pub node: String,
    pub local_id: LocalId,
    pub role: Role,
}

fn same_endpoint(side: &Side, node: &str, local_id: &LocalId) -> bool {
    side.ident.node == node && &side.local_id == local_id
}

/// Where Linux picks a connecting socket's port unless told otherwise
/// (`net.ipv4.ip_local_port_range`'s default starts here); listening ports
/// — 6443, 2379, 10250, NodePorts up to 32767 — lie below.
const EPHEMERAL_PORTS_FROM: u32 = 32768;

/// A TCP side whose local port is below the ephemeral range while its
/// peer's is in it is the server (and the other way round): what tells the
/// roles of a connection joined in its middle before any byte does — its
/// first records may be the server's, and a TLS record says nothing.
fn by_ports(side: &Side) -> Option<Role> {
    let (local, remote) = (side.ident.local.port, side.ident.remote.port);
    let listening = |p: u32| p != 0 && p < EPHEMERAL_PORTS_FROM;
    match (listening(local), listening(remote)) {
        (true, false) if remote != 0 => Some(Role::Server),
        (false, true) if local != 0 => Some(Role::Client),
        _ => None,
    }
}

/// The role of each side, `None` while nothing tells.
pub fn resolve(sides: &[Side], hints: &[RoleHint]) -> Vec<Option<Role>> {
    // The first side whose bytes told its role: the other endpoint's sides
    // are the opposite, whatever an earlier guess locked them in.
    let told = sides.iter().find_map(|s| {
        s.decoder
            .role()
            .map(|r| (s.ident.node.as_str(), &s.local_id, r))
    });
    let strong: Vec<Option<Role>> = sides
        .iter()
        .map(|side| {
            // What the bytes tell overrides a role locked by an earlier
            // guess (the first sender of a connection joined in its middle).
            side.decoder
                .role()
                .or_else(|| {
                    told.map(|(node, local_id, r)| {
                        if same_endpoint(side, node, local_id) {
                            r
                        } else {
                            r.opposite()
                        }
                    })
                })
                .or(side.locked_role)
                .or_else(|| {
                    hints
                        .iter()
                        .find(|h| same_endpoint(side, &h.node, &h.local_id))
                        .map(|h| h.role)
                })
                .or_else(|| {
                    hints
                        .iter()
                        .find(|h| !same_endpoint(side, &h.node, &h.local_id))
                        .map(|h| h.role.opposite())
                })
                .or_else(|| by_ports(side))
        })
        .collect();
    // A locked side tells the others what they are, like a hint.
    let anchor = sides
        .iter()
        .zip(&strong)
        .find_map(|(s, r)| r.map(|r| (s.ident.node.as_str(), &s.local_id, r)));
    let first_sender = sides
        .iter()
        .filter_map(|s| match s.first_data {
            Some((Direction::Send, arrival)) => Some((arrival, s)),
            _ => None,
        })
        .min_by_key(|(arrival, _)| *arrival)
        .map(|(_, s)| (s.ident.node.as_str(), &s.local_id));
    sides
        .iter()
        .zip(strong)
        .map(|(side, strong)| {
            if strong.is_some() {
                return strong;
            }
            if let Some((node, local_id, role)) = anchor {
                return Some(if same_endpoint(side, node, local_id) {
                    role
                } else {
                    role.opposite()
                });
            }
            side.first_data?;
            Some(match first_sender {
                Some((node, local_id)) if same_endpoint(side, node, local_id) => Role::Client,
                _ => Role::Server,
            })
        })
        .collect()
}

/// The side to pair for `role`: one that carried data, else the first one.
pub fn pick(sides: &[Side], roles: &[Option<Role>], role: Role) -> Option<usize> {
    let mut candidates = roles
        .iter()
        .enumerate()
        .filter(|(_, r)| **r == Some(role))
        .map(|(i, _)| i);
    let first = candidates.clone().next();
    candidates.find(|&i| sides[i].data_seen()).or(first)
}
