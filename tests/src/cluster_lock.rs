//! The local cluster's lock (the one `cluster/lib.sh` takes for up/down).

use std::os::fd::AsRawFd;

/// Held for a whole test, so a concurrent run (engineers share a machine) or a manual
/// `cargo xtask cluster up` waits instead of tearing this cluster down; the scripts see
/// KTRAIL_CLUSTER_LOCKED and do not lock again.
pub struct ClusterLock {
    _file: std::fs::File,
}

impl ClusterLock {
    pub fn take() -> Self {
        std::fs::create_dir_all("/run/lock").expect("create /run/lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/lock/ktrail-cluster.lock")
            .expect("open /run/lock/ktrail-cluster.lock");
        eprintln!("[cluster] taking /run/lock/ktrail-cluster.lock");
        // SAFETY: flock on a file descriptor we own; blocks until the lock is free.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        std::env::set_var("KTRAIL_CLUSTER_LOCKED", "1");
        ClusterLock { _file: file }
    }
}
