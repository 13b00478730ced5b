//! Attaches the Go TLS uprobes to each traced Go binary, once per file (uprobes hold
//! for every process that maps the file; the kernel side filters on TRACKED).
//!
//! A short-lived `kubectl` may finish its first request before the agent has seen its
//! exec, so target binaries on PATH are instrumented at start, before they run.

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
};

use aya::programs::{uprobe::UProbeLink, UProbe};
use ktrail_agent_common::TargetPattern;
use tracing::{debug, info, warn};

use super::binary::{GoBinary, GoTlsFunctions, ResolveError};
use crate::{
    ebpf::{program_err, Programs},
    scan::comm_bytes,
};

pub const PROGRAMS: [&str; 3] = ["go_tls_write", "go_tls_read_entry", "go_tls_read_return"];

#[derive(Debug, Default)]
pub struct GoTlsCounters {
    pub attached: AtomicU64,
    pub not_go: AtomicU64,
    pub no_tls: AtomicU64,
    pub failed: AtomicU64,
}

pub struct GoTlsAttacher {
    programs: Programs,
    /// False when the uprobe programs could not be loaded: nothing is attached.
    enabled: bool,
    /// (device, inode) of every file handled, attached or not, so each is handled once.
    done: HashSet<(u64, u64)>,
    /// Owned here so that stopping can say how long detaching took.
    links: Vec<UProbeLink>,
    pub counters: Arc<GoTlsCounters>,
}

impl GoTlsAttacher {
    pub fn new(programs: Programs) -> Self {
        Self {
            programs,
            enabled: false,
            done: HashSet::new(),
            links: Vec::new(),
            counters: Arc::default(),
        }
    }

    /// Loads the uprobe programs; until this succeeds `instrument` does nothing.
    pub fn load(&mut self) -> Result<(), crate::ebpf::LoadError> {
        for name in PROGRAMS {
            let p: &mut UProbe = self.programs.program(name)?;
            p.load().map_err(program_err(name, "uprobe", "(load)"))?;
        }
        self.enabled = true;
        Ok(())
    }

    /// Instruments the binary at `path` unless that file was handled before; the
    /// outcome is logged and counted.
    pub fn instrument(&mut self, path: &Path) {
        if !self.enabled {
            return;
        }
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if !meta.is_file() || !self.done.insert((meta.dev(), meta.ino())) {
            return;
        }
        // For /proc/PID/exe, name the file it leads to in logs.
        let shown = std::fs::read_link(path).unwrap_or_else(|_| path.to_path_buf());
        match GoBinary::open(path).and_then(|b| b.resolve_tls()) {
            Ok(functions) => match self.attach(path, &functions) {
                Ok(probes) => {
                    info!(binary = %shown.display(), go_version = %functions.go_version, probes,
                        "Go TLS plaintext probes attached");
                    self.counters.attached.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    // aya's message ("`perf_event_open` failed") hides the errno.
                    let mut error = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        error.push_str(&format!(": {s}"));
                        source = s.source();
                    }
                    if error.contains("Permission denied") {
                        // perf_uprobe_event_init() checks capable(CAP_SYS_ADMIN), no
                        // longer perfmon_capable(), in current kernels (a 2025 fix,
                        // backported to stable ones): CAP_PERFMON creates no uprobes.
                        error.push_str(
                            " (creating uprobes needs CAP_SYS_ADMIN; without it TLS traffic \
                             of Go programs shows as ciphertext)",
                        );
                    }
                    warn!(binary = %shown.display(), error = %error, "cannot attach Go TLS probes");
                    self.counters.failed.fetch_add(1, Relaxed);
                }
            },
            Err(ResolveError::NotGo(..)) | Err(ResolveError::NotElf(..)) => {
                debug!(binary = %shown.display(), "not a Go binary: no TLS plaintext probes");
                self.counters.not_go.fetch_add(1, Relaxed);
            }
            Err(e @ ResolveError::NoFunction { .. }) => {
                info!(binary = %shown.display(), reason = %e, "no Go TLS in this binary");
                self.counters.no_tls.fetch_add(1, Relaxed);
            }
            Err(e) => {
                warn!(binary = %shown.display(), error = %e,
                    "cannot trace TLS plaintext of this binary; its traffic shows as ciphertext");
                self.counters.failed.fetch_add(1, Relaxed);
            }
        }
    }

    fn attach(
        &mut self,
        path: &Path,
        f: &GoTlsFunctions,
    ) -> Result<usize, aya::programs::ProgramError> {
        let plan: [(&'static str, &[u64]); 3] = [
            ("go_tls_write", std::slice::from_ref(&f.write_offset)),
            ("go_tls_read_entry", std::slice::from_ref(&f.read_offset)),
            ("go_tls_read_return", &f.read_returns),
        ];
        let mut n = 0;
        for (program, offsets) in plan {
            let p: &mut UProbe = self
                .programs
                .program(program)
                .map_err(|_| aya::programs::ProgramError::NotLoaded)?;
            for &offset in offsets {
                let id = p.attach(None, offset, path, None)?;
                self.links.push(p.take_link(id)?);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Detaches every uprobe, saying how long it took: the kernel waits for an RCU
    /// grace period per uprobe (~0.12 s here) and serializes them (measured: 81 probes,
    /// 9.7 s, also when dropped from 32 threads), so this is most of an agent's stop.
    pub fn detach_all(&mut self) {
        let started = std::time::Instant::now();
        let links = std::mem::take(&mut self.links);
        let count = links.len();
        drop(links);
        info!(
            probes = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Go TLS probes detached"
        );
    }

    /// Target binaries found on PATH (and their symlink targets, e.g. kubectl's
    /// versioned siblings), to instrument before any of them runs.
    pub fn binaries_on_path(targets: &[TargetPattern]) -> Vec<PathBuf> {
        let path = std::env::var("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < dirs.len() {
            let dir = dirs[i].clone();
            i += 1;
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let comm = comm_bytes(name);
                if !targets.iter().any(|t| t.matches(&comm)) {
                    continue;
                }
                let Ok(real) = std::fs::canonicalize(entry.path()) else {
                    continue;
                };
                // A dispatcher symlink (kubectl → …/kubectl) leads to siblings too.
                if let Some(parent) = real.parent() {
                    if !dirs.iter().any(|d| d == parent) {
                        dirs.push(parent.to_path_buf());
                    }
                }
                if !out.contains(&real) {
                    out.push(real);
                }
            }
        }
        out
    }
}

impl Drop for GoTlsAttacher {
    fn drop(&mut self) {
        self.detach_all();
    }
}
