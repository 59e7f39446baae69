//! The sandbox contains what model-written code may do: each hostile program below is
//! scored as failed (or timed out), and the host — files the test created, the test
//! process, its network listener — is unaffected.
//!
//! Each case runs under every isolation this machine offers — with the Python audit hook
//! (the default), basic isolation, and namespaces with the hook off, so that the kernel's
//! part (namespaces, read-only root, rlimits) is tested on its own — and both ways a
//! program can run: a fresh interpreter (`Sandbox::run`) and a child of the sandboxed
//! fork server (`Session::run`, what HumanEval uses).

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use seqit_sandbox::{
    Execution, Isolation, IsolationPolicy, Outcome, Sandbox, SandboxConfig, SandboxError, Session,
};

/// Heavy cases (fork bombs, 10 GB allocations) run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(guard: bool) -> SandboxConfig {
    SandboxConfig {
        timeout: Duration::from_secs(3),
        kill_grace: Duration::from_millis(500),
        max_processes: 32,
        python_guard: guard,
        hidden_paths: vec![fake_home().to_path_buf()],
        ..SandboxConfig::default()
    }
}

fn guarded() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| Sandbox::new(config(true)).expect("sandbox"))
}

/// Namespaces without the audit hook, where this machine has them.
fn unguarded() -> Option<&'static Sandbox> {
    static S: OnceLock<Option<Sandbox>> = OnceLock::new();
    S.get_or_init(|| Sandbox::new(config(false)).ok()).as_ref()
}

/// Basic isolation, with an interpreter the sandbox's uid can run (as root, the default
/// one may live under `/root`): `None` where this machine has none.
fn basic() -> Option<&'static Sandbox> {
    static S: OnceLock<Option<Sandbox>> = OnceLock::new();
    S.get_or_init(|| {
        let mut refused = Vec::new();
        for python in ["python3", "/usr/bin/python3", "/usr/local/bin/python3"] {
            match Sandbox::new(SandboxConfig {
                isolation: IsolationPolicy::Basic,
                python: python.into(),
                ..config(true)
            }) {
                Ok(sandbox) => return Some(sandbox),
                Err(err @ SandboxError::RootRefused { .. }) => refused.push(err.to_string()),
                Err(SandboxError::PythonNotFound { .. }) => {}
                Err(err) => panic!("basic sandbox: {err}"),
            }
        }
        eprintln!(
            "note: basic isolation skipped: no interpreter the sandbox's uid can run: {refused:?}"
        );
        None
    })
    .as_ref()
}

/// Every isolation this machine offers, with the guard on, and (for the kernel's own
/// checks) namespaces with the guard off.
fn all_sandboxes() -> Vec<(&'static str, &'static Sandbox)> {
    let mut list = vec![("default", guarded())];
    list.extend(basic().map(|s| ("basic", s)));
    if let Some(sandbox) = unguarded() {
        list.push(("namespaces without guard", sandbox));
    } else {
        eprintln!("note: no namespace isolation here; kernel-only checks skipped");
    }
    list
}

/// One way of running programs: a fresh interpreter each time, or a fork-server session.
struct Runner<'a> {
    label: String,
    sandbox: &'a Sandbox,
    session: Option<Session<'a>>,
}

impl Runner<'_> {
    fn run(&mut self, program: &str) -> Execution {
        match &mut self.session {
            Some(session) => session.run(program),
            None => self.sandbox.run(program),
        }
        .expect("the sandbox itself must work")
    }
}

/// Every sandbox, both ways.
fn runners() -> Vec<Runner<'static>> {
    all_sandboxes()
        .into_iter()
        .flat_map(|(label, sandbox)| both(label, sandbox))
        .collect()
}

/// One sandbox, both ways.
fn both<'a>(label: &str, sandbox: &'a Sandbox) -> [Runner<'a>; 2] {
    [
        Runner {
            label: format!("{label}, fresh"),
            sandbox,
            session: None,
        },
        Runner {
            label: format!("{label}, session"),
            sandbox,
            session: Some(sandbox.session()),
        },
    ]
}

/// A directory of the test process (outside any sandbox) holding a file.
struct HostFiles {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    file: PathBuf,
}

const SECRET: &str = "host-secret-7f3a9c";

fn host_files() -> HostFiles {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keep.txt");
    std::fs::write(&file, SECRET).unwrap();
    HostFiles {
        dir: dir.path().to_path_buf(),
        file,
        _dir: dir,
    }
}

