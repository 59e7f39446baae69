//! Runs the stage graph: decides per stage whether to skip it (finished with the same
//! config slice and inputs), resume it (interrupted: the subcommand resumes its own
//! work) or run it afresh (new, or its config or inputs changed), runs subcommands as
//! child processes that die with the runner, and keeps each stage's manifest.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::config::{expand, Experiment};
use crate::manifest::{fingerprint, Hasher, Manifest, Status};
use crate::plan::{path_str, plan, Action, Kind, Stage};
use crate::servers::{assign_ports, serve_command, Servers};
use crate::supervise::Supervised;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const LOCK_FILE: &str = ".seqit-run.lock";

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dry_run: bool,
    /// Run only these stages (names, or groups such as `train` or `eval`).
    pub only: Vec<String>,
    /// Run this stage and everything after it that depends on it.
    pub from: Option<String>,
    /// The `seqit` binary that runs the stages' subcommands.
    pub exe: PathBuf,
}

/// What the runner decided for a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Finished earlier with the same config slice and inputs.
    Skip,
    /// Interrupted earlier; the subcommand picks up its own partial work.
    Resume,
    /// Run from scratch, for this reason.
    Run(String),
    /// Dry run: cannot tell yet, its inputs are made by earlier stages.
    Pending,
    /// Left out by `--only`/`--from`.
    NotSelected,
}

/// How `--only`/`--from` treat a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selected {
    /// Run it again.
    Forced,
    /// A forced stage depends on it: it must have finished.
    Needed,
    /// Not involved.
    Left,
}

#[derive(Debug, Clone)]
pub struct StageReport {
    pub name: String,
    pub decision: Decision,
    /// Seconds spent in this invocation.
    pub seconds: f64,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub stages: Vec<StageReport>,
    pub seconds: f64,
    /// Tokens the training stages processed.
    pub train_tokens: u64,
    pub report: Option<PathBuf>,
}

