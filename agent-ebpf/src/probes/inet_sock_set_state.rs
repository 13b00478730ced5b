//! `sock:inet_sock_set_state`: TCP connection lifecycle with its 4-tuple.
//!
//! Many transitions run in softirq context where `current` is whatever process was
//! on the CPU, so a socket is attributed through `SOCK_OWNERS` (filled when a tracked
//! process connects, accepts, or closes in process context), not through `current`.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use ktrail_agent_common::{EventKind, TcpStateEvent};

use crate::{
    emit::{fill_header, is_tracked, output},
    maps::SOCK_OWNERS,
};

use ktrail_agent_common::tracepoints::sock_state::{
    DADDR, DADDR_V6, DPORT, FAMILY, NEWSTATE, OLDSTATE, PROTOCOL, SADDR, SADDR_V6, SKADDR, SPORT,
};

const IPPROTO_TCP: u16 = 6;
const AF_INET6: u16 = 10;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_FIN_WAIT1: i32 = 4;
const TCP_CLOSE: i32 = 7;
const TCP_CLOSE_WAIT: i32 = 8;
const TCP_LAST_ACK: i32 = 9;
const TCP_LISTEN: i32 = 10;

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_inet_sock_set_state(&ctx);
    0
}

/// Transitions a process makes itself (connect, listen, close), never from softirq.
fn in_process_context(old: i32, new: i32) -> bool {
    matches!(
        (old, new),
        (TCP_CLOSE, TCP_SYN_SENT)
            | (_, TCP_LISTEN)
            | (TCP_ESTABLISHED, TCP_FIN_WAIT1)
            | (TCP_CLOSE_WAIT, TCP_LAST_ACK)
    )
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    let protocol: u16 = unsafe { ctx.read_at(PROTOCOL)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let skaddr: u64 = unsafe { ctx.read_at(SKADDR)? };
    let old: i32 = unsafe { ctx.read_at(OLDSTATE)? };
    let new: i32 = unsafe { ctx.read_at(NEWSTATE)? };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let owner = if in_process_context(old, new) && is_tracked(tgid) {
        let _ = SOCK_OWNERS.insert(&skaddr, &tgid, 0);
        tgid
    } else {
        match unsafe { SOCK_OWNERS.get(&skaddr) } {
            Some(owner) => *owner,
            None => return Ok(()),
        }
    };
    if new == TCP_CLOSE {
        let _ = SOCK_OWNERS.remove(&skaddr);
    }

    let mut ev = TcpStateEvent::default();
    fill_header(&mut ev.header, EventKind::TcpState as u32, 0, pid_tgid);
    if owner != tgid {
        // Softirq: the running task is not the owner; the agent fills in the name.
        ev.header.tgid = owner;
        ev.header.tid = owner;
        ev.header.comm = [0; 16];
    }
    ev.skaddr = skaddr;
    ev.old_state = old;
    ev.new_state = new;
    ev.family = unsafe { ctx.read_at(FAMILY)? };
    ev.local_port = unsafe { ctx.read_at(SPORT)? };
    ev.remote_port = unsafe { ctx.read_at(DPORT)? };
    unsafe {
        if ev.family == AF_INET6 {
            ev.local_addr = ctx.read_at(SADDR_V6)?;
            ev.remote_addr = ctx.read_at(DADDR_V6)?;
        } else {
            let s: [u8; 4] = ctx.read_at(SADDR)?;
            let d: [u8; 4] = ctx.read_at(DADDR)?;
            ev.local_addr[..4].copy_from_slice(&s);
            ev.remote_addr[..4].copy_from_slice(&d);
        }
    }
    output(&ev);
    Ok(())
}
