//! Field offsets in the tracepoint records the programs read, as
//! `/sys/kernel/tracing/events/<group>/<name>/format` gives them on kernel 6.18.
//! The agent checks every one against the running kernel before attaching and
//! refuses to start on a mismatch, naming the field.

/// (group, event, field, offset, size)
pub type FieldSpec = (&'static str, &'static str, &'static str, usize, usize);

pub mod exec {
    pub const FILENAME_DATA_LOC: usize = 8;
    pub const OLD_PID: usize = 16;
}

pub mod newtask {
    pub const PID: usize = 8;
    pub const CLONE_FLAGS: usize = 32;
}

pub mod exit {
    pub const GROUP_DEAD: usize = 32;
}

pub mod sock_state {
    pub const SKADDR: usize = 8;
    pub const OLDSTATE: usize = 16;
    pub const NEWSTATE: usize = 20;
    pub const SPORT: usize = 24;
    pub const DPORT: usize = 26;
    pub const FAMILY: usize = 28;
    pub const PROTOCOL: usize = 30;
    pub const SADDR: usize = 32;
    pub const DADDR: usize = 36;
    pub const SADDR_V6: usize = 40;
    pub const DADDR_V6: usize = 56;
}

/// Every field the programs read. (Syscalls are raw tracepoints: their arguments are
/// `struct pt_regs *` and the number or return value, not a tracefs record.)
pub const FIELDS: &[FieldSpec] = &[
    (
        "sched",
        "sched_process_exec",
        "filename",
        exec::FILENAME_DATA_LOC,
        4,
    ),
    ("sched", "sched_process_exec", "old_pid", exec::OLD_PID, 4),
    ("task", "task_newtask", "pid", newtask::PID, 4),
    (
        "task",
        "task_newtask",
        "clone_flags",
        newtask::CLONE_FLAGS,
        8,
    ),
    (
        "sched",
        "sched_process_exit",
        "group_dead",
        exit::GROUP_DEAD,
        1,
    ),
    (
        "sock",
        "inet_sock_set_state",
        "skaddr",
        sock_state::SKADDR,
        8,
    ),
    (
        "sock",
        "inet_sock_set_state",
        "oldstate",
        sock_state::OLDSTATE,
        4,
    ),
    (
        "sock",
        "inet_sock_set_state",
        "newstate",
        sock_state::NEWSTATE,
        4,
    ),
    ("sock", "inet_sock_set_state", "sport", sock_state::SPORT, 2),
    ("sock", "inet_sock_set_state", "dport", sock_state::DPORT, 2),
    (
        "sock",
        "inet_sock_set_state",
        "family",
        sock_state::FAMILY,
        2,
    ),
    (
        "sock",
        "inet_sock_set_state",
        "protocol",
        sock_state::PROTOCOL,
        2,
    ),
    ("sock", "inet_sock_set_state", "saddr", sock_state::SADDR, 4),
    ("sock", "inet_sock_set_state", "daddr", sock_state::DADDR, 4),
    (
        "sock",
        "inet_sock_set_state",
        "saddr_v6",
        sock_state::SADDR_V6,
        16,
    ),
    (
        "sock",
        "inet_sock_set_state",
        "daddr_v6",
        sock_state::DADDR_V6,
        16,
    ),
];
