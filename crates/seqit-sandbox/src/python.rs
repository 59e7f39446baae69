//! Finding the Python interpreter and the directories it needs to start.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use super::SandboxError;

/// What the sandbox needs to know about an interpreter, asked once (outside the sandbox).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PythonInfo {
    /// `sys.executable`: the path to exec (a venv's `bin/python` keeps its venv).
    pub executable: PathBuf,
    /// `sys.version`, first word.
    pub version: String,
    /// `sys.prefix`, `sys.base_prefix`, `sys.exec_prefix`, `sys.base_exec_prefix`, and
    /// the directories of the executable and of its resolved target.
    pub roots: Vec<PathBuf>,
    /// `site.getsitepackages()`: added to `sys.path` by the runner, which starts Python
    /// with `-S` (no `.pth` processing; much faster start-up).
    pub site_packages: Vec<PathBuf>,
}

const INFO_SCRIPT: &str = r#"
import json, os, site, sys
exe = sys.executable
roots = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
         os.path.dirname(exe), os.path.dirname(os.path.realpath(exe))]
print(json.dumps({"executable": exe, "version": sys.version.split()[0],
                  "roots": [os.path.realpath(r) for r in roots],
                  "site_packages": [p for p in site.getsitepackages() if os.path.isdir(p)]}))
"#;

/// Runs `python` (a path, or a name looked up on `PATH`) once to learn its layout.
pub(crate) fn discover(python: &Path) -> Result<PythonInfo, SandboxError> {
    let program = find_on_path(python).ok_or_else(|| SandboxError::PythonNotFound {
        python: python.to_path_buf(),
    })?;
    let output = Command::new(&program)
        .args(["-I", "-S", "-c", INFO_SCRIPT])
        .output()
        .map_err(|source| SandboxError::PythonFailed {
            python: program.clone(),
            message: source.to_string(),
        })?;
    if !output.status.success() {
        return Err(SandboxError::PythonFailed {
            python: program,
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let mut info: PythonInfo =
        serde_json::from_slice(&output.stdout).map_err(|err| SandboxError::PythonFailed {
            python: program.clone(),
            message: format!("unexpected answer to the layout query: {err}"),
        })?;
    if !info.executable.is_absolute() {
        return Err(SandboxError::PythonFailed {
            python: program,
            message: format!("`sys.executable` is `{}`", info.executable.display()),
        });
    }
    info.roots.sort();
    info.roots.dedup();
    Ok(info)
}

/// `name` itself when it contains a slash, else the first executable `name` on `PATH`.
pub(crate) fn find_on_path(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 || name.is_absolute() {
        return name.is_file().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
