//! Loads the embedded eBPF object, configures it and attaches its programs.

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{BtfTracePoint, RawTracePoint, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use ktrail_agent_common::{
    maps::{
        self as names, DROP_INFLIGHT_FULL, DROP_READ_FAILED, DROP_RINGBUF_FULL, DROP_TRACKED_FULL,
        MAX_TARGETS,
    },
    AgentConfig, ProcSlot, TargetPattern, TrackedProcess, PROC_TRACKED,
};

use crate::metrics::KernelDrops;
use crate::ring::{EventRing, RingError};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ktrail.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "loading the eBPF programs failed: {source}{caps} — the agent needs root or CAP_BPF + \
         CAP_PERFMON (and CAP_SYS_RESOURCE on kernels that charge memlock; deploy/ lists each \
         capability and why)"
    )]
    Load {
        #[source]
        source: Box<aya::EbpfError>,
        /// "; this process lacks CAP_BPF (…), …" or "".
        caps: String,
    },
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: Box<aya::maps::MapError>,
    },
    #[error("program {program} on {category}:{name}: {source}")]
    Attach {
        program: &'static str,
        category: &'static str,
        name: String,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("more than {MAX_TARGETS} target patterns")]
    TooManyTargets,
    #[error("reading the kernel's BTF for the sys_exit program: {0}")]
    Btf(#[source] Box<aya::BtfError>),
    #[error("eBPF map EVENTS: {0}")]
    Ring(#[from] RingError),
}

pub struct Programs {
    pub ebpf: Ebpf,
}

/// Names the program, the attach point and the step that failed.
pub fn program_err(
    program: &'static str,
    category: &'static str,
    name: &str,
) -> impl FnOnce(aya::programs::ProgramError) -> LoadError {
    let name = name.to_string();
    move |source| LoadError::Attach {
        program,
        category,
        name,
        source: Box::new(source),
    }
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> LoadError {
    move |source| LoadError::Map {
        name,
        source: Box::new(source),
    }
}

impl Programs {
    pub fn load(config: &AgentConfig, targets: &[TargetPattern]) -> Result<Self, LoadError> {
        raise_memlock();
        let off = &config.offsets;
        let mut ebpf = EbpfLoader::new()
            // One ENTERED slot per possible thread id, one PROCS slot per process id.
            .set_max_entries(names::ENTERED, pid_max())
            .set_max_entries(names::PROCS, pid_max())
            // The offsets sys_exit loads at through BTF-typed pointers: constants the
            // verifier checks against the kernel's BTF (agent-ebpf/src/kernel_btf.rs).
            .set_global("KTRAIL_TASK_PID", &off.task_pid, true)
            .set_global("KTRAIL_TASK_TGID", &off.task_tgid, true)
            .set_global("KTRAIL_TASK_COMM", &off.task_comm, true)
            .set_global("KTRAIL_TASK_FILES", &off.task_files, true)
            .set_global("KTRAIL_FILES_FDT", &off.files_fdt, true)
            .set_global("KTRAIL_FDTABLE_MAX_FDS", &off.fdtable_max_fds, true)
            .set_global("KTRAIL_FDTABLE_FD", &off.fdtable_fd, true)
            .load(OBJECT)
            .map_err(|e| LoadError::Load {
                source: Box::new(e),
                caps: crate::caps::missing_clause(),
            })?;
        let mut cfg: Array<_, AgentConfig> = Array::try_from(
            ebpf.map_mut(names::CONFIG)
                .ok_or(LoadError::MissingMap(names::CONFIG))?,
        )
        .map_err(map_err(names::CONFIG))?;
        cfg.set(0, *config, 0).map_err(map_err(names::CONFIG))?;
        if targets.len() > MAX_TARGETS as usize {
            return Err(LoadError::TooManyTargets);
        }
        let mut t: Array<_, TargetPattern> = Array::try_from(
            ebpf.map_mut(names::TARGETS)
                .ok_or(LoadError::MissingMap(names::TARGETS))?,
        )
        .map_err(map_err(names::TARGETS))?;
        for (i, p) in targets.iter().enumerate() {
            t.set(i as u32, *p, 0).map_err(map_err(names::TARGETS))?;
        }
        let mut own: Array<_, TargetPattern> = Array::try_from(
            ebpf.map_mut(names::OWN_COMMS)
                .ok_or(LoadError::MissingMap(names::OWN_COMMS))?,
        )
        .map_err(map_err(names::OWN_COMMS))?;
        let own_patterns = crate::exclude::OWN_BINARIES
            .iter()
            .filter_map(|name| TargetPattern::new(name.as_bytes()));
        for (i, p) in own_patterns.enumerate() {
            own.set(i as u32, p, 0).map_err(map_err(names::OWN_COMMS))?;
        }
        Ok(Self { ebpf })
    }

    /// A program of the object as its type (`TracePoint`, `UProbe`).
    pub fn program<'a, T>(&'a mut self, program: &'static str) -> Result<&'a mut T, LoadError>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        self.ebpf
            .program_mut(program)
            .ok_or(LoadError::MissingProgram(program))?
            .try_into()
            .map_err(program_err(program, "-", "-"))
    }

    fn attach(
        &mut self,
        program: &'static str,
        category: &'static str,
        names: &[String],
    ) -> Result<(), LoadError> {
        let p: &mut TracePoint = self.program(program)?;
        p.load().map_err(program_err(program, category, "(load)"))?;
        for name in names {
            p.attach(category, name)
                .map_err(program_err(program, category, name))?;
        }
        Ok(())
    }

    /// Process lifecycle first, so nothing forked during the /proc scan is missed.
    pub fn attach_process_tracking(&mut self) -> Result<(), LoadError> {
        self.attach(
            "sched_process_exec",
            "sched",
            &["sched_process_exec".into()],
        )?;
        self.attach("task_newtask", "task", &["task_newtask".into()])?;
        self.attach(
            "sched_process_exit",
            "sched",
            &["sched_process_exit".into()],
        )
    }

    /// `empty`: attach programs that do nothing instead of the syscall programs (to
    /// measure what syscall tracing itself costs; benchmarks only).
    pub fn attach_syscalls_and_tcp(&mut self, empty: bool) -> Result<(), LoadError> {
        // Exit first: a syscall entered while only the entry program was attached would
        // leave its thread's slot set, and pair with the thread's next, untraced, exit.
        if empty {
            self.attach_raw_syscall("sys_exit_empty", "sys_exit")?;
            self.attach_raw_syscall("sys_enter_empty", "sys_enter")?;
        } else {
            // BTF-typed (tp_btf): see agent-ebpf/src/probes/sys_exit.rs.
            let btf = Btf::from_sys_fs().map_err(|e| LoadError::Btf(Box::new(e)))?;
            let p: &mut BtfTracePoint = self.program("sys_exit")?;
            p.load("sys_exit", &btf)
                .map_err(program_err("sys_exit", "raw_syscalls", "(load)"))?;
            p.attach()
                .map_err(program_err("sys_exit", "raw_syscalls", "sys_exit"))?;
            self.attach_raw_syscall("sys_enter", "sys_enter")?;
        }
        self.attach(
            "inet_sock_set_state",
            "sock",
            &["inet_sock_set_state".into()],
        )
    }

    /// Loads `program` and attaches it to the raw tracepoint `raw_syscalls:tracepoint`.
    fn attach_raw_syscall(
        &mut self,
        program: &'static str,
        tracepoint: &str,
    ) -> Result<(), LoadError> {
        let p: &mut RawTracePoint = self.program(program)?;
        p.load()
            .map_err(program_err(program, "raw_syscalls", "(load)"))?;
        p.attach(tracepoint)
            .map_err(program_err(program, "raw_syscalls", tracepoint))?;
        Ok(())
    }

    pub fn seed_tracked(
        &mut self,
        tracked: &std::collections::HashMap<u32, TrackedProcess>,
    ) -> Result<usize, LoadError> {
        let mut map: HashMap<_, u32, TrackedProcess> = HashMap::try_from(
            self.ebpf
                .map_mut(names::TRACKED)
                .ok_or(LoadError::MissingMap(names::TRACKED))?,
        )
        .map_err(map_err(names::TRACKED))?;
        let mut seeded = Vec::new();
        for (pid, entry) in tracked {
            // A process that exec'd or forked since the scan is already in the map.
            if map.insert(pid, entry, 1 /* BPF_NOEXIST */).is_ok() {
                seeded.push(*pid);
            }
        }
        let mut procs: Array<_, ProcSlot> = Array::try_from(
            self.ebpf
                .map_mut(names::PROCS)
                .ok_or(LoadError::MissingMap(names::PROCS))?,
        )
        .map_err(map_err(names::PROCS))?;
        for pid in &seeded {
            set_tracked(&mut procs, *pid, true)?;
        }
        Ok(seeded.len())
    }

    pub fn take_ring(&mut self) -> Result<EventRing, LoadError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(LoadError::MissingMap(names::EVENTS))?;
        match map {
            aya::maps::Map::RingBuf(data) => Ok(EventRing::new(data)?),
            _ => Err(RingError::NotARingBuffer.into()),
        }
    }

    /// The TRACKED and PROCS maps, owned (after `seed_tracked`), for `exclude.rs` to
    /// untrack ktrail's own processes.
    pub fn take_tracked(&mut self) -> Result<TrackedMaps, LoadError> {
        let tracked = self
            .ebpf
            .take_map(names::TRACKED)
            .ok_or(LoadError::MissingMap(names::TRACKED))?;
        let procs = self
            .ebpf
            .take_map(names::PROCS)
            .ok_or(LoadError::MissingMap(names::PROCS))?;
        Ok(TrackedMaps {
            tracked: HashMap::try_from(tracked).map_err(map_err(names::TRACKED))?,
            procs: Array::try_from(procs).map_err(map_err(names::PROCS))?,
        })
    }

    pub fn drops_reader(&mut self) -> Result<PerCpuArray<MapData, u64>, LoadError> {
        let map = self
            .ebpf
            .take_map(names::DROPS)
            .ok_or(LoadError::MissingMap(names::DROPS))?;
        PerCpuArray::try_from(map).map_err(map_err(names::DROPS))
    }
}