/// Runs (or with `dry_run`, describes) the experiment, writing progress lines to `out`.
pub fn run(exp: &Experiment, options: &Options, out: &mut dyn Write) -> Result<Summary> {
    let started = Instant::now();
    let exp = &assign_ports(exp)?;
    let c = &exp.config;
    let seed_count = match (&c.data.seed, &c.data.it) {
        (Some(seed), _) if c.augment.is_some() => {
            count_records(seed)?.min(c.data.limit.unwrap_or(usize::MAX))
        }
        (_, Some(it)) => count_records(it)?,
        _ => 0,
    };
    // A ready SeqEval set is read (and so checked) as SeqEval records; source prompts
    // are any dataset format.
    let source_count = match exp.config.seqeval.as_ref() {
        Some(s) => match (&s.set, &s.source) {
            (Some(set), _) => seqit_eval::seqeval::read(set)?.len(),
            (None, Some(source)) => count_records(source)?,
            (None, None) => 0,
        },
        None => 0,
    };
    let stages = plan(exp, seed_count, source_count);
    let selection = select(&stages, options)?;

    if options.dry_run {
        dry_run(exp, &stages, &selection, &options.exe, out)?;
        return Ok(Summary {
            stages: vec![],
            seconds: started.elapsed().as_secs_f64(),
            train_tokens: 0,
            report: None,
        });
    }

    std::fs::create_dir_all(&exp.run_dir).with_context(|| {
        format!(
            "cannot create the run directory `{}`",
            exp.run_dir.display()
        )
    })?;
    let lock = lock_run_dir(&exp.run_dir, out)?;
    // Declared after the lock: dropped (servers stopped) first.
    let mut servers = Servers::new(exp, &options.exe, &lock);
    let mut hasher = Hasher::default();
    let mut reports = Vec::new();
    let total = stages.len();
    for (i, stage) in stages.iter().enumerate() {
        let (inputs, print) = input_hashes(stage, &exp.run_dir, &mut hasher)?;
        let current = fingerprint(&stage.slice, &inputs, VERSION);
        let previous = Manifest::read(&stage.dir);
        let decision = match selection.get(&stage.name) {
            Some(Selected::Forced) => Decision::Run("asked for with --only/--from".into()),
            Some(Selected::Needed) => match decide(stage, previous.as_ref(), &current, &mut hasher)? {
                Decision::Skip => Decision::Skip,
                _ => bail!(
                    "stage `{}` has not finished with the current config, and the stages asked for need it\nhint: run it first (`--only {}`) or run without --only/--from",
                    stage.name,
                    stage.name
                ),
            },
            Some(Selected::Left) => Decision::NotSelected,
            None => decide(stage, previous.as_ref(), &current, &mut hasher)?,
        };
        let bar = progress_bar(i, total);
        let label = format!("{bar} [{}/{total}] {}", i + 1, stage.name);
        let stage_started = Instant::now();
        match &decision {
            Decision::Skip => {
                writeln!(out, "{label}: finished earlier, skipped")?;
            }
            Decision::NotSelected => {
                writeln!(out, "{label}: not selected")?;
            }
            Decision::Resume | Decision::Run(_) => {
                let how = match &decision {
                    Decision::Resume => "resuming the interrupted run".to_string(),
                    Decision::Run(reason) => format!("running ({reason})"),
                    _ => unreachable!(),
                };
                writeln!(out, "{label}: {how}")?;
                out.flush()?;
                servers
                    .serve_only(&stage.servers, out)
                    .with_context(|| format!("stage `{}` failed", stage.name))?;
                hasher.forget(&stage.dir);
                execute(
                    exp,
                    stage,
                    &decision,
                    previous,
                    current,
                    print,
                    &options.exe,
                    &lock,
                    &mut hasher,
                )
                .with_context(|| format!("stage `{}` failed", stage.name))?;
                writeln!(
                    out,
                    "{label}: done in {}",
                    human_seconds(stage_started.elapsed().as_secs_f64())
                )?;
            }
            Decision::Pending => unreachable!("only dry runs leave stages pending"),
        }
        reports.push(StageReport {
            name: stage.name.clone(),
            decision,
            seconds: stage_started.elapsed().as_secs_f64(),
        });
    }
    let train_tokens = stages
        .iter()
        .filter(|s| s.kind == Kind::Train)
        .map(|s| train_tokens(&s.dir))
        .sum();
    let report = stages.iter().find_map(|s| match &s.action {
        Action::Report { html, .. } => Some(html.clone()),
        _ => None,
    });
    Ok(Summary {
        stages: reports,
        seconds: started.elapsed().as_secs_f64(),
        train_tokens,
        report,
    })
}

