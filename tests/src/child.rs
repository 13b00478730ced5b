//! Child processes that cannot outlive their test.

use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long [`ChildGuard::stop`] lets a process exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long a SIGKILLed process may take to go. Exit can be slow in the kernel: an agent
/// with a few hundred uprobes takes seconds to have them removed.
const KILL_WAIT: Duration = Duration::from_secs(60);
/// After this long a note says what is being waited for.
const KILL_NOTE_AFTER: Duration = Duration::from_secs(5);
/// Lines of each log shown when a test fails.
const TAIL_LINES: usize = 40;

/// A child process that is stopped (SIGTERM, then SIGKILL) and reaped on drop.
///
/// Its stdout and stderr go to `<dir>/<name>.stdout` / `.stderr`; when the owning thread is
/// panicking (a failing test) the drop prints the tail of both. The child also gets SIGKILL
/// if the spawning thread dies without dropping the guard (PR_SET_PDEATHSIG), e.g. when the
/// test binary is killed.
pub struct ChildGuard {
    name: String,
    child: Child,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin from /dev/null and stdout/stderr captured under `log_dir`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Result<Self> {
        let stdout = log_dir.join(format!("{name}.stdout"));
        let stderr = log_dir.join(format!("{name}.stderr"));
        let out =
            File::create(&stdout).with_context(|| format!("creating {}", stdout.display()))?;
        let err =
            File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
        cmd.stdout(out).stderr(err);
        Self::start(name, cmd, Some(stdout), Some(stderr))
    }

    /// Spawns `cmd` with stdin from /dev/null and stdout/stderr inherited (shown live).
    pub fn spawn_inherit(name: &str, cmd: Command) -> Result<Self> {
        Self::start(name, cmd, None, None)
    }

    fn start(
        name: &str,
        mut cmd: Command,
        stdout: Option<PathBuf>,
        stderr: Option<PathBuf>,
    ) -> Result<Self> {
        cmd.stdin(Stdio::null());
        // SAFETY: the closure runs between fork and exec and only calls prctl, which is
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            status: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id. Commands run through `ip netns exec` keep it: `ip` execs the program.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited (it is reaped then).
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("checking on {}", self.name))?;
        }
        Ok(self.status)
    }

    /// An error (with the process's output) if it is no longer running.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.try_status()? {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited unexpectedly ({status})\n{}",
                self.name,
                self.logs()
            ),
        }
    }

    /// Waits for the process to exit by itself; error (with its output) after `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                bail!(
                    "{} still running after {:.1} s\n{}",
                    self.name,
                    timeout.as_secs_f64(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` unless the process was already reaped (its pid may be reused then).
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.pid()).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        if unsafe { libc::kill(pid, signal) } == -1 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("signalling {}", self.name));
        }
        Ok(())
    }

    /// SIGKILL now and reap: the process gets no chance to clean up (a crash).
    pub fn kill_now(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGKILL)?;
        let start = Instant::now();
        let mut noted = false;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if !noted && start.elapsed() >= KILL_NOTE_AFTER {
                eprintln!(
                    "ktrail-tests: waiting for {} (pid {}) to exit after SIGKILL …",
                    self.name,
                    self.pid()
                );
                noted = true;
            }
            if start.elapsed() >= KILL_WAIT {
                bail!(
                    "{} (pid {}) still exists {} s after SIGKILL",
                    self.name,
                    self.pid(),
                    KILL_WAIT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, up to 3 s to exit, then SIGKILL; reaps the process.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        match self.wait_timeout(STOP_GRACE) {
            Ok(status) => Ok(status),
            Err(_) => self.kill_now(),
        }
    }

    pub fn stdout_path(&self) -> Option<&Path> {
        self.stdout.as_deref()
    }

    pub fn stderr_path(&self) -> Option<&Path> {
        self.stderr.as_deref()
    }

    /// Everything written to stdout so far (empty when stdout is inherited).
    pub fn stdout(&self) -> String {
        self.stdout.as_deref().map(read_lossy).unwrap_or_default()
    }

    /// Everything written to stderr so far (empty when stderr is inherited).
    pub fn stderr(&self) -> String {
        self.stderr.as_deref().map(read_lossy).unwrap_or_default()
    }

    /// The last lines of stdout and stderr, labelled, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for (label, path) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let Some(path) = path else { continue };
            let content = read_lossy(path);
            let lines: Vec<&str> = content.lines().collect();
            let skipped = lines.len().saturating_sub(TAIL_LINES);
            text.push_str(&format!(
                "----- {} {label} ({}{}) -----\n",
                self.name,
                path.display(),
                if skipped > 0 {
                    format!(", last {TAIL_LINES} of {} lines", lines.len())
                } else {
                    String::new()
                }
            ));
            for line in &lines[skipped..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("ktrail-tests: could not stop {}: {e:#}", self.name);
        }
        if std::thread::panicking() {
            eprint!("{}", self.logs());
        }
    }
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs `cmd` to completion, capturing its output; kills it and fails after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let readers = [
        child.stdout.take().map(|mut r| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        }),
        child.stderr.take().map(|mut r| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        }),
    ];
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            break status;
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{what} did not finish within {:.1} s",
                timeout.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let [out, err] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
    Ok(Output {
        status,
        stdout: out,
        stderr: err,
    })
}
