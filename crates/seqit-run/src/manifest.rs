//! `RUN_DIR/<stage>/manifest.json`: what a stage was run with (config slice, content
//! hashes of its inputs, seqit version), how far it got, and hashes of what it wrote.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Started and not finished: interrupted, or still going.
    Running,
    Failed,
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub stage: String,
    pub status: Status,
    pub seqit_version: String,
    /// Hash of the version, the config slice and the input hashes: a stage whose
    /// fingerprint is unchanged and whose status is `done` is not run again.
    pub fingerprint: String,
    pub config: serde_json::Value,
    /// Input path (relative to the run directory where possible) → SHA-256.
    pub inputs: BTreeMap<String, String>,
    /// Output path → SHA-256, filled in when the stage is done.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    pub commands: Vec<Vec<String>>,
    /// Unix seconds of the first start and of the finish.
    pub started_at: u64,
    pub finished_at: Option<u64>,
    /// Seconds spent in this stage over all attempts.
    pub seconds: f64,
    pub attempts: u32,
}

impl Manifest {
    pub fn path(stage_dir: &Path) -> PathBuf {
        stage_dir.join(MANIFEST)
    }

    /// The manifest in `stage_dir`, if there is a readable one (an unreadable one counts
    /// as none: the stage starts afresh).
    pub fn read(stage_dir: &Path) -> Option<Manifest> {
        let text = std::fs::read_to_string(Self::path(stage_dir)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write(&self, stage_dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        write_atomic(&Self::path(stage_dir), &json)
    }
}

/// Writes through a temporary file in the same directory, synced and renamed into place
/// (see [`seqit_core::durable::atomic_write`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    seqit_core::durable::atomic_write(path, bytes)
        .with_context(|| format!("cannot write `{}`", path.display()))
}

pub fn fingerprint(
    config: &serde_json::Value,
    inputs: &BTreeMap<String, String>,
    version: &str,
) -> String {
    let text = serde_json::json!({ "version": version, "config": config, "inputs": inputs });
    hex(&Sha256::digest(text.to_string().as_bytes()))
}

/// Content hashes of files and directories, each computed once per run.
#[derive(Default)]
pub struct Hasher {
    memo: HashMap<PathBuf, String>,
}

impl Hasher {
    /// SHA-256 of a file's bytes, or of a directory's sorted (relative path, file hash)
    /// list; `None` when the path does not exist.
    pub fn hash(&mut self, path: &Path) -> Result<Option<String>> {
        if let Some(h) = self.memo.get(path) {
            return Ok(Some(h.clone()));
        }
        if !path.exists() {
            return Ok(None);
        }
        let h = hash_path(path)?;
        self.memo.insert(path.to_path_buf(), h.clone());
        Ok(Some(h))
    }

    /// Forgets hashes under `dir` (a stage that is about to write there).
    pub fn forget(&mut self, dir: &Path) {
        self.memo.retain(|p, _| !p.starts_with(dir));
    }
}

fn hash_path(path: &Path) -> Result<String> {
    if path.is_dir() {
        let mut files = Vec::new();
        collect_files(path, path, &mut files)?;
        files.sort();
        let mut digest = Sha256::new();
        for rel in files {
            let h = hash_file(&path.join(&rel))?;
            digest.update(rel.to_string_lossy().as_bytes());
            digest.update([0]);
            digest.update(h.as_bytes());
            digest.update([b'\n']);
        }
        Ok(hex(&digest.finalize()))
    } else {
        hash_file(path)
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("cannot list `{}`", dir.display()))?
    {
        let entry = entry?;
        let path = entry.path();
        // Temporary files of an atomic write in progress are not content.
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".seqit") || seqit_core::durable::is_temp_name(&name) {
            continue;
        }
        if path.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut digest = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    Ok(hex(&digest.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_hash_follows_contents_and_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.txt"), "one").unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), "two").unwrap();
        let first = hash_path(dir.path()).unwrap();
        std::fs::write(dir.path().join(".seqit-run.tmp"), "partial").unwrap();
        assert_eq!(
            hash_path(dir.path()).unwrap(),
            first,
            "temp files are ignored"
        );
        std::fs::write(dir.path().join("sub/b.txt"), "three").unwrap();
        assert_ne!(hash_path(dir.path()).unwrap(), first);
        assert_eq!(
            hash_file(&dir.path().join("a.txt")).unwrap(),
            // sha256("one")
            "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"
        );
    }
}
