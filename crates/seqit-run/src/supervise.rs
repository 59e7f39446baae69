//! Processes that must not outlive the runner: an external trainer launched for a stage,
//! and the servers that serve models to the stages that query them.
//!
//! Each runs under a small supervisor process (the hidden `seqit supervise` command)
//! that leads a new process group holding the command (`sh -c COMMAND`) and everything
//! it starts, appends their output to a log file, and ends the whole group when the
//! runner dies, whatever killed it: the supervisor checks every 100 ms that its parent
//! is still the runner. (A runner's own subcommands die with it through
//! `PR_SET_PDEATHSIG`, but a trainer or an inference server starts processes of its
//! own, which that signal does not reach.) The runner stops a group with SIGTERM, then
//! SIGKILL after a grace period.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long a group gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);
/// How often the supervisor checks its command and its parent.
const POLL: Duration = Duration::from_millis(100);

/// A command running under its supervisor; stopped (with everything it started) when
/// dropped.
pub struct Supervised {
    child: Child,
    log: PathBuf,
}

impl Supervised {
    /// Starts `command` (a shell command line) under `seqit supervise`, its output
    /// appended to `log`. `lock` (the run directory's lock) stays held while it runs.
    pub fn spawn(exe: &Path, command: &str, log: &Path, lock: &File) -> Result<Self> {
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut cmd = Command::new(exe);
        cmd.arg("supervise")
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--log")
            .arg(log)
            .arg("--")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        keep_lock_and_lead_group(&mut cmd, lock);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{}` for `{command}`", exe.display()))?;
        Ok(Self {
            child,
            log: log.to_path_buf(),
        })
    }

    /// Waits for the command to end.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        Ok(self.child.wait()?)
    }

    /// The exit status if the command has ended.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Ends the command and everything it started: SIGTERM to the group, SIGKILL after
    /// the grace period.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        signal_group(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(POLL);
        }
        signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a log file (at most its last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 << 10)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The supervisor's side (`seqit supervise --parent PID --log LOG -- COMMAND`): runs
/// `sh -c COMMAND` with its output appended to `log`, and returns its exit code (128 +
/// the signal number if a signal ended it). Ends the process group when `parent` is no
/// longer its parent (given rather than read, in case the runner died first).
pub fn supervise(parent: u32, command: &str, log: &Path) -> Result<i32> {
    let parent = parent as libc::pid_t;
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open the log `{}`", log.display()))?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("cannot start `sh`")?;
    loop {
        if let Some(status) = child.try_wait()? {
            // Whatever the command left running in the group goes with it.
            end_rest_of_group();
            return Ok(exit_code(status));
        }
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != parent {
            // The runner is gone: end the group, this process included.
            // SAFETY: plain signals to this process's own group.
            unsafe { libc::kill(0, libc::SIGTERM) };
            let deadline = Instant::now() + GRACE;
            while Instant::now() < deadline && child.try_wait()?.is_none() {
                std::thread::sleep(POLL);
            }
            unsafe { libc::kill(0, libc::SIGKILL) };
        }
        std::thread::sleep(POLL);
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// SIGTERM to every other member of this process's group.
fn end_rest_of_group() {
    // SAFETY: ignoring SIGTERM in this process, then signalling its own group.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::kill(0, libc::SIGTERM);
    }
}

fn signal_group(leader: u32, signal: i32) {
    // SAFETY: a signal to the group the supervisor leads (its pid is the group id).
    unsafe { libc::kill(-(leader as i32), signal) };
}

/// Starts the supervisor as the leader of a new process group (so that a terminal's
/// Ctrl-C reaches the runner only, and the runner can signal the whole group), with the
/// run directory's lock inherited.
fn keep_lock_and_lead_group(command: &mut Command, lock: &File) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let lock_fd = lock.as_raw_fd();
    command.process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let flags = libc::fcntl(lock_fd, libc::F_GETFD);
            libc::fcntl(lock_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
}
