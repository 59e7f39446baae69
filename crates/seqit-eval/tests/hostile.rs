//! The hostile-completions file (`tests/fixtures/humaneval_hostile.jsonl`, for the
//! problem in `humaneval_hostile_problems.jsonl`) scored like any samples file: fork
//! bombs, writes and reads outside, sockets, endless loops, memory bombs, background
//! survivors, signals to the fork server, `chmod /tmp 0`, a tree deeper than `PATH_MAX`,
//! SysV IPC objects, 1 GB of writes, modified builtins — each followed by a correct
//! program that checks it finds a clean state. Every case must be scored as the file
//! says (failed, timed out, or passed only where the answer is right), the run must
//! complete, and nothing may be left on the host: no process, no file outside, no IPC
//! object. Run with namespace isolation (where the kernel has user namespaces) and with
//! basic isolation, through the fork server and with a fresh interpreter per program.
//! And an interpreter the unprivileged uid cannot reach is refused, never run as root.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use seqit_eval::humaneval::{read_problems, HumanEval, Sample, Settings};
use seqit_sandbox::{Isolation, IsolationPolicy, Sandbox, SandboxConfig, SandboxError};
use serde_json::Value;

/// What the fixture uses as the host directory outside the sandbox, its secret and its
/// SysV IPC keys (replaced by this test's own directory; the rest kept).
const FIXTURE_OUTSIDE: &str = "/tmp/seqit-hostile-outside";
const SECRET: &str = "seqit-hostile-secret";
const IPC_KEYS: [i64; 3] = [0x5E9170, 0x5E9171, 0x5E9172];
/// Files the fixture tries to create on the host, besides ones in its directory.
const PLANTED: &[&str] = &[
    "/etc/seqit-planted",
    "/usr/seqit-planted",
    "/root/seqit-planted",
    "/dev/shm/seqit-planted",
    "/dev/shm/seqit-hostile",
];

/// One run at a time: the cases are heavy, and the host checks count processes.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Case {
    name: String,
    expect: String,
    sample: Sample,
}

fn cases(outside: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("humaneval_hostile.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let completion = v["completion"]
                .as_str()
                .unwrap()
                .replace(FIXTURE_OUTSIDE, outside.to_str().unwrap());
            Case {
                name: v["case"].as_str().unwrap().to_string(),
                expect: v["expect"].as_str().unwrap().to_string(),
                sample: Sample {
                    task_id: v["task_id"].as_str().unwrap().to_string(),
                    completion,
                },
            }
        })
        .collect()
}

/// The test's corner of the host: `base` (the sandbox's temporary root, so it also
/// holds the run directories, and a marker in every sandbox process's command line
/// through the interpreter's path), `outside` with a secret file, and `py/python3`, a
/// link to the interpreter.
struct Host {
    _dir: tempfile::TempDir,
    base: PathBuf,
    outside: PathBuf,
    python: PathBuf,
}

fn host(python: &Path) -> Host {
    let dir = tempfile::Builder::new()
        .prefix("seqit-hostile-")
        .tempdir()
        .unwrap();
    let base = dir.path().to_path_buf();
    // Searchable (not listable) by the sandbox's uid: basic isolation's run directories
    // live here.
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o711)).unwrap();
    let outside = base.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(outside.join("keep.txt"), SECRET).unwrap();
    std::fs::set_permissions(
        outside.join("keep.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let py = base.join("py");
    std::fs::create_dir(&py).unwrap();
    std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(std::fs::canonicalize(python).unwrap(), py.join("python3")).unwrap();
    Host {
        python: py.join("python3"),
        _dir: dir,
        base,
        outside,
    }
}

fn config(host: &Host, isolation: IsolationPolicy) -> SandboxConfig {
    SandboxConfig {
        python: host.python.clone(),
        timeout: Duration::from_secs(3),
        kill_grace: Duration::from_millis(500),
        memory_bytes: 1 << 30,
        isolation,
        temp_root: Some(host.base.clone()),
        ..SandboxConfig::default()
    }
}

/// What of the host the checks compare before and after.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// Live processes of the sandbox's uid.
    nobody: HashSet<u32>,
    /// SysV IPC objects (`/proc/sysvipc`) with the fixture's keys or the sandbox's uid.
    ipc: Vec<String>,
}

fn proc_status_uid(pid: &str) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn snapshot(uid: u32) -> Snapshot {
    let mut nobody = HashSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.chars().all(|c| c.is_ascii_digit()) && proc_status_uid(&name) == Some(uid) {
            // Zombies are gone a moment later: count the living.
            let stat = std::fs::read_to_string(format!("/proc/{name}/stat")).unwrap_or_default();
            if !stat.contains(") Z ") {
                nobody.insert(name.parse().unwrap());
            }
        }
    }
    let mut ipc = Vec::new();
    for kind in ["msg", "sem", "shm"] {
        let text = std::fs::read_to_string(format!("/proc/sysvipc/{kind}")).unwrap_or_default();
        for row in text.lines().skip(1) {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let key: i64 = fields.first().and_then(|k| k.parse().ok()).unwrap_or(0);
            // uid is the 8th column of msg and shm, the 5th of sem; match any.
            let ours =
                IPC_KEYS.contains(&key) || fields.iter().skip(3).any(|f| *f == uid.to_string());
            if ours {
                ipc.push(format!("{kind}: {row}"));
            }
        }
    }
    ipc.sort();
    Snapshot { nobody, ipc }
}

