//! A fork server inside the sandbox, for running many programs quickly.
//!
//! Starting an interpreter costs more than most HumanEval programs take to run. A
//! [`Session`] starts one sandboxed interpreter (the *server*: same namespaces,
//! read-only root, unprivileged uid and limits as [`Sandbox::run`]) that preloads the
//! modules such programs import, then forks one fresh child per program. Each child:
//! a new session and process group; with namespaces, a new mount namespace with a fresh
//! tmpfs of `disk_bytes` as its writable directory and a new IPC namespace; no
//! capabilities; `RLIMIT_AS` and `RLIMIT_CPU`; the seccomp filter and the audit hook;
//! stdin `/dev/null`; capped stdout and stderr; killed with its group at the wall-clock
//! limit. After each program the server kills every process left in its PID namespace
//! (or, under basic isolation, every descendant: it is their subreaper) and, under basic
//! isolation, empties the working directory (relative to directory descriptors, never
//! leaving its filesystem), so nothing one program leaves behind reaches the next. The
//! server is not dumpable, so programs (same uid) cannot ptrace it, and the seccomp
//! filter keeps them from signalling it.
//!
//! A program that breaks the server anyway (or a server that stops answering) costs
//! that program only: it is scored failed (or timed out), the server is killed with its
//! namespace, and a new one is started for the next program.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{ChildStdin, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use super::monitor::kill_group;
use super::{io_error, Execution, Isolation, Outcome, RunDir, Sandbox, SandboxError};

/// How long the server may take to start (preloading modules under load).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Slack on top of a program's own limits before the server counts as stuck.
const SERVER_SLACK: Duration = Duration::from_secs(10);

/// Runs programs one after another through a sandboxed fork server. Not shared between
/// threads: give each worker its own (`Sandbox::session`).
pub struct Session<'s> {
    sandbox: &'s Sandbox,
    server: Option<Server>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("running", &self.server.is_some())
            .finish()
    }
}

