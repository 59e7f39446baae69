//! Append-only JSON Lines journals: the one way seqit's long jobs (augmentation, SeqEval
//! builds, evaluations, file generation, HumanEval execution) record finished work, so
//! that a run killed at any point, even by `kill -9`, resumes with exactly the units
//! still missing: none lost, none done twice.
//!
//! A journal is a file of JSON lines, each written by one `write` call as its unit
//! finishes. It may start with a **header** line holding the settings the entries were
//! made with: a journal whose header differs is started over (replaced whole, through
//! [`crate::durable::atomic_write`], so a kill leaves the old journal or the new one).
//! When a journal is reopened, everything after its last complete, parseable line (a
//! line torn by a kill mid-write) is cut off; that unit is simply done again.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use crate::durable::{atomic_write, parent_dir};

/// `path` with `suffix` appended to its file name (`out.jsonl` → `out.jsonl.partial`):
/// where a job keeps its journal and side files next to its output.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// An open journal (see the module documentation). Appends from several tasks are safe:
/// each line goes out in one locked write.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    header: Option<Value>,
    file: Mutex<File>,
}

/// What [`Journal::open`] found.
#[derive(Debug, Default)]
pub struct Resumed {
    /// The entries of earlier runs, in file order (the header excluded).
    pub entries: Vec<Value>,
    /// The file existed but was made with another header, and was started over.
    pub restarted: bool,
    /// A torn last line was cut off.
    pub repaired: bool,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, creating its directory. With a
    /// `header`, an existing journal is kept only when its first line is exactly
    /// `{"settings": header}`; otherwise it is replaced by a fresh one.
    pub fn open(path: &Path, header: Option<&Value>) -> io::Result<(Self, Resumed)> {
        std::fs::create_dir_all(parent_dir(path))?;
        let header_line = header.map(|settings| serde_json::json!({ "settings": settings }));
        let mut resumed = Resumed::default();
        let text = match std::fs::read(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut start_fresh = text.is_none() && header_line.is_some();
        if let Some(text) = text {
            let mut lines = complete_lines(&text);
            let mut valid = 0;
            if let Some(expected) = &header_line {
                match lines.next() {
                    Some((line, value)) if &value == expected => valid = line.len(),
                    _ => {
                        start_fresh = true;
                        resumed.restarted = !text.is_empty();
                    }
                }
            }
            if !start_fresh {
                for (line, value) in lines {
                    valid += line.len();
                    resumed.entries.push(value);
                }
                if valid < text.len() {
                    OpenOptions::new()
                        .write(true)
                        .open(path)?
                        .set_len(valid as u64)?;
                    resumed.repaired = true;
                }
            }
        }
        if start_fresh {
            let line = format!(
                "{}\n",
                header_line.as_ref().expect("fresh journals have one")
            );
            atomic_write(path, line.as_bytes())?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok((
            Self {
                path: path.to_path_buf(),
                header: header_line,
                file: Mutex::new(file),
            },
            resumed,
        ))
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry as a single write of one line.
    pub fn append<T: Serialize>(&self, entry: &T) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().expect("journal lock");
        file.write_all(&line)?;
        file.flush()
    }

    /// Replaces the journal with its header and exactly `entries`, atomically (e.g. to
    /// drop superseded lines once a run is complete).
    pub fn compact<T: Serialize>(&self, entries: &[T]) -> io::Result<()> {
        let mut text = Vec::new();
        for value in self.header.iter() {
            serde_json::to_writer(&mut text, value).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        for entry in entries {
            serde_json::to_writer(&mut text, entry).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        let mut file = self.file.lock().expect("journal lock");
        atomic_write(&self.path, &text)?;
        *file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }
}

/// The leading complete lines of `text` that parse as JSON, each with its bytes.
fn complete_lines(text: &[u8]) -> impl Iterator<Item = (&[u8], Value)> {
    text.split_inclusive(|&b| b == b'\n').map_while(|line| {
        let value = serde_json::from_slice::<Value>(line).ok()?;
        line.ends_with(b"\n").then_some((line, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue_after_it() {
        let dir = std::env::temp_dir().join(format!("seqit-journal-{}", std::process::id()));
        let path = dir.join("work").join("out.jsonl.partial");
        let (journal, resumed) = Journal::open(&path, None).unwrap();
        assert!(resumed.entries.is_empty() && !resumed.repaired);
        journal.append(&json!({"id": 1})).unwrap();
        journal.append(&json!({"id": 2})).unwrap();
        drop(journal);
        // A kill in the middle of the third line.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"id\": 3, \"te").unwrap();
        let (journal, resumed) = Journal::open(&path, None).unwrap();
        assert_eq!(resumed.entries, [json!({"id": 1}), json!({"id": 2})]);
        assert!(resumed.repaired);
        journal.append(&json!({"id": 3})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n"
        );
        journal.compact(&[json!({"id": 3})]).unwrap();
        journal.append(&json!({"id": 4})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"id\":3}\n{\"id\":4}\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_header_starts_over() {
        let dir = std::env::temp_dir().join(format!("seqit-journal-h-{}", std::process::id()));
        let path = dir.join("items.jsonl.partial");
        let seed1 = json!({"seed": 1});
        let (journal, resumed) = Journal::open(&path, Some(&seed1)).unwrap();
        assert!(!resumed.restarted);
        journal.append(&json!({"key": "a"})).unwrap();
        journal
            .compact(&[json!({"key": "a"}), json!({"key": "b"})])
            .unwrap();
        drop(journal);
        let (_, resumed) = Journal::open(&path, Some(&seed1)).unwrap();
        assert_eq!(resumed.entries, [json!({"key": "a"}), json!({"key": "b"})]);
        let (_, resumed) = Journal::open(&path, Some(&json!({"seed": 2}))).unwrap();
        assert!(resumed.restarted && resumed.entries.is_empty());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"settings\":{\"seed\":2}}\n"
        );
        assert_eq!(
            with_suffix(Path::new("runs/out.jsonl"), ".partial"),
            Path::new("runs/out.jsonl.partial")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