/// The traced processes: `TRACKED` (tgid → why, iterated here) and its mirror `PROCS`
/// (tgid-indexed, read by the syscall programs). Both change together.
pub struct TrackedMaps {
    tracked: HashMap<MapData, u32, TrackedProcess>,
    procs: Array<MapData, ProcSlot>,
}

impl TrackedMaps {
    pub fn pids(&self) -> Vec<u32> {
        self.tracked.keys().filter_map(Result::ok).collect()
    }

    pub fn untrack(&mut self, pid: u32) -> Result<(), LoadError> {
        self.tracked.remove(&pid).map_err(map_err(names::TRACKED))?;
        set_tracked(&mut self.procs, pid, false)
    }
}

/// Marks `pid` (un)traced in `PROCS` and moves its fd cache generation on, as the
/// kernel programs' `track`/`untrack` do.
fn set_tracked<T: std::borrow::BorrowMut<MapData>>(
    procs: &mut Array<T, ProcSlot>,
    pid: u32,
    tracked: bool,
) -> Result<(), LoadError> {
    let mut slot = procs.get(&pid, 0).map_err(map_err(names::PROCS))?;
    slot.state = if tracked { PROC_TRACKED } else { 0 };
    slot.fd_gen = slot.fd_gen.wrapping_add(1);
    procs.set(pid, slot, 0).map_err(map_err(names::PROCS))
}

pub fn read_drops(map: &PerCpuArray<MapData, u64>) -> KernelDrops {
    let slot = |i: u32| -> Vec<u64> {
        map.get(&i, 0)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default()
    };
    KernelDrops {
        ringbuf_full_per_cpu: slot(DROP_RINGBUF_FULL),
        inflight_full: slot(DROP_INFLIGHT_FULL).iter().sum(),
        tracked_full: slot(DROP_TRACKED_FULL).iter().sum(),
        read_failed: slot(DROP_READ_FAILED).iter().sum(),
    }
}

/// The kernel's largest thread id + 1 (`/proc/sys/kernel/pid_max`), the size of the
/// per-thread `ENTERED` array: 8 bytes of kernel memory per possible thread (256 KiB
/// at 32768, 32 MiB at the 4194304 systemd sets on large machines).
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(names::DEFAULT_MAX_TIDS)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lifting it is harmless after.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}