/// What `--only`/`--from` make of each stage (empty: neither given).
fn select(stages: &[Stage], options: &Options) -> Result<HashMap<String, Selected>> {
    let matches = |pattern: &str| -> Result<Vec<String>> {
        let found: Vec<String> = stages
            .iter()
            .filter(|s| s.name == pattern || s.name.starts_with(&format!("{pattern}-")))
            .map(|s| s.name.clone())
            .collect();
        if found.is_empty() {
            bail!(
                "no stage `{pattern}` in this experiment\nhint: its stages are {}",
                stages
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(found)
    };
    let mut forced = Vec::new();
    for pattern in &options.only {
        forced.extend(matches(pattern)?);
    }
    if let Some(from) = &options.from {
        forced.extend(matches(from)?);
        // and everything downstream (stages are in dependency order)
        for stage in stages {
            if stage.deps.iter().any(|d| forced.contains(d)) && !forced.contains(&stage.name) {
                forced.push(stage.name.clone());
            }
        }
    }
    if forced.is_empty() {
        return Ok(HashMap::new());
    }
    let mut needed: Vec<String> = Vec::new();
    for stage in stages.iter().rev() {
        if forced.contains(&stage.name) || needed.contains(&stage.name) {
            needed.extend(stage.deps.iter().cloned());
        }
    }
    Ok(stages
        .iter()
        .map(|s| {
            let how = if forced.contains(&s.name) {
                Selected::Forced
            } else if needed.contains(&s.name) {
                Selected::Needed
            } else {
                Selected::Left
            };
            (s.name.clone(), how)
        })
        .collect())
}

fn decide(
    stage: &Stage,
    previous: Option<&Manifest>,
    current: &str,
    hasher: &mut Hasher,
) -> Result<Decision> {
    let Some(previous) = previous else {
        return Ok(Decision::Run("not run yet".into()));
    };
    if previous.fingerprint != current {
        let reason = if previous.seqit_version != VERSION {
            format!("made by seqit {}", previous.seqit_version)
        } else if previous.config != stage.slice {
            "its config changed".to_string()
        } else {
            "its inputs changed".to_string()
        };
        return Ok(Decision::Run(reason));
    }
    match previous.status {
        Status::Running | Status::Failed => Ok(Decision::Resume),
        Status::Done => {
            for output in &stage.outputs {
                let key = relative(output, stage.dir.parent().unwrap_or(Path::new("")));
                let now = hasher.hash(output)?;
                if now.is_none() || now.as_ref() != previous.outputs.get(&key) {
                    return Ok(Decision::Run(format!(
                        "its output `{key}` is missing or was changed"
                    )));
                }
            }
            Ok(Decision::Skip)
        }
    }
}

/// Input hashes keyed by path (relative to the run directory where possible); the
/// second value lists inputs not yet made (dry runs only).
fn input_hashes(
    stage: &Stage,
    run_dir: &Path,
    hasher: &mut Hasher,
) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let mut hashes = BTreeMap::new();
    let mut missing = Vec::new();
    for input in &stage.inputs {
        let key = relative(input, run_dir);
        match hasher.hash(input)? {
            Some(h) => {
                hashes.insert(key, h);
            }
            None => missing.push(key),
        }
    }
    Ok((hashes, missing))
}

#[allow(clippy::too_many_arguments)]
fn execute(
    exp: &Experiment,
    stage: &Stage,
    decision: &Decision,
    previous: Option<Manifest>,
    fingerprint: String,
    missing: Vec<String>,
    exe: &Path,
    lock: &File,
    hasher: &mut Hasher,
) -> Result<()> {
    if !missing.is_empty() {
        bail!("its inputs are missing: {}", missing.join(", "));
    }
    let (inputs, _) = input_hashes(stage, &exp.run_dir, hasher)?;
    let mut resume = *decision == Decision::Resume;
    // A trainer killed before its first checkpoint has nothing to resume from, only a
    // partial metrics file: start it over.
    if resume && stage.kind == Kind::Train && !has_checkpoint(&stage.dir) {
        resume = false;
    }
    let mut manifest = match previous {
        Some(m) if resume => Manifest {
            status: Status::Running,
            attempts: m.attempts + 1,
            ..m
        },
        _ => {
            if stage.dir.exists() {
                std::fs::remove_dir_all(&stage.dir)
                    .with_context(|| format!("cannot clear `{}`", stage.dir.display()))?;
            }
            Manifest {
                stage: stage.name.clone(),
                status: Status::Running,
                seqit_version: VERSION.to_string(),
                fingerprint,
                config: stage.slice.clone(),
                inputs,
                outputs: BTreeMap::new(),
                commands: commands(stage),
                started_at: unix_now(),
                finished_at: None,
                seconds: 0.0,
                attempts: 1,
            }
        }
    };
    std::fs::create_dir_all(&stage.dir)?;
    manifest.write(&stage.dir)?;
    let started = Instant::now();
    let result = perform(exp, stage, exe, lock);
    manifest.seconds += started.elapsed().as_secs_f64();
    if let Err(err) = result {
        manifest.status = Status::Failed;
        manifest.write(&stage.dir)?;
        return Err(err.context("re-run the same command to resume it"));
    }
    let base = stage.dir.parent().unwrap_or(Path::new(""));
    for output in &stage.outputs {
        let hash = hasher
            .hash(output)?
            .with_context(|| format!("it finished without writing `{}`", output.display()))?;
        manifest.outputs.insert(relative(output, base), hash);
    }
    manifest.status = Status::Done;
    manifest.finished_at = Some(unix_now());
    manifest.write(&stage.dir)
}

fn perform(exp: &Experiment, stage: &Stage, exe: &Path, lock: &File) -> Result<()> {
    match &stage.action {
        Action::Seed {
            input,
            limit,
            output,
        } => copy_seed(input, *limit, output),
        Action::Commands(commands) => {
            for args in commands {
                run_child(exe, args, lock)?;
            }
            Ok(())
        }
        Action::Launch {
            recipe,
            command,
            log,
            checkpoint,
        } => {
            run_child(exe, recipe, lock)?;
            let command = expand(command, &[("seqit", &path_str(exe))]);
            let mut trainer = Supervised::spawn(exe, &command, log, lock)?;
            let status = trainer.wait()?;
            if !status.success() {
                bail!(
                    "the launch command exited with {status}: `{command}`; its last lines ({}):\n{}",
                    log.display(),
                    trainer.log_tail(20)
                );
            }
            check_checkpoint(checkpoint).with_context(|| {
                format!(
                    "the launch command `{command}` finished, but left no model in `{}`",
                    checkpoint.display()
                )
            })
        }
        Action::Report {
            html,
            markdown,
            title,
        } => {
            let data = seqit_report::load_runs(std::slice::from_ref(&exp.run_dir))?;
            let options = seqit_report::Options {
                title: title.clone(),
            };
            crate::manifest::write_atomic(
                html,
                seqit_report::render_html(&data, &options).as_bytes(),
            )?;
            crate::manifest::write_atomic(
                markdown,
                seqit_report::render_markdown(&data, &options).as_bytes(),
            )
        }
    }
}

/// The `seqit` subcommands of a stage (without the launch command of an external
/// trainer, see [`launch_command`]).
fn commands(stage: &Stage) -> Vec<Vec<String>> {
    match &stage.action {
        Action::Commands(c) => c.clone(),
        Action::Launch { recipe, .. } => vec![recipe.clone()],
        _ => vec![],
    }
}

fn launch_command(stage: &Stage) -> Option<&str> {
    match &stage.action {
        Action::Launch { command, .. } => Some(command),
        _ => None,
    }
}

/// Checks that a trainer left a model in `dir`: `config.json` with safetensors or
/// PyTorch weights, or a PEFT adapter (`adapter_config.json` with its weights).
fn check_checkpoint(dir: &Path) -> Result<()> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read `{}`", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let has = |f: &dyn Fn(&str) -> bool| names.iter().any(|n| f(n));
    let weights = has(&|n| {
        n.ends_with(".safetensors") || (n.starts_with("pytorch_model") && n.ends_with(".bin"))
    });
    let full = has(&|n| n == "config.json") && weights;
    let adapter = has(&|n| n == "adapter_config.json") && has(&|n| n.starts_with("adapter_model"));
    if full || adapter {
        return Ok(());
    }
    bail!(
        "expected `config.json` with `*.safetensors` (or `pytorch_model*.bin`), or a PEFT adapter; found: {}",
        if names.is_empty() {
            "nothing".to_string()
        } else {
            names.join(", ")
        }
    )
}