/// A fake home directory with a secret in it, hidden from basic isolation explicitly.
fn fake_home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("fake-home-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join(".netrc"), SECRET).unwrap();
        dir
    })
    .path()
}

fn run(sandbox: &Sandbox, program: &str) -> Execution {
    sandbox.run(program).expect("the sandbox itself must work")
}

fn assert_failed(label: &str, execution: &Execution) {
    assert!(
        !execution.outcome.passed(),
        "{label}: passed but must not: {execution:?}"
    );
    assert!(
        !execution.stdout.contains(SECRET),
        "{label}: secret leaked: {execution:?}"
    );
}

fn assert_host_intact(files: &HostFiles) {
    assert_eq!(std::fs::read_to_string(&files.file).unwrap(), SECRET);
    assert_eq!(
        std::fs::read_dir(&files.dir).unwrap().count(),
        1,
        "new files appeared in {:?}",
        files.dir
    );
    // The test process can still start processes.
    assert!(std::process::Command::new("true")
        .status()
        .unwrap()
        .success());
}

fn py_str(path: &Path) -> String {
    format!("{:?}", path.to_str().unwrap())
}

#[test]
fn a_normal_program_passes_and_can_use_its_own_directory() {
    for mut runner in runners() {
        let label = runner.label.clone();
        let e = runner.run(
            "import os, tempfile\n\
             with open('scratch.txt', 'w') as f: f.write('x' * 1000)\n\
             assert open('scratch.txt').read() == 'x' * 1000\n\
             with tempfile.TemporaryFile() as f: f.write(b'y')\n\
             os.remove('scratch.txt')\n\
             print('ok', sum(range(10)))\n",
        );
        assert_eq!(e.outcome, Outcome::Passed, "{label}: {e:?}");
        assert_eq!(e.stdout.trim(), "ok 45", "{label}");
    }
}

#[test]
fn failures_are_reported_like_human_eval() {
    for mut r in both("default", guarded()) {
        let label = r.label.clone();
        assert_eq!(
            r.run("assert 1 == 2").outcome,
            Outcome::Failed(String::new()),
            "{label}"
        );
        assert_eq!(
            r.run("raise ValueError('bad value')").outcome,
            Outcome::Failed("bad value".into()),
            "{label}"
        );
        assert_eq!(
            r.run("import sys\nsys.exit(3)").outcome,
            Outcome::Failed("3".into()),
            "{label}"
        );
        let syntax = r.run("def f(:\n  pass").outcome.result_text();
        assert!(
            syntax.starts_with("failed: invalid syntax"),
            "{label}: {syntax}"
        );
        // Leaving without a verdict is a failure, not a pass.
        let e = r.run("import os\nos._exit(0)");
        assert!(
            matches!(&e.outcome, Outcome::Failed(m) if m.contains("before reporting")),
            "{label}: {e:?}"
        );
        // Code under `if __name__ == "__main__"` does not run, as in human-eval's exec.
        assert_eq!(
            r.run("if __name__ == '__main__':\n    raise SystemExit(1)")
                .outcome,
            Outcome::Passed,
            "{label}"
        );
        // stdin is closed.
        assert!(!r.run("input()").outcome.passed(), "{label}");
    }
}

#[test]
fn nothing_leaks_from_one_program_to_the_next_in_a_session() {
    for (label, sandbox) in all_sandboxes() {
        let mut session = sandbox.session();
        // (Refused by seccomp: a child that got through would be caught below.)
        let forks = if sandbox.config().python_guard {
            ""
        } else {
            "import time\ntry:\n    if os.fork() == 0:\n        time.sleep(60)\nexcept PermissionError:\n    pass\n"
        };
        let first = format!(
            "import os\nopen('left.txt', 'w').write('x')\nos.mkdir('d')\nopen('d/f', 'w').write('y')\nos.chmod('d', 0)\n\
             open(os.path.join(os.environ['TMPDIR'], 't.txt'), 'w').write('z')\n{forks}"
        );
        assert_eq!(
            session.run(&first).unwrap().outcome,
            Outcome::Passed,
            "{label}"
        );
        let mut second = "import os\nassert os.listdir('.') == [], os.listdir('.')\n\
                          assert os.listdir(os.environ['TMPDIR']) == [], os.listdir(os.environ['TMPDIR'])\n"
            .to_string();
        if sandbox.isolation() == Isolation::Namespaces {
            // Only the fork server (PID 1) and this program are alive in the namespace.
            second.push_str("pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\nassert pids == [1, os.getpid()], pids\n");
        }
        let e = session.run(&second).unwrap();
        assert_eq!(e.outcome, Outcome::Passed, "{label}: {e:?}");
    }
}

