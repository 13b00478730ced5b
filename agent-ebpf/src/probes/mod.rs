//! One probe per file.

mod go_tls;
mod inet_sock_set_state;
mod sched_process_exec;
mod sched_process_exit;
mod sys_enter;
mod sys_exit;
mod sys_floor;
mod task_newtask;
