//! Running the seqit binary from seqit-cli's integration tests.
//!
//! Only those tests know where the binary is, so each file names it once and every run
//! stays one line:
//!
//! ```ignore
//! const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));
//! let out = SEQIT.output(["generate", "--help"]);
//! let stdout = SEQIT.ok(["data", "stats", "x.jsonl"]);
//! ```

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// Variables that would point the binary under test at the caller's own model,
/// endpoints or keys; every [`Seqit::command`] removes them.
pub const CALLER_SETTINGS: [&str; 6] = [
    "SEQIT_MODEL",
    "SEQIT_ENDPOINT",
    "SEQIT_API_KEY",
    "SEQIT_TEACHER_ENDPOINT",
    "SEQIT_TEACHER_MODEL",
    "OPENAI_API_KEY",
];

/// The seqit binary under test (`Seqit::new(env!("CARGO_BIN_EXE_seqit"))`).
#[derive(Debug, Clone, Copy)]
pub struct Seqit {
    bin: &'static str,
}

impl Seqit {
    /// The binary at `bin`: pass `env!("CARGO_BIN_EXE_seqit")`.
    pub const fn new(bin: &'static str) -> Self {
        Self { bin }
    }

    /// A command for the binary without [`CALLER_SETTINGS`], with `RUST_BACKTRACE=1`.
    pub fn command(self) -> Command {
        let mut command = Command::new(self.bin);
        command.env("RUST_BACKTRACE", "1");
        for name in CALLER_SETTINGS {
            command.env_remove(name);
        }
        command
    }

    /// Runs `seqit ARGS` and returns what it did.
    pub fn output<I, S>(self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command().args(args).output().expect("seqit runs")
    }

    /// [`Seqit::output`] in the working directory `dir`.
    pub fn output_in<I, S>(self, dir: &Path, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command();
        command.current_dir(dir).args(args);
        command.output().expect("seqit runs")
    }

    /// [`Seqit::output`] with the environment variables `envs` set.
    pub fn output_with<I, S>(self, args: I, envs: &[(&str, &str)]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command();
        command.args(args).envs(envs.iter().copied());
        command.output().expect("seqit runs")
    }

    /// Runs `seqit ARGS`, asserts that it succeeded and returns its stdout.
    pub fn ok<I, S>(self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command();
        command.args(args);
        stdout(&run_ok(&mut command))
    }

    /// [`Seqit::ok`] in the working directory `dir`.
    pub fn ok_in<I, S>(self, dir: &Path, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command();
        command.current_dir(dir).args(args);
        stdout(&run_ok(&mut command))
    }

    /// Runs `seqit ARGS`, asserts that it failed cleanly (exit code 1, one short `error:`
    /// report, no panic or backtrace) and returns its stderr.
    pub fn fails<I, S>(self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.output(args);
        let stderr = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        for noise in ["panicked", "stack backtrace", "RUST_BACKTRACE", " at /"] {
            assert!(!stderr.contains(noise), "`{noise}` in: {stderr}");
        }
        assert!(stderr.lines().count() <= 4, "too long: {stderr}");
        stderr
    }

    /// Runs `seqit run CONFIG` (`--output DIR` when given), asserts that it succeeded and
    /// returns its log (stderr).
    pub fn run_experiment(self, config: &Path, output: Option<&Path>) -> String {
        let mut command = self.command();
        command.arg("run").arg(config);
        if let Some(output) = output {
            command.arg("--output").arg(output);
        }
        stderr(&run_ok(&mut command))
    }
}

/// Runs `command`, asserts that it succeeded (showing its stderr if not) and returns
/// what it did.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}",
        output.status,
        stderr(&output)
    );
    output
}

/// Asserts that `output` is a success (showing its stderr if not) and returns its stdout.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "seqit failed ({}):\n{}",
        output.status,
        stderr(&output)
    );
    stdout(&output)
}

/// What a process wrote to stdout, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What a process wrote to stderr, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
