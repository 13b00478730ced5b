//! `sched:sched_process_exec`: start tracking processes that exec a target name, and
//! report every exec of a tracked process (filename, old pid, network namespace);
//! stop tracking one that execs ktrail's own binaries.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use ktrail_agent_common::{
    maps::{DROP_TRACKED_FULL, MAX_OWN_COMMS, MAX_TARGETS},
    EventKind, TrackedProcess, COMM_LEN, TRACKED_BY_NAME,
};

use crate::{
    emit::{config, count_drop, fill_header, forget_fds, output, track, tracked, untrack},
    kernel::current_netns,
    maps::{ENTERED, OWN_COMMS, PROCESS_SCRATCH, TARGETS},
};

use ktrail_agent_common::tracepoints::exec::{FILENAME_DATA_LOC, OLD_PID};

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let _ = try_sched_process_exec(&ctx);
    0
}

fn matches_target(comm: &[u8; COMM_LEN]) -> bool {
    let mut i = 0;
    while i < MAX_TARGETS {
        if let Some(pattern) = TARGETS.get(i) {
            if pattern.matches(comm) {
                return true;
            }
        }
        i += 1;
    }
    false
}

fn is_own(comm: &[u8; COMM_LEN]) -> bool {
    let mut i = 0;
    while i < MAX_OWN_COMMS {
        if let Some(pattern) = OWN_COMMS.get(i) {
            if pattern.matches(comm) {
                return true;
            }
        }
        i += 1;
    }
    false
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let cfg = config().ok_or(-1i64)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let netns = current_netns(&cfg.offsets).unwrap_or(0);
    let comm = bpf_get_current_comm()?;
    if is_own(&comm) {
        // Tracing ktrail's own collector or CLI is a feedback loop: every
        // batch it reads becomes new events. Dropped before its first syscall,
        // and the execve in flight (entered by the process it was) not reported.
        untrack(tgid);
        if let Some(slot) = ENTERED.get_ptr_mut(pid_tgid as u32) {
            unsafe { *slot = 0 };
        }
        return Ok(());
    }
    if tracked(tgid).is_none() {
        if !matches_target(&comm) {
            return Ok(());
        }
        if cfg.scope_netns != 0 && netns != cfg.scope_netns {
            return Ok(());
        }
        let entry = TrackedProcess {
            node_netns: netns,
            flags: TRACKED_BY_NAME,
        };
        if track(tgid, &entry).is_err() {
            count_drop(DROP_TRACKED_FULL);
            return Ok(());
        }
    } else {
        // Exec closed the close-on-exec fds without a close of the process's own.
        forget_fds(tgid);
    }

    let ev = unsafe { &mut *PROCESS_SCRATCH.get_ptr_mut(0).ok_or(-1i64)? };
    fill_header(&mut ev.header, EventKind::ProcessExec as u32, 0, pid_tgid);
    ev.other_pid = unsafe { ctx.read_at::<i32>(OLD_PID)? } as u32;
    ev.netns = netns;
    ev.group_dead = 0;
    let data_loc: u32 = unsafe { ctx.read_at(FILENAME_DATA_LOC)? };
    let src = unsafe { (ctx.as_ptr() as *const u8).add((data_loc & 0xffff) as usize) };
    ev.filename_len = match unsafe { bpf_probe_read_kernel_str_bytes(src, &mut ev.filename) } {
        Ok(s) => s.len() as u32,
        Err(_) => 0,
    };
    output(ev);
    Ok(())
}
