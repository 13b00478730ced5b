//! Reads of kernel structures through BTF-typed pointers, for the `tp_btf` exit program:
//! plain loads that the verifier checks against the kernel's BTF and the JIT emits as
//! loads with an exception-table fixup, where kernel.rs makes a `bpf_probe_read_kernel`
//! call (a helper call, `copy_from_kernel_nofault` and their returns: ~40 ns each on
//! this VM). The exit program of a traced file write made five such reads; here it
//! makes one, of the fd array's slot (`fdtable.fd` is a `struct file **`, which the
//! verifier types as a plain number, not a pointer it may load through).
//!
//! The verifier accepts such a load only at an offset it knows, and checks it against
//! the struct's members: the offsets are read-only globals (`.rodata`, frozen by the
//! loader, so the verifier reads their values) that the agent sets at load from the
//! same BTF offsets it puts in `CONFIG` (agent/src/ebpf.rs).

use aya_ebpf::helpers::{bpf_get_current_task_btf, bpf_probe_read_kernel};
use ktrail_agent_common::COMM_LEN;

use crate::kernel::{PT_REGS_RDX, USER64_CS};

#[no_mangle]
static KTRAIL_TASK_PID: u32 = 0;
#[no_mangle]
static KTRAIL_TASK_TGID: u32 = 0;
#[no_mangle]
static KTRAIL_TASK_COMM: u32 = 0;
#[no_mangle]
static KTRAIL_TASK_FILES: u32 = 0;
#[no_mangle]
static KTRAIL_FILES_FDT: u32 = 0;
#[no_mangle]
static KTRAIL_FDTABLE_MAX_FDS: u32 = 0;
#[no_mangle]
static KTRAIL_FDTABLE_FD: u32 = 0;

/// A global's value as the loader set it (volatile: the compiler must not fold in the
/// 0 it was compiled with).
#[inline(always)]
fn offset(global: &'static u32) -> usize {
    unsafe { core::ptr::read_volatile(global) as usize }
}

/// A load at `base + off`, `base` being a BTF-typed pointer.
#[inline(always)]
unsafe fn load<T: Copy>(base: *const u8, off: usize) -> T {
    core::ptr::read_volatile(base.add(off) as *const T)
}

/// `struct pt_regs` slots after rdx (kernel.rs): rsi, rdi, then orig_rax, rip and the
/// 8-byte `cs` slot (`csx`).
const PT_REGS_RSI: usize = PT_REGS_RDX + 8;
const PT_REGS_RDI: usize = PT_REGS_RDX + 16;
const PT_REGS_CS: usize = PT_REGS_RDX + 40;

/// The first three arguments of the current 64-bit syscall from `regs`, the
/// tracepoint's `struct pt_regs *` (the registers saved at entry; at exit only rax has
/// been replaced by the return value). Err for a 32-bit syscall.
#[inline(always)]
pub fn syscall_args(regs: *const u8) -> Result<[u64; 3], i64> {
    unsafe {
        if load::<u64>(regs, PT_REGS_CS) != USER64_CS {
            return Err(-1);
        }
        Ok([
            load(regs, PT_REGS_RDI),
            load(regs, PT_REGS_RSI),
            load(regs, PT_REGS_RDX),
        ])
    }
}

/// The current task, BTF-typed: the base of the loads below.
#[inline(always)]
pub fn current_task() -> *const u8 {
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// What `bpf_get_current_pid_tgid` returns (`tgid << 32 | pid`, in the initial pid
/// namespace), by two loads from `task` ([`current_task`]) instead of a helper call.
#[inline(always)]
pub fn pid_tgid(task: *const u8) -> u64 {
    unsafe {
        let pid: u32 = load(task, offset(&KTRAIL_TASK_PID));
        let tgid: u32 = load(task, offset(&KTRAIL_TASK_TGID));
        ((tgid as u64) << 32) | pid as u64
    }
}

/// The `struct files_struct *` of `task` ([`current_task`]), copying its name into
/// `comm` (the bytes `bpf_get_current_comm` would copy: the kernel keeps `comm`
/// NUL-terminated and NUL-padded, `__set_task_comm` uses `strscpy_pad`).
#[inline(always)]
pub fn files_and_comm(task: *const u8, comm: &mut [u8; COMM_LEN]) -> Result<*const u8, i64> {
    unsafe {
        let at = offset(&KTRAIL_TASK_COMM);
        let name: [u64; 2] = [load(task, at), load(task, at + 8)];
        *comm = core::mem::transmute::<[u64; 2], [u8; COMM_LEN]>(name);
        let files: *const u8 = load(task, offset(&KTRAIL_TASK_FILES));
        if files.is_null() {
            return Err(-1);
        }
        Ok(files)
    }
}

/// The `struct file *` behind fd `fd` in the fd table `files`
/// ([`files_and_comm`]), for kernel.rs `socket_of_file`.
#[inline(always)]
pub fn file_of_fd(files: Result<*const u8, i64>, fd: i64) -> Result<*const u8, i64> {
    if fd < 0 {
        return Err(-1);
    }
    unsafe {
        let fdt: *const u8 = load(files?, offset(&KTRAIL_FILES_FDT));
        if fdt.is_null() {
            return Err(-1);
        }
        let max_fds: u32 = load(fdt, offset(&KTRAIL_FDTABLE_MAX_FDS));
        if fd as u64 >= max_fds as u64 {
            return Err(-1);
        }
        let fd_array: *const *const u8 = load(fdt, offset(&KTRAIL_FDTABLE_FD));
        let file: *const u8 = bpf_probe_read_kernel(fd_array.add(fd as usize))?;
        if file.is_null() {
            return Err(-1);
        }
        Ok(file)
    }
}
