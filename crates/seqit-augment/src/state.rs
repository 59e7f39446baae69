//! Append-only JSON Lines journals: one line per finished unit of work, written as it
//! finishes, so a run killed at any point (even by `kill -9`) resumes with everything
//! finished before the kill. A torn last line is cut off when the journal is reopened.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An append-only journal of `T`s keyed by an id (see the module documentation).
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Opens (or creates) `path`, returning the entries it holds by key (the last line
    /// of a key wins) after cutting off a torn tail. `key` and `keep` decide which
    /// lines count; lines failing `keep` (written with other settings) are skipped.
    pub fn open<T: DeserializeOwned>(
        path: &Path,
        key: impl Fn(&T) -> String,
        keep: impl Fn(&T) -> bool,
    ) -> Result<(Self, HashMap<String, T>)> {
        let mut entries = HashMap::new();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
        }
        if path.exists() {
            let text =
                std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
            let mut valid = 0;
            for line in text.split_inclusive(|&b| b == b'\n') {
                if !line.ends_with(b"\n") {
                    break;
                }
                let Ok(entry) = serde_json::from_slice::<T>(line) else {
                    break;
                };
                valid += line.len();
                if keep(&entry) {
                    entries.insert(key(&entry), entry);
                }
            }
            if valid < text.len() {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .with_context(|| format!("cannot open `{}`", path.display()))?;
                file.set_len(valid as u64)
                    .with_context(|| format!("cannot truncate `{}`", path.display()))?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open `{}` for appending", path.display()))?;
        Ok((
            Self {
                path: path.to_path_buf(),
                file: Mutex::new(file),
            },
            entries,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry as a single write of one line.
    pub fn append<T: Serialize>(&self, entry: &T) -> Result<()> {
        let mut line = serde_json::to_vec(entry).context("cannot serialize a journal entry")?;
        line.push(b'\n');
        self.file
            .lock()
            .expect("journal lock")
            .write_all(&line)
            .with_context(|| format!("cannot append to `{}`", self.path.display()))
    }

    /// Replaces the journal with exactly `entries` (atomically), e.g. to drop
    /// superseded lines once a run is complete.
    pub fn compact<T: Serialize>(&self, entries: &[&T]) -> Result<()> {
        let mut text = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut text, entry)?;
            text.push(b'\n');
        }
        let mut file = self.file.lock().expect("journal lock");
        seqit_data::write_file_atomic(&self.path, &text)?;
        *file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot reopen `{}`", self.path.display()))?;
        Ok(())
    }
}

/// Runs `work` on every pending unit, at most `concurrency` at once; each finished entry
/// is appended to `journal` (so a kill loses nothing finished), handed to `finished`,
/// and counted in `progress` (whose stage the caller started). A unit that fails does
/// not stop the others; if any failed, the error says how many, that the finished ones
/// are saved, and the first failure.
pub async fn run_journaled<P, T, Fut>(
    journal: &Journal,
    pending: Vec<P>,
    concurrency: usize,
    progress: &dyn crate::progress::Progress,
    work: impl Fn(P) -> Fut,
    mut finished: impl FnMut(T),
) -> Result<()>
where
    T: Serialize,
    Fut: std::future::Future<Output = Result<T>>,
{
    use futures::stream::{self, StreamExt};
    let total = pending.len();
    let mut results = stream::iter(pending)
        .map(work)
        .buffer_unordered(concurrency.max(1));
    let mut failures = Vec::new();
    while let Some(result) = results.next().await {
        match result {
            Ok(entry) => {
                journal.append(&entry)?;
                finished(entry);
                progress.advance(1);
            }
            Err(error) => failures.push(error),
        }
    }
    drop(results);
    progress.finish();
    if let Some(first) = failures.first() {
        anyhow::bail!(
            "{} of {total} pending items failed (the finished ones are saved in `{}`; run the same command again to retry the rest)\nfirst failure: {first:#}",
            failures.len(),
            journal.path().display()
        );
    }
    Ok(())
}

/// The 16-hex-digit digest of the settings that decide a run's results: journal lines
/// written with other settings are not reused.
pub fn settings_fingerprint(decided: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(decided.to_string().as_bytes()))[..16].to_string()
}

/// Refuses a second unit with the same id: journals key their work by id. `what` names
/// the units in the message ("records", "items"); positions are 1-based.
pub fn check_unique_ids<'a>(ids: impl IntoIterator<Item = &'a str>, what: &str) -> Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, id) in ids.into_iter().enumerate() {
        if let Some(first) = seen.insert(id, index) {
            anyhow::bail!(
                "{what} {} and {} have the same id `{id}`; the run keys its work by id\nhint: give every one a unique `id`, or remove the ids to use positions",
                first + 1,
                index + 1
            );
        }
    }
    Ok(())
}

/// `OUT` with `suffix` appended to its file name (`out.jsonl` → `out.jsonl.state`).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_unique_and_fingerprints_follow_the_settings() {
        assert!(check_unique_ids(["a", "b", "c"], "items").is_ok());
        let error = check_unique_ids(["a", "b", "a"], "records")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("records 1 and 3 have the same id `a`"),
            "{error}"
        );
        let a = settings_fingerprint(&serde_json::json!({"seed": 1}));
        assert_eq!(a.len(), 16);
        assert_eq!(a, settings_fingerprint(&serde_json::json!({"seed": 1})));
        assert_ne!(a, settings_fingerprint(&serde_json::json!({"seed": 2})));
    }

    #[test]
    fn torn_tails_are_cut_and_last_lines_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        std::fs::write(&path, "[\"a\",1]\n[\"b\",2]\n[\"a\",3]\n[\"c\",").unwrap();
        type E = (String, u32);
        let (journal, entries) = Journal::open::<E>(&path, |e| e.0.clone(), |e| e.1 != 2).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries["a"].1, 3);
        journal.append(&("d".to_string(), 4)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[\"a\",1]\n[\"b\",2]\n[\"a\",3]\n[\"d\",4]\n"
        );
        journal.compact(&[&("d".to_string(), 4)]).unwrap();
        journal.append(&("e".to_string(), 5)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[\"d\",4]\n[\"e\",5]\n"
        );
    }
}