/// Live processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let mut cmdline = Vec::new();
        let _ = std::fs::File::open(entry.path().join("cmdline"))
            .and_then(|mut f| f.read_to_end(&mut cmdline));
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(marker) {
            found.push(format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                &text[..text.len().min(200)]
            ));
        }
    }
    found
}

fn ipcs() -> String {
    std::process::Command::new("ipcs")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|_| "(no ipcs)".to_string())
}

/// Scores the whole file with `sandbox` and checks every case and the host.
fn score_the_file(label: &str, host: &Host, sandbox: Sandbox, fresh_process: bool) {
    let problems = read_problems(&fixtures().join("humaneval_hostile_problems.jsonl")).unwrap();
    let cases = cases(&host.outside);
    let samples: Vec<Sample> = cases.iter().map(|c| c.sample.clone()).collect();
    let uid = sandbox.runs_as_uid().unwrap();
    assert!(!sandbox.runs_as_root(), "{label}: runs as root");
    let before = snapshot(uid);
    let ipcs_before = ipcs();
    let interpreter_dir = sandbox.python().parent().unwrap().to_path_buf();
    let eval = HumanEval::new(
        &problems,
        &samples,
        Path::new("humaneval_hostile.jsonl"),
        Settings {
            ks: vec![1],
            workers: 1,
            allow_incomplete: false,
            fresh_process,
        },
    )
    .unwrap();
    let report = eval
        .run(&sandbox, &[], |_, _| true)
        .unwrap_or_else(|err| panic!("{label}: the run did not complete: {err}"));
    drop(sandbox);
    assert_eq!(report.results.len(), cases.len(), "{label}");
    let mut wrong = Vec::new();
    for (case, result) in cases.iter().zip(&report.results) {
        let ok = match case.expect.as_str() {
            "passed" => result.passed,
            "failed" => !result.passed && result.result.starts_with("failed"),
            "timed out" => result.result == "timed out",
            "not passed" => !result.passed,
            other => panic!("unknown expectation `{other}`"),
        };
        eprintln!("{label}: {:<60} {}", case.name, result.result);
        if !ok {
            wrong.push(format!(
                "{}: expected {}, got `{}`",
                case.name, case.expect, result.result
            ));
        }
    }
    assert!(wrong.is_empty(), "{label}: {}", wrong.join("\n"));

    // Nothing is left on the host.
    std::thread::sleep(Duration::from_millis(300));
    let marker = host.base.to_string_lossy().into_owned();
    let left = processes_with(&marker);
    assert!(left.is_empty(), "{label}: processes left: {left:?}");
    let after = snapshot(uid);
    let new_processes: Vec<&u32> = after.nobody.difference(&before.nobody).collect();
    assert!(
        new_processes.is_empty(),
        "{label}: new processes of uid {uid}: {new_processes:?}"
    );
    assert_eq!(
        after.ipc,
        before.ipc,
        "{label}: SysV IPC objects left\nbefore:\n{ipcs_before}\nafter:\n{}",
        ipcs()
    );
    let mut outside: Vec<String> = std::fs::read_dir(&host.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    outside.sort();
    assert_eq!(outside, ["keep.txt"], "{label}: files appeared outside");
    assert_eq!(
        std::fs::read_to_string(host.outside.join("keep.txt")).unwrap(),
        SECRET,
        "{label}"
    );
    for path in PLANTED
        .iter()
        .map(PathBuf::from)
        .chain([interpreter_dir.join("seqit-planted")])
    {
        assert!(!path.exists(), "{label}: `{}` was written", path.display());
    }
    // The sandbox's own directories (run directories, the root's mount point) are gone.
    let mut base: Vec<String> = std::fs::read_dir(&host.base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    base.sort();
    assert_eq!(
        base,
        ["outside", "py"],
        "{label}: left in the temporary root"
    );
}

/// Whether this kernel lets a process create a user namespace (what namespace
/// isolation needs): tried in a child process.
fn user_namespaces() -> Result<(), String> {
    let mut command = std::process::Command::new("true");
    // SAFETY: unshare is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`true` in a new user namespace: {status}")),
        Err(err) => Err(format!("unshare(CLONE_NEWUSER): {err}")),
    }
}

fn default_python() -> PathBuf {
    let sandbox = Sandbox::new(SandboxConfig::default());
    match sandbox {
        Ok(s) => s.python().to_path_buf(),
        Err(_) => PathBuf::from("/usr/bin/python3"),
    }
}

#[test]
fn hostile_completions_are_contained_with_namespaces() {
    let _serial = serial();
    if let Err(why) = user_namespaces() {
        eprintln!("SKIPPED: namespace isolation: this kernel forbids user namespaces ({why})");
        return;
    }
    for fresh in [false, true] {
        let host = host(&default_python());
        let sandbox = Sandbox::new(config(&host, IsolationPolicy::Auto))
            .unwrap_or_else(|err| panic!("user namespaces work here, yet: {err}"));
        assert_eq!(sandbox.isolation(), Isolation::Namespaces);
        assert!(sandbox.warnings().is_empty(), "{:?}", sandbox.warnings());
        let label = if fresh {
            "namespaces, fresh"
        } else {
            "namespaces, session"
        };
        score_the_file(label, &host, sandbox, fresh);
    }
}

#[test]
fn hostile_completions_are_contained_with_basic_isolation() {
    let _serial = serial();
    // Basic isolation runs the interpreter from the host's filesystem as the sandbox's
    // uid: it needs one that uid can reach.
    let mut candidates = vec![default_python()];
    candidates.extend(["/usr/bin/python3", "/usr/local/bin/python3"].map(PathBuf::from));
    let mut refused = Vec::new();
    let python = candidates.iter().filter(|p| p.exists()).find(|python| {
        let host = host(python);
        match Sandbox::new(config(&host, IsolationPolicy::Basic)) {
            Ok(_) => true,
            Err(err @ SandboxError::RootRefused { .. }) => {
                refused.push(err.to_string());
                false
            }
            Err(err) => panic!("basic isolation with `{}`: {err}", python.display()),
        }
    });
    let Some(python) = python else {
        eprintln!("SKIPPED: basic isolation: no interpreter here that the sandbox's uid can run: {refused:?}");
        return;
    };
    for fresh in [false, true] {
        let host = host(python);
        let sandbox = Sandbox::new(config(&host, IsolationPolicy::Basic)).unwrap();
        assert_eq!(sandbox.isolation(), Isolation::Basic);
        assert!(
            sandbox
                .warnings()
                .iter()
                .any(|w| w.contains("basic isolation")),
            "{:?}",
            sandbox.warnings()
        );
        let label = if fresh {
            "basic, fresh"
        } else {
            "basic, session"
        };
        score_the_file(label, &host, sandbox, fresh);
    }
}

/// A copy of the interpreter in a directory only root may enter.
fn unreachable_python(dir: &Path) -> PathBuf {
    let closed = dir.join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let real = std::fs::canonicalize(default_python()).unwrap();
    std::os::unix::fs::symlink(&real, closed.join("python3")).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    closed.join("python3")
}

fn euid() -> u32 {
    // SAFETY: cannot fail.
    unsafe { libc::geteuid() }
}

#[test]
fn an_interpreter_the_sandbox_uid_cannot_reach_is_refused_never_run_as_root() {
    if euid() != 0 {
        eprintln!("SKIPPED: only root switches to an unprivileged uid");
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let python = unreachable_python(dir.path());
    let mut policies = vec![IsolationPolicy::Basic];
    if user_namespaces().is_ok() {
        policies.push(IsolationPolicy::Auto);
    }
    for isolation in policies {
        let config = SandboxConfig {
            python: python.clone(),
            isolation,
            temp_root: Some(dir.path().to_path_buf()),
            ..SandboxConfig::default()
        };
        let err = Sandbox::new(config.clone()).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, SandboxError::RootRefused { .. }),
            "{isolation:?}: {text}"
        );
        // The cause (the directory, its mode) and the fix.
        let closed = dir.path().join("closed");
        assert!(
            text.contains(&format!("`{}` (mode 0700", closed.display())),
            "{isolation:?}: {text}"
        );
        assert!(
            text.contains("uid 65534")
                && text.contains("hint:")
                && text.contains("--python")
                && text.contains("--allow-root-sandbox"),
            "{isolation:?}: {text}"
        );
        // Explicitly allowed: root, without capabilities, and said so.
        let sandbox = Sandbox::new(SandboxConfig {
            allow_root: true,
            ..config
        })
        .unwrap();
        assert!(sandbox.runs_as_root() && sandbox.runs_as_uid() == Some(0));
        assert!(
            sandbox.warnings()[0].contains("runs as root"),
            "{:?}",
            sandbox.warnings()
        );
        assert_eq!(sandbox.describe()["as_root"], true);
        let e = sandbox
            .run("import os\nassert os.getuid() == 0\nprint(open('/proc/self/status').read())")
            .unwrap();
        assert!(e.outcome.passed(), "{e:?}");
        assert!(
            e.stdout.contains("CapEff:\t0000000000000000"),
            "{}",
            e.stdout
        );
        assert!(
            e.stdout.contains("CapBnd:\t0000000000000000"),
            "{}",
            e.stdout
        );
        assert!(e.stdout.contains("Seccomp:\t2"), "{}", e.stdout);
    }
}