#[test]
fn fork_bomb_is_contained() {
    let _serial = serial();
    let bomb = "import os\nwhile True:\n    os.fork()\n";
    for mut r in both("default", guarded()) {
        let e = r.run(bomb);
        assert!(
            matches!(&e.outcome, Outcome::Failed(m) if m.contains("os.fork")),
            "{}: {e:?}",
            r.label
        );
    }
    // Without the guard, the kernel's limits hold: RLIMIT_NPROC for an unprivileged uid,
    // and the PID namespace takes every process down with the program.
    // A marker in the runner's command line (through `hidden_paths`) finds this test's
    // processes among all others.
    let marker = format!("/nonexistent/seqit-forkbomb-{}", std::process::id());
    let sandbox = Sandbox::new(SandboxConfig {
        hidden_paths: vec![PathBuf::from(&marker)],
        ..config(false)
    });
    let Some(sandbox) = sandbox
        .ok()
        .filter(|s| s.runs_as_uid().is_some() || euid() != 0)
    else {
        eprintln!(
            "note: kernel-level fork-bomb check skipped (needs namespaces and an unprivileged uid)"
        );
        return;
    };
    let sleepers = "import os, time\nfor _ in range(6):\n    try:\n        os.fork()\n    except OSError:\n        pass\n\
                    time.sleep(60)\n";
    let [fresh, mut session] = both("namespaces without guard", &sandbox);
    for program in [sleepers, bomb] {
        let before = processes_with(&marker);
        let started = Instant::now();
        let e = fresh.sandbox.run(program).unwrap();
        assert!(!e.outcome.passed(), "fresh: {e:?}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "took {:?}",
            started.elapsed()
        );
        // Nothing of the program survives.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(processes_with(&marker), before, "fresh: {program}");

        let e = session.run(program);
        assert!(!e.outcome.passed(), "session: {e:?}");
        // Only the fork server itself is left, and it still works.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(processes_with(&marker), 1, "session: {program}");
        assert_eq!(session.run("pass").outcome, Outcome::Passed);
    }
    drop(session);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(processes_with(&marker), 0);
    assert!(std::process::Command::new("true")
        .status()
        .unwrap()
        .success());
}

fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Live processes whose command line contains `marker`.
fn processes_with(marker: &str) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let mut cmdline = Vec::new();
        let _ = std::fs::File::open(entry.path().join("cmdline"))
            .and_then(|mut f| f.read_to_end(&mut cmdline));
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            count += 1;
        }
    }
    count
}

#[test]
fn writing_outside_the_temp_dir_fails() {
    let files = host_files();
    let outside = files.dir.join("planted.txt");
    for mut runner in runners() {
        let label = runner.label.clone();
        for target in [
            outside.clone(),
            files.file.clone(),
            PathBuf::from("/etc/seqit-planted"),
            PathBuf::from("/usr/seqit-planted"),
        ] {
            let e = runner.run(&format!("open({}, 'w').write('pwned')", py_str(&target)));
            assert_failed(&format!("{label}: write {}", target.display()), &e);
        }
        let e = runner.run(&format!(
            "import os\nfd = os.open({}, os.O_WRONLY | os.O_APPEND)\nos.write(fd, b'x')",
            py_str(&files.file)
        ));
        assert_failed(&format!("{label}: os.open append"), &e);
    }
    assert!(!Path::new("/etc/seqit-planted").exists() && !Path::new("/usr/seqit-planted").exists());
    assert_host_intact(&files);
}

#[test]
fn deleting_host_files_fails() {
    let files = host_files();
    for mut runner in runners() {
        let label = runner.label.clone();
        let programs = [
            format!("import os\nos.remove({})", py_str(&files.file)),
            format!("import shutil\nshutil.rmtree({})", py_str(&files.dir)),
            format!(
                "import os\nos.rename({}, '/tmp/stolen')",
                py_str(&files.file)
            ),
            format!("import os\nos.truncate({}, 0)", py_str(&files.file)),
        ];
        for program in &programs {
            let e = runner.run(program);
            assert_failed(&format!("{label}: {program}"), &e);
        }
    }
    assert_host_intact(&files);
}