struct Server {
    pid: libc::pid_t,
    requests: ChildStdin,
    responses: OwnedFd,
    buffer: Vec<u8>,
    /// Basic isolation's host directory (removed after the server is gone).
    _run_dir: Option<RunDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        kill_group(self.pid);
        let mut status = 0;
        // SAFETY: `status` is a live, writable `c_int`; `self.pid` is the server, our
        // child, which only this `drop` reaps.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

impl Server {
    /// Whether the server has exited or closed its answers (without waiting).
    fn gone(&self) -> bool {
        let mut pollfd = libc::pollfd {
            fd: self.responses.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pollfd` is one live, initialized, writable `pollfd` and the count
        // passed is 1.
        let r = unsafe { libc::poll(&mut pollfd, 1, 0) };
        r > 0 && pollfd.revents & (libc::POLLHUP | libc::POLLERR) != 0
    }
}

/// The server's answer for one program.
#[derive(Deserialize)]
struct Response {
    status: libc::c_int,
    killed: bool,
    cpu: f64,
    stdout: String,
    stdout_total: usize,
    stderr: String,
    stderr_total: usize,
    verdict: String,
    /// The working directory could not be emptied: the server must be replaced.
    #[serde(default)]
    dirty: bool,
}

enum Failure {
    /// The request could not be sent: the server was already gone.
    NotSent(String),
    /// The server died or closed its pipes while running the program.
    Died(String),
    /// The server did not answer in time.
    Stuck,
}

impl<'s> Session<'s> {
    pub(super) fn new(sandbox: &'s Sandbox) -> Self {
        Self {
            sandbox,
            server: None,
        }
    }

    /// Runs one program (see [`Sandbox::run`] for what `Err` means: here, a server that
    /// cannot be started, or that cannot set up a program's process). A server found
    /// dead before the program was handed over is replaced and the program sent again;
    /// a server that dies while running it fails that program only (and is replaced
    /// for the next one).
    pub fn run(&mut self, program: &str) -> Result<Execution, SandboxError> {
        let started = Instant::now();
        let mut lost = Vec::new();
        loop {
            if self.server.as_ref().is_some_and(Server::gone) {
                self.server = None;
            }
            if self.server.is_none() {
                self.server = Some(self.start()?);
            }
            let server = self.server.as_mut().expect("server started");
            let failed = |message: String| Execution {
                outcome: Outcome::Failed(message),
                stdout: String::new(),
                stderr: String::new(),
                output_truncated: false,
                wall: started.elapsed(),
                cpu_seconds: 0.0,
            };
            match exchange(server, self.sandbox, program) {
                Ok(response) => {
                    if response.dirty {
                        self.server = None;
                    }
                    return match super::program_verdict(
                        response.verdict.as_bytes(),
                        response.stderr.as_bytes(),
                    ) {
                        Ok(verdict) => {
                            let verdict = verdict.to_vec();
                            Ok(self.execution(response, &verdict, started))
                        }
                        Err(message) => {
                            self.server = None;
                            Err(SandboxError::Setup(message))
                        }
                    };
                }
                Err(Failure::Stuck) => {
                    self.server = None;
                    return Ok(Execution {
                        outcome: Outcome::TimedOut,
                        ..failed(String::new())
                    });
                }
                Err(Failure::Died(why)) => {
                    self.server = None;
                    return Ok(failed(format!(
                        "the sandbox's fork server died while running this program ({why}); it was \
                         restarted"
                    )));
                }
                Err(Failure::NotSent(why)) => {
                    self.server = None;
                    lost.push(why);
                    if lost.len() >= 2 {
                        return Err(SandboxError::Io {
                            context: format!(
                                "the sandbox's fork server died twice before it got a program: {}",
                                lost.join("; ")
                            ),
                            source: std::io::Error::other("fork server died"),
                        });
                    }
                }
            }
        }
    }

    fn execution(&self, r: Response, verdict: &[u8], started: Instant) -> Execution {
        let outcome = self
            .sandbox
            .outcome(verdict, r.killed, r.status, r.cpu, r.stderr.as_bytes());
        Execution {
            outcome,
            output_truncated: r.stdout_total > r.stdout.len() || r.stderr_total > r.stderr.len(),
            stdout: r.stdout,
            stderr: r.stderr,
            wall: started.elapsed(),
            cpu_seconds: r.cpu,
        }
    }

    fn start(&self) -> Result<Server, SandboxError> {
        let sandbox = self.sandbox;
        let run_dir = match sandbox.isolation {
            Isolation::Basic => Some(sandbox.run_dir()?),
            Isolation::Namespaces => None,
        };
        let mut log = tempfile::tempfile_in(sandbox.temp_root())
            .map_err(io_error("cannot create the server log"))?;
        let log_writer = log
            .try_clone()
            .map_err(io_error("cannot create the server log"))?;
        let mut args = vec!["serve".to_string()];
        args.extend(sandbox.runner_args(run_dir.as_ref(), true));
        let mut child = sandbox.spawn(
            run_dir.as_ref(),
            args,
            Stdio::piped(),
            Stdio::from(log_writer),
            None,
            sandbox.rlimits(false),
            true,
        )?;
        let pid = child.id() as libc::pid_t;
        let requests = child.stdin.take().expect("stdin is piped");
        let responses = OwnedFd::from(child.stdout.take().expect("stdout is piped"));
        set_nonblocking(&responses).map_err(io_error("cannot configure the server's pipe"))?;
        drop(child);
        let mut server = Server {
            pid,
            requests,
            responses,
            buffer: Vec::new(),
            _run_dir: run_dir,
        };
        match read_line(&mut server, Instant::now() + START_TIMEOUT) {
            Ok(line) if line == "ready" => Ok(server),
            outcome => {
                let why = match outcome {
                    Ok(line) => format!("unexpected greeting `{line}`"),
                    Err(Failure::Stuck) => "no answer".to_string(),
                    Err(Failure::Died(why) | Failure::NotSent(why)) => why,
                };
                drop(server);
                let mut text = String::new();
                let _ = log.rewind();
                let _ = log.take(1 << 20).read_to_string(&mut text);
                let tail: Vec<&str> = text
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                Err(SandboxError::Io {
                    context: format!(
                        "the sandbox's fork server did not start ({why}): {}",
                        tail.join(" | ")
                    ),
                    source: std::io::Error::other("fork server failed"),
                })
            }
        }
    }
}

fn exchange(server: &mut Server, sandbox: &Sandbox, program: &str) -> Result<Response, Failure> {
    let config = sandbox.config();
    let header = json!({
        "len": program.len(),
        "timeout": config.timeout.as_secs_f64(),
        "grace": config.kill_grace.as_secs_f64(),
        "memory": config.memory_bytes,
        "cpu": sandbox.cpu_limit(),
        "cap": config.output_limit,
    });
    let mut request = header.to_string().into_bytes();
    request.push(b'\n');
    request.extend_from_slice(program.as_bytes());
    server
        .requests
        .write_all(&request)
        .and_then(|()| server.requests.flush())
        .map_err(|err| Failure::NotSent(format!("cannot send the program: {err}")))?;
    let deadline = Instant::now() + config.timeout + config.kill_grace + SERVER_SLACK;
    let line = read_line(server, deadline)?;
    serde_json::from_str(&line)
        .map_err(|err| Failure::Died(format!("unreadable answer ({err}): {line}")))
}

/// One line from the server, waiting until `deadline`.
fn read_line(server: &mut Server, deadline: Instant) -> Result<String, Failure> {
    loop {
        if let Some(end) = server.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = server.buffer.drain(..=end).collect();
            return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Failure::Stuck);
        }
        let timeout_ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        let mut pollfd = libc::pollfd {
            fd: server.responses.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pollfd` is one live, initialized, writable `pollfd` and the count
        // passed is 1.
        let r = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
        if r < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Failure::Died(format!("poll: {err}")));
        }
        if r == 0 {
            continue;
        }
        let mut chunk = [0u8; 65536];
        // SAFETY: `chunk` is a live, writable buffer of `chunk.len()` bytes; `read` writes
        // at most that many into it. The descriptor is borrowed from `server`, which
        // keeps it open.
        let n = unsafe {
            libc::read(
                server.responses.as_raw_fd(),
                chunk.as_mut_ptr().cast(),
                chunk.len(),
            )
        };
        match n {
            0 => return Err(Failure::Died("it closed its output".to_string())),
            n if n > 0 => server.buffer.extend_from_slice(&chunk[..n as usize]),
            _ => {
                let err = std::io::Error::last_os_error();
                if !matches!(
                    err.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) {
                    return Err(Failure::Died(format!("read: {err}")));
                }
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: `F_GETFL`/`F_SETFL` take and return integers only and touch no memory of
    // ours; the descriptor is borrowed from `fd`, which keeps it open.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
