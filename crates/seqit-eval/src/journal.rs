//! Resumable per-item results over [`seqit_core::journal`]: long evaluations append each
//! item as it finishes, so a run killed at any point (even `kill -9`) resumes with
//! exactly the items still missing, none lost and none twice.
//!
//! The header holds the run's settings; every further line is one finished item,
//! `{"key": …, "record": …}`. A journal made with other settings is started over; a torn
//! last line (the process died mid-write) is cut off and its item done again.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

use crate::error::{EvalError, Result};

/// An open journal (see the module documentation).
#[derive(Debug)]
pub struct Journal {
    file: seqit_core::journal::Journal,
    done: HashMap<String, Value>,
}

impl Journal {
    /// Opens `path`, keeping the items of an earlier run when its settings equal
    /// `settings`, else starting a new journal.
    pub fn open(path: &Path, settings: &Value) -> Result<Self> {
        let (file, resumed) = seqit_core::journal::Journal::open(path, Some(settings))
            .map_err(|source| EvalError::File(seqit_core::FileError::write(path, source)))?;
        let done = resumed
            .entries
            .into_iter()
            .filter_map(|mut entry| {
                let key = entry["key"].as_str()?.to_string();
                Some((key, entry["record"].take()))
            })
            .collect();
        Ok(Self { file, done })
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Items finished by earlier runs, by key.
    pub fn done(&self) -> &HashMap<String, Value> {
        &self.done
    }

    /// Records one finished item (one `write` of a whole line, then flushed).
    pub fn append(&mut self, key: &str, record: &Value) -> Result<()> {
        self.file
            .append(&json!({ "key": key, "record": record }))
            .map_err(|source| {
                EvalError::File(seqit_core::FileError::write(self.file.path(), source))
            })?;
        self.done.insert(key.to_string(), record.clone());
        Ok(())
    }

    /// Runs `work` on every item not yet in the journal, `concurrency` at a time,
    /// appending each record the moment it is ready; `on_record` sees every new record.
    /// Returns all records (earlier and new) in the items' order. The first error stops
    /// the run; what finished before it stays in the journal.
    pub async fn run<'a, T, F, Fut>(
        &mut self,
        items: &'a [T],
        key: impl Fn(&T) -> String,
        concurrency: usize,
        work: F,
        mut on_record: impl FnMut(&Value),
    ) -> Result<Vec<Value>>
    where
        F: Fn(&'a T) -> Fut,
        Fut: Future<Output = Result<Value>>,
    {
        let keys: Vec<String> = items.iter().map(&key).collect();
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = keys.iter().find(|k| !seen.insert(k.as_str())) {
            return Err(EvalError::Settings(format!(
                "item `{twice}` appears twice; every item needs its own id"
            )));
        }
        let todo: Vec<(usize, &T)> = items
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.done.contains_key(&keys[*i]))
            .collect();
        let mut results = stream::iter(todo)
            .map(|(i, item)| {
                let fut = work(item);
                async move { (i, fut.await) }
            })
            .buffer_unordered(concurrency.max(1));
        while let Some((i, record)) = results.next().await {
            let record = record?;
            self.append(&keys[i], &record)?;
            on_record(&record);
        }
        Ok(keys
            .iter()
            .map(|k| self.done.get(k).cloned().unwrap_or(Value::Null))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn resumes_with_the_missing_items_only_and_drops_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("items.jsonl.partial");
        let settings = json!({"model": "m"});
        let items: Vec<u32> = (0..5).collect();
        let calls = std::sync::Mutex::new(Vec::new());
        let work = |i: &u32| {
            calls.lock().unwrap().push(*i);
            let i = *i;
            async move {
                if i == 3 {
                    Err(EvalError::Settings("boom".into()))
                } else {
                    Ok(json!({"square": i * i}))
                }
            }
        };
        let mut journal = Journal::open(&path, &settings).unwrap();
        let error = journal
            .run(&items, |i| format!("k{i}"), 1, work, |_| {})
            .await
            .unwrap_err();
        assert!(error.to_string().contains("boom"));
        assert_eq!(journal.done().len(), 3);
        drop(journal);
        // A torn line as left by `kill -9` mid-write.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"key\":\"k4\",\"rec").unwrap();
        drop(file);

        calls.lock().unwrap().clear();
        let mut journal = Journal::open(&path, &settings).unwrap();
        let records = journal
            .run(&items[..3], |i| format!("k{i}"), 2, work, |_| {})
            .await
            .unwrap();
        assert!(calls.lock().unwrap().is_empty());
        assert_eq!(records[2], json!({"square": 4}));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.ends_with('\n'));

        // Other settings start over.
        let journal = Journal::open(&path, &json!({"model": "other"})).unwrap();
        assert!(journal.done().is_empty());
    }

    #[tokio::test]
    async fn duplicate_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&dir.path().join("j"), &json!({})).unwrap();
        let error = journal
            .run(
                &[1, 1],
                |i| i.to_string(),
                1,
                |_| async { Ok(json!(0)) },
                |_| {},
            )
            .await
            .unwrap_err();
        assert!(error.to_string().contains("`1` appears twice"));
    }
}
