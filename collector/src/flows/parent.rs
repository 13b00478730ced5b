//! Which hop of a flow caused another: happens-before inside one process.
//!
//! A process does something because of what it received: work inside a call
//! it is serving (the API server's etcd write inside a POST; containerd's
//! registry requests inside a PullImage), or after a delivery that named the
//! same object (the scheduler's binding after its watch delivered the pod).
//! Watch fan-out follows revisions: an etcd write of revision R is delivered
//! to the API server, which delivers R to every watcher. Only the clocks of
//! one node are ever compared here, so node clock offsets cannot reorder it.

use ktrail_proto::v1::Hop;

use super::keys::{is_call, is_delivery, HopKeys, Key};

/// A hop of a flow with what parenting needs.
#[derive(Clone, Debug)]
pub struct Member {
    pub hop: Hop,
    pub keys: HopKeys,
    /// The key it joined its flow by, if any.
    pub joined_by: Option<Key>,
    /// How good its current parent is (0: none).
    pub parent_score: u32,
}

impl Member {
    pub fn start(&self) -> u64 {
        self.hop.start_unix_ns
    }

    pub fn end(&self) -> u64 {
        self.hop.start_unix_ns.saturating_add(self.hop.duration_ns)
    }
}

/// How well `cause` explains `effect`; 0 when it cannot.
pub fn score(cause: &Member, effect: &Member, call_end: u64) -> u32 {
    if cause.hop.id == effect.hop.id || !starts_before(cause, effect) {
        return 0;
    }
    let (Some(by), Some(_)) = (&cause.keys.receiver, &effect.keys.initiator) else {
        return introduced(cause, effect);
    };
    if effect.keys.initiator.as_ref() != Some(by) {
        return introduced(cause, effect);
    }
    let shared = shares_object(cause, effect);
    if same_revision(cause, effect) && shared {
        return 50;
    }
    if is_call(&cause.hop) && effect.start() <= call_end.max(cause.end()) {
        return 30 + if shared { 10 } else { 0 };
    }
    if cause.hop.kind == "exec" {
        // The program this hop's process is (or descends from).
        return 25;
    }
    if shared && (is_delivery(&cause.hop) || cause.end() <= effect.start()) {
        return 20;
    }
    introduced(cause, effect)
}

/// Without a cause in its own process, a hop hangs from the one that
/// introduced the id it was found by (StartContainer under the
/// CreateContainer that returned the container id).
fn introduced(cause: &Member, effect: &Member) -> u32 {
    match &effect.joined_by {
        Some(k) if cause.keys.learn.contains(k) => 10,
        _ => 0,
    }
}

/// A strict order, so parents never form a cycle.
fn starts_before(a: &Member, b: &Member) -> bool {
    (a.start(), std::cmp::Reverse(a.end()), &a.hop.id)
        < (b.start(), std::cmp::Reverse(b.end()), &b.hop.id)
}

fn shares_object(a: &Member, b: &Member) -> bool {
    a.keys.lookup.iter().any(|ka| {
        !matches!(ka, Key::Process(_))
            && b.keys.lookup.iter().any(|kb| ka == kb || same_name(ka, kb))
    })
}

/// An object and an Event's subject with its namespace and name.
fn same_name(a: &Key, b: &Key) -> bool {
    let name = |k: &Key| match k {
        Key::Object {
            namespace, name, ..
        }
        | Key::NsName { namespace, name } => Some((namespace.clone(), name.clone())),
        _ => None,
    };
    name(a).is_some() && name(a) == name(b)
}

/// An etcd revision written or delivered by `a` is the one `b` carries.
fn same_revision(a: &Member, b: &Member) -> bool {
    let revs = |m: &Member| -> Vec<i64> {
        let mut v: Vec<i64> = m
            .hop
            .objects
            .iter()
            .filter_map(|o| o.resource_version.parse().ok())
            .collect();
        if let Some(e) = &m.hop.etcd {
            if e.revision > 0 {
                v.push(e.revision);
            }
        }
        v
    };
    let (ra, rb) = (revs(a), revs(b));
    // A read's header revision is the store's, not a write's.
    let writes = a
        .hop
        .etcd
        .as_ref()
        .is_some_and(|e| e.revision > 0 && !e.op.starts_with("Range"));
    writes && ra.iter().any(|r| rb.contains(r))
}

/// The best parent among `members` for `effect`, with its score.
pub fn best_parent<'a>(
    members: impl Iterator<Item = (&'a Member, u64)>,
    effect: &Member,
) -> Option<(String, u32)> {
    let mut best: Option<(&Member, u32)> = None;
    for (cause, call_end) in members {
        let s = score(cause, effect, call_end);
        if s == 0 {
            continue;
        }
        let better = match best {
            None => true,
            // Equal scores: the latest cause is the nearest.
            Some((b, bs)) => s > bs || (s == bs && cause.start() > b.start()),
        };
        if better {
            best = Some((cause, s));
        }
    }
    best.map(|(m, s)| (m.hop.id.clone(), s))
}
