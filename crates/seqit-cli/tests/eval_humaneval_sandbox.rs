//! `seqit eval humaneval`'s sandbox through the real binary: the summary line and
//! `metrics.json` say which isolation, uid and limits ran; an interpreter the sandbox's
//! uid cannot reach is refused (never run as root) unless `--allow-root-sandbox`, which
//! warns; basic isolation warns; and the hostile-completions file
//! (`crates/seqit-eval/tests/fixtures/humaneval_hostile.jsonl`) is scored to the end, also
//! after the run is killed halfway and resumed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use seqit_testkit::cli::Seqit;
use serde_json::Value;

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../seqit-eval/tests/fixtures")
}

fn metrics(output: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(output.join("metrics.json")).unwrap()).unwrap()
}

fn euid() -> u32 {
    // SAFETY: cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether this kernel lets a process create a user namespace.
fn user_namespaces() -> bool {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new("true");
    // SAFETY: unshare is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.status().is_ok_and(|s| s.success())
}

/// A small samples file: one right and one wrong answer to the hostile fixture's problem.
fn two_samples(dir: &Path) -> PathBuf {
    let path = dir.join("samples.jsonl");
    std::fs::write(
        &path,
        "{\"task_id\": \"Hostile/add\", \"completion\": \"    return a + b\\n\"}\n\
         {\"task_id\": \"Hostile/add\", \"completion\": \"    return a - b\\n\"}\n",
    )
    .unwrap();
    path
}

fn score(samples: &Path, output: &Path, extra: &[&str]) -> Output {
    let problems = fixtures().join("humaneval_hostile_problems.jsonl");
    let mut args = vec![
        "eval",
        "humaneval",
        "--problems",
        problems.to_str().unwrap(),
        "--completions",
        samples.to_str().unwrap(),
        "--k",
        "1",
        "--timeout",
        "3",
        "--workers",
        "1",
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    SEQIT.output(&args)
}

#[test]
fn the_summary_and_metrics_say_which_isolation_uid_and_limits_ran() {
    if !user_namespaces() {
        eprintln!("SKIPPED: this kernel forbids user namespaces");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let samples = two_samples(dir.path());
    let output = dir.path().join("out");
    let out = score(
        &samples,
        &output,
        &["--disk-mb", "64", "--memory-mb", "1024"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let uid = if euid() == 0 { 65534 } else { euid() };
    let line = format!(
        "sandbox: namespaces as uid {uid}, no capabilities, seccomp; 3 s, 1024 MiB memory, 64 MiB disk"
    );
    assert!(stdout.contains(&line), "{stdout}");
    let sandbox = &metrics(&output)["settings"]["sandbox"];
    assert_eq!(sandbox["isolation"], "namespaces");
    assert_eq!(sandbox["uid"], uid);
    assert_eq!(sandbox["as_root"], false);
    assert_eq!(sandbox["capabilities"], "none");
    assert_eq!(sandbox["disk_bytes"], 64u64 << 20);
    assert_eq!(sandbox["memory_bytes"], 1024u64 << 20);
    assert_eq!(sandbox["writable"], "fresh tmpfs per program");
    assert_eq!(metrics(&output)["pass@k"]["pass@1"], 0.5);
}

/// A link to the interpreter in a directory only root may enter.
fn unreachable_python(dir: &Path) -> PathBuf {
    let closed = dir.join("closed");
    std::fs::create_dir(&closed).unwrap();
    let python = Command::new("python3")
        .args([
            "-c",
            "import sys, os; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .unwrap();
    let real = String::from_utf8(python.stdout).unwrap();
    std::os::unix::fs::symlink(real.trim(), closed.join("python3")).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    closed.join("python3")
}

#[test]
fn an_interpreter_uid_65534_cannot_reach_is_refused_unless_root_is_allowed() {
    if euid() != 0 {
        eprintln!("SKIPPED: only root switches to an unprivileged uid");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let python = unreachable_python(dir.path());
    let samples = two_samples(dir.path());
    let mut modes = vec!["basic"];
    if user_namespaces() {
        modes.push("auto");
    }
    for mode in modes {
        let output = dir.path().join(format!("out-{mode}"));
        let python_arg = python.to_str().unwrap();
        let out = score(
            &samples,
            &output,
            &["--python", python_arg, "--sandbox", mode],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{mode}: {stderr}");
        assert!(
            stderr.starts_with("error: refusing to run model-written code as root"),
            "{mode}: {stderr}"
        );
        let closed = dir.path().join("closed");
        assert!(
            stderr.contains(&format!("`{}` (mode 0700", closed.display())),
            "{mode}: {stderr}"
        );
        assert!(
            stderr.contains("hint:") && stderr.contains("--allow-root-sandbox"),
            "{mode}: {stderr}"
        );
        assert!(!output.join("results.jsonl").exists(), "{mode}");

        let out = score(
            &samples,
            &output,
            &[
                "--python",
                python_arg,
                "--sandbox",
                mode,
                "--allow-root-sandbox",
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode}: {stderr}");
        assert!(
            stderr.contains("warning: `--allow-root-sandbox`: model-written code runs as root"),
            "{mode}: {stderr}"
        );
        assert!(stdout.contains("as ROOT"), "{mode}: {stdout}");
        let sandbox = &metrics(&output)["settings"]["sandbox"];
        assert_eq!(sandbox["as_root"], true, "{mode}");
        assert_eq!(sandbox["uid"], 0, "{mode}");
    }
}

#[test]
fn basic_isolation_is_used_only_when_asked_for_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let samples = two_samples(dir.path());
    let output = dir.path().join("out");
    // Basic isolation runs the host's interpreter as uid 65534: one it can reach.
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(python) = python else {
        eprintln!("SKIPPED: no system interpreter");
        return;
    };
    let out = score(
        &samples,
        &output,
        &["--sandbox", "basic", "--python", python],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("refusing to run model-written code as root") {
        eprintln!("SKIPPED: `{python}` is not reachable by uid 65534 here");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: basic isolation (no namespaces)"),
        "{stderr}"
    );
    assert!(stdout.contains("sandbox: basic as uid"), "{stdout}");
    assert_eq!(
        metrics(&output)["settings"]["sandbox"]["isolation"],
        "basic"
    );
}

#[test]
fn the_hostile_file_is_scored_to_the_end_even_when_killed_and_resumed() {
    if !user_namespaces() {
        eprintln!("SKIPPED: this kernel forbids user namespaces");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let samples = fixtures().join("humaneval_hostile.jsonl");
    let expected: Vec<String> = std::fs::read_to_string(&samples)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["expect"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let output = dir.path().join("out");
    let problems = fixtures().join("humaneval_hostile_problems.jsonl");
    let args = [
        "eval",
        "humaneval",
        "--problems",
        problems.to_str().unwrap(),
        "--completions",
        samples.to_str().unwrap(),
        "--k",
        "1",
        "--timeout",
        "3",
        "--memory-mb",
        "1024",
        "--workers",
        "1",
        "--output",
        output.to_str().unwrap(),
    ];
    // Killed once a third of the samples are scored...
    let mut child = SEQIT
        .command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = output.join("results.jsonl.partial");
    let started = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&partial)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines > expected.len() / 3 || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // ... and resumed: it finishes.
    let out = SEQIT.output(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming:"), "{stderr}");
    let results: Vec<Value> = std::fs::read_to_string(output.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), expected.len());
    for (result, expect) in results.iter().zip(&expected) {
        let text = result["result"].as_str().unwrap();
        let ok = match expect.as_str() {
            "passed" => text == "passed",
            "failed" => text.starts_with("failed"),
            "timed out" => text == "timed out",
            _ => text != "passed",
        };
        assert!(ok, "expected {expect}: {result}");
    }
}
