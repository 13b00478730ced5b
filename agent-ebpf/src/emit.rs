//! Helpers shared by the probes: headers, loss counters, config, tracking checks.

use core::mem::offset_of;

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns, gen,
    },
};
use ktrail_agent_common::{
    maps::{DROP_READ_FAILED, DROP_RINGBUF_FULL},
    AgentConfig, EventHeader, EventKind, SyscallEvent, TrackedProcess,
    FLAG_PAYLOAD_READ_FAILED, FLAG_PAYLOAD_TRUNCATED, MAX_PAYLOAD, PROC_TRACKED,
};

use crate::maps::{SyscallScratch, CONFIG, DROPS, EVENTS, PROCS, TRACKED};

/// A mask the verifier understands; the real bound is MAX_PAYLOAD (see SyscallScratch).
const LEN_MASK: u64 = (2 * MAX_PAYLOAD - 1) as u64;

#[inline(always)]
pub fn count_drop(slot: u32) {
    if let Some(counter) = DROPS.get_ptr_mut(slot) {
        // Per-CPU slot: no other CPU writes it, so a plain add is race-free.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn config() -> Option<&'static AgentConfig> {
    CONFIG.get(0)
}

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
pub fn tracked(tgid: u32) -> Option<TrackedProcess> {
    unsafe { TRACKED.get(&tgid).copied() }
}

/// Whether `tgid` is traced: one inlined array read, no hash (see `PROCS`).
#[inline(always)]
pub fn is_tracked(tgid: u32) -> bool {
    PROCS
        .get(tgid)
        .is_some_and(|slot| slot.state & PROC_TRACKED != 0)
}

/// Starts tracing `tgid`: its `TRACKED` entry and its `PROCS` slot, whose fd cache
/// generation moves on (a reused tgid must not see its predecessor's fds).
#[inline(always)]
pub fn track(tgid: u32, entry: &TrackedProcess) -> Result<(), i64> {
    TRACKED.insert(&tgid, entry, 0)?;
    set_state(tgid, PROC_TRACKED);
    Ok(())
}

/// Stops tracing `tgid` (both maps).
#[inline(always)]
pub fn untrack(tgid: u32) {
    let _ = TRACKED.remove(&tgid);
    set_state(tgid, 0);
}

/// `tgid`'s `PROCS` state; its cached fds are stale from now on either way.
#[inline(always)]
fn set_state(tgid: u32, state: u32) {
    if let Some(slot) = PROCS.get_ptr_mut(tgid) {
        // SAFETY: a valid map value; the process is being created, exec'd or gone, so
        // no syscall of its own runs concurrently.
        unsafe { (*slot).state = state };
    }
    forget_fds(tgid);
}

/// Every cached fd of `tgid` is stale from now on (exec, dup2, close_range).
#[inline(always)]
pub fn forget_fds(tgid: u32) {
    if let Some(slot) = PROCS.get_ptr_mut(tgid) {
        // SAFETY: a valid map value. Threads racing here both move the generation on.
        unsafe { (*slot).fd_gen = (*slot).fd_gen.wrapping_add(1) };
    }
}

/// `pid_tgid` is the caller's `bpf_get_current_pid_tgid()`, asked once per event.
#[inline(always)]
pub fn fill_header(header: &mut EventHeader, kind: u32, ktime_ns: u64, pid_tgid: u64) {
    fill_header_but_comm(header, kind, ktime_ns, pid_tgid);
    fill_comm(header);
}

/// `header.comm` by the helper.
#[inline(always)]
pub fn fill_comm(header: &mut EventHeader) {
    // Straight into the header. aya's `bpf_get_current_comm()` fills a stack buffer
    // that it zeroes first, and both that and the copy into the header compile to
    // byte-at-a-time BPF (a memset subprogram call): ~7 % of a traced write's CPU.
    // The helper itself zero-fills the buffer when it fails.
    // SAFETY: `comm` is COMM_LEN writable bytes.
    unsafe {
        gen::bpf_get_current_comm(
            header.comm.as_mut_ptr() as *mut c_void,
            header.comm.len() as u32,
        )
    };
}

/// The header without `comm`, for events whose program reads `comm` together with
/// other fields of the task (kernel_btf.rs `files_and_comm`).
#[inline(always)]
fn fill_header_but_comm(header: &mut EventHeader, kind: u32, ktime_ns: u64, pid_tgid: u64) {
    header.kind = kind;
    header.cpu = unsafe { bpf_get_smp_processor_id() };
    header.ktime_ns = if ktime_ns == 0 {
        unsafe { bpf_ktime_get_ns() }
    } else {
        ktime_ns
    };
    header.tgid = (pid_tgid >> 32) as u32;
    header.tid = pid_tgid as u32;
}

/// Starts a data event in the scratch map: header, syscall tag, fd, return value and
/// duration since `enter_ns`; payload, socket, flags and `requested` start empty. The
/// caller fills `header.comm`: with [`fill_comm`], or, in sys_exit, with the task's
/// other fields (kernel_btf.rs `files_and_comm`).
#[inline(always)]
pub fn start_syscall_event(
    ev: &mut SyscallEvent,
    pid_tgid: u64,
    nr: u32,
    fd: i32,
    ret: i64,
    enter_ns: u64,
) {
    fill_header_but_comm(&mut ev.header, EventKind::Syscall as u32, enter_ns, pid_tgid);
    ev.nr = nr;
    ev.fd = fd;
    ev.ret = ret;
    ev.duration_ns = unsafe { bpf_ktime_get_ns() } - enter_ns;
    clear_tail(ev);
}

/// Words from `requested` up to `payload`: `requested`, `socket`, `payload_len`, `flags`.
const TAIL_WORDS: usize =
    (offset_of!(SyscallEvent, payload) - offset_of!(SyscallEvent, requested)) / 8;
const _: () = {
    assert!(offset_of!(SyscallEvent, requested) % 8 == 0);
    assert!(offset_of!(SyscallEvent, socket) > offset_of!(SyscallEvent, requested));
    assert!(offset_of!(SyscallEvent, payload_len) > offset_of!(SyscallEvent, socket));
    assert!(offset_of!(SyscallEvent, flags) > offset_of!(SyscallEvent, payload_len));
    assert!(offset_of!(SyscallEvent, payload) == offset_of!(SyscallEvent, flags) + 4);
    assert!(TAIL_WORDS * 8 == offset_of!(SyscallEvent, payload) - offset_of!(SyscallEvent, requested));
};

/// Zeroes `requested`, `socket`, `payload_len` and `flags` (adjacent, 72 bytes) with
/// 8-byte stores. Written as field assignments they compile to a call of a memset
/// subprogram that stores a byte per loop iteration: ~4 % of a traced write's CPU.
/// Volatile, so the compiler cannot turn the stores back into that memset.
#[inline(always)]
fn clear_tail(ev: &mut SyscallEvent) {
    let words = &mut ev.requested as *mut u64;
    for i in 0..TAIL_WORDS {
        // SAFETY: TAIL_WORDS words from `requested` lie inside the event (checked above).
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
}

/// Copies the first bytes of a user buffer holding `avail` bytes into the payload.
#[inline(always)]
pub fn capture_payload(ev: &mut SyscallEvent, cfg: &AgentConfig, buf: u64, avail: u64) {
    let cap = if cfg.payload_bytes as u64 > MAX_PAYLOAD as u64 {
        MAX_PAYLOAD as u64
    } else {
        cfg.payload_bytes as u64
    };
    let mut n = if avail < cap { avail } else { cap };
    n &= LEN_MASK;
    let rc = unsafe {
        gen::bpf_probe_read_user(
            ev.payload.as_mut_ptr() as *mut c_void,
            n as u32,
            buf as *const c_void,
        )
    };
    if rc < 0 {
        ev.flags |= FLAG_PAYLOAD_READ_FAILED;
        count_drop(DROP_READ_FAILED);
    } else {
        ev.payload_len = n as u32;
        if avail > n {
            ev.flags |= FLAG_PAYLOAD_TRUNCATED;
        }
    }
}

/// Sends the header and only the captured part of the payload.
#[inline(always)]
pub fn send_syscall_event(scratch: &SyscallScratch) {
    let len =
        (SyscallEvent::HEADER_LEN as u64 + (scratch.event.payload_len as u64 & LEN_MASK)) as usize;
    let bytes = unsafe { core::slice::from_raw_parts(scratch as *const _ as *const u8, len) };
    output(bytes);
}

/// Writes a record into `EVENTS` (counting a full ring as a drop) without waking the
/// reader: it polls (`DRAIN_EVERY_MS`), and a wakeup would cost the traced task an
/// interrupt on its own CPU.
#[inline(always)]
pub fn output<T: ?Sized>(data: &T) {
    if EVENTS.output(data, BPF_RB_NO_WAKEUP as u64).is_err() {
        count_drop(DROP_RINGBUF_FULL);
    }
}