/// Runs `seqit ARGS` with inherited output; the child is killed when the runner dies
/// and holds the run lock while it lives.
fn run_child(exe: &Path, args: &[String], lock: &File) -> Result<()> {
    let mut command = Command::new(exe);
    command.args(args).stdin(Stdio::null());
    tie_to_parent(&mut command, lock);
    let status = command
        .status()
        .with_context(|| format!("cannot start `{}`", exe.display()))?;
    if !status.success() {
        bail!(
            "`seqit {}` exited with {status}",
            args.iter()
                .map(|a| shell_word(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn tie_to_parent(command: &mut Command, lock: &File) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    let lock_fd = lock.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The runner may have died before the prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            // Keep the run directory locked until this process (and what it starts) ends.
            let flags = libc::fcntl(lock_fd, libc::F_GETFD);
            libc::fcntl(lock_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn tie_to_parent(_command: &mut Command, _lock: &File) {}

/// An exclusive lock on the run directory; waits while another runner, or the stage
/// processes of a killed one, still hold it.
fn lock_run_dir(run_dir: &Path, out: &mut dyn Write) -> Result<File> {
    let path = run_dir.join(LOCK_FILE);
    let file =
        File::create(&path).with_context(|| format!("cannot create `{}`", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            writeln!(
                out,
                "waiting for another `seqit run` on `{}` (or its stage processes) to finish",
                run_dir.display()
            )?;
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .context("cannot lock the run directory");
            }
        }
    }
    Ok(file)
}

fn copy_seed(input: &Path, limit: Option<usize>, output: &Path) -> Result<()> {
    let (format, mut records) = seqit_data::read_all(input, &seqit_data::ReadOptions::default())?;
    if let Some(limit) = limit {
        records.truncate(limit);
    }
    let options = seqit_data::WriteOptions {
        container: Some(seqit_data::Container::Jsonl),
        ..seqit_data::WriteOptions::new(format.schema)
    };
    seqit_data::write_all(output, &options, &records)?;
    Ok(())
}

fn count_records(path: &Path) -> Result<usize> {
    let mut reader = seqit_data::Reader::open(path, &seqit_data::ReadOptions::default())?;
    let mut n = 0;
    for record in &mut reader {
        record?;
        n += 1;
    }
    Ok(n)
}

fn has_checkpoint(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
    })
}

/// Tokens in a training run's `metrics.jsonl`.
fn train_tokens(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("tokens").and_then(|t| t.as_u64()))
        .sum()
}

fn dry_run(
    exp: &Experiment,
    stages: &[Stage],
    selection: &HashMap<String, Selected>,
    exe: &Path,
    out: &mut dyn Write,
) -> Result<()> {
    let mut hasher = Hasher::default();
    let (mut requests, mut tokens) = (0u64, 0u64);
    writeln!(out, "plan ({} stages):", stages.len())?;
    let run_dir = stages
        .first()
        .and_then(|s| s.dir.parent())
        .unwrap_or(Path::new(""))
        .to_path_buf();
    for (i, stage) in stages.iter().enumerate() {
        let (inputs, missing) = input_hashes(stage, &run_dir, &mut hasher)?;
        let decision = match selection.get(&stage.name) {
            Some(Selected::Forced) => Decision::Run("asked for with --only/--from".into()),
            Some(Selected::Left) => Decision::NotSelected,
            _ if !missing.is_empty() => Decision::Pending,
            _ => {
                let current = fingerprint(&stage.slice, &inputs, VERSION);
                decide(
                    stage,
                    Manifest::read(&stage.dir).as_ref(),
                    &current,
                    &mut hasher,
                )?
            }
        };
        let what = match &decision {
            Decision::Skip => "skip (finished)".to_string(),
            Decision::Resume => "resume".to_string(),
            Decision::Run(reason) => format!("run ({reason})"),
            Decision::Pending => "run (after the stages it depends on)".to_string(),
            Decision::NotSelected => "not selected".to_string(),
        };
        writeln!(out, "{:>3}. {:<28} {what}", i + 1, stage.name)?;
        let e = &stage.estimate;
        if e.requests > 0 {
            writeln!(
                out,
                "       ≤ {} requests, ≈ {} tokens: {}",
                e.requests, e.tokens, e.note
            )?;
        } else if !e.note.is_empty() {
            writeln!(out, "       {}", e.note)?;
        }
        for args in commands(stage) {
            writeln!(
                out,
                "       $ seqit {}",
                args.iter()
                    .map(|a| shell_word(a))
                    .collect::<Vec<_>>()
                    .join(" ")
            )?;
        }
        if let Some(command) = launch_command(stage) {
            writeln!(out, "       $ {command}")?;
        }
        for name in &stage.servers {
            writeln!(
                out,
                "       serves `{name}`: {}",
                serve_command(exp, name, exe)
            )?;
        }
        if !matches!(decision, Decision::Skip | Decision::NotSelected) {
            requests += e.requests;
            tokens += e.tokens;
        }
    }
    writeln!(
        out,
        "total to run: ≤ {requests} LLM requests, ≈ {tokens} tokens"
    )?;
    Ok(())
}

fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn progress_bar(done: usize, total: usize) -> String {
    const WIDTH: usize = 12;
    let filled = done * WIDTH / total.max(1);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(WIDTH - filled))
}

pub fn human_seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
