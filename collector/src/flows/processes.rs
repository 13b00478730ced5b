//! Per-node process tree from the agents' exec/fork/exit events, and the
//! `exec` hops that show a traced process starting a program (containerd →
//! shim → runc → nginx; containerd → CNI plugin).

use std::collections::{HashMap, VecDeque};

use ktrail_proto::v1::{event::Body, Event, EventRef, Hop, HopEnd};

use super::keys::ProcessRef;
use crate::hops::IdGen;

/// Command lines are cut to this many bytes in an exec hop's summary.
const SUMMARY_CMDLINE: usize = 240;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub ppid: u32,
    pub comm: String,
    pub cmdline: String,
    pub container_id: String,
}

/// Processes seen by the agents, bounded: the oldest entries go first.
#[derive(Clone, Debug)]
pub struct ProcessTable {
    procs: HashMap<ProcessRef, ProcessInfo>,
    order: VecDeque<ProcessRef>,
    cap: usize,
    pub evicted: u64,
}

impl Default for ProcessTable {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl ProcessTable {
    pub fn new(cap: usize) -> Self {
        Self {
            procs: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
            evicted: 0,
        }
    }

    pub fn get(&self, p: &ProcessRef) -> Option<&ProcessInfo> {
        self.procs.get(p)
    }

    /// `p` and its known ancestors, nearest first, at most `max`.
    pub fn lineage(&self, p: &ProcessRef, max: usize) -> Vec<ProcessRef> {
        let mut out = vec![p.clone()];
        let mut cur = p.clone();
        while out.len() < max {
            let Some(info) = self.procs.get(&cur) else {
                break;
            };
            if info.ppid == 0 || info.ppid == cur.pid {
                break;
            }
            cur = ProcessRef {
                node: cur.node.clone(),
                pid: info.ppid,
            };
            if out.contains(&cur) {
                break;
            }
            out.push(cur.clone());
        }
        out
    }

    fn insert(&mut self, p: ProcessRef, info: ProcessInfo) {
        if self.procs.insert(p.clone(), info).is_none() {
            self.order.push_back(p);
            while self.procs.len() > self.cap {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                if self.procs.remove(&old).is_some() {
                    self.evicted += 1;
                }
            }
        }
    }

    /// Learns from a process event; an exec becomes an `exec` hop (ids from
    /// `ids`, events referenced by `agent_id`).
    pub fn on_event(
        &mut self,
        node: &str,
        agent_id: &str,
        event: &Event,
        ids: &mut IdGen,
    ) -> Option<Hop> {
        let me = ProcessRef {
            node: node.to_string(),
            pid: event.pid,
        };
        match &event.body {
            Some(Body::Fork(fork)) => {
                let parent = self.procs.get(&me).cloned().unwrap_or_else(|| ProcessInfo {
                    comm: event.comm.clone(),
                    ..ProcessInfo::default()
                });
                let child = ProcessRef {
                    node: node.to_string(),
                    pid: fork.child_pid,
                };
                self.procs.remove(&child);
                self.insert(
                    child,
                    ProcessInfo {
                        ppid: event.pid,
                        ..parent
                    },
                );
                None
            }
            Some(Body::Exec(exec)) => {
                let info = exec.process.clone().unwrap_or_default();
                let known = self.procs.get(&me).cloned().unwrap_or_default();
                let ppid = if info.ppid != 0 {
                    info.ppid
                } else {
                    known.ppid
                };
                let cmdline = if info.cmdline.is_empty() {
                    exec.filename.clone()
                } else {
                    info.cmdline.replace('\0', " ").trim_end().to_string()
                };
                let comm = if info.comm.is_empty() {
                    event.comm.clone()
                } else {
                    info.comm.clone()
                };
                let parent = ProcessRef {
                    node: node.to_string(),
                    pid: ppid,
                };
                let parent_comm = self.procs.get(&parent).map(|p| p.comm.clone());
                self.procs.remove(&me);
                self.insert(
                    me.clone(),
                    ProcessInfo {
                        ppid,
                        comm: comm.clone(),
                        cmdline: cmdline.clone(),
                        container_id: info.container_id.clone(),
                    },
                );
                let mut summary = format!("exec {cmdline}");
                if summary.len() > SUMMARY_CMDLINE {
                    let mut cut = SUMMARY_CMDLINE;
                    while !summary.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    summary.truncate(cut);
                    summary.push('…');
                }
                Some(Hop {
                    id: ids.next_id("h-"),
                    protocol: "process".into(),
                    kind: "exec".into(),
                    client: Some(HopEnd {
                        node: node.to_string(),
                        pid: ppid,
                        comm: parent_comm.unwrap_or_default(),
                        observed: ppid != 0,
                        ..HopEnd::default()
                    }),
                    server: Some(HopEnd {
                        node: node.to_string(),
                        pid: event.pid,
                        comm,
                        observed: true,
                        ..HopEnd::default()
                    }),
                    start_unix_ns: event.timestamp_unix_ns,
                    request: cmdline.into_bytes(),
                    summary,
                    events: vec![EventRef {
                        node: node.to_string(),
                        agent_id: agent_id.to_string(),
                        seq: event.seq,
                    }],
                    ..Hop::default()
                })
            }
            // Kept after exit: hops of a process often complete after it.
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktrail_proto::v1::{ProcessExec, ProcessFork, ProcessInfo as PbInfo};

    fn exec(pid: u32, ppid: u32, comm: &str, cmdline: &str) -> Event {
        Event {
            pid,
            comm: comm.into(),
            timestamp_unix_ns: 1_000,
            seq: 7,
            body: Some(Body::Exec(ProcessExec {
                filename: format!("/usr/bin/{comm}"),
                process: Some(PbInfo {
                    pid,
                    ppid,
                    comm: comm.into(),
                    cmdline: cmdline.into(),
                    ..PbInfo::default()
                }),
                ..ProcessExec::default()
            })),
            ..Event::default()
        }
    }

    #[test]
    fn exec_makes_a_hop_from_the_parent_and_lineage_follows_forks() {
        let mut t = ProcessTable::default();
        let mut ids = IdGen::new(1);
        assert!(t
            .on_event("w", "a", &exec(10, 1, "containerd", "containerd"), &mut ids)
            .is_some());
        let fork = Event {
            pid: 10,
            body: Some(Body::Fork(ProcessFork { child_pid: 11 })),
            ..Event::default()
        };
        assert!(t.on_event("w", "a", &fork, &mut ids).is_none());
        let hop = t
            .on_event("w", "a", &exec(11, 10, "runc", "runc\0create\0x"), &mut ids)
            .expect("exec hop");
        assert_eq!(hop.kind, "exec");
        assert_eq!(hop.summary, "exec runc create x");
        let client = hop.client.expect("parent");
        assert_eq!((client.pid, client.comm.as_str()), (10, "containerd"));
        let p = |pid| ProcessRef {
            node: "w".into(),
            pid,
        };
        assert_eq!(t.lineage(&p(11), 8), vec![p(11), p(10), p(1)]);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = ProcessTable::new(2);
        let mut ids = IdGen::new(1);
        for pid in 1..=3 {
            t.on_event("w", "a", &exec(pid, 0, "x", "x"), &mut ids);
        }
        assert_eq!(t.procs.len(), 2);
        assert_eq!(t.evicted, 1);
    }
}