#[test]
fn reading_home_and_host_files_fails() {
    let files = host_files();
    let secret_in_home = fake_home().join(".netrc");
    for mut runner in runners() {
        let label = runner.label.clone();
        for target in [&secret_in_home, &files.file] {
            let e = runner.run(&format!("print(open({}).read())", py_str(target)));
            assert_failed(&format!("{label}: read {}", target.display()), &e);
        }
        let e = runner.run(&format!(
            "import os\nprint(os.listdir({}))",
            py_str(fake_home())
        ));
        assert_failed(&format!("{label}: list fake home"), &e);
        // HOME inside is the run's own directory, not the user's.
        let e = runner.run("import os\nh = os.path.expanduser('~')\nassert os.listdir(h) in ([], ['program.py']), os.listdir(h)");
        assert_eq!(e.outcome, Outcome::Passed, "{label}: {e:?}");
    }
    // The real /root (or $HOME) is not readable either where namespaces hide it.
    if guarded().isolation() == Isolation::Namespaces {
        let e = run(
            guarded(),
            "import os\nprint(sorted(os.listdir('/root')))\nprint(sorted(os.listdir('/home')))",
        );
        assert!(
            !e.stdout.contains(".bashrc") && !e.stdout.contains(".cargo"),
            "{e:?}"
        );
    }
    assert_host_intact(&files);
}

#[test]
fn the_environment_is_cleared() {
    for mut runner in runners() {
        let label = runner.label.clone();
        let e = runner.run("import os\nprint(sorted(os.environ))\nassert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_CTYPE'}, sorted(os.environ)");
        assert_eq!(e.outcome, Outcome::Passed, "{label}: {e:?}");
    }
}

#[test]
fn sockets_fail_and_the_host_listener_sees_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for mut runner in runners() {
        let label = runner.label.clone();
        let programs = [
            format!("import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'hi')"),
            "import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('1.1.1.1', 80))".to_string(),
            "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)".to_string(),
            "import socket\nsocket.getaddrinfo('example.com', 80)".to_string(),
        ];
        for program in &programs {
            let e = runner.run(program);
            assert!(!e.outcome.passed(), "{label}: {program}: {e:?}");
        }
    }
    assert!(
        listener.accept().is_err(),
        "a sandboxed program reached the host's listener"
    );
}

#[test]
fn infinite_loops_time_out() {
    for mut r in both("default", guarded()) {
        let label = r.label.clone();
        let started = Instant::now();
        let e = r.run("while True:\n    pass\n");
        assert_eq!(e.outcome, Outcome::TimedOut, "{label}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{label}: {:?}",
            started.elapsed()
        );
        // A program that ignores the in-process timer is killed at the wall-clock limit.
        let started = Instant::now();
        let e = r.run(
            "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass\n",
        );
        assert_eq!(e.outcome, Outcome::TimedOut, "{label}");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(6),
            "{label}: {elapsed:?}"
        );
        // Sleeping is wall-clock time too.
        assert_eq!(
            r.run("import time\ntime.sleep(100)").outcome,
            Outcome::TimedOut,
            "{label}"
        );
        // And the runner still works afterwards.
        assert_eq!(r.run("pass").outcome, Outcome::Passed, "{label}");
    }
}

#[test]
fn allocating_ten_gigabytes_fails() {
    let _serial = serial();
    for mut runner in runners() {
        let label = runner.label.clone();
        for program in [
            "x = bytearray(10 * 1024 ** 3)",
            "x = [0] * (10 ** 10 // 8)",
            "x = []\nwhile True:\n    x.append(bytearray(100 * 1024 ** 2))",
        ] {
            let started = Instant::now();
            let e = runner.run(program);
            assert_failed(&format!("{label}: {program}"), &e);
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{label}: {program}: {:?}",
                started.elapsed()
            );
        }
    }
    // The test process is fine and can still allocate.
    let v = vec![1u8; 64 << 20];
    assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
}

#[test]
fn output_is_capped() {
    let s = Sandbox::new(SandboxConfig {
        output_limit: 1000,
        ..config(true)
    })
    .unwrap();
    for mut r in both("capped", &s) {
        let e = r.run("import sys\nfor _ in range(100000):\n    print('spam' * 20)\nsys.stderr.write('e' * 5000)\n");
        assert_eq!(e.outcome, Outcome::Passed, "{}", r.label);
        assert!(e.output_truncated);
        assert_eq!(e.stdout.len(), 1000);
        assert_eq!(e.stderr.len(), 1000);
    }
}

#[test]
fn writing_a_huge_file_fails() {
    let s = Sandbox::new(SandboxConfig {
        max_file_bytes: 1 << 20,
        ..config(true)
    })
    .unwrap();
    for mut r in both("small files", &s) {
        let e = r.run("with open('big', 'wb') as f:\n    f.write(b'x' * (8 << 20))\n");
        assert!(!e.outcome.passed(), "{}: {e:?}", r.label);
    }
}

