//! How the collector's threads share a node's CPUs with the control plane it watches.
//!
//! Set once, on the main thread before the async runtime starts: every thread spawned
//! later (the runtime's workers, the blocking pool that commits the store) inherits it.

/// The collector's CPU scheduling (`ktrail-collector --scheduling`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduling {
    /// The normal policy with short time slices ([`SHORT_SLICE_NS`]): a component that
    /// wakes up while the collector runs gets the CPU within one short slice, instead
    /// of one of the kernel's default ~1.4 ms (EEVDF, Linux 6.12 and later; older
    /// kernels ignore the slice). Under saturation the collector keeps its fair share.
    ShortSlices,
    /// SCHED_IDLE (and so the idle I/O class): the collector runs only on CPU time
    /// nothing else wants, and falls behind on a saturated node.
    Idle,
    /// The kernel's defaults, as the components traced have.
    Default,
}

/// The slice asked for by [`Scheduling::ShortSlices`]. Shorter costs the collector
/// more preemptions when the CPUs are saturated (0.1 ms: drops at 500,000 events/s
/// that 0.3 ms did not have); longer makes the traced components wait (BENCHMARKS.md,
/// analysis of item 1).
pub const SHORT_SLICE_NS: u64 = 300_000;

#[derive(Debug, thiserror::Error)]
pub enum SchedulingError {
    #[error("sched_setattr (a {slice_ns}-ns slice) failed: {source}")]
    Slice {
        slice_ns: u64,
        source: std::io::Error,
    },
    #[error("sched_setscheduler(SCHED_IDLE) failed: {0}")]
    Idle(std::io::Error),
}

/// `struct sched_attr` of sched_setattr(2), its first version (48 bytes).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Applies `scheduling` to the calling thread, and so to the threads it spawns later.
pub fn apply(scheduling: Scheduling) -> Result<(), SchedulingError> {
    match scheduling {
        Scheduling::Default => Ok(()),
        Scheduling::Idle => {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: pid 0 is the calling thread; `param` is valid for SCHED_IDLE.
            let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            if rc == 0 {
                Ok(())
            } else {
                Err(SchedulingError::Idle(std::io::Error::last_os_error()))
            }
        }
        Scheduling::ShortSlices => {
            // For SCHED_OTHER, `runtime` is the slice the task asks for.
            let attr = SchedAttr {
                size: std::mem::size_of::<SchedAttr>() as u32,
                policy: libc::SCHED_OTHER as u32,
                flags: 0,
                nice: 0,
                priority: 0,
                runtime: SHORT_SLICE_NS,
                deadline: 0,
                period: 0,
            };
            // SAFETY: pid 0 is the calling thread; `attr` is a valid, sized sched_attr
            // that outlives the call.
            let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0u32) };
            if rc == 0 {
                Ok(())
            } else {
                Err(SchedulingError::Slice {
                    slice_ns: SHORT_SLICE_NS,
                    source: std::io::Error::last_os_error(),
                })
            }
        }
    }
}
