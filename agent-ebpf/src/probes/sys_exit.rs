//! `raw_syscalls:sys_exit`, as a BTF-typed raw tracepoint (`tp_btf`; a raw tracepoint
//! for the reasons in sys_enter.rs, BTF-typed so that the registers, the task and its fd
//! table are read with plain loads: kernel_btf.rs): runs at every syscall exit of every
//! process. A thread with no traced syscall in flight costs
//! one inlined array read (its `ENTERED` slot). Otherwise: pair the exit with its entry
//! and send one event with the duration, return value, the socket behind the fd and the
//! first bytes of the data. Arguments come from the registers saved at entry.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_probe_read_user, gen},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use ktrail_agent_common::{
    AgentConfig, FdKind, SocketInfo, Syscall, SyscallEvent, AF_UNIX, ENTERED_TAG_SHIFT, ENTERED_TIME_MASK, FLAG_PAYLOAD_READ_FAILED,
    FLAG_SOCKET_AT_ENTRY,
};

use crate::{
    emit::{capture_payload, config, send_syscall_event, start_syscall_event},
    fd_cache,
    kernel::socket_of_file,
    kernel_btf::{current_task, file_of_fd, files_and_comm, pid_tgid, syscall_args},
    maps::{CLOSING, ENTERED, SCRATCH, SOCK_OWNERS},
};

const MAX_PATH: u32 = 256;

#[repr(C)]
struct IoVec {
    base: u64,
    len: u64,
}

// struct user_msghdr: msg_iov sits after msg_name (8) and msg_namelen (4 + 4 padding).
const MSGHDR_IOV: u64 = 16;

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sys_exit(&ctx);
    0
}

/// The user buffer and the number of bytes it holds, for data-carrying syscalls.
fn data_buffer(syscall: Syscall, args: &[u64; 3], ret: i64) -> Option<(u64, u64)> {
    if ret <= 0 {
        return None;
    }
    let first_iov = |iov_ptr: u64| -> Option<(u64, u64)> {
        let iov: IoVec = unsafe { bpf_probe_read_user(iov_ptr as *const IoVec).ok()? };
        Some((
            iov.base,
            if (ret as u64) < iov.len {
                ret as u64
            } else {
                iov.len
            },
        ))
    };
    match syscall {
        Syscall::Read | Syscall::Write | Syscall::Recvfrom | Syscall::Sendto => {
            Some((args[1], ret as u64))
        }
        Syscall::Readv | Syscall::Writev => first_iov(args[1]),
        Syscall::Sendmsg | Syscall::Recvmsg => {
            let iov_ptr: u64 =
                unsafe { bpf_probe_read_user((args[1] + MSGHDR_IOV) as *const u64).ok()? };
            first_iov(iov_ptr)
        }
        _ => None,
    }
}

fn try_sys_exit(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let task = current_task();
    let pid_tgid = pid_tgid(task);
    let slot = ENTERED.get_ptr_mut(pid_tgid as u32).ok_or(-1i64)?;
    // SAFETY: the slot belongs to this thread.
    let entered = unsafe { *slot };
    if entered == 0 {
        return Ok(());
    }
    unsafe { *slot = 0 };
    let Some(syscall) = Syscall::from_tag(entered >> ENTERED_TAG_SHIFT) else {
        return Ok(());
    };
    let enter_ns = entered & ENTERED_TIME_MASK;
    let closing = if syscall == Syscall::Close {
        let s = unsafe { CLOSING.get(&pid_tgid).copied() };
        let _ = CLOSING.remove(&pid_tgid);
        s
    } else {
        None
    };
    // SAFETY: sys_exit's arguments are (struct pt_regs *regs, long ret).
    let (regs, ret) = unsafe { (ctx.arg::<*const u8>(0), ctx.arg::<i64>(1)) };
    let Ok(args) = syscall_args(regs) else {
        // A 32-bit syscall whose number matched a traced 64-bit one at entry.
        return Ok(());
    };
    let cfg = config().ok_or(-1i64)?;
    let tgid = (pid_tgid >> 32) as u32;

    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0).ok_or(-1i64)? };
    let ev = &mut scratch.event;
    start_syscall_event(ev, pid_tgid, syscall as u32, args[0] as i32, ret, enter_ns);
    // After an exec, the new image's name and fd table, as `bpf_get_current_comm` gives.
    let files = files_and_comm(task, &mut ev.header.comm);

    match syscall {
        Syscall::Close => {
            // Again after the close: another thread may have looked the fd up between
            // the entry's forget and the close itself.
            fd_cache::forget(tgid, args[0] as i32 as i64);
            if let Some(socket) = closing {
                ev.socket = socket;
                ev.flags |= FLAG_SOCKET_AT_ENTRY;
            }
        }
        // The new connection's fd is the return value.
        Syscall::Accept | Syscall::Accept4 | Syscall::Connect => {
            let fd = if syscall == Syscall::Connect {
                args[0] as i32 as i64
            } else {
                ret
            };
            if let Ok(sk) = socket_of_fd(cfg, files, tgid, fd, &mut ev.socket) {
                if sk != 0 && ev.socket.family != AF_UNIX {
                    // Later TCP state changes on this socket may run in softirq.
                    let _ = SOCK_OWNERS.insert(&sk, &ev.header.tgid, 0);
                }
            }
        }
        Syscall::Openat => {
            let _ = socket_of_fd(cfg, files, tgid, ret, &mut ev.socket);
            read_path(ev, args[1]);
        }
        Syscall::Execve => {
            // After a successful exec the old image (and the path) is gone; the
            // sched_process_exec event carries the filename instead.
            if ret < 0 {
                read_path(ev, args[0]);
            }
        }
        _ => {
            let _ = socket_of_fd(cfg, files, tgid, args[0] as i32 as i64, &mut ev.socket);
        }
    }

    if syscall.is_send() || syscall.is_receive() {
        ev.requested = match syscall {
            Syscall::Read | Syscall::Write | Syscall::Recvfrom | Syscall::Sendto => args[2],
            _ => 0,
        };
        // Only what crosses a socket is captured. Files, pipes and terminals carry
        // nothing a flow needs, and they hold secrets in the clear where no marker
        // tells them apart: the kubelet writing a Secret volume's files, `kubectl
        // get secret -o jsonpath=…` printing a bare value.
        let on_socket = ev.socket.fd_kind == FdKind::Socket as u16;
        if let (true, Some((buf, avail))) = (on_socket, data_buffer(syscall, &args, ret)) {
            capture_payload(ev, cfg, buf, avail);
        }
    }
    send_syscall_event(scratch);
    Ok(())
}

/// The socket (or file) behind fd `fd` of the current task, whose fd table is `files`.
#[inline(always)]
fn socket_of_fd(
    cfg: &AgentConfig,
    files: Result<*const u8, i64>,
    tgid: u32,
    fd: i64,
    out: &mut SocketInfo,
) -> Result<u64, i64> {
    socket_of_file(&cfg.offsets, tgid, fd, file_of_fd(files, fd), out)
}

fn read_path(ev: &mut SyscallEvent, ptr: u64) {
    let n = unsafe {
        gen::bpf_probe_read_user_str(
            ev.payload.as_mut_ptr() as *mut c_void,
            MAX_PATH,
            ptr as *const c_void,
        )
    };
    if n > 1 {
        // Without the trailing NUL.
        ev.payload_len = ((n - 1) as u32) & (MAX_PATH - 1);
    } else if n < 0 {
        ev.flags |= FLAG_PAYLOAD_READ_FAILED;
    }
}