#[test]
fn isolation_is_reported() {
    let d = guarded().describe();
    assert!(
        d["isolation"] == "namespaces" || d["isolation"] == "basic",
        "{d}"
    );
    let guard = if guarded().isolation() == Isolation::Namespaces {
        "process"
    } else {
        "full"
    };
    assert_eq!(d["python_guard"], guard);
    assert_eq!(d["memory_bytes"], 2u64 << 30);
}

#[test]
fn a_missing_interpreter_is_a_clear_error() {
    let err = Sandbox::new(SandboxConfig {
        python: "/nonexistent/python3".into(),
        ..SandboxConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/nonexistent/python3") && err.contains("hint:"),
        "{err}"
    );
}

#[test]
fn basic_isolation_is_never_used_without_the_guard() {
    let err = Sandbox::new(SandboxConfig {
        isolation: IsolationPolicy::Basic,
        ..config(false)
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("refused without the Python guard"),
        "{err}"
    );
}

#[test]
fn programs_run_unprivileged_without_capabilities_under_seccomp() {
    for mut runner in runners() {
        let label = runner.label.clone();
        let e = runner.run(
            "import os\nstatus = open('/proc/self/status').read()\n\
             fields = dict(l.split(':', 1) for l in status.splitlines() if ':' in l)\n\
             for cap in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'):\n\
             \x20   assert int(fields[cap], 16) == 0, (cap, fields[cap])\n\
             assert fields['NoNewPrivs'].strip() == '1'\n\
             assert fields['Seccomp'].strip() == '2'\n\
             print(os.getuid(), os.geteuid(), os.getgid())\n",
        );
        assert_eq!(e.outcome, Outcome::Passed, "{label}: {e:?}");
        if euid() == 0 {
            assert_eq!(e.stdout.trim(), "65534 65534 65534", "{label}");
        }
    }
    let d = guarded().describe();
    assert_eq!(d["as_root"], false);
    assert_eq!(d["capabilities"], "none");
    assert_eq!(d["disk_bytes"], 256u64 << 20);
    if euid() == 0 {
        assert_eq!(d["uid"], 65534);
    }
}

/// The kernel's part alone (no audit hook): seccomp refuses what native code could do.
#[test]
fn seccomp_refuses_processes_signals_and_sockets_without_the_python_guard() {
    let Some(sandbox) = unguarded() else {
        eprintln!("note: no namespace isolation here; skipped");
        return;
    };
    for mut r in both("namespaces without guard", sandbox) {
        let label = r.label.clone();
        for program in [
            "import os\nos.fork()",
            "import os\nos.execv('/bin/true', ['true'])",
            "import os, signal\nos.kill(os.getpid(), signal.SIGUSR1)",
            "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(os.getpid()), 0)",
            "import socket\nsocket.socket(socket.AF_UNIX)",
            "import socket\nsocket.socketpair()",
            "import subprocess\nsubprocess.run(['true'])",
            "import ctypes\nassert ctypes.CDLL(None).fork() >= 0, 'refused'",
        ] {
            let e = r.run(program);
            assert!(
                matches!(&e.outcome, Outcome::Failed(m) if m.contains("Operation not permitted") || m.contains("refused")),
                "{label}: {program}: {e:?}"
            );
        }
        // Threads still work (clone with CLONE_THREAD; clone3 falls back to clone).
        let e = r.run(
            "from concurrent.futures import ThreadPoolExecutor\n\
             with ThreadPoolExecutor(4) as pool:\n    assert sum(pool.map(abs, range(-10, 0))) == 55\n",
        );
        assert_eq!(e.outcome, Outcome::Passed, "{label}: {e:?}");
    }
}

#[test]
fn each_program_gets_a_fresh_size_limited_tmpfs_and_ipc_namespace() {
    if guarded().isolation() != Isolation::Namespaces {
        eprintln!("note: no namespace isolation here; skipped");
        return;
    }
    let sandbox = Sandbox::new(SandboxConfig {
        disk_bytes: 8 << 20,
        ..config(false)
    })
    .unwrap();
    for mut r in both("8 MiB disk", &sandbox) {
        let label = r.label.clone();
        let program = "import os\nst = os.statvfs('.')\nassert st.f_blocks * st.f_frsize == 8 << 20, st\n\
                       mounts = open('/proc/self/mountinfo').read()\n\
                       assert any(l.split()[4] == os.getcwd() and ' - tmpfs ' in l for l in mounts.splitlines()), mounts\n\
                       import ctypes\nlibc = ctypes.CDLL(None)\n\
                       print(libc.msgget(0x5E9180, 0), libc.msgget(0x5E9180, 0o1600))\n\
                       try:\n    open('big', 'wb').write(b'x' * (9 << 20))\nexcept OSError as e:\n    print(e.errno)\n\
                       assert os.stat('.').st_mode & 0o777 == 0o700\n";
        let first = r.run(program);
        let second = r.run(program);
        for e in [&first, &second] {
            assert_eq!(e.outcome, Outcome::Passed, "{label}: {e:?}");
            assert!(
                e.stdout.contains("\n28\n"),
                "{label}: ENOSPC expected: {e:?}"
            );
        }
        // The queue each program makes is gone for the next one (and the first queue
        // in a namespace gets id 0).
        for e in [&first, &second] {
            assert_eq!(e.stdout.lines().next(), Some("-1 0"), "{label}: {e:?}");
        }
    }
}

#[test]
fn an_interpreter_under_tmp_stays_read_only_and_outside_the_writable_directory() {
    if guarded().isolation() != Isolation::Namespaces {
        eprintln!("note: no namespace isolation here; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let link = dir.path().join("python3");
    std::os::unix::fs::symlink(std::fs::canonicalize(guarded().python()).unwrap(), &link).unwrap();
    let sandbox = Sandbox::new(SandboxConfig {
        python: link.clone(),
        ..config(true)
    })
    .unwrap();
    for mut r in both("interpreter under /tmp", &sandbox) {
        let label = r.label.clone();
        let e = r.run(&format!(
            "import os, sys\nassert os.getcwd() != '/tmp', os.getcwd()\n\
             assert not {dir:?}.startswith(os.getcwd())\n\
             try:\n    open({dir:?} + '/planted', 'w')\nexcept OSError as e:\n    print('refused', e.errno)\n\
             open('mine', 'w').write('x')\n",
            dir = dir.path().to_str().unwrap()
        ));
        assert_eq!(e.outcome, Outcome::Passed, "{label}: {e:?}");
        assert!(
            e.stdout.contains("refused 30"),
            "{label}: EROFS expected: {e:?}"
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Pids of live processes whose command line contains `marker`, except this one.
fn pids_with(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let mut cmdline = Vec::new();
        let _ = std::fs::File::open(entry.path().join("cmdline"))
            .and_then(|mut f| f.read_to_end(&mut cmdline));
        if pid != std::process::id() as i32 && String::from_utf8_lossy(&cmdline).contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_fork_server_killed_during_a_program_fails_only_that_program() {
    let _serial = serial();
    let marker = format!("/nonexistent/seqit-killed-server-{}", std::process::id());
    let mut sandboxes = vec![("namespaces", IsolationPolicy::Auto)];
    if basic().is_some() {
        sandboxes.push(("basic", IsolationPolicy::Basic));
    }
    for (label, isolation) in sandboxes {
        let python = match isolation {
            IsolationPolicy::Basic => basic().unwrap().python().to_path_buf(),
            _ => guarded().python().to_path_buf(),
        };
        let Ok(sandbox) = Sandbox::new(SandboxConfig {
            hidden_paths: vec![PathBuf::from(&marker)],
            isolation,
            python,
            ..config(true)
        }) else {
            eprintln!("note: {label}: not available here");
            continue;
        };
        let mut session = sandbox.session();
        assert_eq!(session.run("pass").unwrap().outcome, Outcome::Passed);
        let killer = std::thread::spawn({
            let marker = marker.clone();
            move || {
                std::thread::sleep(Duration::from_millis(300));
                for pid in pids_with(&marker) {
                    // SAFETY: `kill` takes integers only and touches no memory of ours;
                    // `pid` is a leftover sandbox process found by its marker.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        });
        let e = session.run("import time\ntime.sleep(2)").unwrap();
        killer.join().unwrap();
        assert!(
            matches!(&e.outcome, Outcome::Failed(m) if m.contains("fork server died")),
            "{label}: {e:?}"
        );
        // The next program gets a new server.
        assert_eq!(
            session.run("pass").unwrap().outcome,
            Outcome::Passed,
            "{label}"
        );
        drop(session);
        std::thread::sleep(Duration::from_millis(200));
        assert!(pids_with(&marker).is_empty(), "{label}");
    }
}
